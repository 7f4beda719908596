"""Migration 11: small queued messages inline in the database (frozen copy; never edit).

``outbound_queue.data`` (SQLite BLOB, PostgreSQL bytea, storage EXTERNAL as ``blobs.data``),
NULL for every existing entry: a message queued before is a file and stays one; from now on an
encrypted message of at most `postkeep.store.blobs.INLINE_MAX` octets is written into this
column, in the transaction that queues it (no file, no fsync of its own, no removal later).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE outbound_queue ADD COLUMN data BYTEA"))
        conn.execute(text("ALTER TABLE outbound_queue ALTER COLUMN data SET STORAGE EXTERNAL"))
    else:
        conn.execute(text("ALTER TABLE outbound_queue ADD COLUMN data BLOB"))


MIGRATION = Migration(11, "small queued messages inline in the database", _upgrade)
