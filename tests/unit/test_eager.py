"""postkeep.eager: coroutines run at once, tasks only for those that wait."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from postkeep import eager


async def now(value: int) -> int:
    return value


async def later(value: int, gate: asyncio.Event) -> int:
    await gate.wait()
    return value


async def boom() -> int:
    raise ValueError("boom")


def test_eagerly_finishes_without_a_task_or_goes_on_as_one() -> None:
    async def go() -> None:
        ran = eager.eagerly(now(1))
        assert isinstance(ran, eager.Ran) and ran.value == 1
        gate = asyncio.Event()
        task = eager.eagerly(later(2, gate))
        assert isinstance(task, asyncio.Task) and not task.done()
        gate.set()
        assert await task == 2

    asyncio.run(go())


def test_gather_keeps_the_order_of_immediate_and_waiting_results() -> None:
    async def go() -> list[int]:
        gate = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, gate.set)
        return await eager.gather(later(1, gate), now(2), later(3, gate), now(4))

    assert asyncio.run(go()) == [1, 2, 3, 4]


def test_an_error_before_waiting_closes_the_rest_and_cancels_the_waiting() -> None:
    async def go() -> list[asyncio.Task[object]]:
        gate = asyncio.Event()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="boom"):
                await eager.gather(later(1, gate), boom(), now(3))
            gc.collect()  # a coroutine left unawaited warns when it is collected
        assert not [w for w in caught if "never awaited" in str(w.message)]
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(go()) == []  # the waiting one was cancelled and is gone


def test_cancelling_gather_cancels_what_waits() -> None:
    async def go() -> bool:
        gate = asyncio.Event()
        inner = later(1, gate)
        outer = asyncio.ensure_future(eager.gather(inner, now(2)))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.sleep(0)
        return all(t.done() for t in others)

    assert asyncio.run(go())
