"""Mailbox operations for IMAP on both backends: flags with MODSEQ, expunge log, copy/move with
shared blobs and quota, append, create/rename/delete, sealed MIME summaries."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, select

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.mime.summary import Summary
from postkeep.store.api import Account, Envelope, Flag, LocalDelivery, MailboxEvent, OverQuota
from postkeep.store.blobs import INLINE_MAX
from postkeep.store.sql.base import LOOP_BUSY_TIMEOUT_MS, LOOP_CACHE_KIB
from postkeep.store.sql.schema import blobs
from postkeep.store.sql.store import SqlStore
from tests.store.layout import stored_blobs

Run = Callable[[Awaitable[Any]], Any]
NO_FLAGS = Flag(0)
MSG = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n"
    b"Subject: SECRET-SUBJECT-42\r\n\r\nHello\r\n"
)


def _put(
    run: Run,
    store: SqlStore,
    account: Account,
    mailbox: str = "INBOX",
    data: bytes = MSG,
    flags: Flag = NO_FLAGS,
    keywords: tuple[str, ...] = (),
    queue_id: str = "",
) -> int:
    env = Envelope(queue_id, "", [], "127.0.0.1", "", 1_700_000_000.0)
    result = run(store.deliver(LocalDelivery(env, [account.id], data, flags, mailbox, keywords)))
    return int(result.delivered[0].uid)


@pytest.fixture
def acct(run: Run, store: SqlStore) -> Account:
    run(store.add_domain("example.org"))
    return run(store.add_account("alice@example.org", "x", quota_bytes=10_000))


def _box(run: Run, store: SqlStore, account: Account, name: str) -> int:
    box = run(store.get_mailbox(account.id, name))
    assert box is not None
    return int(box.id)


def test_append_snapshot_and_summary_is_sealed(
    run: Run, store: SqlStore, acct: Account, db_url: str
) -> None:
    uid = _put(run, store, acct, flags=Flag.SEEN, keywords=("$Label1",))
    inbox = _box(run, store, acct, "INBOX")
    snap = run(store.mailbox_snapshot(inbox, keywords=True))
    assert snap.uids == [uid] and snap.keywords == ("$Label1",)
    [info] = run(store.messages_by_uid(inbox, [(1, 10)]))
    assert info.flags == Flag.SEEN and info.keywords == ("$Label1",) and info.savedate
    raw = run(store.message_summaries(acct.id, [info.id]))[info.id]
    summary = Summary(raw)
    assert "SECRET-SUBJECT-42" in summary.envelope
    assert summary.bodystructure.lower().startswith('("text" "plain"')
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            sealed = conn.execute(select(blobs.c.structure)).scalar_one()
    finally:
        engine.dispose()
    assert b"SECRET-SUBJECT-42" not in bytes(sealed)  # sealed under the content key
    counts = run(store.mailbox_counts(inbox))
    assert (counts.messages, counts.unseen, counts.deleted, counts.size) == (1, 0, 0, len(MSG))


def test_set_flags_modseq_and_unchangedsince(run: Run, store: SqlStore, acct: Account) -> None:
    for _ in range(3):
        _put(run, store, acct)
    inbox = _box(run, store, acct, "INBOX")
    events = store.subscribe(acct.id)
    before = run(store.get_mailbox_by_id(inbox)).highestmodseq
    change = run(store.set_flags(acct.id, inbox, [(1, 2)], "add", Flag.FLAGGED, ("Work",)))
    assert [m.uid for m in change.changed] == [1, 2]
    modseq = change.changed[0].modseq
    assert modseq > before and {m.modseq for m in change.changed} == {modseq}
    assert [e.kind for e in events.drain()] == ["flags", "flags"]
    again = run(store.set_flags(acct.id, inbox, [(1, 3)], "add", Flag.FLAGGED, ("work",)))
    assert [m.uid for m in again.changed] == [3] and [m.uid for m in again.unchanged] == [1, 2]
    cond = run(
        store.set_flags(
            acct.id, inbox, [(1, 3)], "remove", Flag.FLAGGED, (), unchanged_since=modseq
        )
    )
    assert cond.modified == (3,) and [m.uid for m in cond.changed] == [1, 2]
    assert [m.uid for m in run(store.changed_since(inbox, modseq))] == [1, 2, 3]
    assert run(store.first_unseen_uid(inbox)) == 1
    rep = run(store.set_flags(acct.id, inbox, [(1, 1)], "replace", Flag.SEEN, ("A", "B")))
    assert run(store.first_unseen_uid(inbox)) == 2
    assert rep.changed[0].flags == Flag.SEEN and rep.changed[0].keywords == ("A", "B")
    with pytest.raises(StoreError):
        run(store.set_flags(acct.id, inbox, [(1, 1)], "toggle", Flag.SEEN))


def test_expunge_logs_vanished_and_frees_quota(run: Run, store: SqlStore, acct: Account) -> None:
    for i in range(4):
        _put(run, store, acct, queue_id=f"Q{i}")  # SMTP-delivered: with envelope records
    inbox = _box(run, store, acct, "INBOX")
    assert run(store.get_account_by_id(acct.id)).used_bytes == 4 * len(MSG)
    mark = run(store.get_mailbox_by_id(inbox)).highestmodseq
    run(store.set_flags(acct.id, inbox, [(1, 3)], "add", Flag.DELETED))
    events = store.subscribe(acct.id)
    assert run(store.expunge(acct.id, inbox, [(2, 4)])) == [2, 3]  # UID EXPUNGE 2:4
    assert [e for e in events.drain()] == [
        MailboxEvent(acct.id, inbox, "expunge", 2),
        MailboxEvent(acct.id, inbox, "expunge", 3),
    ]
    assert run(store.expunge(acct.id, inbox)) == [1]
    assert run(store.mailbox_snapshot(inbox)).uids == [4]
    assert run(store.expunged_since(inbox, mark)) == [1, 2, 3]
    assert run(store.get_account_by_id(acct.id)).used_bytes == len(MSG)


def test_mailbox_changes_are_the_difference_since_a_modseq(
    run: Run, store: SqlStore, acct: Account
) -> None:
    for _ in range(3):
        _put(run, store, acct)
    inbox = _box(run, store, acct, "INBOX")
    mark = run(store.get_mailbox_by_id(inbox)).highestmodseq
    assert run(store.mailbox_changes(inbox, mark)).changed == []  # nothing since
    run(store.set_flags(acct.id, inbox, [(2, 2)], "add", Flag.DELETED, ["$Urgent"]))
    run(store.expunge(acct.id, inbox))
    new_uid = _put(run, store, acct)
    _put(run, store, acct)
    assert run(store.expunge(acct.id, inbox, [])) == []  # nothing named: nothing expunged
    run(store.set_flags(acct.id, inbox, [(new_uid + 1, new_uid + 1)], "add", Flag.DELETED))
    run(store.expunge(acct.id, inbox))  # appended, then expunged after the mark
    delta = run(store.mailbox_changes(inbox, mark))
    assert [i.uid for i in delta.changed] == [new_uid]
    assert delta.expunged == [2, new_uid + 1]
    assert delta.mailbox.highestmodseq > mark
    assert run(store.mailbox_changes(inbox, delta.mailbox.highestmodseq)).expunged == []
    with pytest.raises(NotFound):
        run(store.mailbox_changes(inbox + 999, 0))


@pytest.mark.parametrize(("inline_max", "layout"), [(INLINE_MAX, "inline"), (0, "file")])
def test_deliver_all_is_one_transaction(
    run: Run, make_store: Callable[..., SqlStore], acct: Account, db_url: str, inline_max: int,
    layout: str,
) -> None:
    store = make_store(inline_max=inline_max)
    env = Envelope("", "", [], "127.0.0.1", "", 1_700_000_000.0)

    def d(mailbox: str, text: bytes) -> LocalDelivery:
        return LocalDelivery(env, [acct.id], text, NO_FLAGS, mailbox, ())

    results = run(store.deliver_all([d("INBOX", MSG), d("Sent", MSG + b"2")]))
    assert [r.delivered[0].uid for r in results] == [1, 1]
    inbox = _box(run, store, acct, "INBOX")
    used = run(store.get_account_by_id(acct.id)).used_bytes
    with pytest.raises(NotFound):  # the second mailbox does not exist: nothing is stored
        run(store.deliver_all([d("INBOX", MSG), d("NoSuchBox", MSG)]))
    assert run(store.mailbox_snapshot(inbox)).uids == [1]
    assert run(store.get_account_by_id(acct.id)).used_bytes == used
    # the failed group's blobs were removed again (its files; inline ones were never stored)
    assert stored_blobs(db_url, store.data_dir) == {r.blob_id: layout for r in results}
    assert run(store.deliver_all([])) == []


def test_copy_move_share_blobs_and_count_quota(run: Run, store: SqlStore, acct: Account) -> None:
    for _ in range(2):
        _put(run, store, acct)
    inbox, archive = _box(run, store, acct, "INBOX"), _box(run, store, acct, "Archive")
    result = run(store.copy_messages(acct.id, inbox, [(1, 2)], archive))
    assert result.pairs == ((1, 1), (2, 2))
    assert run(store.get_account_by_id(acct.id)).used_bytes == 4 * len(MSG)
    moved = run(store.copy_messages(acct.id, archive, [(2, 2)], inbox, move=True))
    assert moved.pairs == ((2, 3),)
    assert run(store.mailbox_snapshot(archive)).uids == [1]
    assert run(store.mailbox_snapshot(inbox)).uids == [1, 2, 3]
    assert run(store.get_account_by_id(acct.id)).used_bytes == 4 * len(MSG)
    [info] = run(store.messages_by_uid(inbox, [(3, 3)]))
    assert run(store.read_message(acct.id, info.id)) == MSG
    for _ in range(50):  # quota 10,000: copies eventually refused
        try:
            run(store.copy_messages(acct.id, inbox, [(1, 3)], archive))
        except OverQuota:
            break
    else:
        pytest.fail("quota never enforced on COPY")
    with pytest.raises(NotFound):
        run(store.copy_messages(acct.id, inbox, [(1, 1)], 999_999))


def test_create_rename_delete(run: Run, store: SqlStore, acct: Account) -> None:
    run(store.create_mailbox(acct.id, "a/b/c"))
    names = {b.name for b in run(store.list_mailboxes(acct.id))}
    assert {"a", "a/b", "a/b/c"} <= names
    with pytest.raises(AlreadyExists):
        run(store.create_mailbox(acct.id, "a/b"))
    for bad in ("", "x//y", "bad\x01name", "star*"):
        with pytest.raises(StoreError):
            run(store.create_mailbox(acct.id, bad))
    with pytest.raises(StoreError, match="children"):
        run(store.delete_mailbox(acct.id, "a"))
    _put(run, store, acct, "a/b/c")
    validity = run(store.get_mailbox(acct.id, "a/b/c")).uidvalidity
    run(store.rename_mailbox(acct.id, "a", "x/y"))
    names = {b.name for b in run(store.list_mailboxes(acct.id))}
    assert {"x", "x/y", "x/y/b", "x/y/b/c"} <= names and "a" not in names
    moved = run(store.get_mailbox(acct.id, "x/y/b/c"))
    assert moved.uidvalidity == validity and run(store.mailbox_snapshot(moved.id)).uids == [1]
    with pytest.raises(AlreadyExists):
        run(store.rename_mailbox(acct.id, "x", "Sent"))
    run(store.delete_mailbox(acct.id, "x/y/b/c"))
    assert run(store.get_account_by_id(acct.id)).used_bytes == 0
    with pytest.raises(StoreError):
        run(store.delete_mailbox(acct.id, "INBOX"))
    with pytest.raises(NotFound):
        run(store.delete_mailbox(acct.id, "nope"))
    assert not run(store.get_mailbox(acct.id, "x")).subscribed  # CREATE does not subscribe
    run(store.set_subscribed(acct.id, "x", True))
    assert run(store.get_mailbox(acct.id, "x")).subscribed
    run(store.set_subscribed(acct.id, "gone/never", True))  # names need not exist
    assert "gone/never" in run(store.list_subscriptions(acct.id))
    run(store.rename_mailbox(acct.id, "x", "w"))  # the subscription follows the rename
    subs = run(store.list_subscriptions(acct.id))
    assert "w" in subs and "x" not in subs
    run(store.set_subscribed(acct.id, "w", False))
    with pytest.raises(NotFound):
        run(store.set_subscribed(acct.id, "w", False))
    run(store.create_mailbox(acct.id, "keep"))
    run(store.set_subscribed(acct.id, "keep", True))
    run(store.delete_mailbox(acct.id, "keep"))  # RFC 9051 §6.3.7: the subscription stays
    assert "keep" in run(store.list_subscriptions(acct.id))


def test_claim_recent(run: Run, store: SqlStore, acct: Account) -> None:
    inbox = _box(run, store, acct, "INBOX")
    _put(run, store, acct)
    _put(run, store, acct)
    assert run(store.claim_recent(inbox)) == (1, 3)  # this session gets UIDs 1 and 2
    assert run(store.claim_recent(inbox)) == (3, 3)  # nobody else does
    _put(run, store, acct)
    assert run(store.mailbox_counts(inbox)).recent == 1
    assert run(store.claim_recent(inbox)) == (3, 4)
    assert run(store.mailbox_counts(inbox)).recent == 0


def test_claim_recent_writes_only_when_there_is_something_to_claim(
    run: Run, store: SqlStore, acct: Account
) -> None:
    inbox = _box(run, store, acct, "INBOX")
    _put(run, store, acct)
    jobs = store.stats.jobs
    assert run(store.claim_recent(inbox)) == (1, 2)
    assert store.stats.jobs == jobs + 1
    for _ in range(3):  # SELECT after SELECT: a read, no write transaction
        assert run(store.claim_recent(inbox)) == (2, 2)
    assert store.stats.jobs == jobs + 1


def test_flag_changes_commit_relaxed_deliveries_durably(
    run: Run, store: SqlStore, acct: Account, db_url: str
) -> None:
    """Flag changes and \\Recent claims do not wait for the disk; deliveries and every other
    write still do (SQLite: synchronous=FULL again for them; PostgreSQL: synchronous_commit)."""
    inbox = _box(run, store, acct, "INBOX")
    uid = _put(run, store, acct)
    relaxed = store.stats.relaxed_commits
    run(store.set_flags(acct.id, inbox, [(uid, uid)], "add", Flag.SEEN))
    assert store.stats.relaxed_commits == relaxed + 1
    run(store.claim_recent(inbox))
    assert store.stats.relaxed_commits == relaxed + 2
    _put(run, store, acct)
    run(store.expunge(acct.id, inbox))
    assert store.stats.relaxed_commits == relaxed + 2
    if db_url.startswith("sqlite"):
        setting = "PRAGMA synchronous"
        full, normal = 2, 1
    else:
        setting = "SHOW synchronous_commit"
        full, normal = "on", "off"

    def current(conn: Any) -> Any:
        return conn.exec_driver_sql(setting).scalar()

    assert run(store._write(current)) == full
    assert run(store._write(current, durable=False)) == normal
    assert run(store._write(current)) == full


def test_expunged_blobs_are_removed_after_the_commit(
    run: Run, make_store: Callable[..., SqlStore], acct: Account
) -> None:
    """The writer hands the unlinks to its files thread: done by `sync()`, and by `close()`."""
    store = make_store(inline_max=0)
    inbox = _box(run, store, acct, "INBOX")
    uids = [_put(run, store, acct, data=MSG + str(i).encode()) for i in range(3)]

    def files() -> int:
        return sum(1 for p in (store.data_dir / "blobs").rglob("*") if p.is_file())

    assert files() == 3
    run(store.set_flags(acct.id, inbox, [(uids[0], uids[0])], "add", Flag.DELETED))
    assert run(store.expunge(acct.id, inbox)) == [uids[0]]
    run(store.sync())
    assert files() == 2
    run(store.set_flags(acct.id, inbox, [(uids[1], uids[1])], "add", Flag.DELETED))
    assert run(store.expunge(acct.id, inbox)) == [uids[1]]
    run(store.close())  # drains the deferred deletions too
    assert files() == 1


def test_rename_inbox_moves_messages(run: Run, store: SqlStore, acct: Account) -> None:
    _put(run, store, acct)
    _put(run, store, acct)
    run(store.rename_mailbox(acct.id, "INBOX", "Old"))
    old = run(store.get_mailbox(acct.id, "Old"))
    assert run(store.mailbox_snapshot(old.id)).uids == [1, 2]
    inbox = _box(run, store, acct, "INBOX")
    assert run(store.mailbox_snapshot(inbox)).uids == []
    assert _put(run, store, acct) == 3  # INBOX keeps counting: UIDs are never reused
    assert run(store.expunged_since(inbox, 0)) == [1, 2]


def test_summary_document_round_trip(run: Run, store: SqlStore, acct: Account) -> None:
    _put(run, store, acct)
    inbox = _box(run, store, acct, "INBOX")
    [info] = run(store.messages_by_uid(inbox, [(1, 1)]))
    raw = run(store.message_summaries(acct.id, [info.id]))[info.id]
    doc = json.loads(raw)
    assert doc["v"] == 1
    tree = Summary(raw).tree
    assert MSG[tree.body_start : tree.body_end] == b"Hello\r\n"


def test_jobs_queued_together_commit_together_and_fail_alone(
    run: Run, store: SqlStore, acct: Account
) -> None:
    """Concurrent writes share one transaction (one commit), each in a SAVEPOINT: a failing
    one is rolled back alone and reports its own error."""
    import asyncio

    async def burst() -> list[Any]:
        calls = [store.create_mailbox(acct.id, f"box{i}") for i in range(10)]
        calls.insert(5, store.create_mailbox(acct.id, "INBOX/../x//bad"))
        calls.insert(7, store.create_mailbox(acct.id, "Sent"))  # exists: AlreadyExists
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(burst())
    assert isinstance(results[5], StoreError) and isinstance(results[7], AlreadyExists)
    names = {b.name for b in run(store.list_mailboxes(acct.id))}
    assert {f"box{i}" for i in range(10)} <= names


def test_reads_on_the_event_loop_wait_briefly_for_locks(
    run: Run, store: SqlStore, acct: Account, db_url: str
) -> None:
    """On SQLite the hot path reads on the loop's thread with its own connection, whose lock
    wait is bounded (LOOP_BUSY_TIMEOUT_MS), unlike the pool's 30 s, and whose page cache is
    small (LOOP_CACHE_KIB)."""
    inbox = _box(run, store, acct, "INBOX")  # an inline read: sets up the loop's connection
    assert run(store.mailbox_snapshot(inbox)).uids == []
    if not db_url.startswith("sqlite"):
        assert getattr(store._local, "raw", None) is None  # PostgreSQL: always the pool
        return
    cur = store._local.raw.cursor()
    assert cur.execute("PRAGMA busy_timeout").fetchone()[0] == LOOP_BUSY_TIMEOUT_MS < 30_000
    assert cur.execute("PRAGMA cache_size").fetchone()[0] == -LOOP_CACHE_KIB  # small heap


@pytest.mark.parametrize(  # PostgreSQL only: SQLite's writers take turns, never deadlock
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_write_aborted_by_a_deadlock_runs_again(
    run: Run, store: SqlStore, acct: Account, db_url: str
) -> None:
    """PostgreSQL resolves a deadlock by aborting one transaction; the writer runs the aborted
    job again (as another process's writer would deadlock with it: two IMAP workers). A real
    deadlock: the job locks mailbox A, another connection locks B then waits for A, the job
    then wants B; the job's session detects it first (shorter deadlock_timeout). The job asks
    for B only once the rival is seen waiting (a third connection watches): on a loaded
    machine the rival's second statement may come late, and the job must not check too soon."""
    import threading

    from tests.pg import pg_connect

    a, b = _box(run, store, acct, "INBOX"), run(store.create_mailbox(acct.id, "Other")).id
    other, watcher = pg_connect(make_url(db_url)), pg_connect(make_url(db_url))
    rival_pid = other.info.backend_pid

    def rival_waits() -> bool:
        row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                              (rival_pid,)).fetchone()
        return row is not None and row[0] == "Lock"
    holding_b, attempts = threading.Event(), []

    def rival() -> None:
        with other.transaction():
            other.execute("SELECT id FROM mailboxes WHERE id = %s FOR UPDATE", (b,))
            holding_b.set()
            other.execute("SELECT id FROM mailboxes WHERE id = %s FOR UPDATE", (a,))

    thread = threading.Thread(target=rival)

    def job(conn: Any) -> int:
        attempts.append(1)
        conn.exec_driver_sql("SET LOCAL deadlock_timeout = '100ms'")
        conn.exec_driver_sql(f"SELECT id FROM mailboxes WHERE id = {a} FOR UPDATE")
        if len(attempts) == 1:
            thread.start()
            assert holding_b.wait(10)
            deadline = time.monotonic() + 10
            while not rival_waits():
                assert time.monotonic() < deadline, "the rival never waited for mailbox A"
                time.sleep(0.01)
        conn.exec_driver_sql(f"SELECT id FROM mailboxes WHERE id = {b} FOR UPDATE")
        return len(attempts)

    try:
        # aborted (deadlock detected), then done; on a loaded machine PostgreSQL has been
        # seen to abort the run again: each abort is one retry, and the job completes
        ran = run(store._write(job))
        assert ran >= 2
        assert store.stats.retries == ran - 1
    finally:
        thread.join(10)
        other.close()
        watcher.close()


def test_rows_by_uid_over_many_ranges(run: Run, store: SqlStore, acct: Account) -> None:
    """`messages_by_uid` and `message_flags` read 128 UID ranges per statement: with more, the
    rows of all statements come back once each, in ascending UID."""
    env = Envelope("", "", [], "127.0.0.1", "", 1_700_000_000.0)
    run(store.deliver_all([LocalDelivery(env, [acct.id], MSG, NO_FLAGS, "INBOX", ("k",))] * 300))
    inbox = _box(run, store, acct, "INBOX")
    odd = [(u, u) for u in range(299, 0, -2)]  # 150 ranges, given in descending order
    infos = run(store.messages_by_uid(inbox, odd))
    assert [m.uid for m in infos] == list(range(1, 300, 2))
    rows = run(store.message_flags(inbox, odd))
    assert [r[0] for r in rows] == list(range(1, 300, 2))
    assert {(r[1], r[2]) for r in rows} == {(0, "k")}
    assert [r[3] for r in rows] == [m.modseq for m in infos]


def test_messages_page_in_uid_order_both_ways(run: Run, store: SqlStore, acct: Account) -> None:
    """The web's message list pages in SQL: LIMIT/OFFSET over UIDs, newest or oldest first,
    only the mailbox's own messages, an expunged UID skipped."""
    uids = [_put(run, store, acct) for _ in range(7)]
    _put(run, store, acct, "Archive")
    inbox = _box(run, store, acct, "INBOX")
    run(store.set_flags(acct.id, inbox, [(uids[3], uids[3])], "add", Flag.DELETED))
    run(store.expunge(acct.id, inbox))
    left = [u for u in uids if u != uids[3]]
    newest = run(store.messages_page(inbox, 0, 4))
    assert [m.uid for m in newest] == left[::-1][:4]
    assert all(m.mailbox_id == inbox for m in newest)
    assert [m.uid for m in run(store.messages_page(inbox, 4, 4))] == left[::-1][4:]
    assert [m.uid for m in run(store.messages_page(inbox, 1, 2, newest_first=False))] == (
        left[1:3])
    assert run(store.messages_page(inbox, 10, 4)) == []
    assert run(store.messages_page(inbox, 0, 0)) == []
    # the sidebar's counts, from indexes: every flag combination without \Seen is unseen
    run(store.set_flags(acct.id, inbox, [(left[0], left[1])], "add", Flag.SEEN))
    run(store.set_flags(acct.id, inbox, [(left[1], left[2])], "add", Flag.FLAGGED | Flag.DRAFT))
    archive, trash = _box(run, store, acct, "Archive"), _box(run, store, acct, "Trash")
    assert run(store.mailbox_totals([inbox, archive, trash])) == {
        inbox: (6, 4), archive: (1, 1), trash: (0, 0)}
    counts = run(store.mailbox_counts(inbox))
    assert (counts.messages, counts.unseen) == (6, 4)
    # a page of a sort order: scattered UIDs, one gone, one of another mailbox's
    picked = run(store.messages_with_uids(inbox, [left[4], uids[3], left[0], 10_000]))
    assert [m.uid for m in picked] == [left[0], left[4]]
    assert run(store.messages_with_uids(inbox, [])) == []
