"""The piece-by-piece text scan of large messages (`postkeep.imap.textscan`) answers BODY and
TEXT as `MessageContent` does for the whole message: transfer encodings, declared charsets,
the UTF-8-else-Latin-1 guess, attached messages, needles across piece and part boundaries."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from postkeep.imap.content import MessageContent
from postkeep.imap.textscan import ScannedContent, scan, text_parts
from postkeep.mime.structure import parse_structure


class Reader:
    """A MessageReader over bytes, in pieces of `size` octets."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.step = data, size
        self.read = 0

    @property
    def size(self) -> int:
        return len(self.data)

    async def pieces(self, start: int, end: int) -> AsyncIterator[bytes]:
        for pos in range(start, min(end, len(self.data)), self.step):
            piece = self.data[pos : min(pos + self.step, end)]
            self.read += len(piece)
            yield piece

    def close(self) -> None:
        pass


def mime(*parts: bytes) -> bytes:
    out = b'From: a@example.test\r\nSubject: Header words\r\nContent-Type: multipart/mixed; ' \
          b'boundary="B"\r\n\r\n'
    for part in parts:
        out += b"--B\r\n" + part + b"\r\n"
    return out + b"--B--\r\n"


MESSAGES = {
    "plain": b"Subject: s\r\n\r\nHello W\xc3\xb6rld, the Needle is here.\r\nStra\xc3\x9fe\r\n",
    "latin1": b"Subject: s\r\n\r\nCaf\xe9 ol\xe9 and more text\r\n",
    "parts": mime(
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nR=E9sum=E9 of the first =\r\npart",
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"hidden binary words").replace(b"\n", b"\r\n"),
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("<p>Grüße aus dem Süden</p>".encode() * 50).replace(b"\n", b"\r\n"),
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body speaks",
        b"Content-Type: text/plain; charset=x-unknown\r\n\r\nunknown charset text",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nraw as is",
    ),
}
NEEDLES = [
    "needle", "NEEDLE IS", "wörld", "strasse", "straße", "café", "olé", "résumé", "first part",
    "part\n<p>grüße", "hidden", "grüße aus", "süden</p><p>", "inner body", "inner",
    "unknown charset", "raw as is", "header words", "", "absent", "e",
]


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("step", [1, 3, 64, 1 << 20])
def test_scan_agrees_with_message_content(name: str, step: int) -> None:
    data = MESSAGES[name]
    root = parse_structure(data)
    reader = Reader(data, step)
    ticks: list[int] = []

    async def tick(octets: int) -> None:
        ticks.append(octets)

    needles = frozenset(n.casefold() for n in NEEDLES)
    found = asyncio.run(scan(reader, root, needles, tick))
    whole = MessageContent(data)
    scanned = ScannedContent(data[: root.body_start], found)
    for needle in NEEDLES:
        assert scanned.body_contains(needle) == whole.body_contains(needle), (name, needle)
        assert scanned.text_contains(needle) == whole.text_contains(needle), (name, needle)
    assert sum(ticks) == reader.read <= 2 * len(data)  # every piece counted, parts read once


def test_text_parts_in_order() -> None:
    root = parse_structure(MESSAGES["parts"])
    assert [p.subtype for p in text_parts(root)] == ["plain", "html", "plain", "plain", "plain"]
