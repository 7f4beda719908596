"""Blob files (atomic write, layout, modes, range read, delete) and the event bus."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from postkeep.errors import NotFound, StoreError
from postkeep.store.api import MailboxEvent
from postkeep.store.blobs import BlobFiles, BlobMissing, new_blob_id
from postkeep.store.events import EventBus

# -- blobs -----------------------------------------------------------------------------------------


def test_blob_ids_are_unique_and_safe() -> None:
    ids = {new_blob_id() for _ in range(1000)}
    assert len(ids) == 1000
    for blob_id in ids:
        assert len(blob_id) == 36
        assert all(c in "0123456789abcdef" for c in blob_id)


def test_write_many_layout_and_modes(tmp_path: Path) -> None:
    files = BlobFiles(tmp_path)
    files.setup()
    items = [(new_blob_id(), f"blob {i}".encode() * 100) for i in range(20)]
    files.write_many(items)
    for blob_id, data in items:
        path = files.path(blob_id)
        assert path == tmp_path / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
        assert path.read_bytes() == data
        assert files.read(blob_id) == data
        assert files.read_range(blob_id, 5, 10) == data[5:15]
        assert files.size(blob_id) == len(data)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(files.tmp.iterdir()) == []
    files.delete_many([blob_id for blob_id, _ in items[:10]])
    files.delete(items[0][0])  # idempotent
    assert not files.exists(items[0][0])
    assert files.exists(items[10][0])
    with pytest.raises(BlobMissing) as info:
        files.read(items[0][0])
    assert not isinstance(info.value, NotFound)  # corruption, not "no such message"


def test_setup_removes_stale_tmp_files(tmp_path: Path) -> None:
    files = BlobFiles(tmp_path)
    files.setup()
    stale = files.tmp / f"{new_blob_id()}.tmp"
    stale.write_bytes(b"half written")
    BlobFiles(tmp_path).setup(remove_stale=False)  # an IMAP worker, the admin CLI: another
    assert stale.exists()  # process (the server) may be writing it right now
    BlobFiles(tmp_path).setup()
    assert not stale.exists()


def test_write_many_failure_leaves_nothing(tmp_path: Path) -> None:
    files = BlobFiles(tmp_path)
    files.setup()
    good, dup = new_blob_id(), new_blob_id()
    (files.tmp / f"{dup}.tmp").write_bytes(b"in the way")  # O_EXCL makes this one fail
    with pytest.raises(FileExistsError):
        files.write_many([(good, b"a"), (dup, b"b")])
    assert not files.exists(good)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF", "", "a" * 35, "g" * 36])
def test_invalid_blob_ids_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StoreError):
        BlobFiles(tmp_path).path(bad)


# -- event bus -------------------------------------------------------------------------------------


def _ev(account_id: int, uid: int = 1) -> MailboxEvent:
    return MailboxEvent(account_id, 10 * account_id, "exists", uid, uid)


def test_bus_routes_by_account(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def go() -> None:
        bus = EventBus()
        a, b, everyone = bus.subscribe(1), bus.subscribe(2), bus.subscribe(None)
        bus.publish(_ev(1))
        bus.publish(_ev(2))
        assert await asyncio.wait_for(a.get(), 1) == _ev(1)
        assert a.get_nowait() is None
        assert await asyncio.wait_for(b.get(), 1) == _ev(2)
        assert everyone.drain() == [_ev(1), _ev(2)]
        a.close()
        assert bus.subscriber_count(1) == 0
        bus.publish(_ev(1))  # nobody listening: fine
        assert len(a) == 0

    run(go())


def test_bus_wakes_waiter_and_iterates(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def go() -> list[MailboxEvent]:
        bus = EventBus()
        sub = bus.subscribe(7)
        got: list[MailboxEvent] = []

        async def consume() -> None:
            async for event in sub:
                got.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        for uid in range(1, 4):
            bus.publish(_ev(7, uid))
            await asyncio.sleep(0)
        sub.close()
        await asyncio.wait_for(task, 1)
        return got

    assert [e.uid for e in run(go())] == [1, 2, 3]


def test_bus_overflow_drops_oldest_never_blocks(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def go() -> None:
        bus = EventBus(queue_size=3)
        sub = bus.subscribe(1)
        for uid in range(1, 11):
            bus.publish(_ev(1, uid))
        assert sub.overflowed
        assert sub.dropped == 7
        assert [e.uid for e in sub.drain()] == [8, 9, 10]
        assert sub.reset_overflow() is True
        assert not sub.overflowed
        with sub:
            pass
        assert sub.closed
        with pytest.raises(EOFError):
            await sub.get()

    run(go())
