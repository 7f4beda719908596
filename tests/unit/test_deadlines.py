"""ReadDeadlines (postkeep.net.deadlines) on real socket streams: a read past its deadline raises
TimeoutError (also in a task of its own, as IMAP's IDLE reads), however many octets came before
it; one that gets data in time returns it; a read past its slow mark raises SlowClient and the
connection can wait again with the same deadline; a drain of a writer whose peer reads nothing
ends at its deadline; and a cancellation from elsewhere stays a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from postkeep.net.deadlines import ReadDeadlines, SlowClient


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


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def test_read_times_out_and_in_time_returns_data() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            asyncio.get_running_loop().call_later(0.1, peer.write, b"hello")
            assert await deadlines.read(reader, 100, _in(5.0)) == b"hello"
            with pytest.raises(TimeoutError):
                await deadlines.read(reader, 100, _in(0.2))
            # the same task reads again afterwards, with a fresh deadline
            peer.write(b"again")
            assert await deadlines.read(reader, 100, _in(5.0)) == b"again"
            # a read in a task of its own (IMAP's IDLE): the timeout reaches its awaiter
            reading = asyncio.ensure_future(deadlines.read(reader, 100, _in(0.2)))
            with pytest.raises(TimeoutError):
                await reading

    asyncio.run(go())


def test_octets_do_not_extend_a_deadline() -> None:
    """Reads that each get an octet in time still end at the one deadline they share."""

    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            deadline = _in(0.3)
            got = b""
            with pytest.raises(TimeoutError):
                while True:
                    asyncio.get_running_loop().call_later(0.02, peer.write, b"x")
                    got += await deadlines.read(reader, 100, deadline)
            assert got.startswith(b"xx")

    asyncio.run(go())


def test_past_the_slow_mark_the_client_may_wait_on_to_the_deadline() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            deadline = _in(5.0)
            with pytest.raises(SlowClient):
                await deadlines.read(reader, 100, deadline, slow_at=_in(0.1))
            peer.write(b"late")
            assert await deadlines.read(reader, 100, deadline) == b"late"

    asyncio.run(go())


def test_a_drain_ends_at_its_deadline_when_the_peer_reads_nothing() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, _reader, peer):
            peer.transport.set_write_buffer_limits(high=1024)
            peer.write(b"x" * (8 << 20))  # more than the socket buffers hold
            with pytest.raises(TimeoutError):
                await deadlines.drain(peer, _in(0.2))

    asyncio.run(go())


def test_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def go() -> None:
        async with _watched() as (deadlines, reader, peer):
            reading = asyncio.ensure_future(deadlines.read(reader, 100, _in(60.0)))
            await asyncio.sleep(0.2)  # several watch passes: not past its deadline
            assert not reading.done()
            reading.cancel()  # e.g. server shutdown
            with pytest.raises(asyncio.CancelledError):
                await reading
            peer.write(b"still")  # the reader was not broken by it
            assert await deadlines.read(reader, 100, _in(5.0)) == b"still"

    asyncio.run(go())
