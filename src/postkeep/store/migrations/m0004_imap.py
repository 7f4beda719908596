"""Migration 4: what the IMAP server needs (frozen copy; never edit).

* ``blobs.structure``: the message's MIME summary (structure with byte offsets, ENVELOPE,
  BODYSTRUCTURE — see `postkeep.mime.summary`), computed once at delivery and *sealed* under
  the message's content key, so that a database dump reveals no subject or address.
* ``expunged(mailbox_id, uid, modseq)``: UIDs expunged from a mailbox and the MODSEQ of the
  expunge, for QRESYNC's VANISHED responses (RFC 7162 §3.2.10).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, MetaData, Table, text

from postkeep.store.migrations import Migration


def _upgrade(conn: Connection) -> None:
    blob_type = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.execute(text(f"ALTER TABLE blobs ADD COLUMN structure {blob_type}"))
    md = MetaData()
    expunged = Table(
        "expunged",
        md,
        Column("mailbox_id", Integer, primary_key=True, autoincrement=False),
        Column("uid", BigInteger, primary_key=True, autoincrement=False),
        Column("modseq", BigInteger, nullable=False),
        Index("ix_expunged_mailbox_modseq", "mailbox_id", "modseq"),
    )
    expunged.create(conn)


MIGRATION = Migration(4, "IMAP: sealed message structure, expunge log", _upgrade)
