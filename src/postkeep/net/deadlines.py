"""Read timeouts for many connections, enforced by one task.

`asyncio.wait_for` around every read creates a task and a timer per read; here a read only
records its deadline, and one task per server wakes every `WATCH_INTERVAL` seconds and cancels
the reads that are past theirs, which then raise `TimeoutError` (RFC 5321 §4.5.3.2 for SMTP,
RFC 9051 §5.4 autologout for IMAP). A timeout fires up to one interval late.
"""

from __future__ import annotations

import asyncio
from typing import Any

WATCH_INTERVAL = 0.5


class ReadDeadlines:
    """The pending reads of a server's connections and their deadlines (loop time)."""

    def __init__(self, interval: float = WATCH_INTERVAL) -> None:
        self.interval = interval
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def read(self, reader: asyncio.StreamReader, n: int, timeout: float) -> bytes:
        """`reader.read(n)`, or TimeoutError when nothing came within `timeout` seconds.

        The caller's task is what a timeout cancels, so one task reads at a time per deadline;
        a cancellation from elsewhere (server shutdown) stays a cancellation."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = task.get_loop().time() + timeout
        try:
            return await reader.read(n)
        except asyncio.CancelledError:
            if task in self._expired and task.cancelling() <= 1:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            del self._deadlines[task]
            self._expired.discard(task)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline < now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
