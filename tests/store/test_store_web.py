"""Web sessions and the login history in the store, on both backends: a session is found by
its token's hash only, ends when it expires or idles, is bounded per account (the oldest go),
advances to a new stage under a new token, and is listed and ended only for its own account;
the login history is per account, newest first, and bounded in time; both go with the
account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from postkeep.store.api import WEB_DONE, WEB_SECOND_FACTOR, Account, LoginRecord
from postkeep.store.sql.schema import web_sessions
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
NOW = 1_800_000_000.0


@pytest.fixture
def accounts(run: Run, store: SqlStore) -> tuple[Account, Account]:
    run(store.add_domain("example.org"))
    return (run(store.add_account("alice@example.org", "x")),
            run(store.add_account("bob@example.org", "x")))


def _add(run: Run, store: SqlStore, hash_: str, account: Account, when: float = NOW,
         keep: int = 5) -> int:
    session = run(store.add_web_session(hash_, account.id, WEB_DONE, when, when + 3600,
                                        "192.0.2.1", "Agent/1 " + "x" * 400, keep))
    return int(session.id)


def test_sessions_found_by_hash_and_ended_by_time(
        run: Run, store: SqlStore, accounts: tuple[Account, Account], db_url: str) -> None:
    alice, _ = accounts
    sid = _add(run, store, "a" * 64, alice)
    found = run(store.get_web_session("a" * 64, NOW + 10, NOW - 600))
    assert found is not None and found.id == sid and found.account_id == alice.id
    assert len(found.user_agent) == 255
    assert run(store.get_web_session("b" * 64, NOW, NOW - 600)) is None
    run(store.touch_web_session(sid, NOW + 500))
    assert run(store.get_web_session("a" * 64, NOW + 900, NOW + 900 - 600)) is not None
    assert run(store.get_web_session("a" * 64, NOW + 1200, NOW + 1200 - 600)) is None  # idle
    assert run(store.list_web_sessions(alice.id, NOW)) == []  # and removed
    _add(run, store, "c" * 64, alice)
    assert run(store.get_web_session("c" * 64, NOW + 3600, NOW)) is None  # expired
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(web_sessions)).all() == []
    finally:
        engine.dispose()


def test_sessions_bounded_advanced_and_scoped_to_their_account(
        run: Run, store: SqlStore, accounts: tuple[Account, Account]) -> None:
    alice, bob = accounts
    ids = [_add(run, store, f"{i:064x}", alice, NOW + i, keep=3) for i in range(4)]
    listed = run(store.list_web_sessions(alice.id, NOW))
    assert [s.id for s in listed] == ids[:0:-1]  # the oldest went; newest first
    bob_id = _add(run, store, "f" * 64, bob)
    assert not run(store.remove_web_session(alice.id, bob_id))  # not alice's
    assert run(store.get_web_session("f" * 64, NOW, NOW - 600)) is not None
    assert run(store.remove_web_session(alice.id, ids[1]))
    assert not run(store.remove_web_session(alice.id, ids[1]))
    pending = run(store.add_web_session("e" * 64, alice.id, WEB_SECOND_FACTOR, NOW, NOW + 60,
                                        "::1", "", 10))
    run(store.advance_web_session(pending.id, "d" * 64, WEB_DONE, NOW + 1))
    assert run(store.get_web_session("e" * 64, NOW + 2, NOW)) is None  # the old token ended
    advanced = run(store.get_web_session("d" * 64, NOW + 2, NOW))
    assert advanced is not None and advanced.stage == WEB_DONE
    assert run(store.remove_web_sessions(alice.id, keep_id=pending.id)) == 2
    assert [s.id for s in run(store.list_web_sessions(alice.id, NOW))] == [pending.id]
    assert [s.id for s in run(store.list_web_sessions(bob.id, NOW))] == [bob_id]
    run(store.remove_account("alice@example.org"))
    assert run(store.get_web_session("d" * 64, NOW + 2, NOW)) is None


def test_login_history_per_account_newest_first_and_bounded(
        run: Run, store: SqlStore, accounts: tuple[Account, Account]) -> None:
    alice, bob = accounts
    for i in range(5):
        run(store.add_login(LoginRecord(alice.id, NOW + i, "192.0.2.1", "web password",
                                        "ok" if i % 2 else "failed", ""), NOW - 86400))
    run(store.add_login(LoginRecord(bob.id, NOW, "192.0.2.9", "imap LOGIN", "ok", ""), 0))
    logins = run(store.list_logins(alice.id, 3))
    assert [r.time for r in logins] == [NOW + 4, NOW + 3, NOW + 2]
    assert logins[0] == LoginRecord(alice.id, NOW + 4, "192.0.2.1", "web password", "failed",
                                    "")
    run(store.add_login(LoginRecord(alice.id, NOW + 10, "192.0.2.1", "smtp PLAIN", "ok", ""),
                        NOW + 3))  # the lines before NOW + 3 go
    assert [r.time for r in run(store.list_logins(alice.id, 10))] == [NOW + 10, NOW + 4,
                                                                        NOW + 3]
    assert [r.method for r in run(store.list_logins(bob.id, 10))] == ["imap LOGIN"]
    run(store.remove_account("bob@example.org"))
    assert run(store.list_logins(bob.id, 10)) == []
