"""Bans and known clients (`postkeep.bans`) in the store, on both backends: a ban replaces the
key's last, is listed while in force, ended early by `remove_ban` (its row kept for the next
level), old rows dropped; a known client is remembered, looked up by recency, forgotten."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.store.api import Ban
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]


def test_bans(run: Run, store: SqlStore) -> None:
    now = time.time()
    first = Ban("192.0.2.1/32", now + 900, "auth failures", 10.0, 0, now)
    net = Ban("192.0.2.0/24", now + 900, "auth failures", 31.5, 0, now)
    run(store.put_ban(first, 86400))
    run(store.put_ban(net, 86400))
    assert run(store.list_bans(now)) == [net, first]  # by key
    again = Ban(first.key, now + 3600, "unknown recipients", 10.0, 1, now + 1)
    run(store.put_ban(again, 86400))
    assert run(store.get_ban(first.key)) == again
    assert run(store.remove_ban(first.key)) is True
    assert run(store.remove_ban(first.key)) is False  # not in force any more
    ended = run(store.get_ban(first.key))
    assert ended is not None and ended.level == 1 and ended.until <= time.time()
    assert run(store.list_bans(time.time())) == [net]
    # a ban made long after: rows that ended `forget_after` before it go
    later = Ban("198.51.100.7/32", now + 10 * 86400, "by hand", 0.0, 0, now + 9 * 86400)
    run(store.put_ban(later, 86400))
    assert run(store.get_ban(first.key)) is None and run(store.get_ban(net.key)) is None
    assert run(store.get_ban("203.0.113.1/32")) is None


def test_known_clients(run: Run, store: SqlStore) -> None:
    now = time.time()
    run(store.remember_client("Alice@Example.test", "192.0.2.1", now - 100, now - 1000))
    assert run(store.known_client("alice@example.test", "192.0.2.1", now - 200))
    assert not run(store.known_client("alice@example.test", "192.0.2.1", now - 50))
    assert not run(store.known_client("alice@example.test", "192.0.2.2", now - 200))
    run(store.remember_client("alice@example.test", "192.0.2.1", now, now - 1000))  # again
    assert run(store.known_client("alice@example.test", "192.0.2.1", now - 50))
    run(store.remember_client("bob@example.test", "2001:db8::/64", now + 5000, now + 10))
    assert not run(store.known_client("alice@example.test", "192.0.2.1", 0))  # forgotten
    assert run(store.known_client("bob@example.test", "2001:db8::/64", now))
