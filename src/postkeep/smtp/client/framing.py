"""SMTP client framing (sans-IO): the peer's replies in, message text for DATA out.

Replies (RFC 5321 §4.2, §4.2.1 multi-line replies, §4.5.3.1.5 reply-line length) are read from
whatever the socket delivered, a line at a time, with a bound on a line's length and on the
number of lines of one reply: a peer that sends more, a line that is no reply line, or a
multi-line reply whose code changes, is a protocol error (`ReplyError`), never a crash or a
growing buffer. Enhanced status codes (RFC 3463, RFC 2034 §3) are taken from a reply's text once
the peer has advertised ENHANCEDSTATUSCODES.

DATA text (RFC 5321 §4.1.1.4 end of data, §4.5.2 transparency) is dot-stuffed as it is handed
over, chunk by chunk: a line starting with "." whose CRLF ended the previous chunk is stuffed
too. Line ends are made CRLF (§2.3.8: a bare CR or LF is no line end on the wire, and a peer
that took one for one could be shown a line "." we did not stuff), and the text ends with CRLF
before the final ".".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPLY_LINE = 2048  # octets, CRLF included (RFC 5321 §4.5.3.1.5 asks for 512 at least)
MAX_REPLY_LINES = 128  # lines of one reply (an EHLO reply has about 15)

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|\Z)")
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply of the peer (or, with `generated`, one made here for a failure of our own:
    a timeout, a lost connection, a pre-flight refusal; no such reply was on the wire).

    `enhanced` is the RFC 3463 code ("5.1.1") when the peer sent one, else ""; `lines` are the
    texts of the reply's lines, the code and the enhanced code taken off."""

    code: int
    enhanced: str
    lines: tuple[str, ...]
    generated: bool = False

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def status(self) -> str:
        """The enhanced code, or the class's undefined one ("4.0.0") when there is none."""
        return self.enhanced or f"{self.code // 100}.0.0"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)
        return f"{head} {self.text}" if self.text else head


def local_reply(code: int, enhanced: str, text: str) -> Reply:
    """A reply made here (see `Reply.generated`)."""
    return Reply(code, enhanced, (text,), generated=True)


class ReplyError(Exception):
    """The peer sent something that is no SMTP reply (or one past the bounds)."""


class ReplyReader:
    """Bytes from the peer in (`feed`), whole replies out (`next_reply`).

    Holds at most the unread part of what was fed: the driver feeds a read only when
    `next_reply` returned None, and a line longer than `max_line` is an error as soon as that
    many octets without LF are in."""

    def __init__(self, max_line: int = MAX_REPLY_LINE, max_lines: int = MAX_REPLY_LINES) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        #: take RFC 3463 codes off the text (set once the peer advertised ENHANCEDSTATUSCODES)
        self.enhanced_codes = False
        self._buf = b""
        self._code = 0
        self._lines: list[str] = []

    @property
    def buffered(self) -> int:
        """Octets fed and not yet part of a reply returned."""
        return len(self._buf) + sum(len(line) for line in self._lines)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_reply(self) -> Reply | None:
        """The next whole reply, or None until more is fed. Raises `ReplyError`."""
        while True:
            end = self._buf.find(b"\n", 0, self.max_line)
            if end < 0:
                if len(self._buf) >= self.max_line:
                    raise ReplyError(f"reply line longer than {self.max_line} octets")
                return None
            raw, self._buf = self._buf[:end], self._buf[end + 1:]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            last = self._line(raw)
            if last:
                return self._reply()

    def _line(self, raw: bytes) -> bool:
        """Take one reply line (CRLF removed); True if it was the reply's last."""
        sep = raw[3:4]
        if len(raw) < 3 or not raw[:3].isdigit() or sep not in (b"", b" ", b"-"):
            raise ReplyError(f"not a reply line: {_shown(raw)}")
        code = int(raw[:3])
        if not (2 <= code // 100 <= 5 and (code // 10) % 10 <= 5):  # RFC 5321 §4.2
            raise ReplyError(f"not a reply code: {_shown(raw)}")
        if self._lines and code != self._code:
            raise ReplyError(f"reply code changed within a reply: {_shown(raw)}")
        if len(self._lines) >= self.max_lines:
            raise ReplyError(f"reply longer than {self.max_lines} lines")
        self._code = code
        self._lines.append(_CONTROL.sub("?", raw[4:].decode("utf-8", "replace")))
        return sep != b"-"

    def _reply(self) -> Reply:
        lines, self._lines = self._lines, []
        enhanced = ""
        if self.enhanced_codes:
            m = _ENHANCED.match(lines[0])
            if m and int(m.group(1)) == self._code // 100:
                enhanced = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
                lines = [_without_enhanced(line, m.group(1)) for line in lines]
        return Reply(self._code, enhanced, tuple(lines))


def _without_enhanced(line: str, klass: str) -> str:
    m = _ENHANCED.match(line)
    return line[m.end():] if m and m.group(1) == klass else line


def _shown(raw: bytes) -> str:
    return repr(raw[:80])


class DotStuffer:
    """DATA text, a chunk at a time: `feed` each chunk, then `finish` for the end of data.

    What comes out has CRLF line ends, a "." doubled at the start of every line, ends with
    CRLF (unless the message is empty) and then ".CRLF". A CR at the end of a chunk is held
    until the next shows whether an LF follows it."""

    def __init__(self) -> None:
        self._line_start = True  # the next octet out starts a line
        self._held_cr = False
        self._sent = False

    def feed(self, chunk: bytes) -> bytes:
        if self._held_cr:
            chunk, self._held_cr = b"\r" + chunk, False
        if chunk.endswith(b"\r"):
            chunk, self._held_cr = chunk[:-1], True
        if not chunk:
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            chunk = _LINE_END.sub(b"\r\n", chunk)
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if self._line_start and out.startswith(b"."):
            out = b"." + out
        self._line_start = out.endswith(b"\r\n")
        self._sent = True
        return out

    def finish(self) -> bytes:
        out = b"\r\n" if self._held_cr else b""
        self._held_cr = False
        if self._sent and not out and not self._line_start:
            out = b"\r\n"
        self._line_start = True
        return out + b".\r\n"
