"""Migration 14: held for another branch's migration (frozen copy; never edit).

Migration 14 belongs to a change developed alongside migration 15 (the quarantine); the
runner applies migrations in unbroken order, so this branch keeps the number's place with a
migration that changes nothing. Where both branches meet, their migration 14 replaces this one.
"""

from __future__ import annotations

from sqlalchemy import Connection

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    del conn  # nothing to change: the number's place only


MIGRATION = Migration(14, "reserved", _upgrade)
