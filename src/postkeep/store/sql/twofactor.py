"""Second factors in the SQL store: TOTP secrets, recovery codes, WebAuthn credentials and
challenges, and the enforcement that goes with them (migration 17).

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).

* The TOTP secret (RFC 6238) is sealed under the account's data key with the account id as AAD
  (`postkeep.store.crypto.seal`): a database dump alone does not give it away. Replay protection
  is one conditional UPDATE: a time step is recorded only if it is after the last one recorded,
  so a code is accepted once even with several worker processes (RFC 6238 §5.2).
* Recovery codes are kept as HMAC-SHA256 under the account's data key (the codes are random, so
  a keyed hash is as good as a slow one, and it needs the master key to test guesses offline);
  using one is a conditional UPDATE of its ``used_at``: once only.
* WebAuthn credentials keep only public data (credential id, COSE public key, signature
  counter). Counter updates are compare-and-set on the stored value. Challenges are rows (every
  worker process sees them) bound to a hash of the web session, taken by DELETE: single use;
  expired ones are dropped whenever a new one is made, and a session keeps at most
  MAX_SESSION_CHALLENGES.
* Enforcement: every change that can turn 2FA on or off re-derives it in the same transaction
  (`_sync_enforcement`): on (a confirmed TOTP or a credential) sets ``accounts.
  app_passwords_only`` and remembers the flag as it was; off restores it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from postkeep.addresses import address_key
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import (
    MAX_WEBAUTHN_CREDENTIALS,
    Account,
    TotpState,
    TwoFactorStatus,
    WebAuthnChallenge,
    WebAuthnCredential,
)
from postkeep.store.crypto import seal, unseal
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.rows import ACCOUNT_COLS, account_from_row
from postkeep.store.sql.schema import (
    accounts,
    recovery_codes,
    two_factor,
    webauthn_challenges,
    webauthn_credentials,
)

#: Unexpired challenges one web session may hold (several tabs, retries).
MAX_SESSION_CHALLENGES = 4
USER_HANDLE_SIZE = 32  # WebAuthn §5.4.3: at most 64 random bytes, no personal data
MAX_CODES = 32
_MAX_NAME = 64
_MAX_CREDENTIAL_ID = 1023  # WebAuthn §4 "Credential ID": at most 1023 bytes
_MAX_PUBLIC_KEY = 2048
_PURPOSES = ("register", "authenticate")
_CREDENTIAL_COLS = (
    webauthn_credentials.c.id,
    webauthn_credentials.c.account_id,
    webauthn_credentials.c.credential_id,
    webauthn_credentials.c.public_key,
    webauthn_credentials.c.sign_count,
    webauthn_credentials.c.transports,
    webauthn_credentials.c.name,
    webauthn_credentials.c.created,
    webauthn_credentials.c.last_used,
)


def totp_context(account_id: int) -> bytes:
    """AAD binding a sealed TOTP secret to its account."""
    return b"totp-secret\x00%d" % account_id


def _code_hash(data_key: bytes, code: str) -> bytes:
    return hmac.new(data_key, b"recovery-code\x00" + code.encode(), hashlib.sha256).digest()


def _credential(r: Sequence[Any]) -> WebAuthnCredential:
    return WebAuthnCredential(int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), int(r[4]),
                              tuple(r[5].split()), r[6], r[7], r[8])


def _check_session(session: bytes) -> None:
    if len(session) != 32:
        raise StoreError("a challenge's session must be a 32-byte hash")


class TwoFactorMixin(SqlStoreBase):
    """Second-factor methods of `SqlStore` (see the module docstring)."""

    def _account_keyed(self, conn: Connection, address: str) -> tuple[int, bytes, bool]:
        """(account id, unwrapped data key, app_passwords_only) with the account row locked:
        what serialises an account's 2FA changes across processes."""
        key = address_key(address)
        row = conn.execute(
            select(accounts.c.id, accounts.c.data_key, accounts.c.app_passwords_only)
            .where(accounts.c.address_key == key).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"account {address} does not exist")
        return int(row[0]), self._data_key(key, bytes(row[1])), bool(row[2])

    @staticmethod
    def _ensure_row(conn: Connection, account_id: int) -> None:
        q = select(two_factor.c.account_id).where(two_factor.c.account_id == account_id)
        if conn.execute(q).first() is None:
            conn.execute(insert(two_factor).values(account_id=account_id))

    @staticmethod
    def _sync_enforcement(conn: Connection, account_id: int, app_passwords_only: bool) -> None:
        """Turn enforcement on or off as the account's factors now say (the row is locked)."""
        row = conn.execute(
            select(two_factor.c.totp_confirmed, two_factor.c.enforced,
                   two_factor.c.prior_app_passwords_only)
            .where(two_factor.c.account_id == account_id)
        ).first()
        if row is None:
            return
        confirmed, enforced, prior = bool(row[0]), bool(row[1]), bool(row[2])
        passkeys = conn.execute(
            select(func.count()).where(webauthn_credentials.c.account_id == account_id)
        ).scalar_one()
        on = confirmed or passkeys > 0
        mine = two_factor.c.account_id == account_id
        if on and not enforced:
            conn.execute(update(two_factor).where(mine).values(
                enforced=True, prior_app_passwords_only=app_passwords_only))
            flag = True
        elif enforced and not on:
            conn.execute(update(two_factor).where(mine).values(
                enforced=False, prior_app_passwords_only=False))
            conn.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
            flag = prior
        else:
            return
        conn.execute(update(accounts).where(accounts.c.id == account_id)
                     .values(app_passwords_only=flag))

    # -- status and TOTP ---------------------------------------------------------------------------

    async def two_factor_status(self, address: str) -> TwoFactorStatus:
        key = address_key(address)

        def fn(conn: Connection) -> TwoFactorStatus:
            account_id = conn.execute(
                select(accounts.c.id).where(accounts.c.address_key == key)).scalar()
            if account_id is None:
                raise NotFound(f"account {address} does not exist")
            row = conn.execute(
                select(two_factor.c.totp_secret.is_not(None), two_factor.c.totp_confirmed,
                       two_factor.c.totp_created, two_factor.c.enforced)
                .where(two_factor.c.account_id == account_id)
            ).first()
            passkeys = conn.execute(select(func.count()).where(
                webauthn_credentials.c.account_id == account_id)).scalar_one()
            left = conn.execute(select(func.count()).where(
                recovery_codes.c.account_id == account_id,
                recovery_codes.c.used_at.is_(None))).scalar_one()
            if row is None or not row[0]:
                return TwoFactorStatus("off", None, passkeys, left, False)
            return TwoFactorStatus("on" if row[1] else "pending", row[2], passkeys, left,
                                   bool(row[3]))

        return await self._read(fn)

    async def begin_totp(self, address: str, secret: str, now: float) -> None:
        if not secret or len(secret) > 128:
            raise StoreError("invalid TOTP secret")

        def fn(conn: Connection) -> None:
            account_id, data_key, _ = self._account_keyed(conn, address)
            self._ensure_row(conn, account_id)
            mine = two_factor.c.account_id == account_id
            if conn.execute(select(two_factor.c.totp_confirmed).where(mine)).scalar():
                raise AlreadyExists(f"{address} has TOTP on already: disable it first")
            sealed = seal(data_key, secret.encode(), totp_context(account_id))
            conn.execute(update(two_factor).where(mine).values(
                totp_secret=sealed, totp_confirmed=False, totp_last_step=None,
                totp_created=now))

        await self._write(fn)

    async def get_totp(self, address: str) -> TotpState | None:
        key = address_key(address)

        def fn(conn: Connection) -> TotpState | None:
            row = conn.execute(
                select(accounts.c.id, accounts.c.data_key, two_factor.c.totp_secret,
                       two_factor.c.totp_confirmed, two_factor.c.totp_last_step)
                .join(two_factor, two_factor.c.account_id == accounts.c.id)
                .where(accounts.c.address_key == key)
            ).first()
            if row is None or row[2] is None:
                return None
            account_id = int(row[0])
            data_key = self._data_key(key, bytes(row[1]))
            secret = unseal(data_key, bytes(row[2]), totp_context(account_id)).decode()
            last = None if row[4] is None else int(row[4])
            return TotpState(account_id, secret, bool(row[3]), last)

        return await self._read(fn)

    async def accept_totp_step(self, address: str, step: int, now: float,
                               recovery_codes: Sequence[str] | None = None) -> bool:
        def fn(conn: Connection) -> bool:
            account_id, data_key, flag = self._account_keyed(conn, address)
            stmt = update(two_factor).where(
                two_factor.c.account_id == account_id,
                two_factor.c.totp_secret.is_not(None),
                two_factor.c.totp_last_step.is_(None) | (two_factor.c.totp_last_step < step),
            )
            if recovery_codes is None:
                stmt = stmt.where(two_factor.c.totp_confirmed.is_(True))
                return bool(conn.execute(stmt.values(totp_last_step=step)).rowcount)
            stmt = stmt.where(two_factor.c.totp_confirmed.is_(False))
            if not conn.execute(stmt.values(totp_last_step=step, totp_confirmed=True)).rowcount:
                return False
            self._sync_enforcement(conn, account_id, flag)
            self._replace_codes(conn, account_id, data_key, recovery_codes, now)
            return True

        return await self._write(fn)

    async def disable_totp(self, address: str) -> bool:
        def fn(conn: Connection) -> bool:
            account_id, _, flag = self._account_keyed(conn, address)
            gone = conn.execute(update(two_factor).where(
                two_factor.c.account_id == account_id, two_factor.c.totp_secret.is_not(None),
            ).values(totp_secret=None, totp_confirmed=False, totp_last_step=None,
                     totp_created=None)).rowcount
            self._sync_enforcement(conn, account_id, flag)
            return bool(gone)

        return await self._write(fn)

    # -- recovery codes ----------------------------------------------------------------------------

    @staticmethod
    def _replace_codes(conn: Connection, account_id: int, data_key: bytes,
                       codes: Sequence[str], now: float) -> None:
        if not codes or len(codes) > MAX_CODES or len(set(codes)) != len(codes):
            raise StoreError(f"recovery codes: 1 to {MAX_CODES} distinct codes")
        conn.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
        conn.execute(insert(recovery_codes), [
            {"account_id": account_id, "code_hash": _code_hash(data_key, c), "created": now}
            for c in codes
        ])

    async def set_recovery_codes(self, address: str, codes: Sequence[str], now: float) -> None:
        def fn(conn: Connection) -> None:
            account_id, data_key, _ = self._account_keyed(conn, address)
            self._replace_codes(conn, account_id, data_key, codes, now)

        await self._write(fn)

    async def use_recovery_code(self, address: str, code: str, now: float) -> bool:
        def fn(conn: Connection) -> bool:
            account_id, data_key, _ = self._account_keyed(conn, address)
            return bool(conn.execute(update(recovery_codes).where(
                recovery_codes.c.account_id == account_id,
                recovery_codes.c.code_hash == _code_hash(data_key, code),
                recovery_codes.c.used_at.is_(None),
            ).values(used_at=now)).rowcount)

        return await self._write(fn)

    async def disable_two_factor(self, address: str) -> bool:
        def fn(conn: Connection) -> bool:
            account_id, _, flag = self._account_keyed(conn, address)
            had = conn.execute(select(two_factor.c.totp_secret.is_not(None)).where(
                two_factor.c.account_id == account_id)).scalar()
            creds = conn.execute(delete(webauthn_credentials).where(
                webauthn_credentials.c.account_id == account_id)).rowcount
            conn.execute(update(two_factor).where(two_factor.c.account_id == account_id).values(
                totp_secret=None, totp_confirmed=False, totp_last_step=None, totp_created=None))
            self._sync_enforcement(conn, account_id, flag)
            conn.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
            return bool(had) or creds > 0

        return await self._write(fn)

    # -- WebAuthn credentials ----------------------------------------------------------------------

    async def webauthn_user_handle(self, address: str) -> bytes:
        key = address_key(address)
        q = (select(two_factor.c.webauthn_user)
             .join(accounts, accounts.c.id == two_factor.c.account_id)
             .where(accounts.c.address_key == key))
        handle = await self._read(lambda conn: conn.execute(q).scalar())
        if handle is not None:
            return bytes(handle)

        def fn(conn: Connection) -> bytes:
            account_id, _, _ = self._account_keyed(conn, address)
            self._ensure_row(conn, account_id)
            mine = two_factor.c.account_id == account_id
            made = conn.execute(select(two_factor.c.webauthn_user).where(mine)).scalar()
            if made is not None:  # another process made it meanwhile
                return bytes(made)
            new = os.urandom(USER_HANDLE_SIZE)
            conn.execute(update(two_factor).where(mine).values(webauthn_user=new))
            return new

        return await self._write(fn)

    async def find_webauthn_credential(
        self, credential_id: bytes
    ) -> tuple[WebAuthnCredential, Account, bytes] | None:
        if not credential_id or len(credential_id) > _MAX_CREDENTIAL_ID:
            return None
        q = (select(*_CREDENTIAL_COLS, two_factor.c.webauthn_user, *ACCOUNT_COLS)
             .join(accounts, accounts.c.id == webauthn_credentials.c.account_id)
             .join(two_factor, two_factor.c.account_id == accounts.c.id)
             .where(webauthn_credentials.c.credential_id == credential_id))

        def fn(conn: Connection) -> tuple[WebAuthnCredential, Account, bytes] | None:
            row = conn.execute(q).first()
            if row is None:
                return None
            n = len(_CREDENTIAL_COLS)
            return _credential(row[:n]), account_from_row(row[n + 1:]), bytes(row[n])

        return await self._read(fn)

    async def add_webauthn_credential(
        self, address: str, credential_id: bytes, public_key: bytes, sign_count: int,
        transports: Sequence[str], name: str, now: float,
    ) -> WebAuthnCredential:
        clean_name = name.strip()
        if not clean_name or len(clean_name) > _MAX_NAME or not clean_name.isprintable():
            raise StoreError(f"invalid passkey name {name!r}: 1-{_MAX_NAME} printable characters")
        if not credential_id or len(credential_id) > _MAX_CREDENTIAL_ID:
            raise StoreError("invalid credential id")
        if not public_key or len(public_key) > _MAX_PUBLIC_KEY:
            raise StoreError("invalid credential public key")
        kinds = " ".join(t for t in dict.fromkeys(transports) if t.isalnum() or "-" in t)
        if len(kinds) > 255 or not 0 <= sign_count < 1 << 32:
            raise StoreError("invalid transports or signature counter")

        def fn(conn: Connection) -> WebAuthnCredential:
            account_id, _, flag = self._account_keyed(conn, address)
            known = select(webauthn_credentials.c.id).where(
                webauthn_credentials.c.credential_id == credential_id)
            if conn.execute(known).first() is not None:
                raise AlreadyExists("this credential is registered already")
            count = conn.execute(select(func.count()).where(
                webauthn_credentials.c.account_id == account_id)).scalar_one()
            if count >= MAX_WEBAUTHN_CREDENTIALS:
                raise StoreError(f"{address} has {MAX_WEBAUTHN_CREDENTIALS} passkeys already")
            self._ensure_row(conn, account_id)
            row_id = conn.execute(insert(webauthn_credentials).values(
                account_id=account_id, credential_id=credential_id, public_key=public_key,
                sign_count=sign_count, transports=kinds, name=clean_name, created=now,
                last_used=None,
            ).returning(webauthn_credentials.c.id)).scalar_one()
            self._sync_enforcement(conn, account_id, flag)
            return WebAuthnCredential(int(row_id), account_id, credential_id, public_key,
                                      sign_count, tuple(kinds.split()), clean_name, now, None)

        return await self._write(fn)

    async def list_webauthn_credentials(self, address: str) -> list[WebAuthnCredential]:
        key = address_key(address)

        def fn(conn: Connection) -> list[WebAuthnCredential]:
            account_id = conn.execute(
                select(accounts.c.id).where(accounts.c.address_key == key)).scalar()
            if account_id is None:
                raise NotFound(f"account {address} does not exist")
            q = (select(*_CREDENTIAL_COLS)
                 .where(webauthn_credentials.c.account_id == account_id)
                 .order_by(webauthn_credentials.c.id))
            return [_credential(r) for r in conn.execute(q)]

        return await self._read(fn)

    async def remove_webauthn_credential(self, address: str, credential: int) -> None:
        def fn(conn: Connection) -> None:
            account_id, _, flag = self._account_keyed(conn, address)
            if not conn.execute(delete(webauthn_credentials).where(
                webauthn_credentials.c.account_id == account_id,
                webauthn_credentials.c.id == credential,
            )).rowcount:
                raise NotFound(f"{address} has no passkey {credential}")
            self._sync_enforcement(conn, account_id, flag)

        await self._write(fn)

    async def record_webauthn_use(self, credential: int, seen_count: int, new_count: int,
                                  now: float) -> bool:
        stmt = update(webauthn_credentials).where(
            webauthn_credentials.c.id == credential,
            webauthn_credentials.c.sign_count == seen_count,
        ).values(sign_count=new_count, last_used=now)
        return bool(await self._write(lambda conn: conn.execute(stmt).rowcount))

    # -- WebAuthn challenges -----------------------------------------------------------------------

    async def put_webauthn_challenge(self, challenge: WebAuthnChallenge, session: bytes,
                                     now: float) -> None:
        _check_session(session)
        if not 16 <= len(challenge.challenge) <= 64 or challenge.purpose not in _PURPOSES:
            raise StoreError("invalid WebAuthn challenge")

        def fn(conn: Connection) -> None:
            conn.execute(delete(webauthn_challenges).where(webauthn_challenges.c.expires <= now))
            conn.execute(insert(webauthn_challenges).values(
                challenge=challenge.challenge, purpose=challenge.purpose, session=session,
                account_id=challenge.account_id, expires=challenge.expires))
            old = conn.execute(
                select(webauthn_challenges.c.id)
                .where(webauthn_challenges.c.session == session)
                .order_by(webauthn_challenges.c.id.desc())
                .offset(MAX_SESSION_CHALLENGES)
            ).scalars().all()
            if old:
                conn.execute(delete(webauthn_challenges).where(webauthn_challenges.c.id.in_(old)))

        await self._write(fn, durable=False)

    async def take_webauthn_challenge(self, challenge: bytes, purpose: str, session: bytes,
                                      now: float) -> WebAuthnChallenge | None:
        _check_session(session)
        if not 16 <= len(challenge) <= 64:
            return None
        mine = (webauthn_challenges.c.challenge == challenge,
                webauthn_challenges.c.purpose == purpose,
                webauthn_challenges.c.session == session)

        def fn(conn: Connection) -> WebAuthnChallenge | None:
            row = conn.execute(select(webauthn_challenges.c.account_id,
                                      webauthn_challenges.c.expires).where(*mine)).first()
            if row is None or not conn.execute(delete(webauthn_challenges).where(*mine)).rowcount:
                return None
            if row[1] <= now:
                return None
            return WebAuthnChallenge(challenge, purpose, row[0], row[1])

        return await self._write(fn)
