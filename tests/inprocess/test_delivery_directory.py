"""postkeep.delivery.directory.StoreDirectory over the harness's store: lookups (accounts,
aliases, catch-alls, unknown and non-local addresses, postmaster), the TTL cache of addresses
and of the local domains (counted in store calls, with a controlled clock), `note_delivery`,
the entry bound; and on the real MX, that quota usage counts from the next RCPT and that a
change made elsewhere is seen once the TTL has passed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from postkeep.delivery import directory as directory_mod
from postkeep.delivery.directory import TTL, StoreDirectory
from tests.harness import Harness, unique
from tests.inprocess.conftest import ALICE, BOB, CAROL, DOMAIN, NOPM_DOMAIN, POSTMASTER, TEAM


class Clock:
    """Stands in for the directory module's `time`: stopped where it was, moved only by the
    test (cache ages then do not depend on how fast the machine runs the test)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(directory_mod, "time", c)
    return c


class CountingStore:
    """The harness's store, counting the calls the directory makes."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def counted(*args: Any) -> Any:
            self.calls[name if name != "resolve_local" else f"resolve {args[0]}"] += 1
            return await method(*args)

        return counted


@pytest.fixture
def counted(harness: Harness) -> CountingStore:
    return CountingStore(harness.db)


@pytest.fixture
def d(harness: Harness, counted: CountingStore, clock: Clock) -> Iterator[StoreDirectory]:
    yield StoreDirectory(counted)  # type: ignore[arg-type]


def addresses(accounts: list[Any] | None) -> list[str] | None:
    return None if accounts is None else sorted(a.address for a in accounts)


def test_lookups(harness: Harness, d: StoreDirectory) -> None:
    r = harness.run
    assert addresses(r(d.resolve(ALICE))) == [ALICE]
    assert addresses(r(d.resolve("Alice@EXAMPLE.test"))) == [ALICE]
    assert addresses(r(d.resolve(TEAM))) == [ALICE, BOB]
    assert addresses(r(d.resolve("whoever@catchall.test"))) == [CAROL]
    assert r(d.resolve("nobody@example.test")) is None
    assert r(d.resolve("alice@remote.test")) is None
    assert r(d.is_local_domain(DOMAIN)) and r(d.is_local_domain(NOPM_DOMAIN))
    assert not r(d.is_local_domain("remote.test"))
    assert DOMAIN in r(d.local_domains())


def test_address_cache_positive_and_negative(harness: Harness, d: StoreDirectory,
                                             counted: CountingStore, clock: Clock) -> None:
    r = harness.run
    late = f"{unique('late')}@example.test"
    for _ in range(3):
        assert addresses(r(d.resolve(ALICE))) == [ALICE]
        assert addresses(r(d.resolve(ALICE.upper()))) == [ALICE]  # one entry, any case
        assert r(d.resolve(late)) is None
    assert counted.calls[f"resolve {ALICE}"] == 1 and counted.calls[f"resolve {ALICE.upper()}"] == 0
    assert counted.calls[f"resolve {late}"] == 1  # the "no" is cached too
    harness.add_user(late)
    clock.advance(TTL - 0.5)
    assert r(d.resolve(late)) is None  # within the TTL: the cached answer
    clock.advance(1.0)
    assert addresses(r(d.resolve(late))) == [late]  # past it: asked again, seen
    assert counted.calls[f"resolve {late}"] == 2


def test_local_domain_cache(harness: Harness, d: StoreDirectory, counted: CountingStore,
                            clock: Clock) -> None:
    r = harness.run
    domain = f"{unique('dom')}.test"
    for _ in range(5):
        assert not r(d.is_local_domain(domain))
    assert counted.calls["list_domains"] == 1
    harness.add_domain(domain)
    clock.advance(TTL - 0.5)
    assert not r(d.is_local_domain(domain))
    clock.advance(1.0)
    assert r(d.is_local_domain(domain))
    assert counted.calls["list_domains"] == 2


def test_note_delivery_updates_every_cached_key(harness: Harness, d: StoreDirectory) -> None:
    r = harness.run
    user = harness.new_user("catchall.test", quota=10_000)
    alias = f"{unique('al')}@catchall.test"
    harness.add_alias(alias, user, ALICE)
    for address in (user, alias, user.upper()):
        r(d.resolve(address))
    account = harness.account(user)
    d.note_delivery([account.id], 700)
    d.note_delivery([account.id], 300)
    by_alias = {a.address: a.used_bytes for a in r(d.resolve(alias)) or []}
    assert by_alias == {user: 1000, ALICE: harness.account(ALICE).used_bytes}
    assert [a.used_bytes for a in r(d.resolve(user)) or []] == [1000]
    d.note_delivery([10**9], 5)  # an account nobody looked up: nothing to update


def test_entries_are_bounded(harness: Harness, d: StoreDirectory, counted: CountingStore,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ENTRIES the oldest quarter is dropped; accounts' back references with them."""
    monkeypatch.setattr(directory_mod, "MAX_ENTRIES", 8)
    r = harness.run
    names = [f"n{i}-{unique()}@catchall.test" for i in range(9)]  # each reaches carol
    for name in names:
        r(d.resolve(name))
    assert len(d._cache) == 7  # 8 reached: 2 dropped, the 9th added
    for name in names[2:]:
        r(d.resolve(name))
    assert all(counted.calls[f"resolve {n}"] == 1 for n in names[2:])  # still cached
    r(d.resolve(names[0]))
    assert counted.calls[f"resolve {names[0]}"] == 2  # dropped, asked again
    keys = {k for ks in d._keys_of.values() for k in ks}
    assert keys <= set(d._cache)  # no back reference to a dropped entry


def test_postmaster(harness: Harness, d: StoreDirectory) -> None:
    r = harness.run
    assert addresses(r(d.postmaster(DOMAIN))) == [POSTMASTER]
    assert addresses(r(d.postmaster(NOPM_DOMAIN))) == [POSTMASTER]  # the first domain's
    assert addresses(r(d.postmaster("catchall.test"))) == [CAROL]  # its catch-all reaches her
    # "first" is the first created, not the first by name
    early = f"a-{unique('pm')}.test"
    harness.add_domain(early)
    harness.add_user(f"postmaster@{early}")
    assert addresses(r(d.postmaster(None))) == [POSTMASTER]
    assert addresses(r(d.postmaster(early))) == [f"postmaster@{early}"]


def test_mx_sees_changes_after_the_ttl(harness: Harness, clock: Clock) -> None:
    """The MX's own directory: an address refused once is accepted once the TTL has passed
    after the account was made elsewhere (here: through the store, as the CLI does)."""
    address = f"{unique('new')}@example.test"
    with harness.smtp() as client:
        client.ehlo()
        client.mail("sender@remote.test")
        assert client.rcpt(address)[0] == 550
        harness.add_user(address)
        assert client.rcpt(address)[0] == 550  # cached for TTL seconds
        clock.advance(TTL + 0.5)
        assert client.rcpt(address)[0] == 250
