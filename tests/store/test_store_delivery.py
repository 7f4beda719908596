"""deliver(): shared encrypted blobs, UID/MODSEQ allocation, group commit, quota, events,
failure isolation, read_message and remove_account (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from postkeep.errors import NotFound, StoreError
from postkeep.store.api import (
    PIECE_SIZE,
    Account,
    DeliveryResult,
    DsnRecipient,
    Envelope,
    Flag,
    LocalDelivery,
    MailboxEvent,
)
from postkeep.store.blobs import INLINE_MAX
from postkeep.store.crypto import CHUNK_SIZE
from postkeep.store.sql.schema import blobs, envelopes
from postkeep.store.sql.store import SqlStore
from tests.store.layout import blob_files, inline_data, stored_blobs

Run = Callable[[Awaitable[Any]], Any]
MARKER = b"PLAINTEXT-MARKER-7f3a"
NO_FLAGS = Flag(0)


def delivery(
    account_ids: Sequence[int], data: bytes, *, mailbox: str = "INBOX", flags: Flag = NO_FLAGS
) -> LocalDelivery:
    env = Envelope(
        queue_id="Q1",
        mail_from="sender@remote.example",
        recipients=[DsnRecipient("a@example.org", notify="SUCCESS,FAILURE", orcpt="rfc822;a@x")],
        client_ip="192.0.2.1",
        helo="mx.remote.example",
        received_at=time.time(),
        ret="HDRS",
        envid="E1",
        body="8BITMIME",
    )
    return LocalDelivery(env, account_ids, data, flags=flags, mailbox_name=mailbox)


def message(n: int = 0, size: int = 300) -> bytes:
    head = f"Subject: test {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\n".encode() + MARKER
    return head + b"x" * max(0, size - len(head))


LARGE = 200_000  # stored as a file (past INLINE_MAX)


@pytest.fixture
def accounts(run: Run, store: SqlStore) -> list[Account]:
    run(store.add_domain("example.org"))
    return [run(store.add_account(f"{n}@example.org", "h")) for n in ("a", "b", "c")]


@pytest.mark.parametrize(("size", "layout"), [(5000, "inline"), (LARGE, "file")])
def test_deliver_shares_one_blob(
    run: Run, store: SqlStore, accounts: list[Account], data_dir: Path, db_url: str,
    size: int, layout: str,
) -> None:
    data = message(1, size)
    result = run(store.deliver(delivery([a.id for a in accounts], data)))
    assert [d.account_id for d in result.delivered] == [a.id for a in accounts]
    # ONE blob for all recipients: in its row if small, else a file
    assert stored_blobs(db_url, data_dir) == {result.blob_id: layout}
    for d in result.delivered:
        assert run(store.read_message(d.account_id, d.message_id)) == data
        inbox = run(store.get_mailbox(d.account_id, "INBOX"))
        assert inbox is not None and inbox.id == d.mailbox_id
        [info] = run(store.list_messages(d.mailbox_id))
        assert (info.id, info.uid, info.size) == (d.message_id, 1, size)
        assert info.blob_id == result.blob_id
    # another account's key does not open the message
    first = result.delivered[0]
    with pytest.raises(NotFound):
        run(store.read_message(accounts[1].id, first.message_id))
    with pytest.raises(NotFound):
        run(store.read_message(first.account_id, first.message_id + 10_000))


@pytest.mark.parametrize(("size", "layout"), [(2000, "inline"), (LARGE, "file")])
def test_blob_is_not_plaintext(
    run: Run, store: SqlStore, accounts: list[Account], data_dir: Path, tmp_path: Path,
    db_url: str, size: int, layout: str,
) -> None:
    result = run(store.deliver(delivery([accounts[0].id], message(2, size))))
    assert stored_blobs(db_url, data_dir) == {result.blob_id: layout}
    if layout == "inline":  # the row holds the ciphertext (PostgreSQL's files are elsewhere)
        assert MARKER not in inline_data(db_url, result.blob_id)
    for path in tmp_path.rglob("*"):  # blobs, and the SQLite db / WAL when on SQLite
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


def test_tampered_blob_file_detected(
    run: Run, store: SqlStore, accounts: list[Account], data_dir: Path
) -> None:
    result = run(store.deliver(delivery([accounts[0].id], message(3, LARGE))))
    [path] = blob_files(data_dir)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        run(store.read_message(accounts[0].id, result.delivered[0].message_id))
    path.write_bytes(bytes(raw[:-20]))  # truncated
    with pytest.raises(StoreError):
        run(store.read_message(accounts[0].id, result.delivered[0].message_id))


def test_uid_modseq_monotonic(run: Run, store: SqlStore, accounts: list[Account]) -> None:
    a, b = accounts[0].id, accounts[1].id
    seen: dict[int, list[tuple[int, int]]] = {}
    events = store.subscribe(a)
    for i in range(6):
        targets = [a] if i % 2 else [a, b]
        result = run(store.deliver(delivery(targets, message(i))))
        for d in result.delivered:
            seen.setdefault(d.mailbox_id, []).append((d.uid, d.message_id))
    for mailbox_id, entries in seen.items():
        uids = [uid for uid, _ in entries]
        assert uids == list(range(1, len(uids) + 1))
        infos = run(store.list_messages(mailbox_id))
        assert [m.uid for m in infos] == uids
        modseqs = [m.modseq for m in infos]
        assert modseqs == sorted(set(modseqs)) and modseqs[0] > 1
    inbox_a = run(store.get_mailbox(a, "INBOX"))
    assert inbox_a.uidnext == 7
    assert inbox_a.highestmodseq == run(store.list_messages(inbox_a.id))[-1].modseq
    got = events.drain()
    assert [e.uid for e in got] == [1, 2, 3, 4, 5, 6]
    assert all(e.kind == "exists" and e.account_id == a and e.mailbox_id == inbox_a.id for e in got)


def test_flags_and_other_mailbox(run: Run, store: SqlStore, accounts: list[Account]) -> None:
    a = accounts[0].id
    result = run(store.deliver(delivery([a], message(), mailbox="Sent", flags=Flag.SEEN)))
    sent = run(store.get_mailbox(a, "Sent"))
    [info] = run(store.list_messages(sent.id))
    assert info.flags == Flag.SEEN and info.keywords == ()
    assert result.delivered[0].mailbox_id == sent.id
    with pytest.raises(NotFound):
        run(store.deliver(delivery([a], message(), mailbox="NoSuchBox")))
    with pytest.raises(StoreError):
        run(store.deliver(delivery([], message())))


def test_quota_usage(run: Run, store: SqlStore, accounts: list[Account]) -> None:
    a, b = accounts[0], accounts[1]
    run(store.deliver(delivery([a.id, b.id], message(1, 1000))))
    run(store.deliver(delivery([a.id], message(2, 2500))))
    run(store.deliver(delivery([a.id, a.id], b"0123456789")))  # listed twice: counted once
    assert run(store.get_account_by_id(a.id)).used_bytes == 3510
    assert run(store.get_account_by_id(b.id)).used_bytes == 1000
    assert len(run(store.list_messages(run(store.get_mailbox(a.id, "INBOX")).id))) == 3


def test_large_message_and_range(run: Run, store: SqlStore, accounts: list[Account]) -> None:
    data = bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"tail"
    result = run(store.deliver(delivery([accounts[0].id], data)))
    d = result.delivered[0]
    assert run(store.read_message(d.account_id, d.message_id)) == data
    prefix = CHUNK_SIZE + 20  # crosses a chunk boundary
    wanted: list[tuple[int, int | None]] = [(d.message_id, prefix), (d.message_id + 99, None)]
    got = run(store.read_messages(d.account_id, wanted))
    assert got == {d.message_id: data[:prefix]}  # the unknown id is left out
    other = run(store.read_messages(accounts[1].id, [(d.message_id, None)]))
    assert other == {}  # not the account's message


def test_open_message_reads_pieces(
    run: Run, store: SqlStore, accounts: list[Account], data_dir: Path
) -> None:
    """open_message: pieces of at most PIECE_SIZE cut at chunk multiples, clamped ranges, the
    blob readable after its file is removed, NotFound for another account's message, and a
    tampered chunk refused."""
    data = bytes(range(256)) * (5 * PIECE_SIZE // 256) + b"tail"
    d = run(store.deliver(delivery([accounts[0].id], data))).delivered[0]

    async def read(start: int, end: int) -> list[bytes]:
        reader = await store.open_message(d.account_id, d.message_id)
        try:
            assert reader.size == len(data)
            return [piece async for piece in reader.pieces(start, end)]
        finally:
            reader.close()

    pieces = run(read(0, len(data) + 100))
    assert b"".join(pieces) == data and {len(p) for p in pieces[:-1]} == {PIECE_SIZE}
    pieces = run(read(PIECE_SIZE - 5, 2 * PIECE_SIZE + 7))
    assert [len(p) for p in pieces] == [5, PIECE_SIZE, 7]
    assert b"".join(pieces) == data[PIECE_SIZE - 5 : 2 * PIECE_SIZE + 7]
    assert run(read(len(data) + 1, len(data) + 9)) == []
    with pytest.raises(NotFound):
        run(store.open_message(accounts[1].id, d.message_id))

    async def read_after_unlink() -> bytes:
        reader = await store.open_message(d.account_id, d.message_id)
        try:
            for path in blob_files(data_dir):
                path.unlink()  # what the files thread does after an expunge commits
            return b"".join([piece async for piece in reader.pieces(0, reader.size)])
        finally:
            reader.close()

    (blob,) = blob_files(data_dir)
    raw = bytearray(blob.read_bytes())
    assert run(read_after_unlink()) == data
    with pytest.raises(NotFound):
        run(store.open_message(d.account_id, d.message_id))
    raw[-5] ^= 1  # in the last chunk
    blob.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="failed authentication"):
        run(read(0, len(data)))
    assert len(run(read(0, PIECE_SIZE))[0]) == PIECE_SIZE  # the chunks before it still read


def test_concurrent_deliveries_group_commit(
    run: Run, store: SqlStore, accounts: list[Account]
) -> None:
    ids = [a.id for a in accounts]

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(
                store.deliver(
                    delivery([ids[i % 3]] + ([ids[2]] if i % 5 == 0 else []), message(i, 500 + i))
                )
                for i in range(200)
            )
        )

    results = run(go())
    per_mailbox: dict[int, list[int]] = {}
    for i, result in enumerate(results):
        for d in result.delivered:
            per_mailbox.setdefault(d.mailbox_id, []).append(d.uid)
            assert run(store.read_message(d.account_id, d.message_id)) == message(i, 500 + i)
    for uids in per_mailbox.values():
        assert sorted(uids) == list(range(1, len(uids) + 1))  # distinct, gap-free
    stats = store.stats
    assert stats.deliveries >= 200
    assert stats.largest_batch > 1  # several deliveries really shared a commit
    assert stats.batches < stats.deliveries


@pytest.mark.parametrize(("inline_max", "layout"), [(INLINE_MAX, "inline"), (0, "file")])
def test_bad_delivery_fails_alone(
    run: Run, make_store: Callable[..., SqlStore], accounts: list[Account], data_dir: Path,
    db_url: str, inline_max: int, layout: str,
) -> None:
    store = make_store(inline_max=inline_max)
    good = accounts[0].id

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(
                store.deliver(delivery([good] if i != 3 else [good, 999_999], message(i)))
                for i in range(8)
            ),
            return_exceptions=True,
        )

    results = run(go())
    assert isinstance(results[3], NotFound)
    ok = [r for i, r in enumerate(results) if i != 3]
    assert all(not isinstance(r, BaseException) for r in ok)
    assert sorted(r.delivered[0].uid for r in ok) == list(range(1, 8))
    assert stored_blobs(db_url, data_dir) == {r.blob_id: layout for r in ok}
    assert run(store.get_account_by_id(good)).used_bytes == sum(
        len(message(i)) for i in range(8) if i != 3
    )


def test_event_bus_gets_events(run: Run, store: SqlStore, accounts: list[Account]) -> None:
    a, b = accounts[0].id, accounts[1].id

    async def go() -> tuple[MailboxEvent, DeliveryResult, list[MailboxEvent]]:
        sub_a, sub_all = store.subscribe(a), store.events.subscribe(None)
        result = await store.deliver(delivery([a, b], message()))
        ev = await asyncio.wait_for(sub_a.get(), 2)
        assert result.delivered[0].uid == ev.uid
        return ev, result, sub_all.drain()

    ev, result, everything = run(go())
    assert ev == MailboxEvent(a, result.delivered[0].mailbox_id, "exists", 1, ev.modseq)
    assert {e.account_id for e in everything} == {a, b}


@pytest.mark.parametrize(("inline_max", "layout"), [(INLINE_MAX, "inline"), (0, "file")])
def test_remove_account_deletes_unreferenced_blobs(
    run: Run, make_store: Callable[..., SqlStore], accounts: list[Account], data_dir: Path,
    db_url: str, inline_max: int, layout: str,
) -> None:
    store = make_store(inline_max=inline_max)
    a, b = accounts[0], accounts[1]
    shared = run(store.deliver(delivery([a.id, b.id], message(1))))
    only_a = run(store.deliver(delivery([a.id], message(2))))
    only_b = run(store.deliver(delivery([b.id], message(3))))
    every = {r.blob_id: layout for r in (shared, only_a, only_b)}
    assert stored_blobs(db_url, data_dir) == every
    run(store.remove_account(a.address))
    del every[only_a.blob_id]  # only_a's blob is gone (row, and file if any)
    assert stored_blobs(db_url, data_dir) == every
    d = shared.delivered[1]
    assert run(store.read_message(d.account_id, d.message_id)) == message(1)
    run(store.remove_account(b.address))
    assert stored_blobs(db_url, data_dir) == {}
    assert blob_files(data_dir) == []
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(blobs)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(envelopes)).scalar_one() == 0
    finally:
        engine.dispose()


def test_closed_store_refuses(run: Run, make_store: Callable[..., SqlStore]) -> None:
    store = make_store()
    run(store.close())
    with pytest.raises(StoreError):
        run(store.deliver(delivery([1], b"x")))
    with pytest.raises(StoreError):
        run(store.list_domains())
    run(store.close())  # idempotent


def test_two_stores_on_one_database(
    run: Run, make_store: Callable[..., SqlStore], accounts: list[Account]
) -> None:
    """Two writer processes' worth of stores: UIDs stay distinct under row locks."""
    first = make_store()  # `store` (from the accounts fixture) is the other one
    second = make_store()
    a = accounts[0].id

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(s.deliver(delivery([a], message(i))) for i in range(40) for s in (first, second))
        )

    results = run(go())
    uids = sorted(r.delivered[0].uid for r in results)
    assert uids == list(range(1, 81))
    inbox = run(first.get_mailbox(a, "INBOX"))
    infos = run(second.list_messages(inbox.id))
    assert len({m.modseq for m in infos}) == 80
    assert inbox.highestmodseq == max(m.modseq for m in infos)


def test_sqlite_pragmas(run: Run, tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data", bytes(32))
    run(store.open())
    try:
        engine = store._writer
        assert engine is not None
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        run(store.close())
