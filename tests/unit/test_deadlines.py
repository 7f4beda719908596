"""ReadDeadlines (postkeep.net.deadlines) on real socket streams: a read past its deadline raises
TimeoutError (also in a task of its own, as IMAP's IDLE reads), one that gets data in time
returns it, and a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from postkeep.net.deadlines import ReadDeadlines


@contextlib.asynccontextmanager
async def _watched() -> AsyncIterator[
    tuple[ReadDeadlines, asyncio.StreamReader, asyncio.StreamWriter]
]:
    """Running deadlines (checked every 50 ms), and the two ends of a socket pair: the reader
    the tests read from and the writer of its peer."""
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=a)
    _peer_reader, peer = await asyncio.open_unix_connection(sock=b)
    deadlines = ReadDeadlines(interval=0.05)
    deadlines.start()
    try:
        yield deadlines, reader, peer
    finally:
        deadlines.stop()
        writer.close()
        peer.close()


def test_read_times_out_and_in_time_returns_data() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            asyncio.get_running_loop().call_later(0.1, peer.write, b"hello")
            assert await deadlines.read(reader, 100, 5.0) == b"hello"
            with pytest.raises(TimeoutError):
                await deadlines.read(reader, 100, 0.2)
            # the same task reads again afterwards, with a fresh deadline
            peer.write(b"again")
            assert await deadlines.read(reader, 100, 5.0) == b"again"
            # a read in a task of its own (IMAP's IDLE): the timeout reaches its awaiter
            reading = asyncio.ensure_future(deadlines.read(reader, 100, 0.2))
            with pytest.raises(TimeoutError):
                await reading

    asyncio.run(go())


def test_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            reading = asyncio.ensure_future(deadlines.read(reader, 100, 60.0))
            await asyncio.sleep(0.2)  # several watch passes: not past its deadline
            assert not reading.done()
            reading.cancel()  # e.g. server shutdown
            with pytest.raises(asyncio.CancelledError):
                await reading
            peer.write(b"still")  # the reader was not broken by it
            assert await deadlines.read(reader, 100, 5.0) == b"still"

    asyncio.run(go())
