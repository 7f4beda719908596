"""Migration 3: "send as" grants (frozen copy; never edit).

``send_as(account_id, address_key)``: addresses an account may use as envelope sender and in
From: on submission besides its own address and its aliases (RFC 6409 §6.1 sender checks).
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Double, ForeignKey, Integer, MetaData, String, Table

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True))
    Table(
        "send_as",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
        Column("address_key", String(320), primary_key=True),
        Column("created", Double, nullable=False),
    )
    md.tables["send_as"].create(conn)


MIGRATION = Migration(3, "send-as grants", _upgrade)
