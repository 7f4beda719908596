"""Migration 17: two-factor authentication (`postkeep.auth.totp`, `postkeep.auth.webauthn`)
(frozen copy; never edit).

* ``two_factor``: one row per account that has begun to use a second factor: the TOTP secret
  (RFC 6238) sealed under the account's data key (``totp_secret``, NULL: no TOTP), whether a
  first valid code confirmed it, the last time step accepted (a code is accepted once), the
  opaque WebAuthn user handle of the account (``webauthn_user``, random, unique), and the
  enforcement state: ``enforced`` while 2FA is on (the account's ``app_passwords_only`` was set
  then) with ``prior_app_passwords_only``, the flag as it was before, restored when 2FA goes off.
* ``recovery_codes``: HMAC-SHA256 of each one-time recovery code under the account's data key
  (never the code), and when it was used.
* ``webauthn_credentials``: the passkeys / security keys of an account (W3C WebAuthn Level 3
  §6.5.1 credential record): credential id (unique), COSE public key, signature counter,
  transports, a name, when made and last used.
* ``webauthn_challenges``: the challenges handed out (§13.4.3), single use and bounded in time:
  the purpose ("register", "authenticate"), a hash of the web session they were issued to, the
  account (NULL for a passwordless login) and when they expire.

Follows migration 15 (16 is allotted to other work): the runner applies the migrations a
database has not recorded, in the order of their numbers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    false,
)

from postkeep.store.sql.migrations import Migration

_BigId = BigInteger().with_variant(Integer(), "sqlite")


def _account_fk() -> ForeignKey:
    return ForeignKey("accounts.id", ondelete="CASCADE")


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("accounts", md, Column("id", Integer, primary_key=True))
    Table(
        "two_factor",
        md,
        Column("account_id", Integer, _account_fk(), primary_key=True),
        Column("totp_secret", LargeBinary, nullable=True),
        Column("totp_confirmed", Boolean, nullable=False, server_default=false()),
        Column("totp_last_step", BigInteger, nullable=True),
        Column("totp_created", Double, nullable=True),
        Column("webauthn_user", LargeBinary(64), nullable=True, unique=True),
        Column("enforced", Boolean, nullable=False, server_default=false()),
        Column("prior_app_passwords_only", Boolean, nullable=False, server_default=false()),
    )
    Table(
        "recovery_codes",
        md,
        Column("id", Integer, primary_key=True),
        Column("account_id", Integer, _account_fk(), nullable=False, index=True),
        Column("code_hash", LargeBinary(32), nullable=False, unique=True),
        Column("created", Double, nullable=False),
        Column("used_at", Double, nullable=True),
        sqlite_autoincrement=True,
    )
    Table(
        "webauthn_credentials",
        md,
        Column("id", Integer, primary_key=True),
        Column("account_id", Integer, _account_fk(), nullable=False, index=True),
        Column("credential_id", LargeBinary(1023), nullable=False, unique=True),
        Column("public_key", LargeBinary, nullable=False),
        Column("sign_count", BigInteger, nullable=False),
        Column("transports", String(255), nullable=False),
        Column("name", String(64), nullable=False),
        Column("created", Double, nullable=False),
        Column("last_used", Double, nullable=True),
        sqlite_autoincrement=True,
    )
    Table(
        "webauthn_challenges",
        md,
        Column("id", Integer, primary_key=True),
        Column("challenge", LargeBinary(64), nullable=False, unique=True),
        Column("purpose", String(16), nullable=False),
        Column("session", LargeBinary(32), nullable=False, index=True),
        Column("account_id", Integer, _account_fk(), nullable=True),
        Column("expires", Double, nullable=False, index=True),
        sqlite_autoincrement=True,
    )
    md.create_all(conn)  # checkfirst: the table named for the foreign keys exists


MIGRATION = Migration(17, "two-factor authentication: TOTP, recovery codes, WebAuthn", _upgrade)
