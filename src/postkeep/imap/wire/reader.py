"""IMAP command reader (sans-IO): bytes in, framed commands and framing events out.

Assembles one complete command from its lines and literals (RFC 9051 §2.2, §4.3), then hands
its bytes to the driver, which calls `imap_parser.parse()` on them. Implements:

* synchronizing literals {n}: the reader asks the driver for a "+" continuation request
  (`NeedContinuation`) only when n is within limits; otherwise it refuses the literal before
  the client sends it (`TooBig`, RFC 9051 §7.5) and does not read it;
* non-synchronizing literals {n+} (LITERAL+, RFC 7888 §3) and, with `literal_minus`, the
  LITERAL- rule that they may not exceed 4096 octets (RFC 7888 §4). The client sends those
  octets whatever we say, so a refused one is read and discarded, with the rest of its
  command, and never interpreted as commands;
* literal8 ~{n} (RFC 3516 §4.2), framed like a literal;
* a driver's budget for literal octets held (`set_limits(..., admit=...)`): a literal within
  limits is accepted only when `admit(n)` is true, the driver having counted its n octets;
  otherwise it is refused with `NoRoom` (``NO [LIMIT]``, RFC 9051 §7.1), before the client
  sends it when synchronizing; when not, it is read and discarded, not held, with the rest of
  its command, and `NoRoom` comes once that is done;
* AUTHENTICATE continuation lines (RFC 9051 §6.2.2) after `expect_auth_response()`, and the
  "DONE" line that ends IDLE (RFC 9051 §6.3.13) after `expect_done()`.

Exposure: fed by an unauthenticated peer. Every limit is a constructor argument
(`ReaderLimits`); past one, input is discarded to the end of the offending line or command and
one error event is emitted, tagged when the command's tag could be read. After `next()` has
returned None, the reader holds at most `max_command` octets (the command so far and its
partial line) — `max_auth_line` while reading an AUTHENTICATE response, `max_line` in IDLE,
the `id_limits` ones for an ID command — plus 64: before authentication (`PRE_AUTH_LIMITS`) a
client can make it hold about 12 KB, or 32 KiB for one ID command (RFC 2971: up to 30 pairs
of 1024-octet values, see `ID_LIMITS`). The driver raises the limits with `set_limits()` after
login.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from postkeep.imap.wire.lexer import read_tag
from postkeep.imap.wire.parser import ID_MAX_FIELD, ID_MAX_PAIRS, ID_MAX_VALUE

MIB: Final = 1024 * 1024
LITERAL_MINUS_MAX: Final = 4096  # RFC 7888 §4
_TAIL: Final = 64  # octets of a discarded line kept to recognize a literal announcement
_TAG_SCAN: Final = 1024  # a tag is looked for in the first octets of a command only
_SEARCH_COMMAND: Final = re.compile(rb" (?:UID )?(?:SEARCH|SORT|THREAD) ", re.I)


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    """Framing limits (all in octets unless named otherwise).

    `max_line`: one line of a command, CRLF included (each stretch between literals counts
    separately). `max_literal`: one literal's size (the APPENDLIMIT of RFC 7889 once
    authenticated). `max_literals`: literals in one command. `max_command`: one whole command,
    lines plus literal octets. `max_depth`: nesting of parenthesized lists — enforced by
    `parse()`, which the driver calls with `max_depth=limits.max_depth`. `max_auth_line`: one
    AUTHENTICATE continuation line. `literal_minus`: the server advertises LITERAL- instead of
    LITERAL+, so non-synchronizing literals over 4096 octets are refused (RFC 7888 §4).
    `id_limits`: when set, the line, literal and command limits of a command whose first line
    starts "tag ID " (RFC 2971) — `parse()` then holds it to RFC 2971's own limits.
    `search_limits`: likewise for SEARCH, SORT and THREAD (and their UID forms), whose
    literals are search strings, not messages.
    """

    max_line: int = 8192
    max_literal: int = 1024
    max_literals: int = 4
    max_command: int = 12288
    max_depth: int = 32
    max_auth_line: int = 12288
    literal_minus: bool = False
    id_limits: ReaderLimits | None = None
    search_limits: ReaderLimits | None = None


# RFC 2971 §3.3: at most 30 field-value pairs, fields of at most 30 octets, values of at most
# 1024. The largest ID command, tag aside: quoted strings without escapes, "tag ID (" + 30 x
# ("f..." SP "v...") with 29 SP between pairs + ")" CRLF; or every string a LITERAL+ literal,
# "{30+}" CRLF and "{1024+}" CRLF announcing them. (A quoted value whose escapes make it longer
# than the literal form has to be sent as a literal.)
ID_QUOTED_MAX: Final = (
    len(b" ID (") + ID_MAX_PAIRS * (ID_MAX_FIELD + 2 + 1 + ID_MAX_VALUE + 2)
    + ID_MAX_PAIRS - 1 + len(b")\r\n")
)
ID_LITERAL_MAX: Final = (
    len(b" ID (")
    + ID_MAX_PAIRS * (len(b"{30+}\r\n") + ID_MAX_FIELD + 1 + len(b"{1024+}\r\n") + ID_MAX_VALUE)
    + ID_MAX_PAIRS - 1 + len(b")\r\n")
)
# 32 KiB: both forms (31,807 and 32,167 octets) with a tag of up to 600 octets; a literal may
# hold a value, 60 of them hold every field and value.
ID_LIMITS: Final = ReaderLimits(
    max_line=32768, max_literal=ID_MAX_VALUE, max_literals=2 * ID_MAX_PAIRS, max_command=32768
)
# Before authentication only LOGIN / AUTHENTICATE need literals, and small ones; ID has its own.
PRE_AUTH_LIMITS: Final = ReaderLimits(id_limits=ID_LIMITS)
# A search program: lines as long as any command's (UID sets), search strings of up to 64 KiB,
# 256 KiB in all (with APPEND's limits one SEARCH could make the reader hold 64 MiB, and cost
# seconds to parse).
SEARCH_LIMITS: Final = ReaderLimits(
    max_line=65536, max_literal=65536, max_literals=1000, max_command=256 * 1024
)
# After authentication: APPEND of messages up to 50 MiB, long UID sets, MULTIAPPEND.
POST_AUTH_LIMITS: Final = ReaderLimits(
    max_line=65536,
    max_literal=50 * MIB,
    max_literals=1000,
    max_command=64 * MIB,
    search_limits=SEARCH_LIMITS,
)

# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """One complete command: tag, lines and literal octets, final CRLF removed."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """A synchronizing literal of `size` octets was accepted: send "+ Ready for literal
    data" (RFC 9051 §7.5), then call `next()` again."""

    size: int


@dataclass(frozen=True, slots=True)
class TooBig:
    """A literal was refused for its size (RFC 9051 §7.5, RFC 7888 §4, RFC 7889 §4).

    For a synchronizing literal the client has not sent it and will not: answer
    `tag NO [TOOBIG]`. For a non-synchronizing one the client is sending it anyway: the reader
    discards it and the rest of its command (`discarding` stays true meanwhile); answer
    `tag BAD [TOOBIG]` — or close the connection if discarding that much is not worth it.
    """

    tag: str | None
    size: int
    limit: int
    non_synchronizing: bool

    @property
    def status(self) -> str:
        return "BAD" if self.non_synchronizing else "NO"

    def response(self) -> bytes:
        return (
            f"{self.tag or '*'} {self.status} [TOOBIG] Literal of {self.size} octets exceeds "
            f"the limit of {self.limit}\r\n"
        ).encode()


@dataclass(frozen=True, slots=True)
class NoRoom:
    """A literal within the limits was refused because the driver's budget for literal octets
    held (`admit`) had no room for it (RFC 9051 §7.1: `tag NO [LIMIT]`, try again later).

    As for `TooBig`, a synchronizing literal has not been sent and will not be; a
    non-synchronizing one is read and discarded with the rest of its command, never held, and
    the event comes after the command's last octet.
    Literals of the command accepted before it have been dropped: the driver gives back what
    it counted for the command.
    """

    tag: str | None
    size: int
    non_synchronizing: bool

    def response(self) -> bytes:
        return (
            f"{self.tag or '*'} NO [LIMIT] No room for a literal of {self.size} octets now, "
            "try again later\r\n"
        ).encode()


@dataclass(frozen=True, slots=True)
class Bad:
    """A framing error (line or command too long, too many literals): answer
    `tag BAD text`, or `* BAD text` when no tag could be read. The offending input is being
    discarded up to the end of its line, or of its command when a literal follows."""

    tag: str | None
    text: str

    def response(self) -> bytes:
        return f"{self.tag or '*'} BAD {self.text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class AuthLine:
    """One AUTHENTICATE response line (RFC 9051 §6.2.2), CRLF removed, still base64."""

    line: bytes

    @property
    def cancelled(self) -> bool:
        """The client cancelled the exchange with "*" (answer `tag BAD`)."""
        return self.line == b"*"


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The line that ends IDLE: `ok` when it was "DONE" (RFC 9051 §6.3.13), else answer BAD."""

    ok: bool


ReaderEvent = (
    CommandReceived | NeedContinuation | TooBig | NoRoom | Bad | AuthLine | IdleDone
)


class ReaderMode(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # the next line is an AUTHENTICATE response
    IDLE = "idle"  # the next line should be DONE


class _State(enum.Enum):
    LINE = "line"  # reading a line of a command (or an AUTH / IDLE line)
    LITERAL = "literal"  # reading accepted literal octets into the command
    SKIP_LINE = "skip-line"  # discarding to the end of a line
    SKIP_LITERAL = "skip-literal"  # discarding refused non-synchronizing literal octets


_LITERAL_HEADER = re.compile(rb"\{([0-9]+)(\+?)\}\r?\n")


def literal_header(line: bytes) -> tuple[int, bool] | None:
    """(size, non_synchronizing) when `line` ends with a literal announcement
    "{n}" / "{n+}" / "~{n}" followed by its CRLF (RFC 9051 §4.3, RFC 7888, RFC 3516)."""
    if not line.endswith(b"}\n") and not line.endswith(b"}\r\n"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    m = _LITERAL_HEADER.fullmatch(line, start)
    if m is None:
        return None
    digits = m.group(1)
    size = int(digits) if len(digits) <= 20 else 1 << 64
    return size, bool(m.group(2))


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


class ImapReader:
    """Incremental framing of one connection's input. See the module docstring.

    Use: `feed()` what arrives, then call `next()` until it returns None, acting on each event.
    """

    def __init__(self, limits: ReaderLimits = PRE_AUTH_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._scanned = 0  # octets of _buf already searched for LF
        self._cmd = bytearray()  # the command so far: complete lines and literal octets
        self._literals = 0
        self._literal_octets = 0  # octets of the literals accepted into the command
        self._tag: str | None = None
        self._active = limits  # the limits of the command being read
        self._state = _State.LINE
        self._left = 0  # literal octets still to read or discard
        self._tail = b""  # end of the line being discarded
        self._plain_skip = False  # the line being discarded cannot announce a literal
        self._mode = ReaderMode.COMMAND
        self._auth_tag: str | None = None
        self._admit: Callable[[int], bool] | None = None
        self._after_skip: NoRoom | None = None  # answers a command being discarded

    # -- driver interface ---------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append octets received from the peer.

        The memory bound holds between drains: read from the socket again only after `next()`
        returned None (backpressure is the driver's).
        """
        self._buf += data

    def set_limits(
        self, limits: ReaderLimits, admit: Callable[[int], bool] | None = None
    ) -> None:
        """Change the limits (raise them after authentication); applies to what follows.

        `admit(n)`, when given, is asked before each literal within the limits is accepted:
        true when the driver counted its n octets against its budget (it gives them back
        after the command's event), false to refuse the literal with `NoRoom`.
        """
        self.limits = limits
        self._admit = admit

    @property
    def mode(self) -> ReaderMode:
        return self._mode

    @property
    def buffered(self) -> int:
        """Octets held: unprocessed input plus the command being assembled."""
        return len(self._buf) + len(self._cmd) + len(self._tail)

    @property
    def discarding(self) -> bool:
        """Whether the reader is skipping input after an error event."""
        return self._state in (_State.SKIP_LINE, _State.SKIP_LITERAL)

    @property
    def literal_octets(self) -> int:
        """Literal octets received into the command being read (the driver's deadline for
        the command grows with them): what arrived, not what a literal announced, so a
        `{52428800}` followed by silence earns nothing."""
        if self._state is _State.LITERAL:
            return self._literal_octets - self._left
        return self._literal_octets

    @property
    def in_command(self) -> bool:
        """Whether part of a command (or of its discarded remainder) has been read."""
        return bool(self._cmd) or self._state is not _State.LINE

    def expect_auth_response(self, tag: str) -> None:
        """Read the next line as an AUTHENTICATE response (after sending a "+" challenge)."""
        self._mode = ReaderMode.AUTH
        self._auth_tag = tag

    def expect_done(self) -> None:
        """Read the next line as the end of IDLE (after sending "+ idling")."""
        self._mode = ReaderMode.IDLE

    def take_buffered(self) -> bytes:
        """Remove and return unprocessed input (between commands): dropped after STARTTLS
        (RFC 9051 §6.2.1: no command may be pipelined after it) or decompressed and fed back
        after COMPRESS (RFC 4978 §3)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    def next(self) -> ReaderEvent | None:
        """The next event from buffered input, or None when more input is needed."""
        while True:
            state = self._state
            if state is _State.LITERAL:
                take = min(self._left, len(self._buf))
                self._cmd += self._buf[:take]
                del self._buf[:take]
                self._left -= take
                if self._left:
                    return None
                self._state = _State.LINE
            elif state is _State.SKIP_LITERAL:
                take = min(self._left, len(self._buf))
                del self._buf[:take]
                self._left -= take
                if self._left:
                    return None
                self._start_skip(b"", plain=False)
            elif state is _State.SKIP_LINE:
                if not self._skip_line():
                    return None
                if self._state is _State.LINE and self._after_skip is not None:
                    event, self._after_skip = self._after_skip, None
                    return event
            elif self._mode is ReaderMode.AUTH:
                return self._special_line(self.limits.max_auth_line)
            elif self._mode is ReaderMode.IDLE:
                return self._special_line(self.limits.max_line)
            else:
                event = self._command_line()
                if event is not None or self._state is _State.LINE:
                    return event

    # -- internals ----------------------------------------------------------------------------

    def _recover_tag(self, head: bytes | bytearray) -> str | None:
        """The tag of a command from its first octets, for error events.

        Only a tag followed by SP within the first octets counts: the window is no longer
        than what an over-long line is cut at, so the answer does not depend on how the
        input was split.
        """
        limits = self.limits
        window = bytes(head[: min(_TAG_SCAN, limits.max_line, limits.max_command) + 1])
        tag, end = read_tag(window)
        return tag if tag is not None and end < len(window) else None

    def _command_limits(self, head: bytes | bytearray) -> ReaderLimits:
        """The limits of the command starting with `head` (its first octets when nothing of it
        is in `_cmd` yet): `id_limits` for "tag ID ...", `search_limits` for "tag SEARCH ..."
        and the like, else `limits`."""
        if self._cmd:
            return self._active
        limits = self.limits
        if limits.id_limits is not None or limits.search_limits is not None:
            tag, end = read_tag(bytes(head[: _TAG_SCAN + 1]))
            ident = tag is not None and head[end : end + 4].upper() == b" ID "
            if ident and limits.id_limits is not None:
                limits = limits.id_limits
            elif tag is not None and limits.search_limits and _SEARCH_COMMAND.match(head, end):
                limits = limits.search_limits
        self._active = limits
        return limits

    def _too_long(self, limits: ReaderLimits) -> str:
        """Which limit an over-long line hits first: the line's own or the command's."""
        room = limits.max_command - len(self._cmd)
        return "Line too long" if limits.max_line <= room else "Command too long"

    def _reset_command(self) -> None:
        self._cmd = bytearray()
        self._literals = 0
        self._literal_octets = 0
        self._tag = None
        self._state = _State.LINE

    def _start_skip(self, tail: bytes, plain: bool) -> None:
        self._state = _State.SKIP_LINE
        self._tail = tail[-_TAIL:]
        self._plain_skip = plain

    def _skip_literal(self, size: int) -> None:
        self._state = _State.SKIP_LITERAL
        self._left = size
        self._tail = b""

    def _skip_line(self) -> bool:
        """Discard to the end of the line; True when it ended (the state was updated)."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            self._tail = (self._tail + bytes(buf[-_TAIL:]))[-_TAIL:]
            buf.clear()
            self._scanned = 0
            return False
        self._tail = (self._tail + bytes(buf[max(0, end + 1 - _TAIL) : end + 1]))[-_TAIL:]
        del buf[: end + 1]
        self._scanned = 0
        header = None if self._plain_skip else literal_header(self._tail)
        self._tail = b""
        self._plain_skip = False
        if header is not None and header[1]:
            self._skip_literal(header[0])  # LITERAL+ octets follow whatever we said
        else:
            self._reset_command()
        return True

    def _take_line(self, limit: int) -> bytes | None:
        """A complete line (LF included) from the buffer, or None; on overflow, start skipping
        and return b""."""
        buf = self._buf
        end = buf.find(b"\n", self._scanned)
        if end < 0:
            if len(buf) > limit:
                return b""
            self._scanned = len(buf)
            return None
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        self._scanned = 0
        return line

    def _special_line(self, limit: int) -> ReaderEvent | None:
        """One AUTHENTICATE response or IDLE "DONE" line; the mode ends with it."""
        line = self._take_line(limit)
        if line is None:
            return None
        mode = self._mode
        self._mode = ReaderMode.COMMAND
        too_long = not line or len(line) > limit
        if not line:
            self._start_skip(b"", plain=True)
            self._buf.clear()
            self._scanned = 0
        if mode is ReaderMode.IDLE:
            return IdleDone(not too_long and _strip_eol(line).upper() == b"DONE")
        if too_long:
            return Bad(self._auth_tag, "Authentication response line too long")
        return AuthLine(_strip_eol(line))

    def _command_line(self) -> ReaderEvent | None:
        """Process one line of a command. Returns None both when input is missing (state
        LINE) and after starting an unannounced non-synchronizing literal (state LITERAL)."""
        buf = self._buf
        limits = self._command_limits(buf)
        end = buf.find(b"\n", self._scanned)
        if end < 0:
            if len(buf) > limits.max_line or len(self._cmd) + len(buf) > limits.max_command:
                tag = self._tag if self._cmd else self._recover_tag(buf)
                text = self._too_long(limits)
                self._reset_command()
                self._start_skip(bytes(buf[-_TAIL:]), plain=False)
                buf.clear()
                self._scanned = 0
                return Bad(tag, text)
            self._scanned = len(buf)
            return None
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        self._scanned = 0
        if not self._cmd:
            self._tag = self._recover_tag(line)
        tag = self._tag
        header = literal_header(line)
        if len(line) > limits.max_line or len(self._cmd) + len(line) > limits.max_command:
            text = self._too_long(limits)
            self._reset_command()
            if header is not None and header[1]:
                self._skip_literal(header[0])
            return Bad(tag, text)
        self._cmd += line
        if header is None:
            data = _strip_eol(bytes(self._cmd))
            self._reset_command()
            return CommandReceived(data)
        size, non_sync = header
        self._literals += 1
        refusal: ReaderEvent | None = None
        room = limits.max_command - len(self._cmd)
        if self._literals > limits.max_literals:
            refusal = Bad(tag, f"Too many literals in one command (limit {limits.max_literals})")
        elif non_sync and limits.literal_minus and size > LITERAL_MINUS_MAX:
            refusal = TooBig(tag, size, LITERAL_MINUS_MAX, non_sync)
        elif size > limits.max_literal or size > room:
            refusal = TooBig(tag, size, min(limits.max_literal, room), non_sync)
        elif self._admit is not None and not self._admit(size):
            refusal = NoRoom(tag, size, non_sync)
        if refusal is not None:
            self._reset_command()
            if non_sync:
                self._skip_literal(size)
                if isinstance(refusal, NoRoom):  # answered once the command is read
                    self._after_skip = refusal
                    return None
            return refusal
        self._state = _State.LITERAL
        self._left = size
        self._literal_octets += size
        if non_sync:
            return None
        return NeedContinuation(size)
