"""ReadDeadlines (postkeep.net.deadlines) on real socket streams: a read past its deadline raises
TimeoutError (also in a task of its own, as IMAP's IDLE reads), one that gets data in time
returns it, and a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
import socket

import pytest

from postkeep.net.deadlines import ReadDeadlines


async def _pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamWriter]:
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=a)
    _peer_reader, peer = await asyncio.open_unix_connection(sock=b)
    return reader, writer, peer


def test_read_times_out_and_in_time_returns_data() -> None:
    async def go() -> None:
        deadlines = ReadDeadlines(interval=0.05)
        deadlines.start()
        reader, writer, peer = await _pair()
        try:
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
        finally:
            deadlines.stop()
            writer.close()
            peer.close()

    asyncio.run(go())


def test_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def go() -> None:
        deadlines = ReadDeadlines(interval=0.05)
        deadlines.start()
        reader, writer, peer = await _pair()
        try:
            reading = asyncio.ensure_future(deadlines.read(reader, 100, 60.0))
            await asyncio.sleep(0.2)  # several watch passes: not past its deadline
            assert not reading.done()
            reading.cancel()  # e.g. server shutdown
            with pytest.raises(asyncio.CancelledError):
                await reading
            peer.write(b"still")  # the reader was not broken by it
            assert await deadlines.read(reader, 100, 5.0) == b"still"
        finally:
            deadlines.stop()
            writer.close()
            peer.close()

    asyncio.run(go())
