"""Running coroutines at once, as far as they go without waiting (no task until one must wait).

A coroutine whose awaits all complete at once (a lookup answered from the DNS cache, a
protocol step with nothing to wait for) needs no task, no scheduling round and no future:

- `eagerly(coro)` runs it now, in the caller: `Ran(value)` if it finished, else the task that
  goes on with it from where it first had to wait (an exception raised before that is raised
  here). The SMTP driver starts its sessions this way in a protocol's callback.
- `gather(*coros)` is `asyncio.gather` for coroutines most of which finish at once: each runs
  eagerly, only those that wait are gathered as tasks; the results in the coroutines' order.

A coroutine run eagerly sees the caller's task as `asyncio.current_task()` (or none) until it
first waits: it must not open an `asyncio.timeout` scope before then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class Ran(Generic[T]):
    """What a coroutine that `eagerly` ran to its end returned."""

    value: T


def eagerly(coro: Coroutine[Any, Any, T]) -> Ran[T] | asyncio.Task[T]:
    """Run `coro` now, in the caller, until it first has to wait: its result if it never did,
    else the task that goes on with it from there."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return Ran(stop.value)
    return asyncio.get_running_loop().create_task(_go_on(coro, pending))


async def gather(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """The coroutines' results in their order; each started at once (`eagerly`), those that
    wait gathered as tasks. If one raises, the ones not started are closed, the waiting ones
    cancelled, and the exception raised."""
    results: list[Any] = [None] * len(coros)
    waiting: dict[int, asyncio.Task[T]] = {}
    for i, coro in enumerate(coros):
        try:
            started = eagerly(coro)
        except BaseException:
            for never in coros[i + 1:]:
                never.close()  # not started: no "was never awaited" warning
            _cancel(waiting.values())
            raise
        if isinstance(started, Ran):
            results[i] = started.value
        else:
            waiting[i] = started
    if waiting:
        try:
            values = await asyncio.gather(*waiting.values())
        except BaseException:
            _cancel(waiting.values())
            raise
        for i, value in zip(waiting, values, strict=True):
            results[i] = value
    return results


def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()


async def _go_on(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    return await _Resumed(coro, pending)


class _Resumed(Generic[T]):
    """Awaiting it goes on with a coroutine that was started already and is waiting on
    `pending` (what `yield from` would do had the coroutine been awaited from the start)."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, T], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, T]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # cancelled: the coroutine gets it where it waits
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
