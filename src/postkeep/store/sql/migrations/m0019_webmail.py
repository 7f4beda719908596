"""Migration 19: the webmail's unread counts (`postkeep.web.mail`) (frozen copy; never edit).

* ``ix_messages_mailbox_flags`` on ``messages (mailbox_id, flags)``: a mailbox's unseen
  messages counted from the index alone (`MailStore.mailbox_totals`: the flag values without
  \\Seen, looked up one by one), not by reading every message row of the mailbox, on each
  page of the message list of a 100,000-message mailbox.

Follows migration 17 (18 is allotted to other work): the runner applies the migrations a
database has not recorded, in the order of their numbers.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, MetaData, Table

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    messages = Table("messages", md, Column("id", BigInteger, primary_key=True),
                     Column("mailbox_id", Integer), Column("flags", Integer))
    Index("ix_messages_mailbox_flags", messages.c.mailbox_id, messages.c.flags).create(conn)


MIGRATION = Migration(19, "index of messages by mailbox and flags (webmail unread counts)",
                      _upgrade)
