"""Migration 4: what the IMAP server needs (frozen copy; never edit).

* ``blobs.structure``: the message's MIME summary (structure with byte offsets, ENVELOPE,
  BODYSTRUCTURE — see `postkeep.mime.summary`), computed once at delivery and *sealed* under
  the message's content key, so that a database dump reveals no subject or address.
* ``expunged(mailbox_id, uid, modseq)``: UIDs expunged from a mailbox and the MODSEQ of the
  expunge, for QRESYNC's VANISHED responses (RFC 7162 §3.2.10).
* ``subscriptions(account_id, name)``: subscribed mailbox names, kept apart from the mailboxes
  because a subscription outlives its mailbox (RFC 9051 §6.3.7); replaces
  ``mailboxes.subscribed``.
* ``mailboxes.first_recent_uid``: messages from this UID on are \\Recent (RFC 3501 §2.3.2) until
  a session claims them by selecting the mailbox read-write.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    blob_type = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.execute(text(f"ALTER TABLE blobs ADD COLUMN structure {blob_type}"))
    conn.execute(
        text("ALTER TABLE mailboxes ADD COLUMN first_recent_uid BIGINT NOT NULL DEFAULT 1")
    )
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
    Table("accounts", md, Column("id", Integer, primary_key=True))
    subscriptions = Table(
        "subscriptions",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
        Column("name", Text, primary_key=True),
    )
    subscriptions.create(conn)
    conn.execute(
        text(
            "INSERT INTO subscriptions (account_id, name) "
            "SELECT account_id, name FROM mailboxes WHERE subscribed"
        )
    )
    conn.execute(text("ALTER TABLE mailboxes DROP COLUMN subscribed"))


MIGRATION = Migration(
    4, "IMAP: sealed message structure, expunge log, subscriptions, recent", _upgrade
)
