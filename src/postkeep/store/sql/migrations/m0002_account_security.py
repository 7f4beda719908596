"""Migration 2: account security and the outbound queue (frozen copy; never edit).

* ``accounts.app_passwords_only`` (boolean, default false);
* ``account_secrets``: per-SASL-mechanism secrets derived from the password (sealed values);
* ``app_passwords``: argon2id hashes of per-device passwords with scopes, revocable, names unique
  among an account's non-revoked ones (partial unique index);
* ``outbound_queue``: messages accepted for remote recipients (encrypted blob + envelope).

See `postkeep.store.sql.schema` for what the columns mean.
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
    text,
)

from postkeep.store.sql.migrations import Migration

_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def _tables(md: MetaData) -> None:
    # Referenced by the foreign keys below; already exists (not created here).
    Table("accounts", md, Column("id", Integer, primary_key=True))

    Table(
        "account_secrets",
        md,
        Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
        Column("mechanism", String(32), primary_key=True),
        Column("secret", LargeBinary, nullable=False),
    )

    app_passwords = Table(
        "app_passwords",
        md,
        Column("id", Integer, primary_key=True),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
        Column("name", String(64), nullable=False),
        Column("password_hash", Text, nullable=False),
        Column("scopes", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("last_used", Double, nullable=True),
        Column("revoked_at", Double, nullable=True),
        sqlite_autoincrement=True,
    )
    Index(
        "uq_app_passwords_active_name",
        app_passwords.c.account_id,
        app_passwords.c.name,
        unique=True,
        sqlite_where=app_passwords.c.revoked_at.is_(None),
        postgresql_where=app_passwords.c.revoked_at.is_(None),
    )

    Table(
        "outbound_queue",
        md,
        Column("id", _BIG_ID, primary_key=True),
        Column("queue_id", String(64), nullable=False, unique=True),
        Column("blob_id", String(64), nullable=False),
        Column("content_key", LargeBinary, nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("mail_from", Text, nullable=False),
        Column("recipients", Text, nullable=False),
        Column("ret", String(8), nullable=True),
        Column("envid", Text, nullable=True),
        Column("body", String(16), nullable=True),
        Column("smtputf8", Boolean, nullable=False, default=False),
        Column("created", Double, nullable=False),
        Column("next_attempt", Double, nullable=False, index=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        sqlite_autoincrement=True,
    )


def upgrade(conn: Connection) -> None:
    false = "false" if conn.dialect.name == "postgresql" else "0"
    conn.execute(
        text(f"ALTER TABLE accounts ADD COLUMN app_passwords_only BOOLEAN NOT NULL DEFAULT {false}")
    )
    md = MetaData()
    _tables(md)
    md.create_all(conn, tables=[t for name, t in md.tables.items() if name != "accounts"])


MIGRATION = Migration(2, "account secrets, app passwords, outbound queue", upgrade)
