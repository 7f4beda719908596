"""Deadlines for many connections' reads and writes, enforced by one task.

A driver gives each wait on its client (a read, or a drain of its replies) an absolute deadline
on the event loop's clock, which it computes from its protocol's state: the deadline of the
whole command, message or login phase the wait belongs to, so the octets that arrive do not
extend it (as Postfix's `smtpd_per_request_deadline`; RFC 5321 §4.5.3.2 for SMTP, RFC 9051
§5.4 for IMAP's autologout). It may also give a "slow" mark, an earlier time past which the
connection counts as slow (`postkeep.net.slots`).

`asyncio.wait_for` around every read creates a task and a timer per read; here a wait only
records its times, and one task per server wakes every `WATCH_INTERVAL` seconds and cancels
the waits that are past them: past the deadline the wait raises `TimeoutError`, past the slow
mark `SlowClient` (the driver decides, and may wait again with the same deadline). Either
fires up to one interval late. Reading from an `asyncio.StreamReader` and draining a writer
are safe to cancel: no octet is lost.

`DeadlineWatch` is the same for drivers built on `asyncio.Protocol` (SMTP), which have no task
waiting to cancel: a connection that waits on its client joins the watch with its times, and
the watch calls its `expired(now)` once it is past one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from postkeep import log

T = TypeVar("T")
logger = log.get("server")

WATCH_INTERVAL = 0.5


class SlowClient(Exception):
    """A wait went past its slow mark (its deadline is still ahead)."""


class ReadDeadlines:
    """The pending waits of a server's connections and their times (loop time)."""

    def __init__(self, interval: float = WATCH_INTERVAL) -> None:
        self.interval = interval
        self._waits: dict[asyncio.Task[Any], tuple[float, float | None]] = {}
        self._expired: dict[asyncio.Task[Any], type[Exception]] = {}
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def read(
        self, reader: asyncio.StreamReader, n: int, deadline: float,
        slow_at: float | None = None,
    ) -> bytes:
        """`reader.read(n)`, or TimeoutError past `deadline`, or SlowClient past `slow_at`."""
        return await self.wait(lambda: reader.read(n), deadline, slow_at)

    async def drain(
        self, writer: asyncio.StreamWriter, deadline: float, slow_at: float | None = None
    ) -> None:
        """`writer.drain()` (the client reads what was written), within the same times."""
        await self.wait(writer.drain, deadline, slow_at)

    async def wait(
        self, start: Callable[[], Awaitable[T]], deadline: float, slow_at: float | None = None
    ) -> T:
        """Await `start()`, a wait on the client that is safe to cancel.

        The caller's task is what a deadline cancels, so one task waits at a time per
        deadline; a cancellation from elsewhere (server shutdown) stays a cancellation."""
        task = asyncio.current_task()
        assert task is not None
        self._waits[task] = (deadline, slow_at)
        try:
            return await start()
        except asyncio.CancelledError:
            error = self._expired.get(task)
            if error is not None and task.cancelling() <= 1:
                task.uncancel()
                raise error from None
            raise
        finally:
            del self._waits[task]
            self._expired.pop(task, None)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for task, (deadline, slow_at) in list(self._waits.items()):
                if task in self._expired:
                    continue
                if deadline < now:
                    self._expired[task] = TimeoutError
                elif slow_at is not None and slow_at < now:
                    self._expired[task] = SlowClient
                else:
                    continue
                task.cancel()


class Watched(Protocol):
    """A connection waiting on its client: `deadline` and `slow_at` are loop times."""

    deadline: float | None
    slow_at: float | None

    def expired(self, now: float) -> None:
        """`now` is past `deadline` or `slow_at`: the connection decides (it leaves the watch,
        or clears `slow_at` to stay)."""


class DeadlineWatch:
    """The connections of a server that wait on their clients, checked every `interval`."""

    def __init__(self, interval: float = WATCH_INTERVAL) -> None:
        self.interval = interval
        self._waiting: set[Watched] = set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def add(self, item: Watched) -> None:
        self._waiting.add(item)

    def discard(self, item: Watched) -> None:
        self._waiting.discard(item)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for item in [w for w in self._waiting if _past(w, now)]:
                if item in self._waiting:  # an earlier one's close may have ended it
                    try:
                        item.expired(now)
                    except Exception:  # one connection's error must not end every deadline
                        self._waiting.discard(item)
                        logger.exception("deadline handling failed")


def _past(item: Watched, now: float) -> bool:
    return (item.deadline is not None and item.deadline < now) or (
        item.slow_at is not None and item.slow_at < now
    )
