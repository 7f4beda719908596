"""The content filters' record of a stored message (migration 18, `postkeep.store.sql.
filtering`) on both backends: written in the delivery's transaction, one row per delivery
whatever its recipients; read for an account's message (another account's id reads None);
kept by COPY and MOVE (the blob's), gone when the blob's last message is expunged; the
quarantine's entries carry it; a message without one (APPEND) reads None."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import create_engine, func, select

from postkeep.store.api import (
    DsnRecipient,
    Envelope,
    FilterLine,
    FilterReport,
    Flag,
    LocalDelivery,
    QuarantineNote,
)
from postkeep.store.sql.schema import filter_results
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]

REPORT = FilterReport("in", "Q1", "tag", 7.5, (
    FilterLine("clamav", "accept", 0.0, (), "clean"),
    FilterLine("junk", "tag", 7.5, ("ATTACH_DOUBLE_EXT", "BAYES_99"), "spam"),
), 1_700_000_000.0)


def _rows(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(filter_results)).scalar())
    finally:
        engine.dispose()


def _envelope(qid: str = "Q1") -> Envelope:
    return Envelope(qid, "x@remote.test", [DsnRecipient("alice@example.org"),
                                           DsnRecipient("bob@example.org")],
                    "192.0.2.1", "client.test", time.time())


def test_record_written_with_the_delivery_and_read_per_account(
        run: Run, store: SqlStore, db_url: str) -> None:
    run(store.add_domain("example.org"))
    alice = run(store.add_account("alice@example.org", "x"))
    bob = run(store.add_account("bob@example.org", "x"))
    carol = run(store.add_account("carol@example.org", "x"))
    data = b"Subject: spam\r\n\r\nbuy now\r\n"
    result = run(store.deliver(LocalDelivery(_envelope(), [alice.id, bob.id], data,
                                             filters=REPORT)))
    assert _rows(db_url) == 1  # one per delivery, shared by its recipients' copies
    a, b = result.delivered
    assert run(store.filter_report(alice.id, a.message_id)) == REPORT
    assert run(store.filter_report(bob.id, b.message_id)) == REPORT
    assert run(store.filter_report(carol.id, a.message_id)) is None  # not hers
    assert run(store.filter_report(bob.id, a.message_id)) is None  # alice's copy
    assert REPORT.symbols == ("ATTACH_DOUBLE_EXT", "BAYES_99")
    # an APPEND (no scan) has none
    plain = run(store.deliver(LocalDelivery(Envelope("", "", [], "", "", time.time()),
                                            [alice.id], data)))
    assert run(store.filter_report(alice.id, plain.delivered[0].message_id)) is None
    # a MOVE keeps it (the blob's); the last copy expunged takes it away
    inbox = run(store.get_mailbox(alice.id, "INBOX"))
    junk = run(store.get_mailbox(alice.id, "Junk"))
    moved = run(store.copy_messages(alice.id, inbox.id, [(a.uid, a.uid)], junk.id, move=True))
    (infos,) = [run(store.messages_by_uid(junk.id, [(moved.pairs[0][1],) * 2]))]
    assert run(store.filter_report(alice.id, infos[0].id)) == REPORT
    run(store.set_flags(alice.id, junk.id, [(infos[0].uid,) * 2], "add", Flag.DELETED))
    run(store.expunge(alice.id, junk.id))
    assert _rows(db_url) == 1  # bob's copy still uses the blob
    bob_inbox = run(store.get_mailbox(bob.id, "INBOX"))
    run(store.set_flags(bob.id, bob_inbox.id, [(b.uid, b.uid)], "add", Flag.DELETED))
    run(store.expunge(bob.id, bob_inbox.id))
    assert _rows(db_url) == 0


def test_quarantine_entries_carry_the_record(run: Run, store: SqlStore, db_url: str) -> None:
    run(store.add_domain("example.org"))
    alice = run(store.add_account("alice@example.org", "x"))
    note = QuarantineNote("in", "clamav", "virus found: Eicar", time.time() + 86400)
    held = FilterReport("in", "Q2", "quarantine", 0.0, (
        FilterLine("clamav", "quarantine", 0.0, ("Eicar-Test-Signature",), "infected"),), 1.0)
    run(store.quarantine(LocalDelivery(_envelope("Q2"), [alice.id], b"Subject: x\r\n\r\nx",
                                       quarantine=note, filters=held)))
    run(store.quarantine(LocalDelivery(_envelope("Q3"), [alice.id], b"Subject: y\r\n\r\ny",
                                       quarantine=note)))
    first, second = run(store.list_quarantine(alice.id))
    assert first.filters == held and second.filters is None
    assert run(store.get_quarantine(first.id)).filters == held
    run(store.delete_quarantine(first.id))
    assert _rows(db_url) == 0
