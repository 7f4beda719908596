"""SMTP session state machine (sans-IO): bytes in, events out, replies rendered to bytes.

Owns the protocol state of one SMTP connection: command framing (RFC 5321 §2.3.8, §4.5.3.1.4),
command sequencing (§4.1.4, §4.3.2), the DATA terminator and dot-unstuffing (§4.1.1.4, §4.5.2),
BDAT chunk framing (RFC 3030 §2), pipelining order (RFC 2920) and the error budget. It decides
everything that follows from the protocol alone and hands the rest (who may send, who exists, how
to store) to its driver as events; the driver answers through `accept_*`/`begin_data` and sends
what `render()` returns.

SMTP smuggling defence: only CRLF "." CRLF ends DATA; any bare CR or bare LF in message text
rejects the message (RFC 5321 §2.3.8 forbids them), so no `\\n.\\n` variant can end a message
here and another be hidden after it for a downstream server.

Message text is not collected here: it is scanned as it arrives (the terminator, dot-stuffing,
bare CR/LF, line lengths, the size: state carried from one read to the next) and handed to the
driver piece by piece (`TextReceived`), which stores it (`smtp.intake`). What the core holds of
it between reads is the current line, at most `max_line_length` (+2) octets.

Exposure: fed by an unauthenticated peer. Memory is bounded by `max_command_line` for commands
and by `max_line_length` for message text; a message past `max_message_size`, or with a bare
CR/LF or an over-long line, is consumed and discarded until its end, then rejected.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from postkeep.errors import Reply
from postkeep.smtp.wire.parser import (
    Auth,
    Bdat,
    CommandError,
    Data,
    Expn,
    Hello,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
    parse_command,
)

_TERMINATOR = b"\r\n.\r\n"
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x21-\x7e]")


def echo_safe(text: str) -> str:
    """`text` with every character but printable ASCII shown as "?", to echo a client's word.

    C0 and C1 controls (ESC, DEL, CSI ...) and any other non-ASCII character from a client are
    never sent back raw: a reply carrying them could drive the terminal of whoever reads a
    transcript, or be logged verbatim by the client's software.
    """
    return _NOT_PRINTABLE_ASCII.sub("?", text)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Protocol limits (see `config.SmtpConfig` for their documentation and defaults)."""

    max_command_line: int = 2048
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 2048
    soft_error_limit: int = 10
    hard_error_limit: int = 20


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this listener offers, and what it demands.

    `auth_mechanisms` are offered only over TLS when `auth_requires_tls` (RFC 4954 §4, RFC 8314):
    before TLS, AUTH is not advertised and is answered with 538 5.7.11. With `auth_required`
    (the submission profile, RFC 6409 §4.3) MAIL before a successful AUTH gets 530 5.7.0.
    """

    starttls: bool = True
    auth_mechanisms: tuple[str, ...] = ()
    auth_requires_tls: bool = True
    auth_required: bool = False


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """The core decided the reply itself; `close` after sending it."""

    reply: Reply
    close: bool = False


@dataclass(frozen=True, slots=True)
class HelloReceived:
    hello: Hello


@dataclass(frozen=True, slots=True)
class MailReceived:
    mail: Mail


@dataclass(frozen=True, slots=True)
class RcptReceived:
    rcpt: Rcpt


@dataclass(frozen=True, slots=True)
class DataReceived:
    """DATA was asked for, with a valid transaction: answer with `begin_data()` or a refusal."""


@dataclass(frozen=True, slots=True)
class TextReceived:
    """The next piece of the text of the message being received (DATA: dot-unstuffed; BDAT: as
    sent), in order; none comes once the message is known to be refused. The driver stores it
    under `SmtpSession.message_stream`, or refuses it with `refuse_message`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ChunkReceived:
    """A non-final BDAT chunk was read in full: answer 250 with `chunk_reply()`."""

    size: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A whole message (DATA ended, or BDAT LAST read); the transaction is already reset. Its
    text came before as `TextReceived` pieces, `size` octets in all.

    `error` is set when the message must be refused: the core found it too big, with a bare
    CR/LF or an over-long line, or the driver refused it (`refuse_message`); the text stopped
    coming then.
    """

    mail: Mail
    rcpts: tuple[Rcpt, ...]
    size: int
    error: Reply | None


@dataclass(frozen=True, slots=True)
class StartTlsRequested:
    """Answer 220 with `starttls_reply()`, then `starttls_begin()`, handshake, `tls_started()`."""


@dataclass(frozen=True, slots=True)
class AuthRequested:
    """AUTH with an offered mechanism, outside a transaction, not yet authenticated."""

    auth: Auth


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """One client line during an AUTH exchange (RFC 4954 §4), CRLF removed, still base64."""

    line: bytes


Event = (
    Say
    | HelloReceived
    | MailReceived
    | RcptReceived
    | DataReceived
    | TextReceived
    | ChunkReceived
    | MessageReceived
    | StartTlsRequested
    | AuthRequested
    | AuthResponse
)


class Mode(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    BDAT = "bdat"
    AUTH = "auth"
    CLOSED = "closed"


class ErrorAction(enum.Enum):
    NONE = "none"
    DELAY = "delay"
    CLOSE = "close"


@dataclass(slots=True)
class _Transaction:
    mail: Mail | None = None
    rcpts: list[Rcpt] = field(default_factory=list)
    failed: bool = False  # a BDAT chunk was refused: later chunks are refused too (RFC 3030 §2)
    used_data: bool = False
    stream: int = 0  # names its message text once that began (`SmtpSession.message_stream`)


# -- replies ----------------------------------------------------------------------------------

R_OK = Reply(250, "2.0.0", "Ok")
R_BYE = Reply(221, "2.0.0", "Bye")
R_BAD_SEQ_HELO = Reply(503, "5.5.1", "Send EHLO or HELO first")
R_BAD_SEQ_MAIL = Reply(503, "5.5.1", "Send MAIL first")
R_NESTED_MAIL = Reply(503, "5.5.1", "Already in a transaction: send RSET first")
R_NO_RCPT = Reply(554, "5.5.1", "No valid recipients")
R_TOO_MANY_RCPT = Reply(452, "4.5.3", "Too many recipients")
R_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
R_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
R_BARE_NEWLINE = Reply(
    550, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"
)
R_TEXT_LINE_TOO_LONG = Reply(550, "5.6.0", "Message has a line longer than allowed")
R_BINARY_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT (RFC 3030)")
R_MIXED_DATA_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
R_FAILED_TX = Reply(503, "5.5.1", "Transaction failed earlier: send RSET")
R_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
R_EXPN = Reply(502, "5.5.1", "EXPN not available")
R_TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
R_NO_TLS = Reply(502, "5.5.1", "STARTTLS not available")
R_NO_AUTH = Reply(502, "5.5.1", "AUTH not available on this port")
R_AUTH_NEEDS_TLS = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
R_AUTH_UNKNOWN_MECH = Reply(504, "5.5.4", "Unrecognized authentication type")
R_AUTH_IN_TX = Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
R_ALREADY_AUTH = Reply(503, "5.5.1", "Already authenticated")
R_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
R_STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
R_AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
MAX_AUTH_LINE = 12288  # RFC 4954 §4
R_SMTPUTF8_NEEDS_EHLO = Reply(555, "5.5.4", "SMTPUTF8 requires EHLO")
R_REQUIRETLS_NEEDS_TLS = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session (RFC 8689 §4)")


class LineCheck:
    """Bare CR/LF (RFC 5321 §2.3.8) and line lengths (§4.5.3.1.6, CRLF included) of a text
    given in pieces split anywhere, with what is needed of the previous piece carried over:
    whether it ended in CR, and the length of its last, unfinished line. A piece is looked at
    with a few `count`/`find` calls, never split into lines: a line too long has at least
    `max_line - 1` octets without CR or LF, so one of the blocks of half that, laid end to end
    over the piece, has no LF; only such a block's line is measured (`_long_line`), and a
    piece of ordinary lines costs one `find` per block. `max_line` 0 checks nothing
    (BODY=BINARYMIME, RFC 3030 §3)."""

    __slots__ = ("_block", "_cr", "_max", "_partial")

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._partial = 0  # octets of the unfinished line (no CR, no LF)
        self._cr = False  # the last piece ended in a CR
        self._block = max(1, max_line // 2)  # (max_line - 1 + 1) // 2: see the docstring

    def _long_line(self, piece: bytes, start: int, end: int) -> bool:
        """Whether a line that begins in piece[start:end] (at `start` or after an LF; every
        CR and LF there is part of a CRLF) has `max_line - 1` octets or more before its CR."""
        block, run = self._block, self._max - 1
        i = start
        while i + block <= end:
            if piece.find(b"\n", i, i + block) >= 0:
                i += block
                continue
            line = max(start, piece.rfind(b"\n", start, i) + 1)
            cr = piece.find(b"\r", i, end)
            stop = end if cr < 0 else cr
            if stop - line >= run:
                return True
            i = stop + 2 if cr >= 0 else end
        return False

    def feed(self, piece: bytes) -> Reply | None:
        """The first problem of `piece`, taken after the pieces before it, or None."""
        if not self._max or not piece:
            return None
        start, end = 0, len(piece)
        if self._cr:
            if piece[0] != 0x0A:
                return R_BARE_NEWLINE
            self._cr, self._partial, start = False, 0, 1
        if end > start and piece[end - 1] == 0x0D:
            self._cr, end = True, end - 1
        crlf = piece.count(b"\r\n", start, end)
        if piece.count(b"\n", start, end) != crlf or piece.count(b"\r", start, end) != crlf:
            return R_BARE_NEWLINE
        first = piece.find(b"\r\n", start, end)
        if first < 0:
            self._partial += end - start
        elif self._partial + first - start + 2 > self._max or self._long_line(
            piece, first + 2, end
        ):
            return R_TEXT_LINE_TOO_LONG
        else:
            self._partial = end - piece.rfind(b"\r\n", start, end) - 2
        return R_TEXT_LINE_TOO_LONG if self._partial + 2 > self._max else None

    def finish(self) -> Reply | None:
        """The problem of the text's end: a CR that no LF followed."""
        return R_BARE_NEWLINE if self._cr and self._max else None


class SmtpSession:
    """The protocol state of one connection. See the module docstring."""

    def __init__(
        self,
        hostname: str,
        limits: SessionLimits,
        capabilities: Capabilities,
        tls_active: bool = False,
    ) -> None:
        self.hostname = hostname
        self.limits = limits
        self.capabilities = capabilities
        self.tls_active = tls_active
        self.helo: Hello | None = None
        self.authenticated: str | None = None  # the authenticated identity (RFC 4954)
        self.errors = 0
        self.mode = Mode.COMMAND
        self._buf = bytearray()
        self._tx = _Transaction()
        self._skip_line = False  # discarding the rest of an over-long command line
        # the message text: its number, its size, its line checks, the refusal once found
        self._streams = 0
        self._size = 0
        self._lines = LineCheck(limits.max_line_length)
        self._error: Reply | None = None
        # DATA: raw (dot-stuffed) text not yet handed on, from the CRLF before the current
        # line (a sentinel CRLF at first, so that a "." on the first line is seen too)
        self._raw = bytearray()
        self._scanned = 0  # octets of _raw searched for the terminator
        # BDAT
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None  # the reply to the current chunk
        self._bdat_chunk = 0

    # -- input ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def transaction_mail(self) -> Mail | None:
        """The accepted MAIL of the current transaction, if any."""
        return self._tx.mail

    @property
    def message_stream(self) -> int | None:
        """A number naming the message whose text is arriving (a new one for each message of
        the session); None when none is (between messages, and once the transaction is reset,
        has failed or ended). What the driver stored of a text it drops as soon as this
        number is not that text's: the client said RSET, EHLO, STARTTLS, a chunk was
        refused..."""
        tx = self._tx
        return tx.stream if tx.stream and not tx.failed else None

    @property
    def pending_text(self) -> int:
        """Octets of message text held by the core (the current line of DATA)."""
        return len(self._raw)

    def refuse_message(self, reply: Reply) -> None:
        """The driver refuses the message being received (no room for it, a store error): the
        rest of its text is read and discarded; DATA ends with a `MessageReceived` carrying
        `reply`, a BDAT chunk is answered with it (and later chunks with 503)."""
        if self.mode is Mode.DATA:
            self._fail(reply)
        elif self.mode is Mode.BDAT and self._bdat_error is None:
            self._bdat_error = reply
            self._tx.failed = True

    def refuse_data(self, reply: Reply) -> Reply:
        """The driver refuses DATA itself (before 354): the transaction is reset, as by RSET,
        and `reply` is what to send."""
        self._tx = _Transaction()
        return reply

    def next_event(self) -> Event | None:
        """The next event from buffered input, or None when more input is needed."""
        if self.mode is Mode.COMMAND:
            return self._next_command()
        if self.mode is Mode.DATA:
            return self._next_data()
        if self.mode is Mode.BDAT:
            return self._next_bdat()
        if self.mode is Mode.AUTH:
            return self._next_auth_line()
        return None

    # -- commands ---------------------------------------------------------------------------

    def _next_command(self) -> Event | None:
        buf = self._buf
        end = buf.find(b"\n")
        limit = self.limits.max_command_line
        if self.capabilities.auth_mechanisms and buf[:5].upper() == b"AUTH ":
            limit = max(limit, MAX_AUTH_LINE)  # RFC 4954 §4: initial responses up to 12288
        if end < 0:
            if len(buf) > limit:
                # RFC 5321 §4.5.3.1.4: refuse the line, drop what we have, skip to its end.
                del buf[:]
                if not self._skip_line:
                    self._skip_line = True
                    return Say(R_LINE_TOO_LONG)
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        if self._skip_line:
            self._skip_line = False
            return self.next_event()
        if len(line) + 1 > limit:
            return Say(R_LINE_TOO_LONG)
        if line.endswith(b"\r"):
            line = line[:-1]
        extended = self.helo is not None and self.helo.extended
        utf8 = self._tx.mail is not None and self._tx.mail.params.smtputf8
        try:
            command = parse_command(line, extended, utf8)
        except CommandError as e:
            return Say(e.reply)
        return self._dispatch(command)

    def _dispatch(self, command: object) -> Event:
        tx = self._tx
        match command:
            case Hello():
                # RFC 5321 §4.1.4: EHLO/HELO mid-transaction resets it.
                self._tx = _Transaction()
                return HelloReceived(command)
            case Mail():
                if self.helo is None:
                    return Say(R_BAD_SEQ_HELO)
                if tx.mail is not None:
                    return Say(R_NESTED_MAIL)
                if self.capabilities.auth_required and self.authenticated is None:
                    # RFC 6409 §4.3, RFC 3207 §4
                    if self.capabilities.auth_requires_tls and not self.tls_active:
                        return Say(R_STARTTLS_FIRST)
                    return Say(R_AUTH_REQUIRED)
                size = command.params.size
                if size is not None and size > self.limits.max_message_size:
                    return Say(R_TOO_BIG)  # RFC 1870 §6.1
                return MailReceived(command)
            case Rcpt():
                if tx.mail is None:
                    return Say(R_BAD_SEQ_MAIL)
                if len(tx.rcpts) >= self.limits.max_recipients:
                    return Say(R_TOO_MANY_RCPT)  # RFC 5321 §4.5.3.1.10
                return RcptReceived(command)
            case Data():
                if tx.mail is None:
                    return Say(R_BAD_SEQ_MAIL)
                if tx.failed or tx.used_data:
                    return Say(R_MIXED_DATA_BDAT if tx.used_data else R_FAILED_TX)
                if tx.mail.params.body == "BINARYMIME":
                    return Say(R_BINARY_NEEDS_BDAT)
                if not tx.rcpts:
                    return Say(R_NO_RCPT)  # RFC 5321 §3.3
                return DataReceived()
            case Bdat():
                return self._begin_bdat(command)
            case Rset():
                self._tx = _Transaction()
                return Say(R_OK)
            case Noop():
                return Say(R_OK)
            case Quit():
                self.mode = Mode.CLOSED
                return Say(R_BYE, close=True)
            case Vrfy():
                return Say(R_VRFY)  # RFC 5321 §3.5.3
            case Expn():
                return Say(R_EXPN)
            case Help():
                return Say(Reply(214, "2.0.0", "See RFC 5321; commands: " + _HELP_COMMANDS))
            case StartTls():
                if self.tls_active:
                    return Say(R_TLS_ACTIVE)
                if not self.capabilities.starttls:
                    return Say(R_NO_TLS)
                return StartTlsRequested()
            case Auth():
                caps = self.capabilities
                if not caps.auth_mechanisms:
                    return Say(R_NO_AUTH)
                if caps.auth_requires_tls and not self.tls_active:
                    return Say(R_AUTH_NEEDS_TLS)  # RFC 4954 §6, RFC 3207
                if self.helo is None:
                    return Say(R_BAD_SEQ_HELO)
                if self.authenticated is not None:
                    return Say(R_ALREADY_AUTH)  # RFC 4954 §4
                if tx.mail is not None:
                    return Say(R_AUTH_IN_TX)
                if command.mechanism not in caps.auth_mechanisms:
                    return Say(R_AUTH_UNKNOWN_MECH)
                return AuthRequested(command)
        raise AssertionError(f"unhandled command {command!r}")

    # -- driver answers ---------------------------------------------------------------------

    def accept_hello(self, hello: Hello) -> Reply | list[str]:
        """Record EHLO/HELO; returns the reply lines for EHLO or a Reply for HELO."""
        self.helo = hello
        self._tx = _Transaction()
        greeting = f"{self.hostname} Hello {echo_safe(hello.name)}"
        if not hello.extended:
            return Reply(250, "", greeting)
        return [greeting, *self.extensions()]

    def extensions(self) -> list[str]:
        """EHLO keywords (RFC 5321 §4.1.1.1) for the current state."""
        ext = [
            "PIPELINING",  # RFC 2920
            f"SIZE {self.limits.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
            "CHUNKING",  # RFC 3030
            "BINARYMIME",  # RFC 3030
            "DSN",  # RFC 3461
        ]
        if self.capabilities.starttls and not self.tls_active:
            ext.append("STARTTLS")  # RFC 3207
        if self.tls_active:
            ext.append("REQUIRETLS")  # RFC 8689 §4: only over TLS
        caps = self.capabilities
        if caps.auth_mechanisms and (self.tls_active or not caps.auth_requires_tls):
            ext.append("AUTH " + " ".join(caps.auth_mechanisms))  # RFC 4954
        return ext

    def accept_mail(self, mail: Mail) -> Reply:
        if mail.params.smtputf8 and not (self.helo and self.helo.extended):
            return R_SMTPUTF8_NEEDS_EHLO
        if mail.params.requiretls and not self.tls_active:
            return R_REQUIRETLS_NEEDS_TLS
        self._tx = _Transaction(mail=mail)
        return Reply(250, "2.1.0", "Sender ok")

    def accept_rcpt(self, rcpt: Rcpt) -> Reply:
        self._tx.rcpts.append(rcpt)
        return Reply(250, "2.1.5", "Recipient ok")

    def begin_data(self) -> Reply:
        """Switch to reading message text (RFC 5321 §4.1.1.4)."""
        self.mode = Mode.DATA
        self._raw = bytearray(b"\r\n")
        self._scanned = 0
        self._begin_text(check_lines=True)
        return Reply(354, "", "End data with <CR><LF>.<CR><LF>")

    def _begin_text(self, check_lines: bool) -> None:
        self._streams += 1
        self._tx.stream = self._streams
        self._size = 0
        self._lines = LineCheck(self.limits.max_line_length if check_lines else 0)
        self._error = None

    def chunk_reply(self, size: int) -> Reply:
        return Reply(250, "2.0.0", f"{size} octets received")

    # -- AUTH (RFC 4954) -----------------------------------------------------------------------

    def auth_challenge(self, challenge_b64: bytes) -> bytes:
        """Render a 334 challenge and read the next line as an AUTH response."""
        self.mode = Mode.AUTH
        return b"334 " + challenge_b64 + b"\r\n"

    def auth_finished(self, identity: str | None) -> None:
        """End the exchange; `identity` is the authenticated user on success, else None."""
        self.mode = Mode.COMMAND
        if identity is not None:
            self.authenticated = identity

    def _next_auth_line(self) -> Event | None:
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_AUTH_LINE:
                del buf[:]
                self._skip_line = True
                self.mode = Mode.COMMAND
                return Say(R_AUTH_LINE_TOO_LONG)
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        if len(line) + 1 > MAX_AUTH_LINE:
            self.mode = Mode.COMMAND
            return Say(R_AUTH_LINE_TOO_LONG)
        self.mode = Mode.COMMAND
        return AuthResponse(line[:-1] if line.endswith(b"\r") else line)

    def starttls_reply(self) -> Reply:
        return Reply(220, "2.0.0", "Ready to start TLS")

    def starttls_begin(self) -> int:
        """Drop input pipelined after STARTTLS (RFC 3207 §4.2, CVE-2011-0411); return its size."""
        dropped = len(self._buf)
        del self._buf[:]
        return dropped

    def tls_started(self, capabilities: Capabilities | None = None) -> None:
        """RFC 3207 §4.2: after the handshake the session starts over, EHLO first.

        `capabilities`: what the listener offers now that TLS is up, if that differs from
        before (the SASL mechanisms can depend on the negotiated TLS version)."""
        if capabilities is not None:
            self.capabilities = capabilities
        self.tls_active = True
        self.helo = None
        self.authenticated = None
        self._tx = _Transaction()

    # -- DATA -------------------------------------------------------------------------------

    def _next_data(self) -> Event | None:
        """Hand on the text up to the last complete line (dot-unstuffed, RFC 5321 §4.5.2),
        keeping the line after it; at the terminator, the message."""
        raw = self._raw
        if self._buf:
            raw += self._buf
            del self._buf[:]
        end = raw.find(_TERMINATOR, max(0, self._scanned - 4))
        if end == 0 or (end > 0 and self._error is not None):
            return self._end_data(end)
        if self._error is not None:  # discarding: keep what could begin the terminator
            del raw[:-4]
            self._scanned = len(raw)
            return None
        cut = end if end > 0 else raw.rfind(b"\r\n")  # raw begins with a CRLF: cut >= 0
        if cut == 0:
            return self._partial_line()
        with memoryview(raw) as view:
            text = bytes(view[2 : cut + 2])
        if text.startswith(b"."):  # a leading "." was added by the sender: remove it
            text = text[1:]
        text = text.replace(b"\r\n.", b"\r\n")  # the same object if there is none
        del raw[:cut]  # the CRLF before the next line stays in front
        self._scanned = 0 if end > 0 else len(raw)
        if self._check(text):
            return TextReceived(text)
        return self.next_event()

    def _partial_line(self) -> None:
        """More text is needed, and what there is, is one unfinished line: refuse it already
        if it has a bare CR/LF or is too long (what the core holds stays a line)."""
        raw = self._raw
        self._scanned = len(raw)
        line = raw[2:-1] if raw.endswith(b"\r") else raw[2:]
        if b"\r" in line or b"\n" in line:
            self._fail(R_BARE_NEWLINE)
        elif len(raw) - 2 > self.limits.max_line_length:
            self._fail(R_TEXT_LINE_TOO_LONG)
        if self._error is not None:
            del raw[:-4]
            self._scanned = len(raw)

    def _end_data(self, end: int) -> MessageReceived:
        """The terminator is at raw[end:]: what follows it is input again."""
        leftover = self._raw[end + len(_TERMINATOR) :]
        if leftover:
            self._buf[:0] = leftover
        self._raw = bytearray()
        self.mode = Mode.COMMAND
        return self._finish_message()

    def _check(self, text: bytes) -> bool:
        """Count and check the next piece of text; False (and the message refused) if bad."""
        self._size += len(text)
        error = R_TOO_BIG if self._size > self.limits.max_message_size else self._lines.feed(text)
        if error is not None:
            self._fail(error)
        return error is None

    def _fail(self, error: Reply) -> None:
        """The message is refused: no more of its text is handed on (a DATA text is read to
        its end and discarded)."""
        if self._error is None:
            self._error = error
            self._tx.failed = True

    def _finish_message(self) -> MessageReceived:
        tx = self._tx
        assert tx.mail is not None
        self._tx = _Transaction()
        error, self._error = self._error, None
        return MessageReceived(tx.mail, tuple(tx.rcpts), self._size, error)

    # -- BDAT (RFC 3030) ---------------------------------------------------------------------

    def _begin_bdat(self, bdat: Bdat) -> Event | None:
        """Validate BDAT, then read its chunk whatever the verdict (RFC 3030 §2)."""
        tx = self._tx
        error: Reply | None = None
        if self.helo is None:
            error = R_BAD_SEQ_HELO
        elif tx.mail is None:
            error = R_BAD_SEQ_MAIL
        elif tx.failed:
            error = R_FAILED_TX
        elif not tx.rcpts:
            error = R_NO_RCPT
        if tx.mail is not None and not tx.used_data and error is None:
            tx.used_data = True
            self._begin_text(check_lines=tx.mail.params.body != "BINARYMIME")
        if error is not None and tx.mail is not None:
            tx.failed = True
        self._bdat_left = bdat.size
        self._bdat_chunk = bdat.size
        self._bdat_last = bdat.last
        self._bdat_error = error
        self.mode = Mode.BDAT
        return self._next_bdat()

    def _next_bdat(self) -> Event | None:
        if self._bdat_left:
            take = min(self._bdat_left, len(self._buf))
            if not take:
                return None
            piece = bytes(self._buf[:take])
            del self._buf[:take]
            self._bdat_left -= take
            if self._bdat_error is None:
                if self._check(piece):
                    return TextReceived(piece)
                self._bdat_error = self._error
            if self._bdat_left:
                return None
        self.mode = Mode.COMMAND
        if self._bdat_error is None and self._bdat_last:
            self._bdat_error = self._lines.finish()  # a CR at the very end
        if self._bdat_error is not None:
            error = self._bdat_error
            self._bdat_error = self._error = None
            self._tx.failed = self._tx.mail is not None
            if self._bdat_last and self._tx.mail is not None:
                self._tx = _Transaction()
            return Say(error)
        if not self._bdat_last:
            return ChunkReceived(self._bdat_chunk)
        return self._finish_message()

    # -- output -----------------------------------------------------------------------------

    def render(self, reply: Reply | list[str], code: int = 250) -> bytes:
        """Format a reply (RFC 5321 §4.2.1; enhanced codes on every line, RFC 2034 §4).

        A list of lines is a multi-line reply with `code` and no enhanced code (EHLO). Error
        replies count against the session's error budget.
        """
        if isinstance(reply, list):
            head = [f"{code}-{line}\r\n" for line in reply[:-1]]
            return ("".join(head) + f"{code} {reply[-1]}\r\n").encode()
        if reply.code >= 400:
            self.errors += 1
        prefix = f"{reply.code} {reply.enhanced} " if reply.enhanced else f"{reply.code} "
        lines = reply.text.split("\n")
        if len(lines) == 1:
            return (prefix + reply.text + "\r\n").encode()
        cont = prefix.replace(" ", "-", 1)
        out = [cont + line + "\r\n" for line in lines[:-1]]
        return ("".join(out) + prefix + lines[-1] + "\r\n").encode()

    def error_action(self) -> ErrorAction:
        """Postfix-style error budget: delay past the soft limit, close past the hard one."""
        if self.errors >= self.limits.hard_error_limit:
            return ErrorAction.CLOSE
        if self.errors > self.limits.soft_error_limit:
            return ErrorAction.DELAY
        return ErrorAction.NONE


_HELP_COMMANDS = "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"

