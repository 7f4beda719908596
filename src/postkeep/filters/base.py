"""The content filter interface and the runner that combines filters.

A filter (`Filter`) reads a whole message and its context (`ScanContext`: the direction,
the client, the envelope, the authentication results so far) and returns a `FilterResult`:
an action (accept, tag, quarantine, reject, tempfail), a score, symbols, and a status for the header
field and the log. It may raise `ScanError` (the scanner gave no verdict) or `OSError`.

`FilterRunner` runs a direction's filters in their configured order. Each runs within its
own `timeout`; a filter that times out or fails gets its fail mode for the direction: open
(the message goes on, its status says it was not scanned, a warning is logged) or closed (a
tempfail). Results combine: the first reject or tempfail ends the run and decides, scores
add up, symbols are listed in order, any tag tags the message, and the last filter that
names a mailbox (the junk filter: Junk) decides where its local copies go; each filter's
own result is kept too (`ScanOutcome.results`), for the record stored with the message
(`ScanOutcome.report`, `Store.filter_report`). A quarantine (a
filter's, or a milter's SMFIR_QUARANTINE) is kept but the run goes on, so that a later
filter's reject or tempfail still decides: the precedence is reject = tempfail (whichever
comes first) > quarantine (the first one names the filter) > tag > accept. A quarantined
message is accepted and held apart, never delivered as it is (`delivery.quarantine`). A
filter may also ask for changes (`Changes`: header fields added, inserted, changed or
deleted, the body replaced, recipients added or removed; a milter's): the runner applies the
text changes before the next filter reads the message (`filters.edits`), so a chain sees
each step's result, and hands the recipient changes and the final text to the pipeline.
Scanners outside the process (clamd) are awaited on sockets, so a slow one holds only its
own session, for at most the timeout, never the listener.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from postkeep import log
from postkeep.errors import Reply
from postkeep.filters.edits import NO_CHANGES, Changes, apply_text
from postkeep.store.api import Envelope, FilterLine, FilterReport
from postkeep.store.spool import MessageData

logger = log.get("filters")


class Action(enum.Enum):
    ACCEPT = "accept"
    TAG = "tag"  # accepted, the header fields say it is suspect
    REJECT = "reject"  # refused for good (5xx)
    TEMPFAIL = "tempfail"  # refused for now (4xx): the client tries again later
    QUARANTINE = "quarantine"  # accepted, held apart for review instead of delivered


class Direction(enum.Enum):
    INBOUND = "inbound"  # arriving at the MX
    OUTBOUND = "outbound"  # submitted by a logged-in user


@dataclass(frozen=True, slots=True)
class ScanContext:
    direction: Direction
    queue_id: str
    client_ip: str
    envelope: Envelope
    auth_results: str = ""  # the MX's checks in short ("spf=pass dkim=none ..."), "" if none
    login: str = ""  # the submitting account's address, "" on the MX
    accounts: tuple[int, ...] = ()  # the local recipients' account ids
    client_name: str = ""  # the client's confirmed reverse DNS name (iprev), "" if none
    mechanism: str = ""  # the SASL mechanism the login authenticated with, "" on the MX


@dataclass(frozen=True, slots=True)
class FilterResult:
    """`status` is the filter's word for the header field and the log ("clean",
    "unscanned (...)"); `reason` is for the log line of a refusal, never sent. `reply`: a
    reply of the scanner's own for a refusal (a milter's, sanitised), None for ours."""

    action: Action = Action.ACCEPT
    score: float = 0.0
    symbols: tuple[str, ...] = ()
    status: str = ""
    reason: str = ""
    mailbox: str = ""  # where an accepted message's local copies go ("Junk"); "": no say
    changes: Changes = NO_CHANGES
    reply: Reply | None = None


class ScanError(Exception):
    """The scanner gave no verdict: it refused the request or its reply made no sense."""


class Filter(Protocol):
    name: str  # in the log and the header field ("clamav")
    header: str  # the field its status goes in ("X-Virus-Scanned"), "" for none
    timeout: float

    def fails_open(self, direction: Direction) -> bool:
        """Whether a message goes on unscanned (True) or is tempfailed (False) when the
        scanner fails or times out, for mail in `direction`."""
        ...

    async def scan(self, message: MessageData, context: ScanContext) -> FilterResult: ...


@dataclass(frozen=True, slots=True)
class Status:
    """One filter's status in the outcome: what its header field says."""

    filter: str
    header: str
    status: str


@dataclass(frozen=True, slots=True)
class RecipientEdit:
    """An envelope recipient a filter added (`add`) or removed."""

    filter: str
    address: str
    add: bool


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """The combined result. `decided_by` names the filter whose reject or tempfail ended the
    run, or whose quarantine held the message ("" when none did); `reason` and `reply` are
    that filter's. `data`: the text after the filters' changes (None: unchanged);
    `recipients`: their recipient changes, in order."""

    action: Action
    score: float
    symbols: tuple[str, ...]
    statuses: tuple[Status, ...]
    decided_by: str = ""
    reason: str = ""
    mailbox: str = ""  # the last filter's that named one, "" if none did
    reply: Reply | None = None
    data: MessageData | None = None
    recipients: tuple[RecipientEdit, ...] = ()
    results: tuple[FilterLine, ...] = ()  # each filter's own, in order (the stored record)

    def report(self, direction: Direction, queue_id: str, when: float) -> FilterReport:
        """The record kept with the stored message (`LocalDelivery.filters`): "in" for the
        MX's mail, "out" for a submission's."""
        return FilterReport("out" if direction is Direction.OUTBOUND else "in", queue_id,
                            self.action.value, self.score, self.results, when)

    def summary(self) -> str:
        """In short, for the message's log line: ``clamav=clean`` for each filter, then
        the score and symbols when there are any."""
        parts = [f"{s.filter}={s.status}" for s in self.statuses]
        if self.score or self.symbols:
            parts.append(f"score={self.score:g}")
        if self.symbols:
            parts.append("symbols=" + ",".join(self.symbols))
        return " ".join(parts)


class FilterRunner:
    """A direction's filters, in the order they run."""

    def __init__(self, filters: Sequence[Filter], direction: Direction,
                 head_limit: int = 100 * 1024) -> None:
        self.filters = tuple(filters)
        self.direction = direction
        self.head_limit = head_limit  # the header section's size at most (`limits` checked)

    async def run(self, message: MessageData, context: ScanContext) -> ScanOutcome:
        action, score, mailbox = Action.ACCEPT, 0.0, ""
        symbols: list[str] = []
        statuses: list[Status] = []
        held: tuple[str, str] | None = None  # the first quarantine's (filter, reason)
        recipients: list[RecipientEdit] = []
        lines: list[FilterLine] = []
        changed = False
        # run eagerly (`postkeep.eager`), a coroutine has no task of its own until it first
        # waits, and a timeout scope needs one: wait once first (a scan waits on sockets anyway)
        await asyncio.sleep(0)
        for f in self.filters:
            result = await self._scan_one(f, message, context)
            lines.append(FilterLine(f.name, result.action.value, result.score, result.symbols,
                                    result.status))
            score += result.score
            symbols.extend(result.symbols)
            if result.status:
                statuses.append(Status(f.name, f.header, result.status))
            if result.action in (Action.REJECT, Action.TEMPFAIL):
                return ScanOutcome(result.action, score, tuple(symbols), tuple(statuses),
                                   f.name, result.reason, reply=result.reply,
                                   results=tuple(lines))
            if held is None and result.action is Action.QUARANTINE:
                held = (f.name, result.reason)
            if result.action is Action.TAG:
                action = Action.TAG
            mailbox = result.mailbox or mailbox
            if result.changes.text:
                message, changed = apply_text(message, result.changes, self.head_limit), True
            recipients += [RecipientEdit(f.name, a, add=True)
                           for a in result.changes.add_recipients]
            recipients += [RecipientEdit(f.name, a, add=False)
                           for a in result.changes.remove_recipients]
        data = message if changed else None
        if held is not None:
            return ScanOutcome(Action.QUARANTINE, score, tuple(symbols), tuple(statuses),
                               *held, data=data, recipients=tuple(recipients),
                               results=tuple(lines))
        return ScanOutcome(action, score, tuple(symbols), tuple(statuses), mailbox=mailbox,
                           data=data, recipients=tuple(recipients), results=tuple(lines))

    async def _scan_one(self, f: Filter, message: MessageData,
                        context: ScanContext) -> FilterResult:
        """`f`'s result, or its fail mode's when it timed out or failed."""
        try:
            async with asyncio.timeout(f.timeout):
                return await f.scan(message, context)
        except TimeoutError:
            problem = f"no answer within {f.timeout:g}s"
        except (ScanError, OSError) as e:
            problem = str(e) or type(e).__name__
        fail_open = f.fails_open(context.direction)
        logger.warning("filter failed qid=%s ip=%s filter=%s mode=%s reason=%s",
                       context.queue_id, context.client_ip, f.name,
                       "open" if fail_open else "closed", log.quote(problem))
        if fail_open:
            return FilterResult(status="unscanned (scanner unavailable)")
        return FilterResult(Action.TEMPFAIL, status="unscanned (scanner unavailable)",
                            reason=f"unavailable: {problem}")
