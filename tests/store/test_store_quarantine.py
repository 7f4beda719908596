"""The quarantine and sending pauses in the store, on both backends: a held delivery lands in
each account's Quarantine mailbox (made and subscribed at the first) with its entry, encrypted
as any message (no plaintext in the database or the blob files); an entry goes with its message
(a MOVE out, an expunge, the account's removal), is released by a MOVE to INBOX, deleted, and
expired in bounded batches; a pause refuses the account's charges until it ends."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from postkeep.errors import NotFound
from postkeep.store.api import (
    QUARANTINE_MAILBOX,
    Account,
    DsnRecipient,
    Envelope,
    Flag,
    LocalDelivery,
    QuarantineNote,
    SendingLimits,
)
from postkeep.store.sql.schema import blobs, quarantine
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
SECRET = b"the quarantined secret text "


def text(size: int, seed: int) -> bytes:
    head = b"Subject: held %d\r\nFrom: x@remote.test\r\n\r\n" % seed
    return head + (SECRET * (size // len(SECRET) + 1))[:size]


@pytest.fixture
def accounts(run: Run, store: SqlStore) -> tuple[Account, Account]:
    run(store.add_domain("example.org"))
    return (run(store.add_account("alice@example.org", "x")),
            run(store.add_account("bob@example.org", "x")))


def hold(run: Run, store: SqlStore, ids: list[int], data: bytes, qid: str = "Q1",
         direction: str = "in", expires: float | None = None) -> list[int]:
    env = Envelope(qid, "x@remote.test", [DsnRecipient("alice@example.org"),
                                          DsnRecipient("bob@example.org")],
                   "192.0.2.1", "client.test", time.time())
    note = QuarantineNote(direction, "clamav", "virus found: Eicar",
                          expires if expires is not None else time.time() + 86400)
    result = run(store.quarantine(LocalDelivery(env, ids, data, quarantine=note)))
    return [d.message_id for d in result.delivered]


def raw_rows(db_url: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [*conn.execute(select(quarantine)).all(), *conn.execute(select(blobs)).all()]
    finally:
        engine.dispose()


def test_held_for_each_recipient_in_its_quarantine_mailbox_encrypted(
    run: Run, store: SqlStore, accounts: tuple[Account, Account], db_url: str, data_dir: Path
) -> None:
    alice, bob = accounts
    small, large = text(300, 1), text(300_000, 2)  # an inline blob and a blob file
    hold(run, store, [alice.id, bob.id], small)
    hold(run, store, [alice.id], large, qid="Q2", direction="out")
    entries = run(store.list_quarantine())
    assert [(e.address, e.queue_id, e.direction) for e in entries] == [
        ("alice@example.org", "Q1", "in"), ("bob@example.org", "Q1", "in"),
        ("alice@example.org", "Q2", "out")]
    first = entries[0]
    assert (first.filter, first.reason, first.mail_from, first.size) == (
        "clamav", "virus found: Eicar", "x@remote.test", len(small))
    assert first.recipients == ("alice@example.org", "bob@example.org")
    assert [e.queue_id for e in run(store.list_quarantine(alice.id, "out"))] == ["Q2"]
    assert run(store.read_quarantine(entries[2].id)) == large
    box = run(store.get_mailbox(alice.id, QUARANTINE_MAILBOX))
    assert len(run(store.list_messages(box.id))) == 2
    assert run(store.list_messages(run(store.get_mailbox(alice.id, "INBOX")).id)) == []
    assert QUARANTINE_MAILBOX in run(store.list_subscriptions(bob.id))
    # nothing in clear at rest: neither the rows (inline blob among them) nor the files
    assert not any(SECRET in repr(row).encode() for row in raw_rows(db_url))
    files = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert files and not any(SECRET in p.read_bytes() for p in files)


def test_an_entry_goes_with_its_message(
    run: Run, store: SqlStore, accounts: tuple[Account, Account]
) -> None:
    alice, bob = accounts
    hold(run, store, [alice.id, bob.id], text(200, 3))
    by_address = {e.address: e for e in run(store.list_quarantine())}
    box = run(store.get_mailbox(alice.id, QUARANTINE_MAILBOX))
    inbox = run(store.get_mailbox(alice.id, "INBOX"))
    run(store.copy_messages(alice.id, box.id, [(1, 1)], inbox.id))  # a COPY keeps it held
    assert len(run(store.list_quarantine(alice.id))) == 1
    run(store.copy_messages(alice.id, box.id, [(1, 1)], inbox.id, move=True))  # the user's
    assert run(store.list_quarantine(alice.id)) == []
    assert len(run(store.list_messages(inbox.id))) == 2
    bob_box = run(store.get_mailbox(bob.id, QUARANTINE_MAILBOX))
    run(store.set_flags(bob.id, bob_box.id, [(1, 1)], "add", Flag.DELETED))
    run(store.expunge(bob.id, bob_box.id))  # the user's delete
    assert run(store.list_quarantine()) == []
    with pytest.raises(NotFound):
        run(store.get_quarantine(by_address["bob@example.org"].id))
    hold(run, store, [bob.id], text(200, 4), qid="Q3")
    run(store.remove_account("bob@example.org"))
    assert run(store.list_quarantine()) == []


def test_release_delete_and_expire(
    run: Run, store: SqlStore, accounts: tuple[Account, Account]
) -> None:
    alice, bob = accounts
    data = text(500, 5)
    hold(run, store, [alice.id, bob.id], data)
    alice_entry, bob_entry = run(store.list_quarantine())
    run(store.release_quarantine(alice_entry.id))
    inbox = run(store.get_mailbox(alice.id, "INBOX"))
    [released] = run(store.list_messages(inbox.id))
    assert run(store.read_message(alice.id, released.id)) == data
    with pytest.raises(NotFound):
        run(store.release_quarantine(alice_entry.id))
    used = run(store.get_account_by_id(bob.id)).used_bytes
    run(store.delete_quarantine(bob_entry.id))
    assert run(store.get_account_by_id(bob.id)).used_bytes == used - len(data)
    with pytest.raises(NotFound):
        run(store.delete_quarantine(bob_entry.id))
    now = time.time()
    for i in range(5):
        hold(run, store, [alice.id], text(100, 10 + i), qid=f"E{i}", expires=now - 10)
    hold(run, store, [alice.id], text(100, 20), qid="KEEP", expires=now + 3600)
    assert run(store.expire_quarantine(now, 3)) == 3  # bounded batches
    assert run(store.expire_quarantine(now, 3)) == 2
    assert run(store.expire_quarantine(now, 3)) == 0
    assert [e.queue_id for e in run(store.list_quarantine())] == ["KEEP"]
    box = run(store.get_mailbox(alice.id, QUARANTINE_MAILBOX))
    assert len(run(store.list_messages(box.id))) == 1


def test_a_pause_refuses_the_accounts_charges_until_it_ends(
    run: Run, store: SqlStore, accounts: tuple[Account, Account]
) -> None:
    alice, bob = accounts
    now = time.time()
    limits = SendingLimits(messages_per_hour=100)
    scopes = [(f"a:{alice.id}", limits), ("d:example.org", limits)]
    run(store.pause_sending(alice.id, now + 3600, "clamav", "virus found: X", "Q9", now))
    assert run(store.charge_sending(scopes, 1, now)) == (f"a:{alice.id}", "paused",
                                                        SendingLimits())
    assert run(store.sending_usage("d:example.org", now)).messages_hour == 0  # not counted
    assert run(store.charge_sending([(f"a:{bob.id}", limits)], 1, now)) is None
    [pause] = run(store.sending_pauses(now))
    assert (pause.address, pause.filter, pause.queue_id) == ("alice@example.org", "clamav", "Q9")
    assert run(store.charge_sending(scopes, 1, now + 3601)) is None  # over
    assert run(store.sending_pauses(now + 3601)) == []
    assert run(store.resume_sending(alice.id)) is True
    assert run(store.resume_sending(alice.id)) is False
    assert run(store.charge_sending(scopes, 1, now)) is None
    run(store.pause_sending(alice.id, now + 60, "clamav", "again", "Q10", now))
    run(store.remove_account("alice@example.org"))  # the pause goes with the account
    assert run(store.sending_pauses(now)) == []


def test_recipients_are_kept_as_json(run: Run, store: SqlStore,
                                     accounts: tuple[Account, Account], db_url: str) -> None:
    hold(run, store, [accounts[0].id], text(100, 30))
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(quarantine.c.recipients)).scalar_one()
    finally:
        engine.dispose()
    assert json.loads(stored) == ["alice@example.org", "bob@example.org"]
