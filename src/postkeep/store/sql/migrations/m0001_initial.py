"""Migration 1: the initial schema (frozen copy of the version-1 tables; never edit).

Creates domains, accounts, aliases, mailboxes, blobs, messages, envelopes and the ``meta`` table
with its ``uidvalidity`` counter row. See `postkeep.store.sql.schema` for what the columns mean.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from postkeep.store.sql.migrations import Migration

_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def _tables(md: MetaData) -> None:
    Table(
        "meta",
        md,
        Column("name", String(64), primary_key=True),
        Column("number", BigInteger, nullable=True),
        Column("value", LargeBinary, nullable=True),
    )

    Table(
        "domains",
        md,
        Column("id", Integer, primary_key=True),
        Column("name", String(255), nullable=False, unique=True),
        Column("created", Double, nullable=False),
        sqlite_autoincrement=True,
    )

    Table(
        "accounts",
        md,
        Column("id", Integer, primary_key=True),
        Column("address", String(320), nullable=False),
        Column("address_key", String(320), nullable=False, unique=True),
        Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False, index=True),
        Column("password_hash", Text, nullable=False),
        Column("quota_bytes", BigInteger, nullable=False, default=0),
        Column("used_bytes", BigInteger, nullable=False, default=0),
        Column("data_key", LargeBinary, nullable=False),
        Column("disabled", Boolean, nullable=False, default=False),
        Column("created", Double, nullable=False),
        sqlite_autoincrement=True,
    )

    Table(
        "aliases",
        md,
        Column("id", Integer, primary_key=True),
        Column("source", String(320), nullable=False),
        Column("source_key", String(320), nullable=False, unique=True),
        Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False, index=True),
        Column("targets", Text, nullable=False),
        Column("created", Double, nullable=False),
        sqlite_autoincrement=True,
    )

    Table(
        "mailboxes",
        md,
        Column("id", Integer, primary_key=True),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
        Column("name", Text, nullable=False),
        Column("special_use", String(32), nullable=True),
        Column("uidvalidity", BigInteger, nullable=False),
        Column("uidnext", BigInteger, nullable=False, default=1),
        Column("highestmodseq", BigInteger, nullable=False, default=1),
        Column("subscribed", Boolean, nullable=False, default=True),
        UniqueConstraint("account_id", "name", name="uq_mailboxes_account_name"),
        sqlite_autoincrement=True,
    )

    Table(
        "blobs",
        md,
        Column("id", String(64), primary_key=True),
        Column("size", BigInteger, nullable=False),
        Column("refcount", Integer, nullable=False),
        Column("created", Double, nullable=False),
    )

    Table(
        "messages",
        md,
        Column("id", _BIG_ID, primary_key=True),
        Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
        Column("uid", BigInteger, nullable=False),
        Column("modseq", BigInteger, nullable=False),
        Column("blob_id", String(64), ForeignKey("blobs.id"), nullable=False),
        Column("content_key", LargeBinary, nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("internaldate", Double, nullable=False),
        Column("flags", Integer, nullable=False, default=0),
        Column("keywords", Text, nullable=False, default=""),
        Column("savedate", Double, nullable=True),
        UniqueConstraint("mailbox_id", "uid", name="uq_messages_mailbox_uid"),
        Index("ix_messages_mailbox_modseq", "mailbox_id", "modseq"),
        sqlite_autoincrement=True,
    )

    Table(
        "envelopes",
        md,
        Column("id", _BIG_ID, primary_key=True),
        Column("queue_id", String(64), nullable=False, index=True),
        Column("mail_from", Text, nullable=False),
        Column("recipients", Text, nullable=False),
        Column("client_ip", String(64), nullable=False),
        Column("helo", Text, nullable=False),
        Column("received_at", Double, nullable=False),
        Column("ret", String(8), nullable=True),
        Column("envid", Text, nullable=True),
        Column("body", String(16), nullable=True),
        Column("smtputf8", Boolean, nullable=False, default=False),
        Column("blob_id", String(64), ForeignKey("blobs.id"), nullable=True, index=True),
        sqlite_autoincrement=True,
    )


def upgrade(conn: Connection) -> None:
    md = MetaData()
    _tables(md)
    md.create_all(conn)
    meta = md.tables["meta"]
    conn.execute(meta.insert().values(name="uidvalidity", number=0, value=None))


MIGRATION = Migration(1, "initial schema", upgrade)
