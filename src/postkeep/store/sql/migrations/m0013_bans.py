"""Migration 13: bans and known clients (`postkeep.bans`) (frozen copy; never edit).

* ``bans``: one row per banned address or network (``key``, CIDR), in force until ``until``
  (Unix time), with its reason, the strikes that led to it, its escalation level and when it
  was made; kept past ``until`` for the level of the next ban.
* ``known_clients``: (account address, IP class) pairs that logged in successfully, and when
  they last did (``seen``): failures from them are never slowed for an account under attack.

Follows migration 12 (DMARC reports): the runner applies migrations in the order of their
numbers, each exactly once.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Double, Integer, MetaData, String, Table

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table(
        "bans",
        md,
        Column("key", String(64), primary_key=True),
        Column("until", Double, nullable=False, index=True),
        Column("reason", String(255), nullable=False),
        Column("strikes", Double, nullable=False),
        Column("level", Integer, nullable=False),
        Column("created", Double, nullable=False),
    )
    Table(
        "known_clients",
        md,
        Column("address", String(320), primary_key=True),
        Column("ip_class", String(64), primary_key=True),
        Column("seen", Double, nullable=False, index=True),
    )
    md.create_all(conn)


MIGRATION = Migration(13, "bans and known clients", _upgrade)
