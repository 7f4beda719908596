"""Argon2id hashing, bounded verification and password authentication: a service for every
protocol (the password *policy* is `postkeep.policy.passwords`).

Passwords are never stored: only an argon2id PHC string (RFC 9106), verified in constant time by
argon2-cffi, plus the per-SASL-mechanism secrets the store keeps for challenge-response
mechanisms (`postkeep.sasl.secrets`).

* `hash_password` hashes WITHOUT checking the policy: callers check first
  (`policy.passwords.check_password_policy`; app passwords, which are generated, skip it).
* `PasswordVerifier` runs argon2 verifications in a small thread pool ("slow hashing, fast
  logins" in the architecture): at most `max_workers` at once, and at most `max_pending` waiting —
  beyond that `AuthBusy`, which the protocol drivers answer with SMTP ``454 4.7.0`` / IMAP
  ``NO [UNAVAILABLE]`` instead of queueing without bound. Successful verifications are cached for
  `cache_ttl` seconds under HMAC-SHA256(per-process random key, hash NUL password): the cache
  never holds a password or a plain hash of one, and a password change changes the hash, so old
  entries can never match again; failures are never cached.
* `authenticate_password` decides a password login (PLAIN, LOGIN): app passwords whose scopes
  include the protocol first, then the account password unless the account is "app passwords
  only". Unknown and disabled accounts cost one argon2 verification against a dummy hash, like a
  wrong password for a real one, so timing does not tell them apart.
* `sasl_secrets_for` hands the stored mechanism secrets to the challenge-response mechanisms
  (CRAM-MD5, DIGEST-MD5, SCRAM-*), or None when the account may not use them.

App passwords are generated here (`generate_app_password`: 4 groups of 4 lower-case letters and
digits, about 82 bits) and hashed in their normalised form, so users may type them with or
without the dashes, in any case.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postkeep.errors import StoreError
from postkeep.policy.passwords import MAX_PASSWORD_LENGTH, PasswordRejected, check_password_policy
from postkeep.store.api import APP_PASSWORD_SCOPES, Account, AppPassword, Store

log = logging.getLogger("postkeep.auth")

APP_PASSWORD_ALPHABET = string.ascii_lowercase + string.digits
APP_PASSWORD_GROUPS = 4
APP_PASSWORD_GROUP_SIZE = 4
_APP_PASSWORD = re.compile(rf"[a-z0-9]{{{APP_PASSWORD_GROUPS * APP_PASSWORD_GROUP_SIZE}}}")
_APP_PASSWORD_SEPARATORS = str.maketrans("", "", " -")

_hasher = PasswordHasher()  # argon2id, RFC 9106 "second recommended" parameters


class AuthBusy(Exception):
    """Too many password verifications are waiting: answer 454 4.7.0 / NO [UNAVAILABLE]."""


# -- hashing ---------------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def hash_password(password: str) -> str:
    """The argon2id PHC string of `password` (no policy check: callers check first)."""
    return _hasher.hash(_utf8(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches the argon2 `password_hash` (constant time; False if the hash is
    not a valid argon2 hash). Slow on purpose: call it through a `PasswordVerifier`."""
    try:
        return _hasher.verify(password_hash, _utf8(password))
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A random password (about 120 bits) that passes the policy, shown once to the operator."""
    while True:
        password = secrets.token_urlsafe(15)
        try:
            check_password_policy(password)
        except PasswordRejected:
            continue
        return password


def generate_app_password() -> str:
    """A random app password: 4 groups of 4 lower-case letters and digits (about 82 bits),
    e.g. ``"k3xq-9tmw-a0cz-77pe"``."""
    return "-".join(
        "".join(secrets.choice(APP_PASSWORD_ALPHABET) for _ in range(APP_PASSWORD_GROUP_SIZE))
        for _ in range(APP_PASSWORD_GROUPS)
    )


def normalize_app_password(text: str) -> str | None:
    """The canonical form of an app password as typed (no spaces or dashes, lower case), or
    None if `text` cannot be one."""
    candidate = text.translate(_APP_PASSWORD_SEPARATORS).lower()
    return candidate if _APP_PASSWORD.fullmatch(candidate) else None


def hash_app_password(app_password: str) -> str:
    """The argon2id hash of an app password's canonical form (see `normalize_app_password`)."""
    canonical = normalize_app_password(app_password)
    if canonical is None:
        raise PasswordRejected("not an app password (4 groups of 4 letters and digits)")
    return hash_password(canonical)


_dummy_lock = threading.Lock()
_dummy: list[str] = []


def _dummy_hash() -> str:
    """A hash of a random password with the real parameters, made once per process (and
    inherited by the processes it forks after: `prepare_dummy_hash`)."""
    with _dummy_lock:
        if not _dummy:
            _dummy.append(hash_password(secrets.token_urlsafe(24)))
        return _dummy[0]


def prepare_dummy_hash() -> None:
    """Make the dummy hash now. The server's main process calls it before it forks the
    workers, which then have it from the start: each making its own cost an argon2 run (64 MiB
    for its moment, 0.3 CPU-s) while the worker had just begun to serve."""
    _dummy_hash()


def _verify_dummy(password: str) -> bool:
    """An argon2 verification as costly as a real one, against a random hash (always False)."""
    verify_password(_dummy_hash(), password)
    return False


# -- bounded verification --------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Flight:
    """One verification in flight and how many callers wait for it."""

    task: asyncio.Future[bool]
    waiters: int = 0


class PasswordVerifier:
    """Verifies argon2 hashes in a bounded thread pool, with a cache of recent successes.

    Implements "slow hashing, fast logins": `max_workers` threads, at most `max_pending`
    verifications waiting (more: `AuthBusy`), successes cached for `cache_ttl` seconds (at most
    `cache_size` entries) under an HMAC with a per-process random key (see the module docstring).
    One verifier serves the whole server; call it from the server's event loop.
    """

    def __init__(
        self,
        *,
        max_workers: int = 2,
        max_pending: int = 32,
        cache_ttl: float = 300.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        key: bytes | None = None,
    ) -> None:
        """`key`: the cache's HMAC key (default: a new random one). Processes that share
        successes (`shared_lookup` / `on_remember`, IMAP workers:
        `postkeep.server.workers`) must use the same key."""
        self.max_pending = max_pending
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.verifications = 0  # argon2 runs (real and dummy)
        self.cache_hits = 0
        self.busy = 0  # AuthBusy raised
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)
        # another process's cache of successes (IMAP workers ask the main process's)
        self.shared_lookup: Callable[[bytes], Awaitable[bool]] | None = None
        self.on_remember: Callable[[bytes], None] | None = None
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None  # made by the first verification or `warm`
        self._closed = False
        self._lock = threading.Lock()
        self._waiting = 0
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._inflight: dict[bytes, _Flight] = {}

    def warm(self) -> None:
        """Start the verification threads and make the dummy hash now, so that it is ready
        before the first unknown user tries. A verifier that only keeps the cache for other
        processes (the server's main process) never calls it and never starts a thread."""
        self._executor().submit(_dummy_hash)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            if self._closed:
                raise RuntimeError("password verifier is shut down")
            self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="auth-verify")
        return self._pool

    @property
    def waiting(self) -> int:
        """Verifications submitted and not yet started."""
        return self._waiting

    def _cache_key(self, password_hash: str, password: str) -> bytes:
        message = _utf8(password_hash) + b"\0" + _utf8(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    @property
    def key(self) -> bytes:
        return self._key

    def cached(self, password_hash: str, password: str) -> bool:
        """Whether `password` verified against `password_hash` within the last `cache_ttl`
        seconds (no argon2 work). The lookup key is an HMAC under a secret key, so its timing
        reveals nothing an attacker could steer."""
        return self.cached_digest(self._cache_key(password_hash, password))

    def cached_digest(self, key: bytes) -> bool:
        """`cached` by the HMAC itself (what another process sends)."""
        now = self._clock()
        with self._lock:
            expires = self._cache.get(key)
            if expires is None:
                return False
            if expires <= now:
                del self._cache[key]
                return False
        self.cache_hits += 1
        return True

    def _remember(self, password_hash: str, password: str) -> None:
        key = self._cache_key(password_hash, password)
        self.remember_digest(key)
        if self.on_remember is not None:
            self.on_remember(key)

    def remember_digest(self, key: bytes) -> None:
        """Cache a success by its HMAC (also what another process reports)."""
        if self.cache_ttl <= 0 or self.cache_size <= 0:
            return
        now = self._clock()
        with self._lock:
            cache = self._cache
            while cache:  # entries are in expiry order: drop the expired ones at the front
                first = next(iter(cache))
                if cache[first] > now:
                    break
                del cache[first]
            cache.pop(key, None)
            cache[key] = now + self.cache_ttl
            while len(cache) > self.cache_size:
                cache.popitem(last=False)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches `password_hash`: from the cache, else by argon2 in the pool.

        Identical verifications in flight are done once ("single flight"): a burst of logins of
        one account (many devices reconnecting after a restart) costs one argon2 run, not one
        each. Raises AuthBusy when `max_pending` verifications are waiting already.
        """
        if self.cached(password_hash, password):
            return True
        key = self._cache_key(password_hash, password)
        if self.shared_lookup is not None and await self.shared_lookup(key):
            self.remember_digest(key)
            self.cache_hits += 1
            return True
        flight = self._inflight.get(key)
        if flight is None:
            task = asyncio.ensure_future(self._submit(verify_password, password_hash, password))
            flight = self._inflight[key] = _Flight(task)
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        flight.waiters += 1
        try:
            ok = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.task.done():
                flight.task.cancel()  # nobody waits for it any more
        if ok:
            self._remember(password_hash, password)
        return ok

    async def verify_dummy(self, password: str) -> bool:
        """Spend one verification's work without a real hash (unknown or disabled accounts)."""
        await self._submit(lambda _h, p: _verify_dummy(p), "", password)
        return False

    async def _submit(self, fn: Callable[[str, str], bool], password_hash: str, password: str
                      ) -> bool:
        with self._lock:
            if self._waiting >= self.max_pending:
                self.busy += 1
                raise AuthBusy("too many password verifications waiting")
            self._waiting += 1

        def run() -> bool:
            with self._lock:
                self._waiting -= 1
            return fn(password_hash, password)

        def done(future: Future[bool]) -> None:
            if future.cancelled():  # cancelled before it started: run() never counted it off
                with self._lock:
                    self._waiting -= 1

        try:
            cf = self._executor().submit(run)
        except RuntimeError:  # shut down
            with self._lock:
                self._waiting -= 1
            raise AuthBusy("password verifier is shut down") from None
        cf.add_done_callback(done)
        self.verifications += 1
        return await asyncio.wrap_future(cf)

    def close(self) -> None:
        """Stop the worker threads (verifications not yet started are cancelled)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# -- authentication decisions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """The result of a password login.

    `via` is "password", "app-password:<name>", or "" on failure; `reason` says why it failed
    (for the server log only: never tell the client more than "invalid credentials").
    """

    ok: bool
    account: Account | None
    via: str
    reason: str


def _check_scope(scope: str) -> None:
    if scope not in APP_PASSWORD_SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(APP_PASSWORD_SCOPES)}")


def _failed(reason: str) -> AuthOutcome:
    return AuthOutcome(False, None, "", reason)


async def authenticate_password(
    store: Store, address: str, password: str, scope: str, verifier: PasswordVerifier
) -> AuthOutcome:
    """Decide a password login of `address` for protocol `scope` ("smtp", "imap").

    Tries the account's active app passwords whose scopes include `scope` (only when `password`
    has the app password form; a successful one has its last use recorded), then the account
    password unless the account is app-passwords-only. Recent successes come from the verifier's
    cache before any argon2 work. Unknown and disabled accounts fail after a dummy verification.
    Raises AuthBusy when the verifier is saturated.
    """
    _check_scope(scope)
    if not password:
        return _failed("empty password")
    if len(password) > MAX_PASSWORD_LENGTH:
        return _failed("password too long")
    record = await store.get_auth(address.strip()) if address.strip() else None
    if record is None:
        await verifier.verify_dummy(password)
        return _failed("unknown user")
    account = record.account
    if account.disabled:
        await verifier.verify_dummy(password)
        return _failed("account disabled")
    canonical = normalize_app_password(password)
    candidates: list[tuple[str, str, AppPassword | None]] = []
    if canonical is not None:
        candidates += [
            (ap.password_hash, canonical, ap) for ap in record.app_passwords if scope in ap.scopes
        ]
    if not account.app_passwords_only:
        candidates.append((account.password_hash, password, None))
    ok, found = False, None
    for password_hash, candidate, app_password in candidates:  # fast path: no argon2 work
        if verifier.cached(password_hash, candidate):
            ok, found = True, app_password
            break
    if not candidates:
        await verifier.verify_dummy(password)
    elif not ok:
        for password_hash, candidate, app_password in candidates:
            if await verifier.verify(password_hash, candidate):
                ok, found = True, app_password
                break
    if not ok:
        if account.app_passwords_only:
            return _failed("wrong password: the account accepts app passwords only (two-factor"
                           " authentication on, or set by the operator)")
        return _failed("wrong password")
    if found is None:
        return AuthOutcome(True, account, "password", "")
    try:
        await store.touch_app_password(found.id, time.time())
    except StoreError as exc:
        log.warning("cannot record the use of app password %s: %s", found.id, exc)
    return AuthOutcome(True, account, f"app-password:{found.name}", "")


async def sasl_secrets_for(store: Store, address: str, scope: str) -> Mapping[str, str] | None:
    """The stored secrets (mechanism → secret) for CRAM-MD5, DIGEST-MD5 and SCRAM-*, or None if
    the account is unknown, disabled or app-passwords-only (app passwords have no such secrets).

    `scope` is the protocol asking ("smtp", "imap"); the secrets are the same for both.
    """
    _check_scope(scope)
    record = await store.get_auth(address.strip()) if address.strip() else None
    if record is None or record.account.disabled or record.account.app_passwords_only:
        return None
    return dict(record.secrets)
