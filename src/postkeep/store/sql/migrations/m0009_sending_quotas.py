"""Migration 9: sending quotas (frozen copy; never edit).

* ``sending_counts``: messages and recipients sent per scope ("a:<account id>" or
  "d:<domain>") and window (its start: a whole hour or a whole UTC day, seconds since the
  epoch; `width` tells which), counted in the transaction that accepts them.
* ``sending_limits``: exceptions to `[sending]` per scope, as JSON (the four limits, or
  ``{"unlimited": true}``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Integer, MetaData, String, Table, Text

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table(
        "sending_counts",
        md,
        Column("scope", String(300), primary_key=True),
        Column("width", Integer, primary_key=True),
        Column("window", BigInteger, primary_key=True),
        Column("messages", Integer, nullable=False),
        Column("recipients", Integer, nullable=False),
    )
    Table(
        "sending_limits",
        md,
        Column("scope", String(300), primary_key=True),
        Column("limits", Text, nullable=False),
    )
    md.create_all(conn)


MIGRATION = Migration(9, "sending quotas", _upgrade)
