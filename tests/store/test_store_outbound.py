"""The outbound queue: enqueue_outbound / list_outbound / read_outbound, durable and encrypted
at rest (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import DsnRecipient, Envelope, QueueNotice, QueueRecipient
from postkeep.store.sql.schema import outbound_queue
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
    assert blob_files(data_dir) == []  # small: in their rows (and no file for the duplicate)
    with pytest.raises(AlreadyExists):  # a large duplicate leaves no file behind either
        run(store.enqueue_outbound(envelope("QB"), RECIPIENTS[:1], message(200_000)))
    assert blob_files(data_dir) == []
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


def test_small_messages_are_inline_and_tampering_is_detected(
    run: Run, store: SqlStore, data_dir: Path, db_url: str
) -> None:
    run(store.enqueue_outbound(envelope("SMALL"), RECIPIENTS, message(3000)))
    assert blob_files(data_dir) == []  # in the row
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            data = bytearray(conn.execute(select(outbound_queue.c.data)).scalar_one())
            data[len(data) // 2] ^= 0x01
            conn.execute(update(outbound_queue).values(data=bytes(data)))
    finally:
        engine.dispose()
    with pytest.raises(StoreError):
        run(store.read_outbound("SMALL"))


def test_tampered_queue_blob_detected(run: Run, store: SqlStore, data_dir: Path) -> None:
    run(store.enqueue_outbound(envelope(), RECIPIENTS, message(200_000)))
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


def test_claims_are_exclusive_and_lapse(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore
) -> None:
    """Two stores (as two processes) claiming at once never get the same entry; a claim
    stands until it lapses or its node releases it; held entries are never claimed."""
    for i in range(30):
        run(store.enqueue_outbound(envelope(f"C{i:02}"), RECIPIENTS, b"x"))
    other = make_store()
    now = time.time() + 1

    async def both() -> tuple[list[Any], list[Any]]:
        a, b = await asyncio.gather(
            *(s.claim_outbound(f"node:{n}", now, 600, 20) for n, s in enumerate((store, other)))
        )
        return a, b

    first, second = run(both())
    ids = [e.queue_id for e in first] + [e.queue_id for e in second]
    assert len(ids) == 30 and len(set(ids)) == 30, ids  # 20 + 10, none twice
    assert run(store.claim_outbound("node:2", now, 600, 50)) == []  # all claimed
    assert run(store.claim_outbound("node:2", now + 601, 600, 50)) != []  # lapsed
    assert run(store.release_outbound_claims("node:")) == 30
    run(store.hold_outbound("C05", True))
    again = run(other.claim_outbound("n2:1", now, 600, 50))
    assert len(again) == 29 and "C05" not in {e.queue_id for e in again}
    assert run(store.get_outbound("C05")).held
    run(store.release_outbound_claims("n2:"))
    run(store.hold_outbound("C05", False))
    [one] = run(store.claim_outbound("n3:1", 0, 600, 50, queue_id="C05"))  # not yet due: by id
    assert one.queue_id == "C05" and one.lease_owner == "n3:1"
    with pytest.raises(NotFound):
        run(store.hold_outbound("NOPE", True))


def test_update_records_outcomes_and_notices(run: Run, store: SqlStore, data_dir: Path) -> None:
    run(store.enqueue_outbound(envelope("U1"), RECIPIENTS, message(3000)))
    [entry] = run(store.claim_outbound("w:1", time.time() + 1, 600, 5))
    bob, carol = entry.recipients
    done = QueueRecipient(bob.address, bob.notify, bob.orcpt, "delivered", "250 2.0.0 Ok",
                          "mx.remote.example [192.0.2.1]", 1.0)
    assert not run(store.update_outbound(entry.id, "w:2", [done]))  # not its claim: nothing
    assert run(store.get_outbound("U1")).recipients[0].status == "pending"
    assert run(store.update_outbound(entry.id, "w:1", [done]))  # recorded, still claimed
    now = run(store.get_outbound("U1"))
    assert now.recipients[0] == done and now.lease_owner == "w:1" and now.attempts == 0
    later = QueueRecipient(carol.address, reply="451 4.4.1 No answer", updated=2.0)
    assert run(store.update_outbound(entry.id, "w:1", [later], reschedule=5000.0,
                                     last_error="451 4.4.1 No answer"))
    now = run(store.get_outbound("U1"))
    assert (now.next_attempt, now.attempts, now.lease_owner) == (5000.0, 1, None)
    assert now.recipients[1].reply == "451 4.4.1 No answer" and now.pending == (now.recipients[1],)
    [entry] = run(store.claim_outbound("w:1", 5001, 600, 5))
    failed = QueueRecipient(carol.address, status="failed", reply="550 5.1.1 No such user")
    bounce = QueueNotice(Envelope("B1", "", [DsnRecipient("alice@example.org")], "", "", 0.0),
                         b"the DSN")
    assert run(store.update_outbound(entry.id, "w:1", [failed], reschedule=9e9,
                                     notices=[bounce]))
    with pytest.raises(NotFound):  # no recipient pending: the entry and its blob are gone
        run(store.get_outbound("U1"))
    [notice] = run(store.list_outbound())
    assert (notice.queue_id, notice.mail_from) == ("B1", "")
    assert run(store.read_outbound("B1")) == b"the DSN"
    assert blob_files(data_dir) == []  # both small: in their rows
    run(store.delete_outbound("B1"))
    assert run(store.list_outbound()) == [] and blob_files(data_dir) == []
    with pytest.raises(NotFound):
        run(store.delete_outbound("B1"))


def test_retry_makes_entries_due(run: Run, store: SqlStore) -> None:
    for qid in ("R1", "R2"):
        run(store.enqueue_outbound(envelope(qid), RECIPIENTS, b"x"))
    for entry in run(store.claim_outbound("w:1", time.time() + 1, 600, 5)):
        run(store.update_outbound(entry.id, "w:1", [], reschedule=9e9))
    assert run(store.claim_outbound("w:1", time.time(), 600, 5)) == []
    assert run(store.retry_outbound("R2", 10.0)) == 1
    assert [e.queue_id for e in run(store.claim_outbound("w:1", time.time(), 600, 5))] == ["R2"]
    assert run(store.retry_outbound(None, 10.0)) == 2
