"""One message's conversation with a negotiated milter, sans-IO: what to send at each step,
what each reply means there, and what the milter decided (protocol: `filters.milter.wire`).

The steps follow an SMTP transaction, as Sendmail and Postfix send them: ``C`` connect,
``H`` HELO, ``M`` MAIL FROM, ``R`` for each recipient, ``T`` DATA, ``L`` for each header
field, ``N`` end of headers, ``B`` the body in chunks of at most 65535 octets, ``E`` end of
body. A step the milter asked to be spared (``NOCONNECT``, ``NOHELO``, ``NOMAIL``,
``NORCPT``, ``NODATA``, ``NOHDRS``, ``NOEOH``, ``NOBODY``) is not sent; a step whose reply
it waived (``NR_*``) is not waited for; ``s`` (skip) to a body chunk ends the body there.
Before a step its macros go in a ``D`` packet (`known_macros`): ``j``,
``{daemon_name}``, ``_``, ``{client_addr}``, ``{client_name}`` at connect (with the
configured ones); ``i``, ``{auth_authen}``, ``{auth_type}``, ``{mail_addr}`` at MAIL;
``{rcpt_addr}`` at each RCPT; ``i`` at DATA, end of headers and end of body; only those it
listed where it sent lists (SETSYMLIST).

Replies: ``p`` (progress) keeps waiting; ``c`` goes on; at the end of body ``c`` or ``a``
accepts with the modifications received before it; ``a`` before that accepts without
further steps; ``r``, ``t``, ``d``, ``y`` and ``f``/``4`` end the conversation with that
verdict whatever the step (the message has been accepted up to its end of data already: a
refusal of one recipient would drop that recipient's copy without a word, so it refuses the
message). A modification is allowed only after ``E`` and only if negotiated; their number
and the replacement body's size are bounded.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from postkeep.filters.milter import wire

MAX_MODIFICATIONS = 1000
MAX_HEADER_OCTETS = 256 * 1024  # header fields added or changed, in all
_REPLY_LINE = re.compile(
    r"([45][0-9][0-9])(?:[ -]|$)(?:([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$))?(.*)")


@dataclass(frozen=True, slots=True)
class Transaction:
    """What the milter is told of one message (``hostname``: ours, the ``j`` macro)."""

    hostname: str
    daemon: str
    client_ip: str
    client_name: str
    helo: str
    queue_id: str
    mail_from: str
    recipients: tuple[str, ...]
    mail_args: tuple[str, ...] = ()
    login: str = ""
    mechanism: str = ""  # the login's SASL mechanism
    extra: Mapping[str, str] = field(default_factory=dict)  # configured, sent at connect


def known_macros(stage: int, tx: Transaction) -> dict[str, str]:
    """The macros we define at `stage`, by name (a RCPT's are the first recipient's:
    `Conversation` sends each recipient's own)."""
    if stage == wire.M_CONNECT:
        name = tx.client_name or "unknown"
        return {"j": tx.hostname, "{daemon_name}": tx.daemon,
                "_": f"{name} [{tx.client_ip}]" if tx.client_ip else name,
                "{client_addr}": tx.client_ip, "{client_name}": name, **tx.extra}
    if stage == wire.M_ENVFROM:
        found = {"i": tx.queue_id, "{mail_addr}": tx.mail_from}
        if tx.login:
            found["{auth_authen}"] = tx.login
            found["{auth_type}"] = tx.mechanism or "unknown"
        return found
    if stage == wire.M_ENVRCPT:
        return {"{rcpt_addr}": tx.recipients[0] if tx.recipients else ""}
    if stage in (wire.M_DATA, wire.M_EOH, wire.M_EOM):
        return {"i": tx.queue_id}
    return {}


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    DISCARD = "discard"
    FAILURE = "failure"  # ``f`` or ``4``: no verdict


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """A milter's ``y`` reply, checked: a 4xx or 5xx code, its enhanced code if it gave
    one of the same class, and its text in printable ASCII, one line."""

    code: int
    enhanced: str
    text: str


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    step: str  # the step it was given at ("connect", ..., "end of body")
    reply: SmtpReply | None = None
    modifications: tuple[wire.Modification, ...] = ()
    body: bytes | None = None  # the replacement body, if the milter sent one


def parse_reply_code(text: str) -> SmtpReply:
    """A ``y`` reply's text, checked (see `SmtpReply`); a multi-line one in one line."""
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines:
        raise wire.ProtocolError("empty reply code")
    parsed = [_REPLY_LINE.fullmatch(line) for line in lines]
    if any(m is None for m in parsed):
        raise wire.ProtocolError(f"malformed reply code {text[:80]!r}")
    matches = [m for m in parsed if m is not None]
    code = matches[0][1]
    if any(m[1] != code for m in matches):
        raise wire.ProtocolError("reply lines with different codes")
    enhanced = matches[0][2] or ""
    if enhanced and enhanced[0] != code[0]:
        enhanced = ""
    words = " ".join(m[3].strip() for m in matches if m[3].strip())
    clean = "".join(c if " " <= c <= "~" else "?" for c in words)[:200]
    return SmtpReply(int(code), enhanced, clean or "Message refused")


class Step:
    """One step to send: its packets (macros first), and whether a reply is awaited."""

    __slots__ = ("name", "packets", "reply")

    def __init__(self, name: str, packets: bytes, reply: bool) -> None:
        self.name, self.packets, self.reply = name, packets, reply


class Answer(enum.Enum):
    WAIT = "wait"  # read the next reply (progress, or a modification)
    NEXT = "next"  # the step is answered: send the next
    SKIP = "skip"  # no more body chunks: the end of body next
    DONE = "done"  # the conversation is over: `Conversation.outcome`


class Conversation:
    """Drives one message through a milter negotiated as `negotiated`: `steps` yields what
    to send, `answer` reads each reply to the step last yielded."""

    def __init__(self, negotiated: wire.Negotiated, tx: Transaction,
                 max_body: int) -> None:
        self.neg = negotiated
        self.tx = tx
        self.max_body = max_body
        self.outcome: Outcome | None = None
        self._step = ""
        self._skipped = False
        self._mods: list[wire.Modification] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._header_octets = 0

    # -- what to send ------------------------------------------------------------------------

    def _macros(self, stage: int, known: dict[str, str]) -> bytes:
        wanted = self.neg.macros.get(stage)
        if wanted is not None:
            everything: dict[str, str] = {}
            for earlier in range(stage + 1):
                everything.update(known_macros(earlier, self.tx))
            everything.update(known)
            known = {k: everything[k] for k in wanted if k in everything}
        known = {k: v for k, v in known.items() if v}
        return wire.encode_macros(wire.STAGE_COMMANDS[stage], known) if known else b""

    def _make(self, name: str, stage: int | None, packet: bytes, no_reply: int,
              macros: dict[str, str] | None = None) -> Step:
        pre = b"" if stage is None else self._macros(
            stage, known_macros(stage, self.tx) if macros is None else macros)
        return Step(name, pre + packet, not self.neg.wants(no_reply) if no_reply else True)

    def steps(self, fields: Iterable[tuple[bytes, bytes]],
              body: Iterable[bytes]) -> Iterator[Step]:
        """Every step for the message: `fields` its header fields (name, value as in the
        message, unfolded lines' CRLFs included), `body` its body in pieces of any size."""
        tx, neg = self.tx, self.neg
        if not neg.wants(wire.P_NOCONNECT):
            yield self._make("connect", wire.M_CONNECT,
                             wire.encode_connect(tx.client_name or "unknown", tx.client_ip),
                             wire.P_NR_CONN)
        if not neg.wants(wire.P_NOHELO):
            yield self._make("helo", wire.M_HELO, wire.encode_helo(tx.helo or tx.client_ip),
                             wire.P_NR_HELO)
        if not neg.wants(wire.P_NOMAIL):
            yield self._make("mail", wire.M_ENVFROM, wire.encode_mail(tx.mail_from,
                                                                      tx.mail_args),
                             wire.P_NR_MAIL)
        if not neg.wants(wire.P_NORCPT):
            for rcpt in tx.recipients:
                yield self._make("rcpt", wire.M_ENVRCPT, wire.encode_rcpt(rcpt),
                                 wire.P_NR_RCPT, {"{rcpt_addr}": rcpt})
        if not neg.wants(wire.P_NODATA):
            yield self._make("data", wire.M_DATA, wire.DATA, wire.P_NR_DATA)
        if not neg.wants(wire.P_NOHDRS):
            leadspc = neg.wants(wire.P_HDR_LEADSPC)
            for name, value in fields:
                if not leadspc:
                    value = value.lstrip(b" \t")
                # folded lines as Sendmail and Postfix send them: LF only
                yield self._make("header", None, wire.encode_header(
                    name, value.replace(b"\r\n", b"\n")), wire.P_NR_HDR)
        if not neg.wants(wire.P_NOEOH):
            yield self._make("end of headers", wire.M_EOH, wire.EOH, wire.P_NR_EOH)
        if not neg.wants(wire.P_NOBODY):
            for piece in body:
                for at in range(0, len(piece), wire.MAX_CHUNK):
                    if self._skipped:
                        break
                    yield self._make("body", None,
                                     wire.encode_body(piece[at : at + wire.MAX_CHUNK]),
                                     wire.P_NR_BODY)
                if self._skipped:
                    break
        yield self._make("end of body", wire.M_EOM, wire.BODYEOB, 0)

    # -- what the replies mean ---------------------------------------------------------------

    def expect(self, step: Step) -> None:
        """`step` was sent and its reply is awaited next."""
        self._step = step.name

    def _done(self, verdict: Verdict, reply: SmtpReply | None = None) -> Answer:
        body = b"".join(self._body) if self._body else None
        self.outcome = Outcome(verdict, self._step, reply, tuple(self._mods), body)
        return Answer.DONE

    def answer(self, reply: wire.Reply) -> Answer:
        """What `reply` (to the step last given to `expect`) means."""
        eob = self._step == "end of body"
        match reply:
            case wire.Progress():
                return Answer.WAIT
            case wire.Continue():
                return self._done(Verdict.ACCEPT) if eob else Answer.NEXT
            case wire.Skip():
                if self._step != "body":
                    raise wire.ProtocolError(f"skip in reply to {self._step}")
                self._skipped = True
                return Answer.SKIP
            case wire.Accept():
                return self._done(Verdict.ACCEPT)
            case wire.Reject():
                return self._done(Verdict.REJECT)
            case wire.Tempfail():
                return self._done(Verdict.TEMPFAIL)
            case wire.Discard():
                return self._done(Verdict.DISCARD)
            case wire.ReplyCode(text=text):
                parsed = parse_reply_code(text)
                verdict = Verdict.TEMPFAIL if parsed.code < 500 else Verdict.REJECT
                return self._done(verdict, parsed)
            case wire.Failure():
                return self._done(Verdict.FAILURE)
        self._modification(reply, eob)
        return Answer.WAIT

    def _modification(self, mod: wire.Modification, eob: bool) -> None:
        if not eob:
            raise wire.ProtocolError(f"modification {type(mod).__name__} before end of body")
        if not self.neg.actions & wire.NEEDS[type(mod)]:
            raise wire.ProtocolError(f"modification {type(mod).__name__} not negotiated")
        if len(self._mods) >= MAX_MODIFICATIONS:
            raise wire.ProtocolError(f"more than {MAX_MODIFICATIONS} modifications")
        if isinstance(mod, wire.ReplaceBody):
            self._body_size += len(mod.chunk)
            if self._body_size > self.max_body:
                raise wire.ProtocolError(f"replacement body over {self.max_body} octets")
            self._body.append(mod.chunk)
            return
        if isinstance(mod, wire.AddHeader | wire.InsertHeader | wire.ChangeHeader):
            self._header_octets += len(mod.name) + len(mod.value)
            if self._header_octets > MAX_HEADER_OCTETS:
                raise wire.ProtocolError(f"header changes over {MAX_HEADER_OCTETS} octets")
        self._mods.append(mod)
