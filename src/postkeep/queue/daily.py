"""What the delivery workers' daily reports share: TLS-RPT (`postkeep.queue.tlsrpt`, RFC
8460 §4.1) and DMARC aggregate reports (`postkeep.queue.dmarcrpt`, RFC 7489 §7.2, RFC 9990),
each one report per domain and UTC day.

- `count` adds one to a (domain, day, key) counter in memory: no I/O where results happen
  (a delivery, a message at the MX). Past `MAX_PENDING` distinct keys between writes a result
  is dropped: the store is not keeping up, and a report undercounts rather than memory grow.
- `tick`, from the queue runner's every poll, writes the counts (`_write`, the kind's store
  call: one non-durable transaction) at most every `FLUSH_EVERY` seconds and, from
  `REPORT_AFTER` seconds into a UTC day, starts the previous day's `send_reports` in a task of
  its own (its DNS lookups do not hold up the queue), until one run completes (None: a lookup
  failed, tried again at the next tick). `close` stops that task and writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from postkeep import log

logger = log.get("queue")

DAY = 86400
REPORT_AFTER = 300  # seconds into a UTC day before the previous day is reported
MAX_PENDING = 10_000  # distinct results kept in memory between writes
FLUSH_EVERY = 5.0  # seconds between writes of the counts (a busy queue ticks often)


class DailyReports(ABC):
    """One kind of daily report in one worker process (see the module docstring)."""

    kind = ""  # "TLS", "DMARC": for the log lines

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._counts: Counter[tuple[str, int, str]] = Counter()
        self._reported_day = -1  # the last day this process has reported (or found done)
        self._reporting: asyncio.Task[None] | None = None
        self._flushed = float("-inf")

    def count(self, domain: str, key: str) -> None:
        if len(self._counts) >= MAX_PENDING:
            return
        day = int(self.clock()) // DAY * DAY
        self._counts[(domain.lower(), day, key)] += 1

    @abstractmethod
    async def _write(self, counts: list[tuple[str, int, str, int]]) -> None:
        """Add (domain, day, key, count) to the store."""

    @abstractmethod
    async def send_reports(self, day: int) -> int | None:
        """Queue the reports of the UTC day starting at `day` not queued yet (by any process);
        how many, or None if a lookup failed (try again later)."""

    async def flush(self) -> None:
        counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            await self._write([(d, day, key, n) for (d, day, key), n in counts.items()])
        except Exception as e:
            logger.warning("queue: %s report counts lost: %s", self.kind, e)

    async def tick(self) -> None:
        """Flush now and then; start the previous UTC day's reports once that day is over
        (and `REPORT_AFTER`), in a task of their own."""
        now = self.clock()
        if now - self._flushed >= FLUSH_EVERY:
            self._flushed = now
            await self.flush()
        yesterday = int(now) // DAY * DAY - DAY
        if (yesterday == self._reported_day or now - yesterday < DAY + REPORT_AFTER
                or (self._reporting is not None and not self._reporting.done())):
            return
        self._reporting = asyncio.get_running_loop().create_task(self._report_day(yesterday))

    async def _report_day(self, day: int) -> None:
        try:
            if await self.send_reports(day) is not None:
                self._reported_day = day
        except Exception:
            logger.exception("queue: %s reports for %s failed", self.kind, date(day))

    async def idle(self) -> None:
        """Wait until a report run `tick` started is over (tests)."""
        if self._reporting is not None:
            await asyncio.gather(self._reporting, return_exceptions=True)

    async def close(self) -> None:
        """Stop reporting (the marks make it resume elsewhere) and flush the counts."""
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(BaseException):
                await self._reporting
        await self.flush()


def date(day: int) -> str:
    return datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
