"""Migration 15: the quarantine and sending pauses (`postkeep.delivery.quarantine`) (frozen
copy; never edit).

* ``quarantine``: one row per message a content filter held: the account whose
  "Quarantine" mailbox holds it (a local recipient's, inbound; the sender's, outbound), its
  ``direction`` ("in", "out"), the SMTP queue id, the ``filter`` and its ``reason``, the
  envelope (``mail_from``, ``recipients`` as a JSON list of addresses), its size, when it
  was held (``created``) and until when it is kept (``expires``). ``message_id`` is the
  message row in that mailbox (its text is encrypted there as any message is): deleting the
  message (an expunge, a MOVE out of the mailbox, the account's removal) deletes the row with
  it (ON DELETE CASCADE).
* ``sending_pauses``: an account that may not send until ``until`` after an outbound filter
  hit, with what caused it (filter, reason, queue id) and when.

Follows migration 14: the runner applies migrations in the order of their numbers, each
exactly once.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from postkeep.store.sql.migrations import Migration

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True))
    Table("messages", md, Column("id", _BigId, primary_key=True))
    Table(
        "quarantine",
        md,
        Column("id", _BigId, primary_key=True),
        Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("message_id", _BigId, ForeignKey("messages.id", ondelete="CASCADE"),
               nullable=False, unique=True),
        Column("direction", String(3), nullable=False),
        Column("queue_id", String(64), nullable=False),
        Column("filter", String(64), nullable=False),
        Column("reason", Text, nullable=False),
        Column("mail_from", Text, nullable=False),
        Column("recipients", Text, nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("created", Double, nullable=False),
        Column("expires", Double, nullable=False, index=True),
        sqlite_autoincrement=True,
    )
    Table(
        "sending_pauses",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
               primary_key=True),
        Column("until", Double, nullable=False, index=True),
        Column("filter", String(64), nullable=False),
        Column("reason", Text, nullable=False),
        Column("queue_id", String(64), nullable=False),
        Column("created", Double, nullable=False),
    )
    md.create_all(conn)  # checkfirst: the tables named for the foreign keys exist


MIGRATION = Migration(15, "quarantine and sending pauses", _upgrade)
