"""Migration 14: the junk filter's store (`postkeep.filters.junk`) (frozen copy; never edit).

* ``junk_tokens``: the Bayes classifier's token counts per ``scope`` (an account id, or 0
  for the instance-wide classifier): how many spam and ham messages held the token. A token
  is kept as a keyed 64-bit hash (BLAKE2b under the instance's junk key), never as text:
  the words of users' mail do not reach the database.
* ``junk_messages``: per scope, how many messages were learnt as spam and as ham.
* ``junk_trained``: what each account's message (by blob, which a COPY or MOVE keeps) was
  learnt as ("spam" or "ham"), so that a message is never learnt twice in a class and a
  change of mind un-learns the earlier class first.
* ``junk_lists``: allow and block entries (an address, or a domain) of an owner: an account
  (``a:<id>``) or a local domain (``d:<name>``).
* ``junk_correspondents``: the addresses an account has sent mail to, and when it last did.

Follows migration 13 (bans): the runner applies migrations in the order of their numbers,
each exactly once.
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
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True))  # the FK target, exists
    Table(
        "junk_tokens",
        md,
        Column("scope", Integer, primary_key=True, autoincrement=False),
        Column("token", BigInteger, primary_key=True, autoincrement=False),
        Column("spam", Integer, nullable=False),
        Column("ham", Integer, nullable=False),
    )
    Table(
        "junk_messages",
        md,
        Column("scope", Integer, primary_key=True, autoincrement=False),
        Column("spam", Integer, nullable=False),
        Column("ham", Integer, nullable=False),
    )
    Table(
        "junk_trained",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True,
               autoincrement=False),
        Column("blob_id", String(64), primary_key=True),
        Column("class", String(4), nullable=False),
    )
    Table(
        "junk_lists",
        md,
        Column("owner", String(260), primary_key=True),
        Column("entry", String(320), primary_key=True),
        Column("kind", String(5), nullable=False),
    )
    Table(
        "junk_correspondents",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True,
               autoincrement=False),
        Column("address", String(320), primary_key=True),
        Column("seen", Double, nullable=False),
    )
    md.create_all(conn, tables=[t for name, t in md.tables.items() if name != "accounts"])


MIGRATION = Migration(14, "junk filter", _upgrade)
