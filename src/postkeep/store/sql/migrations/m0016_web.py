"""Migration 16: web sessions and the login history (`postkeep.web`) (frozen copy; never edit).

* ``web_sessions``: one row per web session: the SHA-256 of its token (the cookie's value is
  never stored, so a copy of the database opens no session), its account, its ``stage`` of
  the login ("second-factor": the password was right, a second factor is due; "done"), when
  it was made, last seen and ends at the latest (``expires``), and the client's address and
  user agent as the user's session list shows them. Removing the account removes them.
* ``login_history``: one row per login attempt of an account worth showing its owner: when,
  from which address, by which method ("web password", "imap LOGIN", "smtp PLAIN") and with
  which result ("ok", "failed", "second factor needed"), and a detail (the web client's user
  agent, the reason of a failure).

Follows migration 15 (quarantine): the runner applies migrations in the order of their
numbers, each exactly once.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from postkeep.store.sql.migrations import Migration

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True))
    Table(
        "web_sessions",
        md,
        Column("id", Integer, primary_key=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("stage", String(16), nullable=False),
        Column("created", Double, nullable=False),
        Column("last_seen", Double, nullable=False),
        Column("expires", Double, nullable=False, index=True),
        Column("ip", String(64), nullable=False),
        Column("user_agent", String(255), nullable=False),
        sqlite_autoincrement=True,
    )
    history = Table(
        "login_history",
        md,
        Column("id", _BigId, primary_key=True),
        Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
               nullable=False),
        Column("time", Double, nullable=False),
        Column("ip", String(64), nullable=False),
        Column("method", String(64), nullable=False),
        Column("result", String(32), nullable=False),
        Column("detail", String(255), nullable=False),
        sqlite_autoincrement=True,
    )
    Index("ix_login_history_account_time", history.c.account_id, history.c.time)
    md.create_all(conn)  # checkfirst: the accounts table named for the foreign keys exists


MIGRATION = Migration(16, "web sessions and login history", _upgrade)
