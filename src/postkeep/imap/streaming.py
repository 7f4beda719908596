"""FETCH responses of messages too large to hold (`postkeep.imap.loader.STREAM_SIZE`), written
as they are read from the store (RFC 9051 §6.4.5, §7.5.2; BINARY: RFC 3516).

`postkeep.imap.fetch` renders such a message with a `Stream` in place of each literal; here the
message is opened (`MailStore.open_message`), every stream measured first (its length, and for
BINARY whether it needs literal8: a first pass over the decoded part, so an undecodable one is
answered NO [UNKNOWN-CTE] before anything is sent), then written: the literal's announcement,
then its octets piece by piece (only the blob chunks a partial range touches are read; BINARY
decoded by `postkeep.mime.decoding`), the output drained to the socket past FLUSH_BYTES. So a
session holds about FLUSH_BYTES plus one piece, whatever the size of the message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from postkeep import log
from postkeep.errors import StoreError
from postkeep.imap import fetch as fetchmod
from postkeep.imap import loader
from postkeep.imap.fetch import Piece, Stream, Streamed
from postkeep.imap.wire import commands as c
from postkeep.mime.decoding import decoder
from postkeep.mime.summary import Summary
from postkeep.store.api import MessageInfo, MessageReader

if TYPE_CHECKING:
    from postkeep.imap.session import Session

logger = log.get("imap")

FLUSH_BYTES: Final = 256 << 10  # responses buffered before FETCH waits for the socket to take them


class LiteralCut(ConnectionError):
    """A literal already announced could not be completed (its blob failed authentication
    while it was being sent): the connection cannot go on and is closed."""


async def open_message(
    session: Session, info: MessageInfo, summary: Summary | None, atts: list[c.FetchAtt]
) -> tuple[MessageReader, Streamed] | None:
    """The message opened for streaming, with the headers its HEADER.FIELDS items filter read
    ahead; None if it is gone."""
    reader = await loader.open_reader(session, info)
    if reader is None:
        return None
    try:
        headers: dict[int, bytes] = {}
        if summary is not None:
            for start, end in fetchmod.header_ranges(atts, summary.tree):
                headers[start] = await loader.read_range(reader, start, end)
    except BaseException:
        reader.close()
        raise
    return reader, Streamed(reader.size, headers)


async def _octets(reader: MessageReader, stream: Stream) -> AsyncIterator[bytes]:
    """The octets of `stream`, its transfer encoding removed (before `partial` is applied)."""
    if stream.encoding is None:
        async for piece in reader.pieces(stream.start, stream.end):
            yield piece
        return
    try:
        dec = decoder(stream.encoding)
        async for piece in reader.pieces(stream.start, stream.end):
            yield dec.feed(piece)
        yield dec.finish()
    except ValueError:
        raise fetchmod.UnknownCte from None


def _window(stream: Stream, total: int) -> tuple[int, int]:
    """(offset, length) of what `stream` sends out of its `total` octets (RFC 9051 §6.4.5)."""
    if stream.partial is None:
        return 0, total
    start, length = stream.partial
    return min(start, total), max(0, min(length, total - start))


async def _scan(reader: MessageReader, stream: Stream) -> tuple[int, bool]:
    """(total octets, NUL among those sent) of a stream: BINARY needs a first pass for its
    decoded length and for whether it goes as literal8 (RFC 3516 §4.3), BINARY.SIZE for the
    length; the octets of BODY[...] are counted by their range."""
    if stream.encoding is None:
        total = stream.end - stream.start
        if not stream.binary:
            return total, False
        offset, length = _window(stream, total)
        first = stream.start + offset
        async with contextlib.aclosing(reader.pieces(first, first + length)) as pieces:
            async for piece in pieces:
                if b"\0" in piece:
                    return total, True
        return total, False
    total, nul = 0, False
    start, length = (0, -1) if stream.partial is None else stream.partial
    async with contextlib.aclosing(_octets(reader, stream)) as decoded:
        async for octets in decoded:
            if not nul and (length < 0 or total < start + length):
                low, high = max(0, start - total), len(octets)
                if length >= 0:
                    high = min(high, start + length - total)
                nul = low < high and octets.find(b"\0", low, high) >= 0
            total += len(octets)
    return total, nul


async def measure(reader: MessageReader, pieces: list[Piece]) -> dict[Stream, tuple[int, bool]]:
    """`_scan` of every stream among `pieces`, before any of the message is written: an
    undecodable BINARY part is answered NO [UNKNOWN-CTE] (RFC 3516 §4.3) with nothing sent."""
    out: dict[Stream, tuple[int, bool]] = {}
    for piece in pieces:
        if isinstance(piece, Stream) and piece not in out:
            out[piece] = await _scan(reader, piece)
    return out


async def write(
    session: Session,
    reader: MessageReader,
    pieces: list[Piece],
    scans: dict[Stream, tuple[int, bool]],
) -> None:
    """The FETCH data of a streamed message: octets as they are, each stream as a literal whose
    octets are read (and decoded) piece by piece, drained past FLUSH_BYTES."""
    for piece in pieces:
        if not isinstance(piece, Stream):
            session.write(piece)
            continue
        total, nul = scans[piece]
        if piece.size_only:
            session.write(b"%d" % total)
            continue
        offset, length = _window(piece, total)
        session.write((b"~{%d}\r\n" if piece.binary and nul else b"{%d}\r\n") % length)
        try:
            await _send(session, reader, piece, offset, length, keep_nul=piece.binary and nul)
        except StoreError as e:
            assert session.account is not None
            logger.warning(
                "store error ip=%s user=%s command=Fetch error=%s; closing the connection",
                session.peer_ip,
                log.quote(session.account.address),
                log.quote(str(e) or type(e).__name__),
            )
            raise LiteralCut("a literal could not be completed") from e


async def _send(
    session: Session,
    reader: MessageReader,
    stream: Stream,
    offset: int,
    length: int,
    *,
    keep_nul: bool,
) -> None:
    """`length` octets of `stream` from `offset` into the output, drained past FLUSH_BYTES; NUL
    sent as 0x80 unless `keep_nul` (literal8), as `render.literal` does."""
    if stream.encoding is None:  # only the blob chunks the window touches are read
        base = stream.start + offset
        octets = reader.pieces(base, base + length)
        offset = 0
    else:
        octets = _octets(reader, stream)
    async with contextlib.aclosing(octets):
        async for piece in octets:
            if not length:
                break
            if offset >= len(piece):
                offset -= len(piece)
                continue
            piece = piece[offset : offset + length]
            offset = 0
            length -= len(piece)
            session.write(piece if keep_nul else piece.replace(b"\0", b"\x80"))
            if session.out.buffered >= FLUSH_BYTES:
                await session.out.drain()
