"""The antivirus filter: clamd asked over its socket (clamd(8) INSTREAM), unix or TCP.

One connection per scan: ``zINSTREAM``, the message in 64 KiB chunks (`clamd_protocol`'s
framing; clamd decodes MIME, archives and nested archives itself), the end chunk, one reply.
At most `[antivirus] max_size` octets are sent, which must not pass clamd's
``StreamMaxLength``; a message larger than that has its first `max_size` octets scanned
(``oversize = "truncate"``) or is not scanned (``"skip"``), and its ``X-Virus-Scanned`` field
says which. A stream clamd refuses anyway (its limit set lower) is a failure: the fail mode
applies, and the log names StreamMaxLength.

A signature found: the message is rejected, or quarantined where `[antivirus]
infected_inbound` / `infected_outbound` say "quarantine" for its direction (the signature's
name goes to the log and the quarantine's record, never to the client). clamd down,
refusing, answering nonsense or not within `timeout` (the runner's bound, `filters.base`):
the fail mode of the direction applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from postkeep.config import AntivirusConfig
from postkeep.filters.base import Action, Direction, FilterResult, ScanContext, ScanError
from postkeep.filters.clamd_protocol import (
    CHUNK_SIZE,
    END,
    INSTREAM,
    PING,
    ProtocolError,
    ReplyReader,
    ScanReply,
    StreamFramer,
    Verdict,
    parse_pong,
    parse_reply,
)
from postkeep.filters.sockets import connect
from postkeep.store.spool import MessageData

READ_SIZE = 4096


class ClamdClient:
    """A clamd at `address`: a unix socket path, or "ip:port"."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await connect(self.address)

    async def _reply(self, reader: asyncio.StreamReader) -> bytes:
        collector = ReplyReader()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return collector.eof()
            reply = collector.feed(data)
            if reply is not None:
                return reply

    async def ping(self) -> None:
        """PING answered by PONG; OSError or ProtocolError otherwise."""
        reader, writer = await self._connect()
        try:
            writer.write(PING)
            await writer.drain()
            parse_pong(await self._reply(reader))
        finally:
            writer.close()

    async def instream(self, pieces: Iterator[bytes], limit: int) -> tuple[ScanReply, bool]:
        """Scan the octets `pieces` yields, the first `limit` of them: clamd's reply, and
        whether the text was cut at `limit`. OSError or ProtocolError when clamd failed."""
        framer = StreamFramer(limit)
        reader, writer = await self._connect()
        # read while sending: clamd past its StreamMaxLength answers, closes and stops
        # reading; the reply must be in before the failed write ends the connection
        replied = asyncio.ensure_future(self._reply(reader))
        try:
            writer.write(INSTREAM)
            try:
                for piece in pieces:
                    if replied.done():
                        break
                    for frame in framer.frames(piece):
                        writer.write(frame)
                        await writer.drain()
                    if framer.full:
                        break
                writer.write(END)
                await writer.drain()
            except ConnectionError:
                pass  # clamd stopped reading: its reply, if it sent one, says why
            reply = parse_reply(await replied)
        finally:
            if replied.done() and not replied.cancelled():
                replied.exception()  # retrieved (raised above, or not needed: no warning)
            replied.cancel()
            writer.close()
        return reply, framer.truncated


def _pieces(data: MessageData, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """`data`, `size` octets at a time (a spooled text decrypted as it goes)."""
    for offset in range(0, len(data), size):
        yield bytes(data[offset : offset + size])


class ClamavFilter:
    """`filters.base.Filter` over clamd."""

    name = "clamav"
    header = "X-Virus-Scanned"

    def __init__(self, cfg: AntivirusConfig) -> None:
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.client = ClamdClient(cfg.address)

    def fails_open(self, direction: Direction) -> bool:
        if direction is Direction.INBOUND:
            return self.cfg.fail_open_inbound
        return self.cfg.fail_open_outbound

    async def scan(self, message: MessageData, context: ScanContext) -> FilterResult:
        limit = self.cfg.max_size
        if len(message) > limit and self.cfg.oversize == "skip":
            return FilterResult(status=f"unscanned (over {limit} octets)")
        try:
            reply, truncated = await self.client.instream(_pieces(message), limit)
        except ProtocolError as e:
            raise ScanError(f"clamd: {e}") from None
        if reply.verdict is Verdict.FOUND:
            mode = (self.cfg.infected_inbound if context.direction is Direction.INBOUND
                    else self.cfg.infected_outbound)
            action = Action.QUARANTINE if mode == "quarantine" else Action.REJECT
            return FilterResult(action, status="infected",
                                reason=f"virus found: {reply.detail}")
        if reply.verdict is Verdict.ERROR:
            hint = (f" (antivirus.max_size {limit} is over clamd's StreamMaxLength)"
                    if reply.size_limit else "")
            raise ScanError(f"clamd: {reply.detail}{hint}")
        return FilterResult(status=f"clean (first {limit} octets)" if truncated else "clean")
