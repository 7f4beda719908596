"""The outbound queue: enqueue_outbound / list_outbound / read_outbound, durable and encrypted
at rest (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import DsnRecipient, Envelope, QueueRecipient
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
MARKER = b"OUTBOUND-PLAINTEXT-MARKER-91c2"


def envelope(queue_id: str = "Q100") -> Envelope:
    return Envelope(
        queue_id=queue_id,
        mail_from="alice@example.org",
        recipients=[],
        client_ip="192.0.2.7",
        helo="laptop.example.org",
        received_at=time.time(),
        ret="HDRS",
        envid="ENV-1",
        body="8BITMIME",
        smtputf8=True,
    )


def message(size: int = 2000) -> bytes:
    head = b"Subject: outbound\r\nMessage-ID: <1@example.org>\r\n\r\n" + MARKER
    return head + b"y" * max(0, size - len(head))


def blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").glob("*/*/*") if p.is_file()]


RECIPIENTS = [
    DsnRecipient("bob@remote.example", notify="SUCCESS,FAILURE", orcpt="rfc822;bob@remote.example"),
    DsnRecipient("carol@other.example"),
]


def test_enqueue_list_read(run: Run, store: SqlStore, data_dir: Path) -> None:
    data = message(200_000)  # several encryption chunks
    before = time.time()
    qid = run(store.enqueue_outbound(envelope(), RECIPIENTS, data))
    assert qid == "Q100"
    [entry] = run(store.list_outbound())
    assert entry.queue_id == "Q100" and entry.size == len(data)
    assert entry.mail_from == "alice@example.org"
    assert entry.recipients == (
        QueueRecipient("bob@remote.example", "SUCCESS,FAILURE", "rfc822;bob@remote.example"),
        QueueRecipient("carol@other.example", None, None, "pending"),
    )
    dsn = (entry.ret, entry.envid, entry.body, entry.smtputf8)
    assert dsn == ("HDRS", "ENV-1", "8BITMIME", True)
    assert entry.attempts == 0 and entry.last_error is None
    assert before <= entry.created <= entry.next_attempt <= time.time()
    assert [p.name for p in blob_files(data_dir)] == [entry.blob_id]
    assert run(store.read_outbound("Q100")) == data
    with pytest.raises(NotFound):
        run(store.read_outbound("NOPE"))


def test_queue_order_duplicates_and_bad_input(run: Run, store: SqlStore, data_dir: Path) -> None:
    for qid in ("QA", "QB", "QC"):
        run(store.enqueue_outbound(envelope(qid), RECIPIENTS[:1], qid.encode()))
    with pytest.raises(AlreadyExists):
        run(store.enqueue_outbound(envelope("QB"), RECIPIENTS[:1], b"again"))
    assert len(blob_files(data_dir)) == 3  # the refused duplicate left no blob behind
    assert [e.queue_id for e in run(store.list_outbound())] == ["QA", "QB", "QC"]
    assert run(store.read_outbound("QB")) == b"QB"
    with pytest.raises(StoreError):
        run(store.enqueue_outbound(envelope("QD"), [], b"x"))
    generated = run(store.enqueue_outbound(envelope(""), RECIPIENTS, b"no id given"))
    assert generated and run(store.read_outbound(generated)) == b"no id given"


def test_concurrent_enqueues(run: Run, store: SqlStore) -> None:
    async def many() -> list[str]:
        return await asyncio.gather(
            *(store.enqueue_outbound(envelope(f"Q{i}"), RECIPIENTS, message(i * 100))
              for i in range(1, 21))
        )

    assert sorted(run(many())) == sorted(f"Q{i}" for i in range(1, 21))
    for i in (1, 7, 20):
        assert run(store.read_outbound(f"Q{i}")) == message(i * 100)


def test_durable_and_encrypted_on_disk(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore, data_dir: Path,
    tmp_path: Path,
) -> None:
    data = message(5000)
    run(store.enqueue_outbound(envelope(), RECIPIENTS, data))
    run(store.close())
    for path in tmp_path.rglob("*"):  # blob files, and the SQLite db / WAL on SQLite
        if path.is_file():
            assert MARKER not in path.read_bytes(), path
    again = make_store()  # a fresh process view: the entry and its blob are still there
    [entry] = run(again.list_outbound())
    assert run(again.read_outbound(entry.queue_id)) == data


def test_tampered_queue_blob_detected(run: Run, store: SqlStore, data_dir: Path) -> None:
    run(store.enqueue_outbound(envelope(), RECIPIENTS, message(3000)))
    [path] = blob_files(data_dir)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        run(store.read_outbound("Q100"))


def test_queue_key_needs_the_master_key(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore, master_key: bytes
) -> None:
    run(store.enqueue_outbound(envelope(), RECIPIENTS, b"secret body"))
    run(store.close())
    with pytest.raises(StoreError, match="master key"):
        make_store(master_key=bytes(32))
    assert run(make_store(master_key=master_key).read_outbound("Q100")) == b"secret body"
