"""Migration 6: small blobs inline in the database (frozen copy; never edit).

``blobs.data`` (SQLite BLOB, PostgreSQL bytea), NULL for every existing row: a blob stored
before is a file and stays one; from now on blobs of at most `postkeep.store.blobs.INLINE_MAX`
octets are written into this column, in the transaction that inserts their message rows.

On PostgreSQL the column's storage is EXTERNAL (out of line, uncompressed): the values are
AES-GCM ciphertext, which does not compress, so TOAST's default attempt to compress each one
would only cost CPU.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE blobs ADD COLUMN data BYTEA"))
        conn.execute(text("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL"))
    else:
        conn.execute(text("ALTER TABLE blobs ADD COLUMN data BLOB"))


MIGRATION = Migration(6, "small message blobs inline in the database", _upgrade)
