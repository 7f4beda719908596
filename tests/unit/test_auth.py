"""policy.passwords and auth.passwords: password policy, argon2id hashing, the bounded verifier
with its success cache, authenticate_password and sasl_secrets_for (against a real SQLite
store)."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from postkeep.auth import passwords
from postkeep.auth.passwords import (
    AuthBusy,
    AuthOutcome,
    PasswordVerifier,
    authenticate_password,
    generate_app_password,
    generate_password,
    hash_app_password,
    hash_password,
    normalize_app_password,
    sasl_secrets_for,
    verify_password,
)
from postkeep.policy.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    ZXCVBN_MAX_LENGTH,
    PasswordRejected,
    address_inputs,
    check_password_policy,
)
from postkeep.sasl.secrets import derive_secrets
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
ADDRESS = "alice@example.test"
PASSWORD = "correct horse battery staple"

# Cheap argon2id parameters for the hashes the tests create (verification reads the parameters
# from the hash); the dummy hash of unknown users and `hash_password` keep the real ones.
_fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def fast_hash(password: str) -> str:
    return _fast.hash(password)


# -- policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", f"at least {MIN_PASSWORD_LENGTH}"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), f"at most {MAX_PASSWORD_LENGTH}"),
        ("correct horse\x00battery", "control characters"),
        ("correct horse\tbattery", "control characters"),
        (" correct horse battery", "edge spaces"),
        ("password1234", "too common"),
        ("qwertyuiop12", "too common"),
        ("letmein12345", "too common"),
        ("iloveyou2024", "too common"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("alice@example.test", "based on the address"),
        ("Alice.Example.2024", "based on the address"),
        ("example-alice-12", "based on the address"),
        ("alicealicealice1", "too easy to guess"),
    ],
)
def test_policy_rejects(password: str, message: str) -> None:
    with pytest.raises(PasswordRejected, match=message):
        check_password_policy(password, [ADDRESS])


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,
        "zq7#Lm2!pX9w",
        "alice correct horse battery",  # the address part is not what makes it strong
        "Tr0ub4dor&3-staple-mirth",
        "ünïcödé-pässwörd-fjørd",
    ],
)
def test_policy_accepts(password: str) -> None:
    check_password_policy(password, [ADDRESS])


def test_policy_scores_only_a_prefix_of_long_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """zxcvbn's cost grows fast with length: it sees at most ZXCVBN_MAX_LENGTH characters,
    however long the password is."""
    import zxcvbn as zxcvbn_package  # imported by the policy on its first check

    scored: list[int] = []
    real = zxcvbn_package.zxcvbn

    def zxcvbn(password: str, user_inputs: list[str] | None = None) -> dict[str, object]:
        scored.append(len(password))
        return real(password, user_inputs=user_inputs)

    monkeypatch.setattr(zxcvbn_package, "zxcvbn", zxcvbn)
    check_password_policy(secrets.token_urlsafe(800)[:MAX_PASSWORD_LENGTH], [ADDRESS])
    assert scored and max(scored) <= ZXCVBN_MAX_LENGTH
    with pytest.raises(PasswordRejected):
        check_password_policy("a" * 100 + secrets.token_urlsafe(30))
    assert max(scored) <= ZXCVBN_MAX_LENGTH


def test_address_inputs() -> None:
    assert address_inputs("Alice.Smith@Mail.Example.TEST") == [
        "alice.smith@mail.example.test", "alice.smith", "mail.example.test", "alice", "smith",
        "mail", "example", "test",
    ]
    assert address_inputs("") == []


def test_generated_passwords() -> None:
    for _ in range(20):
        check_password_policy(generate_password(), [ADDRESS])
    seen = {generate_app_password() for _ in range(50)}
    assert len(seen) == 50
    for app in seen:
        groups = app.split("-")
        assert len(groups) == 4 and all(len(g) == 4 and g.isalnum() for g in groups)
        assert app == app.lower()
        assert normalize_app_password(app) == app.replace("-", "")
        assert normalize_app_password(app.upper().replace("-", " ")) == app.replace("-", "")
    assert normalize_app_password(PASSWORD) is None
    assert normalize_app_password("abcd-efgh-ijkl-mno") is None
    with pytest.raises(PasswordRejected):
        hash_app_password("too short-for one")


def test_hash_and_verify() -> None:
    h = hash_password("short")  # no policy check here: callers check first
    assert h.startswith("$argon2id$")
    assert verify_password(h, "short")
    assert not verify_password(h, "Short")
    assert not verify_password("not-a-hash", "short")
    assert not verify_password(h, "\udcff")  # unencodable input: no crash
    app = generate_app_password()
    assert verify_password(hash_app_password(app), app.replace("-", ""))


# -- verifier --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def run() -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


@pytest.fixture
def verifier() -> Iterator[PasswordVerifier]:
    v = PasswordVerifier()
    yield v
    v.close()


def test_verifier_ok_wrong_and_cache(run: Run) -> None:
    clock = Clock()
    v = PasswordVerifier(cache_ttl=300, clock=clock)
    try:
        h = hash_password(PASSWORD)  # real parameters: a miss costs a real verification
        assert run(v.verify(h, PASSWORD)) is True
        assert v.verifications == 1
        assert run(v.verify(h, PASSWORD)) is True  # cache hit: fast path, no argon2
        assert (v.verifications, v.cache_hits) == (1, 1)
        assert v.cached(h, PASSWORD) and not v.cached(h, PASSWORD + "x")

        assert run(v.verify(h, "wrong password")) is False
        assert run(v.verify(h, "wrong password")) is False  # failures are never cached
        assert v.verifications == 3

        h2 = fast_hash("new password!")  # password changed: new hash, old entries never match
        assert not v.cached(h2, PASSWORD)
        assert run(v.verify(h2, PASSWORD)) is False
        assert v.verifications == 4
        assert run(v.verify(h2, "new password!")) is True and v.verifications == 5

        clock.now += 301  # expired
        assert not v.cached(h, PASSWORD)
        assert run(v.verify(h, PASSWORD)) is True and v.verifications == 6
    finally:
        v.close()


def test_verifier_shares_successes_across_processes(run: Run) -> None:
    """An IMAP worker's verifier asks the main process's cache before any argon2 work and
    reports its own successes to it (postkeep.server.worker wires these over its channel)."""
    main = PasswordVerifier()
    worker = PasswordVerifier(key=main.key)
    asked: list[bytes] = []

    async def lookup(digest: bytes) -> bool:
        asked.append(digest)
        return main.cached_digest(digest)

    worker.shared_lookup = lookup
    worker.on_remember = main.remember_digest
    try:
        h = fast_hash(PASSWORD)
        assert run(main.verify(h, PASSWORD)) and main.verifications == 1
        assert run(worker.verify(h, PASSWORD)) and worker.verifications == 0  # main's success
        assert worker.cached(h, PASSWORD) and len(asked) == 1  # now in its own cache too
        assert run(worker.verify(h, PASSWORD)) and len(asked) == 1
        assert not run(worker.verify(h, "wrong password"))  # a miss is verified, not shared
        assert worker.verifications == 1 and len(asked) == 2
        assert not main.cached(h, "wrong password")
        h2 = fast_hash("another password")
        assert run(worker.verify(h2, "another password")) and worker.verifications == 2
        assert main.cached(h2, "another password")  # reported back
        other = PasswordVerifier()  # another key: digests never match
        assert other._cache_key(h, PASSWORD) != main._cache_key(h, PASSWORD)
        other.close()
    finally:
        main.close()
        worker.close()


def test_verifier_cache_is_bounded(run: Run) -> None:
    v = PasswordVerifier(cache_size=3)
    try:
        hashes = [(fast_hash(f"pw{i}"), f"pw{i}") for i in range(5)]
        for h, p in hashes:
            assert run(v.verify(h, p))
        assert len(v._cache) == 3
        assert not v.cached(*hashes[0]) and v.cached(*hashes[4])
        assert all(len(k) == 32 for k in v._cache)  # HMAC-SHA256 digests, no passwords
    finally:
        v.close()


class Held:
    """Verifications wait in the pool's threads until `release` is set (then verify for real):
    the tests decide when the pool is busy, instead of hoping argon2 is slow enough."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered: list[str] = []  # passwords whose verification reached a worker thread

    def set(self) -> None:
        self.release.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    hold = Held()
    real = passwords.verify_password

    def verify(password_hash: str, password: str) -> bool:
        hold.entered.append(password)
        assert hold.release.wait(60), "never released"
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", verify)
    yield hold
    hold.set()


async def submitted(v: PasswordVerifier, n: int) -> None:
    """Until `n` verifications were handed to the pool or refused as busy."""
    while v.verifications + v.busy < n:
        await asyncio.sleep(0.001)


async def entered(hold: Held, n: int) -> None:
    """Until `n` verifications run in the pool's threads (held there)."""
    while len(hold.entered) < n:
        await asyncio.sleep(0.001)


def test_verifier_busy_when_flooded(run: Run, held: Held) -> None:
    v = PasswordVerifier(max_pending=2)
    h = fast_hash(PASSWORD)

    async def flood() -> list[bool | BaseException]:
        calls = [v.verify(h, f"wrong {i}") for i in range(12)]  # all distinct: no coalescing
        results = asyncio.gather(*calls, return_exceptions=True)
        await submitted(v, 12)
        assert v.waiting <= 2  # the 2 workers hold one each, at most 2 wait
        held.set()
        return await results

    try:
        results = run(flood())
        busy = [r for r in results if isinstance(r, AuthBusy)]
        done = [r for r in results if not isinstance(r, BaseException)]
        assert busy, results
        assert len(busy) + len(done) == 12
        assert 2 <= len(done) <= 4  # max_workers running + max_pending waiting
        assert v.busy == len(busy) and v.waiting == 0
        assert run(v.verify(h, PASSWORD)) is True  # usable again once the queue drained
    finally:
        v.close()


def test_verifier_single_flight(run: Run, held: Held) -> None:
    """A burst of identical logins (devices reconnecting) costs one argon2 run, not a queue
    overflow; a distinct guess still takes its own run."""
    v = PasswordVerifier(max_pending=2)
    h = fast_hash(PASSWORD)

    async def burst() -> list[bool | BaseException]:
        calls = [v.verify(h, PASSWORD) for _ in range(50)] + [v.verify(h, "wrong")]
        results = asyncio.gather(*calls, return_exceptions=True)
        await submitted(v, 2)  # all 51 are waiting now: the first run is held
        held.set()
        return await results

    try:
        results = run(burst())
        assert results == [True] * 50 + [False]
        assert v.verifications == 2 and v.busy == 0
    finally:
        v.close()


def test_verifier_cancelled_waiters_are_counted_off(run: Run, held: Held) -> None:
    v = PasswordVerifier(max_workers=1, max_pending=4)
    h = fast_hash(PASSWORD)

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(v.verify(h, "wrong 0"))]
        await entered(held, 1)  # held in the only worker thread: the next ones wait
        tasks += [asyncio.ensure_future(v.verify(h, f"wrong {i}")) for i in range(1, 5)]
        await submitted(v, 5)
        assert (v.waiting, v.busy) == (4, 0)
        for t in tasks[1:]:
            t.cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        for _ in range(100):  # the cancellations reach the pool within a few loop passes
            if v.waiting == 0:
                break
            await asyncio.sleep(0)
        assert v.waiting == 0  # the cancelled ones were counted off before they ever ran
        assert held.entered == ["wrong 0"]
        held.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        run(scenario())
        assert v.waiting == 0
    finally:
        v.close()


# -- authenticate_password / sasl_secrets_for ------------------------------------------------------


@pytest.fixture
def store(run: Run, tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data", secrets.token_bytes(32))
    run(s.open())
    run(s.add_domain("example.test"))
    run(s.add_account(ADDRESS, fast_hash(PASSWORD), secrets=derive_secrets(ADDRESS, PASSWORD)))
    yield s
    run(s.close())


def auth(run: Run, store: SqlStore, verifier: PasswordVerifier, password: str,
         scope: str = "smtp", address: str = ADDRESS) -> AuthOutcome:
    outcome: AuthOutcome = run(authenticate_password(store, address, password, scope, verifier))
    return outcome


def add_app(run: Run, store: SqlStore, name: str, scopes: list[str]) -> str:
    app = generate_app_password()
    canonical = normalize_app_password(app)
    assert canonical is not None
    run(store.add_app_password(ADDRESS, name, fast_hash(canonical), scopes))
    return app


def test_authenticate_account_password(run: Run, store: SqlStore, verifier: PasswordVerifier
                                       ) -> None:
    out = auth(run, store, verifier, PASSWORD)
    assert out.ok and out.via == "password" and out.reason == ""
    assert out.account is not None and out.account.address == ADDRESS
    assert auth(run, store, verifier, PASSWORD, address="ALICE@Example.Test").ok
    assert auth(run, store, verifier, PASSWORD, scope="imap").ok
    bad = auth(run, store, verifier, "wrong password")
    assert (bad.ok, bad.account, bad.via, bad.reason) == (False, None, "", "wrong password")
    assert auth(run, store, verifier, "").reason == "empty password"
    assert not auth(run, store, verifier, "x" * 5000).ok
    with pytest.raises(ValueError):
        auth(run, store, verifier, PASSWORD, scope="pop3")


def test_authenticate_app_passwords(run: Run, store: SqlStore, verifier: PasswordVerifier
                                    ) -> None:
    phone = add_app(run, store, "phone", ["smtp"])
    laptop = add_app(run, store, "laptop", ["smtp", "imap"])
    started = time.time()
    out = auth(run, store, verifier, phone)
    assert out.ok and out.via == "app-password:phone"
    # typed without dashes, in upper case: the same app password
    assert auth(run, store, verifier, phone.replace("-", "").upper()).via == "app-password:phone"
    assert auth(run, store, verifier, laptop, scope="imap").via == "app-password:laptop"
    wrong_scope = auth(run, store, verifier, phone, scope="imap")
    assert not wrong_scope.ok and wrong_scope.reason == "wrong password"
    assert not auth(run, store, verifier, generate_app_password()).ok
    assert auth(run, store, verifier, PASSWORD).via == "password"  # still allowed

    run(store.sync())  # the use was recorded (fire-and-forget)
    used = {a.name: a.last_used for a in run(store.list_app_passwords(ADDRESS))}
    assert used["phone"] is not None and started <= used["phone"] <= time.time()

    run(store.revoke_app_password(ADDRESS, "phone"))
    revoked = auth(run, store, verifier, phone)
    assert not revoked.ok and revoked.account is None
    assert auth(run, store, verifier, laptop).ok


def test_authenticate_app_passwords_only(run: Run, store: SqlStore, verifier: PasswordVerifier
                                         ) -> None:
    phone = add_app(run, store, "phone", ["smtp", "imap"])
    assert auth(run, store, verifier, PASSWORD).ok  # warm the cache for the account password
    run(store.set_app_passwords_only(ADDRESS, True))
    refused = auth(run, store, verifier, PASSWORD)  # even with a cached success
    assert not refused.ok and "app passwords only" in refused.reason
    assert auth(run, store, verifier, phone).via == "app-password:phone"
    run(store.set_app_passwords_only(ADDRESS, False))
    assert auth(run, store, verifier, PASSWORD).ok


def argon2_parameters(password_hash: str) -> str:
    """The algorithm, version and cost parameters of a PHC string ("argon2id$v=19$m=...")."""
    _, algorithm, version, parameters, _salt, _digest = password_hash.split("$")
    return f"{algorithm}${version}${parameters}"


def test_authenticate_disabled_and_unknown(run: Run, store: SqlStore, verifier: PasswordVerifier,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    phone = add_app(run, store, "phone", ["smtp"])
    assert auth(run, store, verifier, PASSWORD).ok
    run(store.set_disabled(ADDRESS, True))
    for password in (PASSWORD, phone):
        out = auth(run, store, verifier, password)
        assert (out.ok, out.account, out.reason) == (False, None, "account disabled")
    before = verifier.verifications
    verified: list[str] = []
    real = passwords.verify_password

    def verify(password_hash: str, password: str) -> bool:
        verified.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", verify)
    out = auth(run, store, verifier, PASSWORD, address="nobody@example.test")
    assert (out.ok, out.account, out.reason) == (False, None, "unknown user")
    assert verifier.verifications == before + 1  # a dummy verification: same work as a real one
    # ... against a hash with the parameters real accounts get (hash_password's), so it costs
    # what a wrong password for a real account costs
    (dummy,) = verified
    assert argon2_parameters(dummy) == argon2_parameters(hash_password("another one"))
    assert not auth(run, store, verifier, PASSWORD, address="").ok


def test_password_change_invalidates_cache(run: Run, store: SqlStore,
                                           verifier: PasswordVerifier) -> None:
    assert auth(run, store, verifier, PASSWORD).ok
    new = "an entirely new passphrase"
    run(store.set_password(ADDRESS, fast_hash(new), derive_secrets(ADDRESS, new)))
    assert not auth(run, store, verifier, PASSWORD).ok
    assert auth(run, store, verifier, new).ok


def test_sasl_secrets_for(run: Run, store: SqlStore) -> None:
    found = run(sasl_secrets_for(store, "Alice@example.test", "smtp"))
    assert found is not None
    assert set(found) == {"SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5", "DIGEST-MD5"}
    assert run(sasl_secrets_for(store, "nobody@example.test", "smtp")) is None
    run(store.set_app_passwords_only(ADDRESS, True))
    assert run(sasl_secrets_for(store, ADDRESS, "imap")) is None
    run(store.set_app_passwords_only(ADDRESS, False))
    run(store.set_disabled(ADDRESS, True))
    assert run(sasl_secrets_for(store, ADDRESS, "smtp")) is None
