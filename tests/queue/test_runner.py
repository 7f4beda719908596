"""The delivery workers' decisions: what is recorded, retried, bounced and noticed, on a real
store (SQLite) with a controllable clock.

The transport here is scripted (it answers each recipient as the test says): these tests are
about the runner's bookkeeping, which no real peer can drive to every case in a test's time
(five days of retries). The same runner over real SMTP to real servers is tested in
tests/queue/test_delivery_wire.py.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from postkeep.config import Config, DeliveryConfig, ServerConfig
from postkeep.queue.outcome import Outcome
from postkeep.queue.runner import QueueRunner
from postkeep.store.api import DsnRecipient, Envelope, QueueEntry, QueueRecipient
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
SENDER = "alice@example.test"
MESSAGE = (b"From: alice@example.test\r\nSubject: hello\r\nMessage-ID: <m1@example.test>\r\n"
           b"\r\nHi\r\n")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Scripted:
    """Answers each recipient with the reply the test set for its address (250 if none)."""

    def __init__(self) -> None:
        self.replies: dict[str, Outcome] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.active: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.gate: asyncio.Event | None = None

    async def deliver(self, domain: str, entry: QueueEntry,
                      recipients: Sequence[QueueRecipient], message: bytes) -> list[Outcome]:
        self.calls.append((domain, [r.address for r in recipients]))
        self.active[domain] = self.active.get(domain, 0) + 1
        self.most[domain] = max(self.most.get(domain, 0), self.active[domain])
        try:
            if self.gate is not None:
                await self.gate.wait()
            return [self.replies.get(r.address, Outcome(250, "2.0.0", "Ok", f"mx.{domain}"))
                    for r in recipients]
        finally:
            self.active[domain] -= 1

    async def in_flight(self, n: int, settle: float = 0.1) -> None:
        """Wait (at most 10 s: a loaded machine is slow to start attempts) until `n` attempts
        have begun, then `settle` more seconds, in which one past a limit would begin too."""
        async with asyncio.timeout(10):
            while len(self.calls) < n:
                await asyncio.sleep(0.01)
        await asyncio.sleep(settle)


@pytest.fixture(autouse=True)
def sender(run: Run, store: SqlStore) -> None:
    run(store.add_account(SENDER, "x"))


def config(**delivery: Any) -> Config:
    return Config(server=ServerConfig(hostname="mx.example.test"),
                  delivery=DeliveryConfig(**delivery))


def enqueue(run: Run, store: SqlStore, *rcpts: DsnRecipient, qid: str = "Q1",
            sender: str = SENDER, ret: str | None = None) -> None:
    env = Envelope(qid, sender, list(rcpts), "192.0.2.1", "laptop", time.time(), ret=ret,
                   envid="ENV-7")
    run(store.enqueue_outbound(env, rcpts, MESSAGE))


def attempt(run: Run, runner: QueueRunner) -> int:
    async def go() -> int:
        count = await runner.run_once()
        await runner.idle()
        return count

    return int(run(go()))


def inbox(run: Run, store: SqlStore, address: str = SENDER) -> list[bytes]:
    async def read() -> list[bytes]:
        account = await store.get_account(address)
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        return [await store.read_message(account.id, m.id)
                for m in await store.list_messages(box.id)]

    return list(run(read()))


def dsn_fields(message: bytes) -> tuple[list[dict[str, str]], Any]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    text, status, original = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    groups = [dict(part.items()) for part in status.get_payload()]
    return groups, original


def test_all_delivered_removes_the_entry(run: Run, store: SqlStore) -> None:
    enqueue(run, store, DsnRecipient("bob@remote.test"), DsnRecipient("carol@remote.test"),
            DsnRecipient("dan@other.test"))
    transport = Scripted()
    runner = QueueRunner(config(), store, transport, owner="t/1/")
    assert attempt(run, runner) == 1
    assert sorted(transport.calls) == [("other.test", ["dan@other.test"]),
                                       ("remote.test", ["bob@remote.test", "carol@remote.test"])]
    assert run(store.list_outbound()) == []
    assert attempt(run, runner) == 0


def test_mixed_outcomes_retry_then_expire(run: Run, store: SqlStore) -> None:
    enqueue(run, store, DsnRecipient("ok@remote.test"), DsnRecipient("gone@remote.test"),
            DsnRecipient("later@remote.test", orcpt="rfc822;later@remote.test"))
    transport = Scripted()
    transport.replies["gone@remote.test"] = Outcome(550, "5.1.1", "No such user",
                                                    "mx.remote.test [192.0.2.9]")
    transport.replies["later@remote.test"] = Outcome(451, "4.2.0", "Greylisted",
                                                     "mx.remote.test [192.0.2.9]")
    clock = Clock()
    cfg = config(retry_schedule=[60, 600], lifetime=3600, delay_notice_after=1800)
    runner = QueueRunner(cfg, store, transport, owner="t/1/", clock=clock)
    attempt(run, runner)
    entry = run(store.get_outbound("Q1"))
    states = {r.address: (r.status, r.reply) for r in entry.recipients}
    assert states == {"ok@remote.test": ("delivered", "250 2.0.0 Ok"),
                      "gone@remote.test": ("failed", "550 5.1.1 No such user"),
                      "later@remote.test": ("pending", "451 4.2.0 Greylisted")}
    assert entry.attempts == 1 and entry.next_attempt == pytest.approx(clock.now + 60)
    assert entry.last_error == "451 4.2.0 Greylisted" and entry.lease_owner is None
    [bounce] = [e for e in run(store.list_outbound()) if e.queue_id != "Q1"]
    assert bounce.mail_from == "" and [r.address for r in bounce.recipients] == [SENDER]
    assert bounce.recipients[0].notify == "NEVER"

    assert attempt(run, runner) == 1  # the bounce: to a local sender, into her inbox
    [dsn] = inbox(run, store)
    assert dsn.startswith(b"Return-Path: <>\r\nReceived: ")
    groups, original = dsn_fields(dsn)
    assert groups[0]["Reporting-MTA"] == "dns; mx.example.test"
    assert groups[0]["Original-Envelope-Id"] == "ENV-7"
    assert groups[1]["Final-Recipient"] == "rfc822; gone@remote.test"
    assert (groups[1]["Action"], groups[1]["Status"]) == ("failed", "5.1.1")
    assert groups[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert groups[1]["Remote-MTA"] == "dns; mx.remote.test"
    assert original.get_content_type() == "message/rfc822"
    assert b"Subject: hello" in original.as_bytes()

    transport.calls.clear()
    assert attempt(run, runner) == 0  # not due yet
    clock.now += 61
    attempt(run, runner)
    assert transport.calls == [("remote.test", ["later@remote.test"])]  # only the pending one
    assert run(store.get_outbound("Q1")).attempts == 2
    clock.now += 1800  # past delay_notice_after: one delay notice
    run(store.retry_outbound("Q1", clock.now))
    attempt(run, runner)
    assert run(store.get_outbound("Q1")).delay_notified
    attempt(run, runner)  # the delay notice, delivered locally
    groups, _ = dsn_fields(inbox(run, store)[1])
    assert (groups[1]["Action"], groups[1]["Status"]) == ("delayed", "4.2.0")
    assert groups[1]["Original-Recipient"] == "rfc822; later@remote.test"
    assert "Will-Retry-Until" in groups[1]
    clock.now += 3600  # past the lifetime: bounced with 4.4.7, the entry gone
    run(store.retry_outbound("Q1", clock.now))
    attempt(run, runner)
    with pytest.raises(Exception, match="not queued"):
        run(store.get_outbound("Q1"))
    attempt(run, runner)
    groups, _ = dsn_fields(inbox(run, store)[2])
    assert (groups[1]["Action"], groups[1]["Status"]) == ("failed", "4.4.7")
    assert "Greylisted" in groups[1]["Diagnostic-Code"]
    assert len(inbox(run, store)) == 3  # one bounce, one delay notice, one expiry bounce


def test_no_notice_when_not_asked_or_about_a_notice(run: Run, store: SqlStore) -> None:
    enqueue(run, store, DsnRecipient("a@remote.test", notify="NEVER"), qid="Q1")
    enqueue(run, store, DsnRecipient("b@remote.test"), qid="Q2", sender="")
    transport = Scripted()
    for address in ("a@remote.test", "b@remote.test"):
        transport.replies[address] = Outcome(550, "5.7.1", "Refused", "mx.remote.test")
    runner = QueueRunner(config(), store, transport, owner="t/1/")
    attempt(run, runner)
    assert run(store.list_outbound()) == []  # both gone, no notice queued


def test_headers_only_when_asked_or_too_big(run: Run, store: SqlStore) -> None:
    enqueue(run, store, DsnRecipient("a@remote.test"), qid="Q1", ret="HDRS")
    transport = Scripted()
    transport.replies["a@remote.test"] = Outcome(554, "5.6.0", "Content refused", "mx")
    runner = QueueRunner(config(), store, transport, owner="t/1/")
    attempt(run, runner)
    attempt(run, runner)
    _, original = dsn_fields(inbox(run, store)[0])
    assert original.get_content_type() == "text/rfc822-headers"
    assert b"Hi\r\n" not in original.as_bytes() and b"Subject: hello" in original.as_bytes()


def test_per_destination_limit_and_claims_across_runners(run: Run, store: SqlStore) -> None:
    for i in range(6):
        enqueue(run, store, DsnRecipient(f"u{i}@remote.test"), qid=f"Q{i}")
    transport = Scripted()
    transport.gate = asyncio.Event()
    cfg = config(max_per_destination=2)
    first = QueueRunner(cfg, store, transport, owner="n1/1/")
    second = QueueRunner(cfg, store, transport, owner="n1/2/")

    async def both() -> tuple[int, int]:
        a = await first.run_once()
        b = await second.run_once()
        await transport.in_flight(2)
        assert transport.gate is not None
        transport.gate.set()
        await first.idle()
        await second.idle()
        return a, b

    assert run(both()) == (6, 0)  # the first claimed all six: the second got none
    assert transport.most["remote.test"] == 2
    assert run(store.list_outbound()) == []


def test_a_crashed_workers_claim_is_released_at_restart(run: Run, store: SqlStore) -> None:
    enqueue(run, store, DsnRecipient("a@remote.test"))
    run(store.claim_outbound("mx.example.test/111/", time.time(), 3600, 10))  # then "killed"
    transport = Scripted()
    runner = QueueRunner(config(), store, transport, owner="mx.example.test/222/")
    assert attempt(run, runner) == 0  # still claimed by the dead worker
    assert run(store.release_outbound_claims("mx.example.test/")) == 1  # the node restarts
    assert attempt(run, runner) == 1 and run(store.list_outbound()) == []


def test_success_notices_only_where_no_report_will_follow(run: Run, store: SqlStore) -> None:
    """NOTIFY=SUCCESS: a server without DSN took it -> "relayed" notice (RFC 3461 §5.2.2), with
    the header section only; a server with DSN takes the request over -> no notice from us."""
    enqueue(run, store, DsnRecipient("a@old.test", notify="SUCCESS"),
            DsnRecipient("b@new.test", notify="SUCCESS,FAILURE"), DsnRecipient("c@old.test"))
    transport = Scripted()
    transport.replies["a@old.test"] = Outcome(250, "2.0.0", "Ok", "mx.old.test", relayed=True)
    transport.replies["c@old.test"] = Outcome(250, "2.0.0", "Ok", "mx.old.test", relayed=True)
    runner = QueueRunner(config(), store, transport, owner="t/1/")
    attempt(run, runner)
    attempt(run, runner)  # the notice, into alice's inbox
    [report] = inbox(run, store)
    groups, original = dsn_fields(report)
    assert [g.get("Final-Recipient") for g in groups[1:]] == ["rfc822; a@old.test"]
    assert (groups[1]["Action"], groups[1]["Status"]) == ("relayed", "2.0.0")
    assert b"Subject: Successful Mail Delivery Report" in report
    assert original.get_content_type() == "text/rfc822-headers"
    assert run(store.list_outbound()) == []


def test_messages_held_for_delivery_stay_within_the_budget(run: Run, store: SqlStore) -> None:
    """delivery.max_data_in_flight: three messages, a budget for two and a half: at most two
    attempts hold theirs at once; a message larger than the whole budget still goes."""
    for i in range(3):
        enqueue(run, store, DsnRecipient(f"u{i}@d{i}.test"), qid=f"M{i}")
    transport = Scripted()
    transport.gate = asyncio.Event()
    budget = len(MESSAGE) * 5 // 2
    runner = QueueRunner(config(max_data_in_flight=budget), store, transport, owner="t/1/")

    async def go() -> int:
        await runner.run_once()
        await transport.in_flight(2)
        held = len(transport.calls)
        assert transport.gate is not None
        transport.gate.set()
        await runner.idle()
        return held

    assert run(go()) == 2 and len(transport.calls) == 3
    enqueue(run, store, DsnRecipient("big@large.test"), qid="BIG")
    small = QueueRunner(config(max_data_in_flight=10), store, Scripted(), owner="t/2/")
    assert attempt(run, small) == 1 and run(store.list_outbound()) == []
