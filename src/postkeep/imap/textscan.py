"""BODY and TEXT search keys (RFC 9051 §6.4.4) over a message too large to hold: its text read
piece by piece from the store.

`MessageContent` (`postkeep.imap.content`) reads a message whole through `email`; for a message
larger than `postkeep.imap.loader.STREAM_SIZE` that would hold several copies of it at once.
Here the text/* leaf parts are found in the part tree of the stored summary
(`postkeep.mime.structure`, with byte offsets), each is read from the store in pieces, its
transfer encoding removed (`postkeep.mime.decoding`; an undecodable or unknown encoding is read
as it is, as `email` does), decoded from the declared charset (else UTF-8, else Latin-1, as
`content.decode_bytes` decides: a part that is not UTF-8 is read again as Latin-1),
casefolded and searched for every needle of the program at once, with enough of the previous
piece kept that no match is missed at a piece boundary. Parts are joined by a newline, as
`MessageContent.body_text` joins them.

`ScannedContent` then answers the search keys: header keys from the header (read alone, it is
small), BODY and TEXT from the needles the scan found.
"""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from postkeep.imap.content import MessageContent
from postkeep.mime.decoding import Decoder, decoder
from postkeep.mime.structure import Part
from postkeep.store.api import MessageReader

Tick = Callable[[int], Awaitable[None]]  # called with the octets of each piece read


class ScannedContent(MessageContent):
    """A message's header in hand and its text scanned for known needles (`scan`): answers
    the same questions `MessageContent` answers, for the needles it was scanned for."""

    __slots__ = ("_found",)

    def __init__(self, header: bytes, found: frozenset[str]) -> None:
        super().__init__(header)
        self._found = found

    def body_contains(self, needle: str) -> bool:
        return needle.casefold() in self._found


def text_parts(root: Part) -> list[Part]:
    """The text/* leaf parts, in order, attached messages' included (as `email`'s walk())."""
    out: list[Part] = []
    stack = [root]
    while stack:
        part = stack.pop()
        if part.children:
            stack.extend(reversed(part.children))
        elif part.type == "text":
            out.append(part)
    return out


def _charset(part: Part) -> str | None:
    """The declared charset if Python has a text codec for it."""
    value = dict(part.params).get("charset", "").strip().strip('"')
    if not value:
        return None
    try:
        info = codecs.lookup(value)
    except (LookupError, ValueError):
        return None
    return value if info._is_text_encoding else None


class _Needles:
    """Looks for every needle in a text fed in pieces (casefolded already)."""

    def __init__(self, needles: Iterable[str]) -> None:
        self.left = {n for n in needles if n}
        self.found = set(needles) - self.left  # "" matches any text
        self._keep = max((len(n) for n in self.left), default=1) - 1
        self._tail = ""

    def feed(self, text: str) -> None:
        if not self.left:
            return
        window = self._tail + text
        hits = {n for n in self.left if n in window}
        self.found |= hits
        self.left -= hits
        self._tail = window[-self._keep :] if self._keep else ""

    def save(self) -> tuple[set[str], set[str], str]:
        return set(self.found), set(self.left), self._tail

    def restore(self, state: tuple[set[str], set[str], str]) -> None:
        """Back to a `save()`d state: a part read with the wrong charset counts for nothing."""
        self.found, self.left, self._tail = set(state[0]), set(state[1]), state[2]


async def _decoded(reader: MessageReader, part: Part, tick: Tick) -> AsyncIterator[bytes]:
    """The body of `part`, its transfer encoding removed as far as it decodes."""
    dec: Decoder | None
    try:
        dec = decoder(part.encoding)
    except ValueError:
        dec = None  # an unknown encoding: the octets as they are
    async with contextlib.aclosing(reader.pieces(part.body_start, part.body_end)) as pieces:
        async for piece in pieces:
            await tick(len(piece))
            if dec is None:
                yield piece
                continue
            try:
                yield dec.feed(piece)
            except ValueError:
                return  # undecodable from here on: the rest is not text to search
    if dec is not None:
        with contextlib.suppress(ValueError):
            yield dec.finish()


async def _scan_part(
    reader: MessageReader, part: Part, needles: _Needles, codec: str, strict: bool, tick: Tick
) -> bool:
    """Feed the text of `part` decoded with `codec`; False if `strict` and it does not decode
    (the UTF-8 guess, after which the part is read again as Latin-1)."""
    text = codecs.getincrementaldecoder(codec)("strict" if strict else "replace")
    try:
        async with contextlib.aclosing(_decoded(reader, part, tick)) as octets:
            async for data in octets:
                needles.feed(text.decode(data).casefold())
        needles.feed(text.decode(b"", final=True).casefold())
    except UnicodeDecodeError:
        return False
    return True


async def scan(
    reader: MessageReader, root: Part, needles: frozenset[str], tick: Tick
) -> frozenset[str]:
    """Which of `needles` (casefolded) the text of the message contains."""
    found = _Needles(needles)
    for n, part in enumerate(text_parts(root)):
        if not found.left:
            break
        if n:
            found.feed("\n")
        charset = _charset(part)
        if charset is not None:
            await _scan_part(reader, part, found, charset, False, tick)
            continue
        before = found.save()
        if not await _scan_part(reader, part, found, "utf-8", True, tick):
            found.restore(before)
            await _scan_part(reader, part, found, "latin-1", False, tick)
    return frozenset(found.found)
