"""The quarantine: messages the content filters held (docs/architecture.md, "Quarantine").

A message is *held* when a filter's outcome is a quarantine (`filters.base.Action.QUARANTINE`,
e.g. `[antivirus] infected_inbound = "quarantine"`), or, on submission, a reject too: what a
logged-in user sends that a filter refuses is kept for the operator to look at (a hijacked
account's malware is evidence; a false positive can still be sent). `held_by` decides.

The inbound pipeline (`delivery.inbound`) then goes on to its ``store`` stage as for any
message (trace fields, DKIM signature on submission; the sending quota is not charged: nothing
is sent) and `hold` stores it instead of delivering or queueing it:

- inbound: for each local recipient, in its "Quarantine" mailbox (`Store.quarantine`: stored
  encrypted as any message, one entry per recipient, in one commit), answered ``250`` as a
  delivered message is (it is durable: RFC 5321 §6.1);
- outbound: in the sender's own "Quarantine" mailbox (as it would have been sent, its
  recipients in the entry), answered ``250 2.0.0 Ok: held for review`` for a quarantine or
  the filter's ``554 5.7.1`` for a reject; the account's submissions are then refused for
  `[filters] outbound_hit_pause` seconds (`Store.pause_sending`, 451 4.7.1 at the ``quota``
  stage: `policy.sending`), and one warning line tells the operator
  (``outbound held qid=... account=... filter=... reason=...``).

Entries expire after `[quarantine] days` (`expire`: the delivery workers, once an hour, and
`postkeep quarantine expire`). Releasing (`release`) an inbound entry moves its message to the
recipient's INBOX; an outbound one is sent as it was held: its remote recipients through the
outbound queue (under its original queue id), its local ones delivered to their INBOX, then
the entry is removed. Only the operator releases outbound mail: the user moving it out of the
Quarantine folder keeps a copy for herself, nothing is sent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from postkeep import log
from postkeep.config import FiltersConfig, QuarantineConfig
from postkeep.delivery.trace import return_path_header
from postkeep.errors import AlreadyExists, Reply
from postkeep.filters.base import Action, ScanOutcome
from postkeep.policy.content import content_verdict
from postkeep.policy.verdict import Verdict
from postkeep.store.api import (
    Account,
    DsnRecipient,
    Envelope,
    FilterReport,
    LocalDelivery,
    QuarantineEntry,
    QuarantineNote,
    Store,
)
from postkeep.store.spool import MessageData

logger = log.get("smtp")  # beside the pipeline's lines: operators' filters match them there

DAY = 86400
EXPIRE_BATCH = 500  # entries removed per transaction


@dataclass(frozen=True, slots=True)
class HoldPolicy:
    """How long a held message is kept, and how long an account is paused after an
    outbound hit (seconds, 0: not paused)."""

    days: int
    pause: float

    @classmethod
    def of(cls, quarantine: QuarantineConfig, filters: FiltersConfig) -> HoldPolicy:
        return cls(quarantine.days, filters.outbound_hit_pause)


def held_by(outcome: ScanOutcome, *, submission: bool) -> bool:
    """Whether the filters' outcome holds the message (see the module docstring)."""
    return outcome.action is Action.QUARANTINE or (submission and
                                                  outcome.action is Action.REJECT)


async def hold(store: Store, policy: HoldPolicy, outcome: ScanOutcome, envelope: Envelope,
               data: MessageData, *, ip: str, local: list[int], login: Account | None,
               clock: Callable[[], float] = time.time,
               report: FilterReport | None = None) -> Verdict | None:
    """Store a held message (`data` with its trace fields) in the quarantine: for the `local`
    recipients' accounts inbound, for the `login` on submission (then paused), with the
    filters' `report` (`QuarantineEntry.filters`). The reply, or None for the pipeline's
    usual ``250`` (inbound). Raises what the store raises."""
    now = clock()
    qid = envelope.queue_id
    note = QuarantineNote("out" if login else "in", outcome.decided_by, outcome.reason,
                          now + policy.days * DAY)
    if login is None:
        await store.quarantine(LocalDelivery(envelope, local, data, quarantine=note,
                                             filters=report))
        logger.info("held in quarantine qid=%s ip=%s filter=%s accounts=%d reason=%s", qid, ip,
                    note.filter, len(local), log.quote(note.reason))
        return None
    await store.quarantine(LocalDelivery(envelope, [login.id], data, quarantine=note,
                                         filters=report))
    if policy.pause:
        await store.pause_sending(login.id, now + policy.pause, note.filter, note.reason, qid,
                                  now)
    logger.warning("outbound held qid=%s ip=%s account=%s filter=%s paused=%gs reason=%s", qid,
                   ip, login.address, note.filter, policy.pause, log.quote(note.reason))
    if outcome.action is Action.QUARANTINE:
        return Verdict(Reply(250, "2.0.0", f"Ok: held for review as {qid}"),
                       f"{note.filter}: {note.reason} qid={qid}")
    return content_verdict(outcome, qid, submission=True)


async def release(store: Store, entry: QuarantineEntry,
                  clock: Callable[[], float] = time.time) -> str:
    """Release an entry (see the module docstring); what was done, in words."""
    if entry.direction == "in":
        await store.release_quarantine(entry.id)
        return f"moved to the INBOX of {entry.address}"
    data = await store.read_quarantine(entry.id)
    local: list[int] = []
    remote: list[DsnRecipient] = []
    for address in entry.recipients:
        accounts = await store.resolve_local(address)
        if accounts is None:
            remote.append(DsnRecipient(address))
        else:
            local += [a.id for a in accounts]
    envelope = Envelope(entry.queue_id, entry.mail_from,
                        [DsnRecipient(a) for a in entry.recipients], "", "", clock())
    done = []
    if local:
        await store.deliver(LocalDelivery(envelope, list(dict.fromkeys(local)),
                                          return_path_header(entry.mail_from) + data))
        done.append(f"delivered to {len(set(local))} local account(s)")
    if remote:
        # AlreadyExists: released before, and stopped before the entry was removed
        with contextlib.suppress(AlreadyExists):
            await store.enqueue_outbound(envelope, remote, data)
        done.append(f"queued for {len(remote)} remote recipient(s) as {entry.queue_id}")
    await store.delete_quarantine(entry.id)
    logger.info("outbound released qid=%s account=%s %s", entry.queue_id, entry.address,
                "; ".join(done) or "no recipient")
    return "; ".join(done) or "no recipient left"


async def expire(store: Store, now: float,
                 progress: Callable[[int], None] | None = None) -> int:
    """Delete the entries expired at `now`, `EXPIRE_BATCH` a transaction; how many."""
    total = 0
    while True:
        count = await store.expire_quarantine(now, EXPIRE_BATCH)
        total += count
        if count and progress is not None:
            progress(total)
        if count < EXPIRE_BATCH:
            return total
