"""clamd's socket protocol, sans-IO: the INSTREAM framing and the replies (clamd(8)).

Commands are sent in their NUL-terminated form (``zINSTREAM\\0``, ``zPING\\0``), so each reply
ends with a NUL. INSTREAM is followed by chunks, each a 4-octet unsigned big-endian length and
that many octets, and ends with a zero-length chunk; clamd then answers one line:

- ``stream: OK``: nothing found;
- ``stream: <signature name> FOUND``: the stream matched a signature;
- ``<text> ERROR``: no verdict (``INSTREAM size limit exceeded. ERROR`` once the stream passes
  clamd's ``StreamMaxLength``, after which clamd closes the connection).

`StreamFramer` cuts a message into chunks and stops at a limit (postkeep's `max_size`, which
must not pass clamd's StreamMaxLength); `END` ends it; `ReplyReader` collects the reply
up to its NUL, bounded; `parse_reply` reads it. Nothing here touches a socket.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

INSTREAM = b"zINSTREAM\0"
PING = b"zPING\0"
PONG = b"PONG"
END = b"\0\0\0\0"  # the zero-length chunk that ends a stream
CHUNK_SIZE = 64 * 1024
MAX_REPLY = 4096  # a reply line is a signature name and a few words
MAX_NAME = 256


class ProtocolError(Exception):
    """clamd's reply is not one of its forms, or too long."""


def chunk(data: bytes) -> bytes:
    """One INSTREAM chunk: length prefix and octets."""
    if not 0 < len(data) < 1 << 32:
        raise ValueError("a chunk holds 1 to 2**32-1 octets")
    return struct.pack(">I", len(data)) + data


class StreamFramer:
    """Frames a stream of at most `limit` octets: `frames` yields the chunks for each piece
    of text fed to it, cut at `limit` (what is past it is dropped: `truncated` says so), and
    `end` the final zero-length chunk."""

    def __init__(self, limit: int, chunk_size: int = CHUNK_SIZE) -> None:
        if limit < 0 or chunk_size <= 0:
            raise ValueError("limit must be >= 0 and chunk_size > 0")
        self.limit = limit
        self.chunk_size = chunk_size
        self.sent = 0
        self.truncated = False

    def frames(self, data: bytes) -> Iterator[bytes]:
        room = self.limit - self.sent
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        for start in range(0, len(data), self.chunk_size):
            piece = data[start : start + self.chunk_size]
            self.sent += len(piece)
            yield chunk(piece)

    @property
    def full(self) -> bool:
        """Whether the limit is reached: nothing more will be sent."""
        return self.sent >= self.limit


class ReplyReader:
    """Collects one NUL-terminated reply of at most `limit` octets."""

    def __init__(self, limit: int = MAX_REPLY) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """The reply without its NUL once it is complete, else None."""
        self._buf += data
        end = self._buf.find(b"\0")
        if end < 0:
            if len(self._buf) > self.limit:
                raise ProtocolError(f"reply longer than {self.limit} octets")
            return None
        if end > self.limit:
            raise ProtocolError(f"reply longer than {self.limit} octets")
        return bytes(self._buf[:end])

    def eof(self) -> bytes:
        """The reply when the connection closed without a NUL (clamd after an error closes
        at once): what was received, if anything."""
        if not self._buf:
            raise ProtocolError("connection closed without a reply")
        return bytes(self._buf).rstrip(b"\n")


class Verdict(enum.Enum):
    CLEAN = "clean"
    FOUND = "found"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ScanReply:
    """`detail`: the signature name (FOUND) or clamd's error text (ERROR)."""

    verdict: Verdict
    detail: str = ""

    @property
    def size_limit(self) -> bool:
        """Whether clamd refused the stream for passing its StreamMaxLength."""
        return self.verdict is Verdict.ERROR and "size limit exceeded" in self.detail


def _text(reply: bytes) -> str:
    try:
        text = reply.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("reply is not ASCII") from None
    if not text.isprintable():
        raise ProtocolError("reply holds control characters")
    return text


def parse_reply(reply: bytes) -> ScanReply:
    """An INSTREAM reply (without its NUL) read; ProtocolError if it is none of the forms."""
    if len(reply) > MAX_REPLY:
        raise ProtocolError(f"reply longer than {MAX_REPLY} octets")
    text = _text(reply)
    if text.endswith(" ERROR"):
        return ScanReply(Verdict.ERROR, text[: -len(" ERROR")].strip() or "unnamed error")
    label, sep, rest = text.partition(": ")
    if not sep or label != "stream":
        raise ProtocolError(f"unexpected reply {text[:80]!r}")
    if rest == "OK":
        return ScanReply(Verdict.CLEAN)
    if rest.endswith(" FOUND"):
        name = rest[: -len(" FOUND")]
        if not name or len(name) > MAX_NAME or " " in name:
            raise ProtocolError(f"unexpected signature name {name[:80]!r}")
        return ScanReply(Verdict.FOUND, name)
    raise ProtocolError(f"unexpected reply {text[:80]!r}")


def parse_pong(reply: bytes) -> None:
    """PING's reply checked; ProtocolError if it is not PONG."""
    if reply != PONG:
        raise ProtocolError(f"unexpected reply to PING {_text(reply)[:80]!r}")
