"""The junk filter's store (migration 14, `postkeep.store.sql.junk`) on both backends:
learning counts each token once per message in the account's and the instance's scope, is
idempotent per (message, class), a change of class un-learns first; tokens are stored as
keyed hashes, not words; allow/block entries by owner, matching a sender's address, domain
and parent domains; correspondents; an account's rows go with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import create_engine, select

from postkeep.store.api import JunkListEntry
from postkeep.store.sql.schema import junk_tokens
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]


def _account(run: Run, store: SqlStore, address: str) -> int:
    if run(store.get_domain("example.test")) is None:
        run(store.add_domain("example.test"))
    return int(run(store.add_account(address, "pw")).id)


def test_learning_counts_and_idempotence(run: Run, store: SqlStore, db_url: str) -> None:
    alice = _account(run, store, "alice@example.test")
    bob = _account(run, store, "bob@example.test")
    assert run(store.junk_learn(alice, "blob1", True, ["viagra", "cheap", "cheap"])) == "learnt"
    assert run(store.junk_learn(alice, "blob1", True, ["viagra", "cheap"])) == "already"
    assert run(store.junk_learn(bob, "blob2", False, ["meeting", "cheap"])) == "learnt"
    counts = run(store.junk_counts([alice, 0, bob], ["viagra", "cheap", "meeting", "never"]))
    assert (counts[alice].spam, counts[alice].ham) == (1, 0)
    assert dict(counts[alice].tokens) == {"viagra": (1, 0), "cheap": (1, 0)}
    assert (counts[0].spam, counts[0].ham) == (1, 1)
    assert dict(counts[0].tokens) == {"viagra": (1, 0), "cheap": (1, 1), "meeting": (0, 1)}
    assert dict(counts[bob].tokens) == {"meeting": (0, 1), "cheap": (0, 1)}
    # moved out of Junk: un-learnt as spam, learnt as ham
    assert run(store.junk_learn(alice, "blob1", False, ["viagra", "cheap"])) == "relearnt"
    counts = run(store.junk_counts([alice, 0], ["viagra", "cheap"]))
    assert (counts[alice].spam, counts[alice].ham) == (0, 1)
    assert dict(counts[alice].tokens) == {"viagra": (0, 1), "cheap": (0, 1)}
    assert dict(counts[0].tokens) == {"viagra": (0, 1), "cheap": (0, 2)}
    # no word is in the table: the tokens are keyed hashes
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(junk_tokens.c.token)).scalars().all()
    finally:
        engine.dispose()
    assert stored and all(isinstance(t, int) for t in stored)
    assert run(store.junk_counts([5], ["x"]))[5].tokens == {}


def test_counts_skip_classifiers_not_ready(run: Run, store: SqlStore) -> None:
    """A scope that learnt fewer than `min_messages` of either class is not asked for its
    tokens (its verdict would not be used): its message counts come back, no token counts."""
    alice = _account(run, store, "alice@example.test")
    run(store.junk_learn(alice, "s1", True, ["viagra"]))
    run(store.junk_learn(alice, "s2", True, ["viagra"]))
    run(store.junk_learn(alice, "h1", False, ["meeting"]))
    counts = run(store.junk_counts([alice, 0], ["viagra", "meeting"], min_messages=2))
    assert (counts[alice].spam, counts[alice].ham, dict(counts[alice].tokens)) == (2, 1, {})
    run(store.junk_learn(alice, "h2", False, ["meeting"]))
    counts = run(store.junk_counts([alice, 0], ["viagra", "meeting"], min_messages=2))
    assert dict(counts[alice].tokens) == {"viagra": (2, 0), "meeting": (0, 2)}


def test_lookup_is_counts_and_sender_in_one_read(run: Run, store: SqlStore) -> None:
    alice = _account(run, store, "alice@example.test")
    run(store.junk_learn(alice, "s1", True, ["viagra"]))
    run(store.junk_learn(alice, "h1", False, ["meeting"]))
    run(store.set_junk_entry(f"a:{alice}", "spam.example", "block"))
    run(store.add_correspondents(alice, ["friend@remote.test"], 1.0))
    owners = [f"a:{alice}"]
    for sender in ("x@mail.spam.example", "friend@remote.test"):
        found = run(store.junk_lookup([alice, 0], ["viagra", "meeting"], 1, owners, [alice],
                                      sender))
        assert found.counts == run(store.junk_counts([alice, 0], ["viagra", "meeting"], 1))
        assert (found.entries, found.wrote) == run(store.junk_sender(owners, [alice], sender))
    assert found.wrote == {alice} and found.counts[alice].tokens["viagra"] == (1, 0)


def test_lists_and_correspondents(run: Run, store: SqlStore) -> None:
    alice = _account(run, store, "alice@example.test")
    owner = f"a:{alice}"
    assert run(store.set_junk_entry(owner, "Friend@Remote.Test", "allow"))
    assert run(store.set_junk_entry(owner, "spam.example", "block"))
    assert run(store.set_junk_entry("d:example.test", "@partner.test", "allow"))
    assert run(store.junk_entries(owner)) == [
        JunkListEntry(owner, "friend@remote.test", "allow"),
        JunkListEntry(owner, "spam.example", "block")]
    assert len(run(store.junk_entries())) == 3
    owners = [owner, "d:example.test"]
    entries, wrote = run(store.junk_sender(owners, [alice], "x@mail.spam.example"))
    assert entries == [JunkListEntry(owner, "spam.example", "block")] and wrote == frozenset()
    entries, _ = run(store.junk_sender(owners, [alice], "FRIEND@remote.test"))
    assert entries == [JunkListEntry(owner, "friend@remote.test", "allow")]
    entries, _ = run(store.junk_sender(owners, [alice], "a@partner.test"))
    assert entries == [JunkListEntry("d:example.test", "partner.test", "allow")]
    assert run(store.set_junk_entry(owner, "spam.example", None))
    assert not run(store.set_junk_entry(owner, "spam.example", None))
    run(store.add_correspondents(alice, ["Bob@Elsewhere.test", "nobody"], 100.0))
    _, wrote = run(store.junk_sender([], [alice], "bob@elsewhere.test"))
    assert wrote == frozenset({alice})
    run(store.junk_learn(alice, "b", True, ["t"]))
    run(store.remove_account("alice@example.test"))
    assert run(store.junk_entries(owner)) == []
    assert run(store.junk_counts([alice], ["t"]))[alice].spam == 0
    assert run(store.junk_counts([0], ["t"]))[0].tokens == {"t": (1, 0)}  # the instance's stay


def test_pruning_hapaxes_and_caps_in_bounded_batches(run: Run, store: SqlStore) -> None:
    """Hapaxes not learnt since `hapax_days` go (a token of two messages, or learnt lately,
    stays), walked in batches across runs; a scope over its cap loses the tokens of fewest
    messages, the longest unseen first, down to the cap; the counts tell what went."""
    from postkeep.config.junk import JunkConfig
    from postkeep.filters.junk.pruning import DAY, JunkPruner

    alice = _account(run, store, "alice@example.test")
    now = 1_800_000_000.0
    old, recent = now - 40 * DAY, now - 5 * DAY
    run(store.junk_learn(alice, "m1", True, ["rare", "common", *[f"old{i}" for i in range(9)]],
                         now=old))
    run(store.junk_learn(alice, "m2", True, ["common", "fresh"], now=recent))
    assert run(store.junk_token_counts()) == {alice: 12, 0: 12}
    cfg = JunkConfig(hapax_days=30, max_account_tokens=0, max_instance_tokens=0,
                     prune_rows=1000)
    pruner = JunkPruner(store, cfg)
    # bounded: 7 rows a run (the walk goes on where it stopped), then the rest
    first = run(pruner.run(now, limit=7))
    assert (first.examined, first.complete) == (7, False)
    rest = run(pruner.run(now, limit=0))
    assert rest.complete and first.hapaxes + rest.hapaxes == 20  # rare, old0-8: both scopes
    counts = run(store.junk_counts([alice, 0], ["rare", "common", "fresh", "old3"]))
    assert dict(counts[alice].tokens) == {"common": (2, 0), "fresh": (1, 0)}
    assert dict(counts[0].tokens) == {"common": (2, 0), "fresh": (1, 0)}
    # caps: the account keeps 1 (the token of two messages), the instance 2
    run(store.junk_learn(alice, "m3", False, ["other"], now=now))
    capped = JunkPruner(store, JunkConfig(hapax_days=0, max_account_tokens=1,
                                          max_instance_tokens=2))
    done = run(capped.run(now))
    assert (done.examined, done.hapaxes, done.trimmed) == (0, 0, 3)
    counts = run(store.junk_counts([alice, 0], ["common", "fresh", "other"]))
    assert dict(counts[alice].tokens) == {"common": (2, 0)}
    # fresh (seen 5 days ago) went before other (today), both in one message
    assert dict(counts[0].tokens) == {"common": (2, 0), "other": (0, 1)}
    assert (counts[alice].spam, counts[alice].ham) == (2, 1)  # message counts stay
    assert run(store.junk_trim(alice, 0)) == 0
