"""SMTP client core (sans-IO): what the peer offers, the session's opening, a mail transaction.

- Capabilities from the EHLO reply (RFC 5321 §4.1.1.1): SIZE (RFC 1870), 8BITMIME (RFC 6152),
  SMTPUTF8 (RFC 6531), PIPELINING (RFC 2920), CHUNKING and BINARYMIME (RFC 3030), DSN
  (RFC 3461), STARTTLS (RFC 3207), AUTH (RFC 4954), REQUIRETLS (RFC 8689), ENHANCEDSTATUSCODES
  (RFC 2034). A 5xx to EHLO falls back to HELO (§3.2), without extensions.
- The opening (`Handshake`): greeting (§3.1), EHLO/HELO, STARTTLS and EHLO again (RFC 3207 §4.2),
  AUTH PLAIN (RFC 4616) or LOGIN for a smart host, only over TLS.
- A transaction (`plan`, `Transaction`): pre-flight refusals that send nothing (a message over
  the peer's SIZE: 5.3.4, RFC 1870 §6; 8-bit text to a peer without 8BITMIME: 5.6.3, RFC 6152
  §3; SMTPUTF8 needed and not offered: 5.6.7, RFC 6531 §3.4; REQUIRETLS without the extension or
  without authenticated TLS: 5.7.30, RFC 8689 §5), then MAIL (§4.1.1.2) with its parameters,
  RCPT (§4.1.1.3) with NOTIFY/ORCPT (RFC 3461 §4, only to a DSN peer), DATA (§4.1.1.4) or BDAT
  (RFC 3030 §2). With PIPELINING, MAIL, every RCPT and DATA go as one group and the replies
  are matched in order (RFC 2920 §3.1); without it, one command at a time.
- The outcome: one `RecipientResult` per recipient (the RCPT refusal, or the end-of-data reply
  for those accepted) and a `TransactionResult`. A 421 (§3.8), a timeout or a lost connection
  leaves every recipient not yet decided with a temporary result.

Nothing the caller passes reaches the wire unchecked: an address with a control character or an
angle bracket is refused (5.1.3 / 5.1.7) before anything is sent, and ENVID and ORCPT are
xtext-encoded (RFC 3461 §4).
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from postkeep.smtp.client.framing import DotStuffer, Reply, local_reply

StartTls = Literal["opportunistic", "required", "never"]

_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")  # never inside <...> on a command line
_UNSAFE_HELO = re.compile(r"[\x00-\x20\x7f]")
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3, the angle brackets included


class Stage(enum.Enum):
    """Where a session or transaction is: what the next reply answers, or where it ended."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS = "tls"  # the handshake itself
    AUTH = "auth"
    PREFLIGHT = "preflight"  # refused before sending anything
    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the reply to DATA (354)
    BODY = "body"  # writing message text
    BDAT = "bdat"  # the reply to a BDAT chunk that is not the last
    END = "end"  # the reply to the final "." or BDAT LAST
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait, RFC 5321 §4.5.3.2's defaults where it gives one.

    `connect`, `tls_handshake` and `command` (EHLO, HELO, STARTTLS, AUTH, RSET, QUIT) have no
    RFC value; `command` is MAIL's. `data_block` bounds each write of message text (§4.5.3.2.5)
    and the reply to a BDAT chunk that is not the last; `data_end` the reply to "." or BDAT
    LAST (§4.5.3.2.6)."""

    connect: float = 30.0
    greeting: float = 300.0  # §4.5.3.2.1
    tls_handshake: float = 60.0
    command: float = 300.0
    mail: float = 300.0  # §4.5.3.2.2
    rcpt: float = 300.0  # §4.5.3.2.3
    data_init: float = 120.0  # §4.5.3.2.4
    data_block: float = 180.0  # §4.5.3.2.5
    data_end: float = 600.0  # §4.5.3.2.6

    def for_stage(self, stage: Stage) -> float:
        """The time the reply of `stage` (or, for BODY, a write) may take."""
        return {
            Stage.CONNECT: self.connect,
            Stage.GREETING: self.greeting,
            Stage.TLS: self.tls_handshake,
            Stage.MAIL: self.mail,
            Stage.RCPT: self.rcpt,
            Stage.DATA: self.data_init,
            Stage.BODY: self.data_block,
            Stage.BDAT: self.data_block,
            Stage.END: self.data_end,
        }.get(stage, self.command)


# -- capabilities ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the peer said it supports. `esmtp` False: it took HELO only (no extension).

    `size` is None when SIZE was not advertised, 0 when it was without a limit (RFC 1870 §4)."""

    esmtp: bool = False
    size: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    pipelining: bool = False
    chunking: bool = False
    binarymime: bool = False
    dsn: bool = False
    starttls: bool = False
    requiretls: bool = False
    enhancedstatuscodes: bool = False
    auth: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()  # every keyword advertised, upper-cased, in order


def parse_ehlo(reply: Reply, ignore: frozenset[str] = frozenset()) -> Capabilities:
    """The capabilities of a positive EHLO reply: its first line greets, each other line is
    "keyword [params]" (RFC 5321 §4.1.1.1). Unknown keywords and a malformed SIZE are ignored
    (kept in `keywords`); an empty line (some servers end with one) is skipped. Keywords in
    `ignore` (upper-case) count as not advertised (a peer whose CHUNKING or PIPELINING is
    broken: Postfix's smtp_discard_ehlo_keywords)."""
    flags: dict[str, bool] = {}
    size: int | None = None
    auth: set[str] = set()
    keywords: list[str] = []
    for line in reply.lines[1:]:
        words = line.split()
        if not words:
            continue
        keyword, params = words[0].upper(), words[1:]
        if keyword.startswith("AUTH="):  # the pre-RFC 4954 form some servers still send
            keyword, params = "AUTH", [keyword[5:], *params]
        if not _ESMTP_KEYWORD.fullmatch(keyword) or keyword in ignore:
            continue
        keywords.append(keyword)
        if keyword == "SIZE":
            if not params:
                size = 0
            elif params[0].isdigit() and len(params[0]) <= 20:
                size = int(params[0])
        elif keyword == "AUTH":
            auth.update(p.upper() for p in params)
        else:
            flags[keyword] = True
    return Capabilities(
        esmtp=True,
        size=size,
        eightbitmime=flags.get("8BITMIME", False),
        smtputf8=flags.get("SMTPUTF8", False),
        pipelining=flags.get("PIPELINING", False),
        chunking=flags.get("CHUNKING", False),
        binarymime=flags.get("BINARYMIME", False),
        dsn=flags.get("DSN", False),
        starttls=flags.get("STARTTLS", False),
        requiretls=flags.get("REQUIRETLS", False),
        enhancedstatuscodes=flags.get("ENHANCEDSTATUSCODES", False),
        auth=frozenset(auth),
        keywords=tuple(keywords),
    )


# -- the opening ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A smart host's login (AUTH PLAIN or LOGIN; sent only over TLS)."""

    username: str
    password: str = field(repr=False)


class HandshakeState(enum.Enum):
    REPLIES = "replies"  # send `output`, then feed the next reply to `on_reply`
    START_TLS = "start_tls"  # do the TLS handshake, then call `tls_started`
    READY = "ready"  # transactions may begin
    FAILED = "failed"  # see `failure`; send QUIT (unless the peer said 421) and close


class Handshake:
    """The session's opening, from the greeting to READY (or FAILED).

    `starttls`: "opportunistic" uses STARTTLS when offered and goes on in clear if the peer
    refuses it; "required" fails the session (4.7.4) when it is not offered or refused; "never"
    does not ask. `tls` is True when the connection is TLS already (implicit TLS). `ignore`:
    EHLO keywords to treat as not advertised (`parse_ehlo`)."""

    def __init__(self, helo_name: str, *, starttls: StartTls = "opportunistic",
                 tls: bool = False, credentials: Credentials | None = None,
                 ignore: frozenset[str] = frozenset()) -> None:
        if not helo_name or _UNSAFE_HELO.search(helo_name):
            raise ValueError(f"not a HELO name: {helo_name!r}")
        self.helo_name = helo_name
        self.starttls: StartTls = starttls
        self.tls = tls
        self.credentials = credentials
        self.ignore = frozenset(k.upper() for k in ignore)
        self.state = HandshakeState.REPLIES
        #: the stage of the reply awaited; once FAILED, where it failed
        self.awaiting = Stage.GREETING
        self.capabilities = Capabilities()
        self.failure: Reply | None = None
        self._auth_steps: deque[bytes] = deque()

    def on_reply(self, reply: Reply) -> bytes:
        """Take the reply to what was sent; returns what to send next (may be b"")."""
        stage = self.awaiting
        if stage is Stage.GREETING:
            if reply.code == 220:
                return self._send(Stage.EHLO, b"EHLO %s\r\n" % self.helo_name.encode())
            return self._fail(reply)
        if stage is Stage.EHLO:
            if reply.code == 250:
                self.capabilities = parse_ehlo(reply, self.ignore)
                return self._after_hello()
            if reply.permanent:  # RFC 5321 §3.2: an old server; HELO, no extensions
                return self._send(Stage.HELO, b"HELO %s\r\n" % self.helo_name.encode())
            return self._fail(reply)
        if stage is Stage.HELO:
            if reply.code == 250:
                self.capabilities = Capabilities()
                return self._after_hello()
            return self._fail(reply)
        if stage is Stage.STARTTLS:
            if reply.code == 220:
                self.state = HandshakeState.START_TLS
                self.awaiting = Stage.TLS
                return b""
            if self.starttls == "required" or reply.code == 421:
                return self._fail(reply)
            return self._after_tls()  # opportunistic: RFC 3207 §4 lets the client go on
        if stage is Stage.AUTH:
            if reply.code == 235:
                self.state = HandshakeState.READY
                return b""
            if reply.code == 334:
                # RFC 4954 §4: "*" cancels an exchange the server goes on with beyond ours
                return (self._auth_steps.popleft() if self._auth_steps else b"*") + b"\r\n"
            return self._fail(reply)
        raise RuntimeError(f"no reply expected in state {self.state}")

    def tls_started(self) -> bytes:
        """The TLS handshake after STARTTLS succeeded: EHLO again (RFC 3207 §4.2)."""
        self.tls = True
        self.capabilities = Capabilities()
        self.state = HandshakeState.REPLIES
        return self._send(Stage.EHLO, b"EHLO %s\r\n" % self.helo_name.encode())

    def fail(self, reply: Reply) -> None:
        """The session failed where it was (the driver's timeout, lost connection, TLS error)."""
        self.failure = reply
        self.state = HandshakeState.FAILED

    def _send(self, stage: Stage, line: bytes) -> bytes:
        self.awaiting = stage
        self.state = HandshakeState.REPLIES
        return line

    def _fail(self, reply: Reply) -> bytes:
        self.fail(reply)
        return b""

    def _after_hello(self) -> bytes:
        if not self.tls and self.starttls != "never":
            if self.capabilities.starttls:
                return self._send(Stage.STARTTLS, b"STARTTLS\r\n")
            if self.starttls == "required":
                self.awaiting = Stage.STARTTLS
                return self._fail(local_reply(451, "4.7.4", "STARTTLS is required and was not "
                                                            "offered"))
        return self._after_tls()

    def _after_tls(self) -> bytes:
        creds = self.credentials
        if creds is None:
            self.state = HandshakeState.READY
            return b""
        self.awaiting = Stage.AUTH
        if not self.tls:
            return self._fail(local_reply(451, "4.7.10", "AUTH needs TLS; credentials not sent"))
        offered = self.capabilities.auth
        user, password = creds.username.encode(), creds.password.encode()
        if "PLAIN" in offered:  # RFC 4616 §2: authzid NUL authcid NUL passwd
            self._auth_steps.clear()
            return self._send(Stage.AUTH, b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password)
                              + b"\r\n")
        if "LOGIN" in offered:
            self._auth_steps = deque([_b64(user), _b64(password)])
            return self._send(Stage.AUTH, b"AUTH LOGIN\r\n")
        return self._fail(local_reply(451, "4.7.4", "no AUTH mechanism in common (PLAIN, LOGIN)"))


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data) or b"="


# -- the transaction ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """An envelope recipient with its RFC 3461 parameters, as the server's parser keeps them:
    `notify` "NEVER" or a comma list of SUCCESS, FAILURE, DELAY; `orcpt` "addr-type;address",
    xtext-decoded."""

    address: str
    notify: str | None = None
    orcpt: str | None = None

    def __post_init__(self) -> None:
        if self.notify is not None:
            words = self.notify.upper().split(",")
            if words != ["NEVER"] and not (set(words) <= _NOTIFY_WORDS
                                           and len(set(words)) == len(words)):
                raise ValueError(f"NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY: {self.notify}")
        if self.orcpt is not None:
            kind, semi, addr = self.orcpt.partition(";")
            if not semi or not addr or not _ESMTP_KEYWORD.fullmatch(kind):
                raise ValueError(f"ORCPT must be addr-type;address: {self.orcpt!r}")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message to send: `mail_from` "" is the null reverse-path; `size` the text's size in
    octets (for SIZE=, RFC 1870); `body` "7BIT", "8BITMIME" or "BINARYMIME" (None: not said);
    `smtputf8` when the message needs SMTPUTF8 (non-ASCII addresses need it anyway);
    `requiretls` RFC 8689 (the message may only travel over authenticated TLS)."""

    mail_from: str
    recipients: tuple[Recipient, ...]
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None  # RFC 3461 §4.3: FULL or HDRS
    envid: str | None = None  # RFC 3461 §4.4, xtext-decoded
    requiretls: bool = False

    def __post_init__(self) -> None:
        if self.body is not None and self.body.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
            raise ValueError(f"BODY must be 7BIT, 8BITMIME or BINARYMIME: {self.body}")
        if self.ret is not None and self.ret.upper() not in ("FULL", "HDRS"):
            raise ValueError(f"RET must be FULL or HDRS: {self.ret}")
        if not self.recipients:
            raise ValueError("an envelope needs a recipient")
        if self.size is not None and self.size < 0:
            raise ValueError("size must not be negative")


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What became of one recipient: its RCPT refusal, or (accepted) the end-of-data reply;
    or a reply made here (`reply.generated`) when the session failed before either."""

    recipient: Recipient
    reply: Reply

    @property
    def code(self) -> int:
        return self.reply.code

    @property
    def enhanced(self) -> str:
        return self.reply.enhanced

    @property
    def text(self) -> str:
        return self.reply.text

    @property
    def delivered(self) -> bool:
        return self.reply.positive

    @property
    def temporary(self) -> bool:
        return self.reply.transient

    @property
    def permanent(self) -> bool:
        return self.reply.permanent


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The outcome of one message, `recipients` in the envelope's order.

    `reply` is the reply that decided the message as a whole (the end-of-data reply, or the
    refusal that ended it); `stage` where it ended. `sent` False: nothing of it went on the
    wire. `reusable` False: the connection can carry no further transaction (421, timeout,
    protocol error, connection lost). `dsn` whether NOTIFY/ORCPT/RET/ENVID were passed on
    (False to a peer without DSN: RFC 3461 §4's "relayed" notice is the caller's to send)."""

    recipients: tuple[RecipientResult, ...]
    reply: Reply
    stage: Stage
    sent: bool = True
    reusable: bool = True
    dsn: bool = False

    @property
    def delivered(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.delivered)

    @property
    def temporary(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.temporary)

    @property
    def permanent(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.permanent)


def failed_result(envelope: Envelope, reply: Reply, stage: Stage, *,
                  sent: bool = False, reusable: bool = False) -> TransactionResult:
    """Every recipient with `reply` (a session that could not carry the message)."""
    return TransactionResult(tuple(RecipientResult(r, reply) for r in envelope.recipients),
                             reply, stage, sent=sent, reusable=reusable)


def _needs_utf8(text: str) -> bool:
    return not text.isascii()


def _bad_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return (not at or not local or not domain or _UNSAFE.search(address) is not None
            or len(address.encode()) > MAX_PATH - 2)


def preflight(envelope: Envelope, caps: Capabilities, *, tls: bool) -> Reply | None:
    """The permanent refusal of the whole message, made here, if the peer cannot take it.

    `tls`: the session is TLS and the peer was authenticated (verified certificate or DANE),
    what REQUIRETLS needs (RFC 8689 §4.2.1)."""
    body = (envelope.body or "").upper()
    if caps.size and envelope.size is not None and envelope.size > caps.size:
        return local_reply(552, "5.3.4", f"message size {envelope.size} exceeds the peer's "
                                         f"fixed limit of {caps.size}")
    if body == "8BITMIME" and not caps.eightbitmime:
        return local_reply(554, "5.6.3", "8-bit message and the peer does not offer 8BITMIME")
    if body == "BINARYMIME" and not (caps.binarymime and caps.chunking):
        return local_reply(554, "5.6.3", "binary message and the peer does not offer BINARYMIME")
    addresses = [envelope.mail_from, *(r.address for r in envelope.recipients)]
    if (envelope.smtputf8 or any(map(_needs_utf8, addresses))) and not caps.smtputf8:
        return local_reply(553, "5.6.7", "SMTPUTF8 is needed and the peer does not offer it")
    if envelope.requiretls and not caps.requiretls:
        return local_reply(554, "5.7.30", "REQUIRETLS is needed and the peer does not offer it")
    if envelope.requiretls and not tls:
        return local_reply(554, "5.7.30", "REQUIRETLS needs an authenticated TLS session")
    if envelope.mail_from and _bad_address(envelope.mail_from):
        return local_reply(553, "5.1.7", "the sender address cannot be sent")
    return None


def xtext(value: str) -> str:
    """RFC 3461 §4 xtext: octets outside "!".."~", "+" and "=" as "+XX" (of the UTF-8)."""
    return "".join(chr(b) if 33 <= b <= 126 and b not in (43, 61) else f"+{b:02X}"
                   for b in value.encode())


def mail_command(envelope: Envelope, caps: Capabilities, *, dsn: bool) -> bytes:
    params = []
    if caps.size is not None and envelope.size is not None:
        params.append(f"SIZE={envelope.size}")
    body = (envelope.body or "").upper()
    if body and (caps.eightbitmime or body == "BINARYMIME"):
        params.append(f"BODY={body}")
    addresses = [envelope.mail_from, *(r.address for r in envelope.recipients)]
    if envelope.smtputf8 or any(map(_needs_utf8, addresses)):
        params.append("SMTPUTF8")
    if dsn and envelope.ret:
        params.append(f"RET={envelope.ret.upper()}")
    if dsn and envelope.envid:
        params.append(f"ENVID={xtext(envelope.envid)}")
    if envelope.requiretls:
        params.append("REQUIRETLS")
    return _command(f"MAIL FROM:<{envelope.mail_from}>", params)


def rcpt_command(recipient: Recipient, *, dsn: bool) -> bytes:
    params = []
    if dsn and recipient.notify:
        params.append(f"NOTIFY={recipient.notify.upper()}")
    if dsn and recipient.orcpt:
        kind, _, addr = recipient.orcpt.partition(";")
        params.append(f"ORCPT={kind};{xtext(addr)}")
    return _command(f"RCPT TO:<{recipient.address}>", params)


def _command(head: str, params: list[str]) -> bytes:
    return (" ".join([head, *params]) + "\r\n").encode()


class TxState(enum.Enum):
    REPLIES = "replies"  # send `output`, then feed replies to `on_reply` (`awaiting` says which)
    BODY = "body"  # feed the message text to `body`, then `end_body`
    DONE = "done"  # `result` is set


def plan(envelope: Envelope, caps: Capabilities, *, tls: bool,
         reset: bool = False) -> Transaction | TransactionResult:
    """A transaction for `envelope` on a session with `caps`, or its refusal (nothing sent).

    `tls` as for `preflight`; `reset`: RSET first (the previous transaction did not end at its
    end of data)."""
    refusal = preflight(envelope, caps, tls=tls)
    if refusal is not None:
        return failed_result(envelope, refusal, Stage.PREFLIGHT, reusable=True)
    tx = Transaction(envelope, caps, reset=reset)
    if not tx.sendable:
        return tx._all_refused()
    return tx


class Transaction:
    """One message's commands and replies. Use `plan` to make one.

    The driver writes `start()`, then, while `state` is REPLIES, reads a reply (the timeout of
    `awaiting`) and writes what `on_reply` returns; in BODY it writes what `body(chunk)` returns
    for each chunk and then `end_body()` (BDAT: a chunk's reply is awaited, state REPLIES, before
    the next chunk). `fail(reply)` ends it when the connection failed. `result` once DONE."""

    def __init__(self, envelope: Envelope, caps: Capabilities, *, reset: bool = False) -> None:
        self.envelope = envelope
        self.pipelining = caps.pipelining
        self.chunking = caps.chunking
        self.dsn = caps.dsn
        self.state = TxState.REPLIES
        self.result: TransactionResult | None = None
        #: the next transaction must begin with RSET (this one did not end at its end of data)
        self.reset_needed = True
        self._caps = caps
        self._reset = reset
        self._final: list[Reply | None] = [None] * len(envelope.recipients)
        self.sendable: list[int] = []
        for i, r in enumerate(envelope.recipients):
            if _bad_address(r.address):
                self._final[i] = local_reply(553, "5.1.3", "the recipient address cannot be sent")
            else:
                self.sendable.append(i)
        self._expect: deque[tuple[Stage, int]] = deque()
        self._next_rcpt = 0  # index into `sendable` of the next RCPT (one at a time)
        self._accepted: list[int] = []
        self._mail_reply: Reply | None = None
        self._last: Reply | None = None
        self._stuffer = DotStuffer()
        self._held: bytes | None = None  # BDAT: the chunk sent once the next shows it is not last
        self._aborting = False  # DATA got 354 with nobody to send to: "." alone

    @property
    def awaiting(self) -> Stage:
        return self._expect[0][0]

    def start(self) -> bytes:
        out = []
        if self._reset:
            out.append(self._expecting(Stage.RSET, b"RSET\r\n"))
            if not self.pipelining:
                return out[0]
        out.append(self._mail())
        if self.pipelining:
            out += [self._rcpt(i) for i in self.sendable]
            if not self.chunking:
                out.append(self._expecting(Stage.DATA, b"DATA\r\n"))
        return b"".join(out)

    def _expecting(self, stage: Stage, line: bytes, index: int = -1) -> bytes:
        self._expect.append((stage, index))
        return line

    def _mail(self) -> bytes:
        return self._expecting(Stage.MAIL, mail_command(self.envelope, self._caps, dsn=self.dsn))

    def _rcpt(self, i: int) -> bytes:
        return self._expecting(Stage.RCPT, rcpt_command(self.envelope.recipients[i], dsn=self.dsn),
                               i)

    def on_reply(self, reply: Reply) -> bytes:
        """Take the next reply (in the order the commands went); returns what to send next."""
        stage, index = self._expect.popleft()
        self._last = reply
        if reply.code == 421:  # RFC 5321 §3.8: the peer is closing the connection
            return self._done(stage, reply, reusable=False)
        if stage is Stage.RSET:
            if not reply.positive:
                return self._done(stage, reply, reusable=False)
            return b"" if self.pipelining else self._mail()
        if stage is Stage.MAIL:
            self._mail_reply = reply
            if not reply.positive and not self.pipelining:
                return self._done(stage, reply)
            return b"" if self.pipelining else self._rcpt(self.sendable[0])
        if stage is Stage.RCPT:
            self._final[index] = None if reply.positive else reply
            if reply.positive:
                self._accepted.append(index)
            self._next_rcpt += 1
            if self._next_rcpt < len(self.sendable):
                return b"" if self.pipelining else self._rcpt(self.sendable[self._next_rcpt])
            return self._after_rcpts(reply)
        if stage is Stage.DATA:
            if reply.code != 354:
                return self._done(stage, self._mail_or(reply))
            if self._ready_for_text():
                self.state = TxState.BODY
                return b""
            self._aborting = True  # RFC 2920 §3.1: the empty message ends at once
            return self._expecting(Stage.END, b".\r\n")
        if stage is Stage.BDAT and reply.positive:
            self.state = TxState.BODY
            return b""
        # END, or a refused BDAT chunk (RFC 3030 §2: no more chunks; RSET before what follows)
        if stage is Stage.END and not self._aborting:
            self.reset_needed = False
        return self._done(stage, self._mail_or(reply))

    def _ready_for_text(self) -> bool:
        return bool(self._accepted) and self._mail_reply is not None and self._mail_reply.positive

    def _mail_or(self, reply: Reply) -> Reply:
        """The MAIL refusal if MAIL was refused (the rest then only says "need MAIL")."""
        mail = self._mail_reply
        return mail if mail is not None and not mail.positive else reply

    def _after_rcpts(self, last: Reply) -> bytes:
        mail = self._mail_reply
        if mail is not None and not mail.positive:  # pipelined: everything answers MAIL's fate
            for i in self.sendable:
                self._final[i] = mail
        if self.pipelining and not self.chunking:
            return b""  # DATA's reply comes next
        if not self._ready_for_text():
            return self._done(Stage.RCPT, self._mail_or(last))
        if self.chunking:
            self.state = TxState.BODY
            return b""
        return self._expecting(Stage.DATA, b"DATA\r\n")

    def body(self, chunk: bytes) -> bytes:
        """What to write for the next chunk of message text (b"" when nothing yet)."""
        assert self.state is TxState.BODY, self.state
        if not self.chunking:
            return self._stuffer.feed(chunk)
        if not chunk:
            return b""
        held, self._held = self._held, chunk
        if held is None:
            return b""
        self.state = TxState.REPLIES
        return self._expecting(Stage.BDAT, b"BDAT %d\r\n" % len(held)) + held

    def end_body(self) -> bytes:
        """What to write at the end of the text; then the end-of-data reply is awaited."""
        assert self.state is TxState.BODY, self.state
        self.state = TxState.REPLIES
        if not self.chunking:
            return self._expecting(Stage.END, self._stuffer.finish())
        held, self._held = self._held or b"", None
        return self._expecting(Stage.END, b"BDAT %d LAST\r\n" % len(held)) + held

    def fail(self, reply: Reply) -> None:
        """The connection failed (timeout, lost, protocol error): what is undecided gets
        `reply`, and the connection is not to be used again."""
        if self.state is not TxState.DONE:
            stage = Stage.BODY if self.state is TxState.BODY else (
                self._expect[0][0] if self._expect else Stage.MAIL)
            self._done(stage, reply, reusable=False)

    def _all_refused(self) -> TransactionResult:
        """No recipient can be sent (each has its refusal): the result, nothing sent."""
        self.state = TxState.DONE
        reply = next(r for r in self._final if r is not None)
        self.result = self._result(Stage.PREFLIGHT, reply, sent=False, reusable=True)
        return self.result

    def _done(self, stage: Stage, reply: Reply, reusable: bool = True) -> bytes:
        self.state = TxState.DONE
        self._expect.clear()
        self.result = self._result(stage, reply, sent=True, reusable=reusable)
        return b""

    def _result(self, stage: Stage, reply: Reply, *, sent: bool,
                reusable: bool) -> TransactionResult:
        results = tuple(RecipientResult(r, self._final[i] or reply)
                        for i, r in enumerate(self.envelope.recipients))
        return TransactionResult(results, reply, stage, sent=sent, reusable=reusable,
                                 dsn=self.dsn)
