"""Account credentials in the SQL store: SASL mechanism secrets, app passwords, `get_auth`.

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).

* Mechanism secrets (CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1, SCRAM-SHA-256: whatever
  `postkeep.sasl.secrets.derive_secrets` produced from the password) live in
  ``account_secrets``, sealed under the account's data key with the account id and mechanism as
  AAD (`postkeep.store.crypto.seal`). CRAM-MD5 / DIGEST-MD5 secrets are password equivalents for
  those mechanisms, so they are never stored in clear. `add_account` / `set_password` write them in
  the same transaction as the password hash; `set_password` replaces them all.
* App passwords (``app_passwords``) are argon2id hashes with scopes; revoking keeps the row with
  ``revoked_at`` set. A name is unique among an account's non-revoked app passwords (partial unique
  index, re-checked here for a clear error); an account has at most MAX_APP_PASSWORDS active ones.
* `touch_app_password` records last use without waiting: touches are merged in memory (latest time
  per app password) and written by ONE queued writer job per burst, never moving ``last_used``
  backwards.
* `get_auth` reads the account, its secrets and its active app passwords in one read transaction
  (REPEATABLE READ on PostgreSQL, a WAL snapshot on SQLite), so a concurrent password change is
  seen entirely or not at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from postkeep.addresses import address_key
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import MAX_APP_PASSWORDS, AppPassword, AuthRecord
from postkeep.store.crypto import seal, secret_context, unseal
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.prepared import Cursor
from postkeep.store.sql.rows import APP_PASSWORD_COLS, account_from_row
from postkeep.store.sql.schema import (
    account_secrets,
    accounts,
    app_passwords,
    send_as,
    two_factor,
)

_MECHANISM = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,31}")
_SCOPE = re.compile(r"[a-z][a-z0-9-]{0,15}")
_MAX_NAME = 64
_MAX_SECRET = 4096


_TOUCH = (
    update(app_passwords)
    .where(
        app_passwords.c.id == bindparam("apid"),
        or_(app_passwords.c.last_used.is_(None), app_passwords.c.last_used < bindparam("when")),
    )
    .values(last_used=bindparam("when"))
)


def check_secrets(secrets: Mapping[str, str] | None) -> dict[str, str]:
    """Validated copy of a mechanism → secret mapping (mechanism names upper-cased)."""
    clean: dict[str, str] = {}
    for mechanism, secret in (secrets or {}).items():
        name = mechanism.strip().upper()
        if not _MECHANISM.fullmatch(name):
            raise StoreError(f"invalid SASL mechanism name {mechanism!r}")
        if not isinstance(secret, str) or not secret or len(secret) > _MAX_SECRET:
            raise StoreError(f"invalid secret for mechanism {name}")
        clean[name] = secret
    return clean


def check_app_password_name(name: str) -> str:
    """The app password name, stripped; 1-64 printable characters (spaces allowed inside)."""
    clean = name.strip()
    if not clean or len(clean) > _MAX_NAME or not clean.isprintable():
        raise StoreError(f"invalid app password name {name!r}: 1-{_MAX_NAME} printable characters")
    return clean


def check_scopes(scopes: Sequence[str] | str) -> tuple[str, ...]:
    """Scopes as a tuple of distinct lower-case words; a string is split on white space."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    clean = tuple(dict.fromkeys(s.strip().lower() for s in items))
    if not clean:
        raise StoreError("an app password needs at least one scope")
    for scope in clean:
        if not _SCOPE.fullmatch(scope):
            raise StoreError(f"invalid scope {scope!r}")
    return clean


def _app_password(r: Sequence[Any]) -> AppPassword:
    return AppPassword(
        r[0], r[1], r[2], r[3], tuple(r[4].split()), r[5], r[6], r[7] is not None
    )


class AccountSecurityMixin(SqlStoreBase):
    """Credentials methods of `SqlStore` (see the module docstring)."""

    # -- secrets -----------------------------------------------------------------------------------

    @staticmethod
    def _put_secrets(
        conn: Connection, account_id: int, data_key: bytes, secrets: Mapping[str, str]
    ) -> None:
        """Insert the (validated) secrets of an account, sealed under its data key."""
        if not secrets:
            return
        conn.execute(
            insert(account_secrets),
            [
                {
                    "account_id": account_id,
                    "mechanism": mechanism,
                    "secret": seal(
                        data_key, secret.encode(), secret_context(account_id, mechanism)
                    ),
                }
                for mechanism, secret in secrets.items()
            ],
        )

    async def set_app_passwords_only(self, address: str, flag: bool) -> None:
        """Set or clear `Account.app_passwords_only`; NotFound for an unknown account.

        While two-factor authentication enforces the flag it cannot be cleared (StoreError);
        setting it then makes it stay when 2FA goes off (`postkeep.store.sql.twofactor`)."""
        key = address_key(address)
        stmt = (
            update(accounts).where(accounts.c.address_key == key).values(app_passwords_only=flag)
        )

        def fn(conn: Connection) -> None:
            account_id = self._account_id(conn, address, lock=True)
            mine = two_factor.c.account_id == account_id
            if conn.execute(select(two_factor.c.enforced).where(mine)).scalar():
                if not flag:
                    raise StoreError(
                        f"{address} has two-factor authentication on, which allows app passwords"
                        " only: `postkeep user 2fa disable` turns it off"
                    )
                conn.execute(update(two_factor).where(mine).values(prior_app_passwords_only=True))
            conn.execute(stmt)

        await self._write(fn)

    async def get_auth(self, address: str) -> AuthRecord | None:
        """Account, decrypted mechanism secrets and active app passwords, in one read (one
        snapshot: REPEATABLE READ on PostgreSQL)."""
        key = address_key(address)
        hot = self.hot

        def fn(cur: Cursor) -> AuthRecord | None:
            row = cur.first(hot.account_by_address, key=key)
            if row is None:
                return None
            account = account_from_row(row)
            data_key = self._data_key(row[-2], bytes(row[-1]))
            secret_rows = cur.all(hot.secrets_of, aid=account.id)
            app_rows = cur.all(hot.app_passwords_of, aid=account.id)
            secrets = {
                m: unseal(data_key, bytes(v), secret_context(account.id, m)).decode()
                for m, v in secret_rows
            }
            return AuthRecord(account, secrets, tuple(_app_password(r) for r in app_rows))

        return await self._read_raw(fn, snapshot=True)

    # -- app passwords -----------------------------------------------------------------------------

    @staticmethod
    def _account_id(conn: Connection, address: str, *, lock: bool = False) -> int:
        q = select(accounts.c.id).where(accounts.c.address_key == address_key(address))
        account_id = conn.execute(q.with_for_update() if lock else q).scalar()
        if account_id is None:
            raise NotFound(f"account {address} does not exist")
        return int(account_id)

    async def add_app_password(
        self, address: str, name: str, password_hash: str, scopes: Sequence[str]
    ) -> AppPassword:
        """Add an app password. AlreadyExists if an active one has that name; StoreError beyond
        MAX_APP_PASSWORDS active ones; NotFound for an unknown account."""
        clean_name = check_app_password_name(name)
        clean_scopes = check_scopes(scopes)
        if not password_hash:
            raise StoreError("an app password needs a password hash")

        def fn(conn: Connection) -> AppPassword:
            account_id = self._account_id(conn, address, lock=True)  # serialises the count
            active = select(func.count()).where(
                app_passwords.c.account_id == account_id, app_passwords.c.revoked_at.is_(None)
            )
            if conn.execute(active.where(app_passwords.c.name == clean_name)).scalar_one():
                raise AlreadyExists(f"app password {clean_name!r} exists already")
            if conn.execute(active).scalar_one() >= MAX_APP_PASSWORDS:
                raise StoreError(
                    f"{address} has {MAX_APP_PASSWORDS} app passwords already: revoke one first"
                )
            now = time.time()
            stmt = (
                insert(app_passwords)
                .values(
                    account_id=account_id,
                    name=clean_name,
                    password_hash=password_hash,
                    scopes=" ".join(clean_scopes),
                    created=now,
                    last_used=None,
                    revoked_at=None,
                )
                .returning(app_passwords.c.id)
            )
            try:
                app_id = int(conn.execute(stmt).scalar_one())
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"app password {clean_name!r} exists already") from None
            return AppPassword(
                app_id, account_id, clean_name, password_hash, clean_scopes, now, None, False
            )

        return await self._write(fn)

    async def list_app_passwords(
        self, address: str, include_revoked: bool = False
    ) -> list[AppPassword]:
        """The account's app passwords, oldest first; NotFound for an unknown account."""

        def fn(conn: Connection) -> list[AppPassword]:
            account_id = self._account_id(conn, address)
            q = select(*APP_PASSWORD_COLS).where(app_passwords.c.account_id == account_id)
            if not include_revoked:
                q = q.where(app_passwords.c.revoked_at.is_(None))
            return [_app_password(r) for r in conn.execute(q.order_by(app_passwords.c.id))]

        return await self._read(fn)

    async def revoke_app_password(self, address: str, name: str) -> None:
        """Revoke the active app password `name`; NotFound if the account has none by that name."""
        clean_name = name.strip()

        def fn(conn: Connection) -> None:
            account_id = self._account_id(conn, address)
            stmt = (
                update(app_passwords)
                .where(
                    app_passwords.c.account_id == account_id,
                    app_passwords.c.name == clean_name,
                    app_passwords.c.revoked_at.is_(None),
                )
                .values(revoked_at=time.time())
            )
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"{address} has no app password {clean_name!r}")

        await self._write(fn)

    async def touch_app_password(self, app_password_id: int, when: float) -> None:
        """Record that an app password was used at `when` (POSIX seconds).

        Fire-and-forget: returns at once; the write is merged with other touches and committed by
        the writer shortly after (`sync()` waits for it). Unknown ids are ignored.
        """
        self._check_open()
        with self._touch_lock:
            if when > self._touches.get(app_password_id, float("-inf")):
                self._touches[app_password_id] = when
            if self._touch_queued:
                return
            self._touch_queued = True
        try:
            self._write_nowait(self._flush_touches)
        except BaseException:
            with self._touch_lock:
                self._touch_queued = False
            raise

    def _flush_touches(self, conn: Connection) -> None:
        """Writer job: write every touch recorded so far (latest time per app password)."""
        with self._touch_lock:
            touches, self._touches = self._touches, {}
            self._touch_queued = False
        if touches:
            conn.execute(_TOUCH, [{"apid": i, "when": w} for i, w in sorted(touches.items())])

    # -- send-as grants ----------------------------------------------------------------------------

    async def grant_send_as(self, address: str, sender: str) -> None:
        """Let `address`'s account send as `sender` (AlreadyExists if granted already)."""
        key = address_key(sender)
        if "@" not in key or len(key) > 320:
            raise StoreError(f"{sender!r} is not an address")

        def fn(conn: Connection) -> None:
            account_id = self._account_id(conn, address, lock=True)
            exists = select(send_as.c.account_id).where(
                send_as.c.account_id == account_id, send_as.c.address_key == key
            )
            if conn.execute(exists).first() is not None:
                raise AlreadyExists(f"{address} may already send as {sender}")
            conn.execute(
                insert(send_as).values(account_id=account_id, address_key=key, created=time.time())
            )

        await self._write(fn)

    async def revoke_send_as(self, address: str, sender: str) -> None:
        key = address_key(sender)

        def fn(conn: Connection) -> None:
            account_id = self._account_id(conn, address)
            gone = conn.execute(delete(send_as).where(
                send_as.c.account_id == account_id, send_as.c.address_key == key
            )).rowcount
            if not gone:
                raise NotFound(f"{address} has no send-as grant for {sender}")

        await self._write(fn)

    async def list_send_as(self, address: str) -> list[str]:
        def fn(conn: Connection) -> list[str]:
            account_id = self._account_id(conn, address)
            q = select(send_as.c.address_key).where(send_as.c.account_id == account_id)
            return sorted(r[0] for r in conn.execute(q.order_by(send_as.c.address_key)))

        return await self._read(fn)
