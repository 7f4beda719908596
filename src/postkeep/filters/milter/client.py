"""A milter asked over its socket, unix or TCP: one connection per message (negotiate, the
conversation of `filters.milter.session`, quit), and the probe of `postkeep check`
(negotiate and quit).

Every read waits on the socket; the caller bounds the whole (`filters.base.FilterRunner`
runs each filter within its timeout), so a milter that accepts and never answers holds
only its own session. Any exit before the end (a timeout included) closes the connection
after an ``A`` (abort) when the milter was still listening.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from postkeep.filters.milter import wire
from postkeep.filters.milter.session import Answer, Conversation, Outcome, Transaction
from postkeep.filters.sockets import connect

READ_SIZE = 65536


class MilterClient:
    """A milter at `address`: a unix socket path, or "ip:port" ("[v6]:port")."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await connect(self.address)

    async def negotiate(self) -> wire.Negotiated:
        """Connect, negotiate and quit (the probe): what the milter asked for."""
        reader, writer = await self._connect()
        try:
            negotiated = await self._negotiate(reader, writer, wire.PacketReader(), [])
            writer.write(wire.QUIT)
            await writer.drain()
            return negotiated
        finally:
            writer.close()

    async def _negotiate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         packets: wire.PacketReader,
                         queued: list[tuple[bytes, bytes]]) -> wire.Negotiated:
        writer.write(wire.encode_optneg())
        await writer.drain()
        code, data = await _next(reader, packets, queued)
        return wire.negotiate(code, data)

    async def check(self, tx: Transaction, fields: Iterable[tuple[bytes, bytes]],
                    body: Iterable[bytes], max_body: int) -> Outcome:
        """The milter's verdict on one message. OSError or `wire.ProtocolError` when it
        failed (closed early, sent what the protocol does not allow)."""
        reader, writer = await self._connect()
        packets, queued = wire.PacketReader(), list[tuple[bytes, bytes]]()
        finished = False
        try:
            negotiated = await self._negotiate(reader, writer, packets, queued)
            talk = Conversation(negotiated, tx, max_body)
            for step in talk.steps(fields, body):
                writer.write(step.packets)
                await writer.drain()
                if not step.reply:
                    continue
                talk.expect(step)
                answer = Answer.WAIT
                while answer is Answer.WAIT:
                    answer = talk.answer(wire.decode_reply(
                        *await _next(reader, packets, queued)))
                if answer is Answer.DONE:
                    break
            if talk.outcome is None:  # cannot happen: the end of body is always answered
                raise wire.ProtocolError("conversation ended without a verdict")
            finished = True
            writer.write(wire.QUIT)
            await writer.drain()
            return talk.outcome
        finally:
            if not finished and not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write(wire.ABORT + wire.QUIT)
            writer.close()


async def _next(reader: asyncio.StreamReader, packets: wire.PacketReader,
                queued: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """The next packet from the milter (`queued`: those read but not handled yet)."""
    while not queued:
        data = await reader.read(READ_SIZE)
        if not data:
            raise wire.ProtocolError("the milter closed the connection")
        queued.extend(packets.feed(data))
    return queued.pop(0)
