"""The delivery workers: claim due queue entries and deliver them, recipient by recipient.

Each worker process runs one `QueueRunner` (`postkeep.server.worker`). It claims due entries
from the store (`Store.claim_outbound`: exclusive across processes and nodes) as long as fewer
than `delivery.max_in_flight` deliveries run, and is woken at once when its own process queues
a message (`wake`), else looks again every `delivery.poll_interval` seconds. Each look also
writes the TLS results of its sessions and, once a day, queues the TLS reports of the day
before (`postkeep.queue.tlsrpt`, RFC 8460), and the same for the MX's DMARC aggregate
reports (`postkeep.queue.dmarcrpt`, RFC 7489 §7.2); once an hour it deletes the quarantined
messages past `[quarantine] days` (`postkeep.delivery.quarantine.expire`).

The messages an attempt holds in memory are bounded per process (`delivery.max_data_in_flight`,
`MemoryBudget`): an attempt whose message does not fit waits for room.

One attempt at an entry (RFC 5321 §4.5.4.1):

1. its pending recipients grouped: local ones (a DSN to a local sender) delivered into their
   mailboxes, the others by domain, each domain one SMTP transaction through the `Transport`
   (`postkeep.queue.remote`), at most `delivery.max_per_destination` at once per domain;
2. each recipient a domain's server accepted is recorded as delivered as soon as the server
   said so (the window in which a crash sends a message twice is that one commit): when other
   domains of the entry are still being tried, in a commit of its own; when it was the only
   domain, in the concluding commit that follows at once;
3. at the end, in one commit: permanent failures marked failed with their bounce queued
   (RFC 3464), success notices for recipients who asked (NOTIFY=SUCCESS) and will get none
   from further on (action "relayed": the server took it without DSN, RFC 3461 §5.2.2;
   "delivered": into a local mailbox), the entry rescheduled (`schedule.retry_at`) or, past
   `delivery.lifetime`, every recipient still pending failed with 4.4.7 and bounced; a delay
   notice once, past `delivery.delay_notice_after`; the entry removed once no recipient is
   pending.

A notice is never sent about a notice (its reverse-path is null, RFC 5321 §4.5.5): a failed
one is logged and dropped. A crash at any point loses nothing: the claim is released when the
node starts again (`release_outbound_claims`) and the entry tried again; a bounce is queued in
the commit that marks its recipients failed, so it is sent exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from postkeep import log
from postkeep.config import Config
from postkeep.delivery.quarantine import expire as expire_quarantine
from postkeep.delivery.trace import received_header, return_path_header
from postkeep.filters.junk.pruning import JunkPruner
from postkeep.queue import schedule
from postkeep.queue.dmarcrpt import DmarcReports
from postkeep.queue.dsn import Reported, notice
from postkeep.queue.outcome import Outcome, temporary
from postkeep.queue.tlsrpt import TlsReports
from postkeep.store.api import (
    Envelope,
    LocalDelivery,
    QueueEntry,
    QueueNotice,
    QueueRecipient,
    Store,
)

logger = log.get("queue")

EXPIRE_EVERY = 3600.0  # seconds between expiries of the quarantine (and junk token prunes)
LEASE = 3600.0  # seconds a claim stands: longer than any attempt (the RFC's timeouts)


class Transport(Protocol):
    """Delivers one entry's recipients at one domain in one attempt: an outcome for each, in
    order (`postkeep.queue.remote.RemoteTransport`)."""

    async def deliver(
        self, domain: str, entry: QueueEntry, recipients: Sequence[QueueRecipient],
        message: bytes,
    ) -> list[Outcome]: ...


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class QueueRunner:
    def __init__(
        self, cfg: Config, store: Store, transport: Transport, *, owner: str,
        clock: Callable[[], float] = time.time, tls_reports: TlsReports | None = None,
        dmarc_reports: DmarcReports | None = None, pruner: JunkPruner | None = None,
    ) -> None:
        self.cfg = cfg
        self.delivery = cfg.delivery
        self.store = store
        self.transport = transport
        self.owner = owner
        self.clock = clock
        self.tls_reports = tls_reports  # RFC 8460: counted each poll, reported once a day
        self.dmarc_reports = dmarc_reports  # RFC 7489 §7.2: the same
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._per_domain: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}
        self._memory = MemoryBudget(self.delivery.max_data_in_flight)
        self._expired = float("-inf")  # when the quarantine was last expired
        self.pruner = pruner

    def wake(self) -> None:
        """Look at the queue now (a message was queued)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; then wait for nothing: attempts in flight are cancelled,
        and their claims released so another process may take them at once."""
        try:
            while True:
                self._wake.clear()
                await self.run_once()
                for reports in (self.tls_reports, self.dmarc_reports):
                    if reports is not None:
                        await reports.tick()
                await self._expire_quarantine()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.delivery.poll_interval)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_outbound_claims(self.owner))
            for reports in (self.tls_reports, self.dmarc_reports):
                if reports is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(reports.close())

    async def _expire_quarantine(self) -> None:
        """Once an hour: the quarantined messages past their time deleted (every process
        does it; what one deleted the others find gone), then the junk tokens pruned (the
        process given a pruner)."""
        now = self.clock()
        if now - self._expired < EXPIRE_EVERY:
            return
        self._expired = now
        try:
            count = await expire_quarantine(self.store, now)
        except Exception:
            logger.exception("queue: quarantine expiry failed")
            return
        if count:
            logger.info("quarantine expired count=%d", count)
        if self.pruner is not None:
            await self._prune_junk(now)

    async def _prune_junk(self, now: float) -> None:
        assert self.pruner is not None
        started = time.monotonic()
        try:
            counts = await self.pruner.run(now)
        except Exception:
            logger.exception("queue: junk token pruning failed")
            return
        logger.info("junk tokens pruned %s seconds=%.1f", counts.summary(),
                    time.monotonic() - started)

    async def run_once(self, queue_id: str | None = None) -> int:
        """Claim what is due (or the entry `queue_id`) and start its attempts; how many."""
        room = self.delivery.max_in_flight - len(self._running)
        if room <= 0:
            return 0
        try:
            entries = await self.store.claim_outbound(
                self.owner, self.clock(), LEASE, room, queue_id
            )
        except Exception:
            logger.exception("queue: claiming due entries failed")
            return 0
        for entry in entries:
            task = asyncio.create_task(self._attempt(entry))
            self._running.add(task)
            task.add_done_callback(self._finished)
        return len(entries)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("queue: attempt failed", exc_info=task.exception())
        self._wake.set()  # room for more

    async def idle(self) -> None:
        """Wait until no attempt runs (the tests: one attempt, then its outcome)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, entry: QueueEntry) -> None:
        async with self._memory.holding(entry.size):
            await self._attempt_held(entry)

    async def _attempt_held(self, entry: QueueEntry) -> None:
        try:
            message = await self.store.read_outbound(entry.queue_id)
        except Exception as e:
            logger.error("queue: cannot read qid=%s: %s; retried later", entry.queue_id, e)
            await self.store.update_outbound(
                entry.id, self.owner, [], reschedule=schedule.retry_at(
                    self.delivery, entry, self.clock()), last_error=f"cannot read: {e}")
            return
        groups: dict[str | None, list[QueueRecipient]] = {}
        local: dict[str, list[int]] = {}  # a local recipient's accounts
        for rcpt in entry.pending:
            accounts = await self.store.resolve_local(rcpt.address)
            if accounts:
                local[rcpt.address] = [a.id for a in accounts]
            key = None if accounts else domain_of(rcpt.address)
            groups.setdefault(key, []).append(rcpt)
        alone = len(groups) == 1  # its outcome is recorded by `_conclude` right after
        results = await asyncio.gather(*(self._group(entry, domain, rcpts, message, alone, local)
                                         for domain, rcpts in groups.items()))
        outcomes = [pair for result in results for pair in result]
        await self._conclude(entry, message, outcomes)

    async def _group(
        self, entry: QueueEntry, domain: str | None, rcpts: list[QueueRecipient], message: bytes,
        alone: bool, local: dict[str, list[int]],
    ) -> list[tuple[QueueRecipient, Outcome]]:
        if domain is None:
            outcomes = [await self._local(entry, rcpt, local[rcpt.address], message)
                        for rcpt in rcpts]
        else:
            async with self._destination(domain):
                try:
                    outcomes = await self.transport.deliver(domain, entry, rcpts, message)
                except Exception as e:  # a bug in a transport must not lose the entry
                    logger.exception("queue: delivery to %s failed qid=%s", domain,
                                     entry.queue_id)
                    outcomes = [temporary("4.3.0", f"Local error in delivery: {e}")] * len(rcpts)
        now = self.clock()
        delivered = [_state(rcpt, outcome, now) for rcpt, outcome in zip(rcpts, outcomes,
                     strict=True) if outcome.delivered]
        if delivered and not alone:  # at once, not after the slowest other domain: a crash
            await self.store.update_outbound(entry.id, self.owner, delivered)  # then resends
            # none of them (alone, `_conclude` records them in the very next commit)
        for rcpt, outcome in zip(rcpts, outcomes, strict=True):
            self._log(entry, rcpt, outcome)
        return list(zip(rcpts, outcomes, strict=True))

    @contextlib.asynccontextmanager
    async def _destination(self, domain: str) -> AsyncIterator[None]:
        """At most `delivery.max_per_destination` deliveries to `domain` at once; a domain's
        semaphore lives while someone uses or waits for it."""
        semaphore, users = self._per_domain.setdefault(
            domain, (asyncio.Semaphore(self.delivery.max_per_destination), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._per_domain[domain]

    async def _local(self, entry: QueueEntry, rcpt: QueueRecipient, account_ids: list[int],
                     message: bytes) -> Outcome:
        now = self.clock()
        hostname = self.cfg.server.hostname
        trace = return_path_header(entry.mail_from) + received_header(
            helo=hostname, client_ip="127.0.0.1", client_name="localhost", hostname=hostname,
            protocol="local", queue_id=entry.queue_id, tls=None, recipient=rcpt.address,
            when=now)
        envelope = Envelope(entry.queue_id, entry.mail_from, [], "127.0.0.1", hostname, now,
                            smtputf8=entry.smtputf8)
        try:
            await self.store.deliver(LocalDelivery(envelope, account_ids,
                                                   trace + message))
        except Exception as e:
            return temporary("4.3.0", f"Local delivery failed: {e}")
        return Outcome(250, "2.0.0", "Delivered to a local mailbox", "local")

    async def _conclude(
        self, entry: QueueEntry, message: bytes, outcomes: list[tuple[QueueRecipient, Outcome]]
    ) -> None:
        now = self.clock()
        cfg = self.delivery
        expired = schedule.expired(cfg, entry, now)
        final: list[QueueRecipient] = []
        failed: list[tuple[QueueRecipient, Outcome]] = []
        waiting: list[tuple[QueueRecipient, Outcome]] = []
        for rcpt, outcome in outcomes:
            if outcome.delivered:  # already recorded when the entry had other domains
                final.append(_state(rcpt, outcome, now))
                continue
            if not outcome.permanent and expired:
                outcome = replace(outcome, code=550, enhanced="4.4.7", text=(
                    f"Delivery time expired after {cfg.lifetime // 3600} hours; last error: "
                    f"{outcome.line()}"))
            if outcome.permanent:
                failed.append((rcpt, outcome))
                final.append(replace(_state(rcpt, outcome, now), status="failed"))
            else:
                waiting.append((rcpt, outcome))
                final.append(_state(rcpt, outcome, now))
        notices: list[QueueNotice] = []
        bounce = [(r, o) for r, o in failed if schedule.wants(r, "FAILURE")]
        if bounce and entry.mail_from:
            notices.append(self._notice(entry, message, bounce, "failed", now))
        elif failed and not entry.mail_from:
            for rcpt, outcome in failed:
                logger.warning("queue: notice dropped qid=%s to=<%s>: %s (a notice is never "
                               "answered by another)", entry.queue_id, rcpt.address,
                               outcome.line())
        success = [(r, o) for r, o in outcomes if o.delivered and schedule.wants(r, "SUCCESS")
                   and (o.relayed or o.remote == "local") and entry.mail_from]
        for action in ("delivered", "relayed"):
            done = [(r, o) for r, o in success if (o.relayed) == (action == "relayed")]
            if done:
                notices.append(self._notice(entry, message, done, action, now))
        delay = schedule.delay_notice_due(cfg, entry, now) and bool(waiting)
        warn = [(r, o) for r, o in waiting if schedule.wants(r, "DELAY")]
        if delay and warn:
            notices.append(self._notice(entry, message, warn, "delayed", now))
        last_error = waiting[0][1].line() if waiting else None
        await self.store.update_outbound(
            entry.id, self.owner, final, reschedule=schedule.retry_at(cfg, entry, now),
            last_error=last_error, delay_notified=delay, notices=notices)

    def _notice(self, entry: QueueEntry, message: bytes,
                about: list[tuple[QueueRecipient, Outcome]], action: str, now: float
                ) -> QueueNotice:
        reported = [
            Reported(r.address, r.orcpt, action, o.enhanced,
                     o.line() if o.remote else None, o.remote, now)
            for r, o in about
        ]
        made = notice(entry, message, reported, hostname=self.cfg.server.hostname,
                      max_returned=self.delivery.max_bounce_size,
                      retry_until=schedule.expires_at(self.delivery, entry), now=now)
        kind = {"delayed": "delay", "failed": "bounce"}.get(action, "success")
        logger.info("queue: %s notice qid=%s for qid=%s to=<%s>", kind, made.envelope.queue_id,
                    entry.queue_id, entry.mail_from)
        return made

    def _log(self, entry: QueueEntry, rcpt: QueueRecipient, outcome: Outcome) -> None:
        status = ("sent" if outcome.delivered else "bounced" if outcome.permanent
                  else "deferred")
        logger.info("queue: %s qid=%s to=<%s> relay=%s status=%s reply=%r", status,
                    entry.queue_id, rcpt.address, outcome.remote or "none", outcome.enhanced,
                    outcome.line())


class MemoryBudget:
    """Octets of messages held for deliveries at once (`delivery.max_data_in_flight`): an
    attempt waits until its message fits, or until nothing else is held (a message larger than
    the whole budget then runs alone, not never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def holding(self, octets: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self.used or self.used + octets <= self.limit)
            self.used += octets
        try:
            yield
        finally:
            async with self._changed:
                self.used -= octets
                self._changed.notify_all()


def _state(rcpt: QueueRecipient, outcome: Outcome, now: float) -> QueueRecipient:
    return replace(rcpt, status="delivered" if outcome.delivered else "pending",
                   reply=outcome.line(), remote=outcome.remote, updated=now)

