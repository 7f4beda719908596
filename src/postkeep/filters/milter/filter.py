"""The milter filter: `filters.base.Filter` over a milter (`[[filters.milter]]`).

The message goes to the milter as an SMTP transaction would (`filters.milter.session`): the
client (its address, its confirmed name), HELO, MAIL FROM with BODY= / SMTPUTF8, the
recipients, the header fields as received (our own fields, Received and
Authentication-Results, are added later: the milter sees the message as its sender wrote
it, less forged fields of ours), the body. The macros say who we are (``j``: the host name,
``{daemon_name}``: "mx" or "submission"), the queue id (``i``) and the login
(``{auth_authen}`` and ``{auth_type}``, submission only), so that e.g. OpenDKIM signs what
a user submits.

Its verdict, in our terms:

- accept (``a``, or ``c`` at the end of body): accepted, with the changes it asked for
  (header fields, the body, recipients: `filters.edits.Changes`); a quarantine (``q``)
  holds the message (`Action.QUARANTINE`, symbol ``MILTER_QUARANTINE``, its reason);
- reject (``r``) and tempfail (``t``): refused (554 5.7.1 / 451 4.7.1), with the milter's
  own reply (``y``) when it gave one, sanitised (`session.parse_reply_code`);
- discard (``d``): Sendmail and Postfix accept the message and drop it, which loses mail
  without a word to anyone. postkeep refuses it instead (554 5.7.1) and logs that the
  milter asked for a discard: the sender learns the message was not delivered;
- ``f`` / ``4``, a broken conversation, a refused connection or no answer within the
  timeout: no verdict, the fail mode of the direction applies (`filters.base`).
"""

from __future__ import annotations

from collections.abc import Iterator

from postkeep.config import MilterConfig
from postkeep.config.filters import MILTER_PREFIX, parse_macros
from postkeep.errors import Reply
from postkeep.filters.base import Action, Direction, FilterResult, ScanContext, ScanError
from postkeep.filters.edits import Changes, HeaderEdit, HeaderOp, check_field, split_head
from postkeep.filters.milter import wire
from postkeep.filters.milter.client import MilterClient
from postkeep.filters.milter.session import Outcome, SmtpReply, Transaction, Verdict
from postkeep.mailauth.dkim.canon import parse_header_fields
from postkeep.store.spool import MessageData

PIECE = 64 * 1024
QUARANTINE_SYMBOL = "MILTER_QUARANTINE"


def _fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields as (name, value): the value as written after the colon, without
    the final CRLF (lines that are no field are not sent)."""
    found = []
    for f in parse_header_fields(block):
        if f.key:
            name, _, value = f.raw[:-2].partition(b":")
            found.append((name.rstrip(b" \t"), value))
    return found


def _pieces(data: MessageData, start: int) -> Iterator[bytes]:
    for offset in range(start, len(data), PIECE):
        yield bytes(data[offset : offset + PIECE])


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


class MilterFilter:
    """`filters.base.Filter` over the milter `cfg` describes."""

    header = ""  # the milter writes its own fields

    def __init__(self, cfg: MilterConfig, hostname: str, head_limit: int,
                 max_body: int) -> None:
        self.cfg = cfg
        self.name = MILTER_PREFIX + cfg.name
        self.timeout = cfg.timeout
        self.hostname = hostname
        self.head_limit = head_limit
        self.max_body = max_body
        self.macros = parse_macros(cfg.macros)
        self.client = MilterClient(cfg.address)

    def fails_open(self, direction: Direction) -> bool:
        if direction is Direction.INBOUND:
            return self.cfg.fail_open_inbound
        return self.cfg.fail_open_outbound

    def transaction(self, context: ScanContext) -> Transaction:
        envelope = context.envelope
        args = ((f"BODY={envelope.body}",) if envelope.body else ()) + (
            ("SMTPUTF8",) if envelope.smtputf8 else ())
        return Transaction(
            hostname=self.hostname,
            daemon="mx" if context.direction is Direction.INBOUND else "submission",
            client_ip=context.client_ip, client_name=context.client_name,
            helo=envelope.helo, queue_id=context.queue_id, mail_from=envelope.mail_from,
            recipients=tuple(r.address for r in envelope.recipients), mail_args=args,
            login=context.login, mechanism=context.mechanism, extra=self.macros)

    async def scan(self, message: MessageData, context: ScanContext) -> FilterResult:
        try:
            block, start = split_head(message, self.head_limit)
        except ValueError as e:
            raise ScanError(str(e)) from None
        try:
            outcome = await self.client.check(self.transaction(context), _fields(block),
                                              _pieces(message, start), self.max_body)
            return self._result(outcome)
        except (wire.ProtocolError, ValueError) as e:
            raise ScanError(f"milter {self.cfg.name}: {e}") from None

    def _result(self, outcome: Outcome) -> FilterResult:
        at = outcome.step
        said = f": {outcome.reply.code} {outcome.reply.text}" if outcome.reply else ""
        match outcome.verdict:
            case Verdict.REJECT:
                return FilterResult(Action.REJECT, status="reject",
                                    reason=f"rejected at {at}{said}",
                                    reply=_reply(outcome.reply))
            case Verdict.TEMPFAIL:
                return FilterResult(Action.TEMPFAIL, status="tempfail",
                                    reason=f"tempfail at {at}{said}",
                                    reply=_reply(outcome.reply) or Reply(
                                        451, "4.7.1", "Message refused for now, try again "
                                        "later"))
            case Verdict.DISCARD:
                return FilterResult(Action.REJECT, status="discard",
                                    reason=f"discard asked at {at}: refused, never dropped")
            case Verdict.FAILURE:
                raise ScanError(f"milter {self.cfg.name} gave up at {at}")
        changes, quarantine = self._changes(outcome)
        count = len(outcome.modifications) + (outcome.body is not None)
        status = f"accept ({count} changes)" if count else "accept"
        if quarantine:
            return FilterResult(Action.QUARANTINE, symbols=(QUARANTINE_SYMBOL,), status=status,
                                reason=f"quarantine asked: {quarantine}", changes=changes)
        return FilterResult(status=status, changes=changes)

    def _changes(self, outcome: Outcome) -> tuple[Changes, str]:
        """The modifications as `Changes` (each field checked), and the quarantine reason."""
        headers: list[HeaderEdit] = []
        added: list[str] = []
        removed: list[str] = []
        quarantine = ""
        for mod in outcome.modifications:
            match mod:
                case wire.AddHeader(name=name, value=value):
                    headers.append(self._edit(HeaderOp.ADD, name, value))
                case wire.InsertHeader(index=index, name=name, value=value):
                    headers.append(self._edit(HeaderOp.INSERT, name, value, index))
                case wire.ChangeHeader(index=index, name=name, value=value):
                    op = HeaderOp.CHANGE if value else HeaderOp.DELETE
                    headers.append(self._edit(op, name, value, index))
                case wire.AddRecipient(address=address):
                    added.append(address)
                case wire.DeleteRecipient(address=address):
                    removed.append(address)
                case wire.Quarantine(reason=reason):
                    quarantine = quarantine or _printable(reason) or "milter quarantine"
                case _:  # ChangeSender is never negotiated (`session` refuses it)
                    raise wire.ProtocolError(f"unexpected {type(mod).__name__}")
        body = outcome.body
        if body is not None:  # CRLF line ends, as the message's own
            body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return Changes(tuple(headers), body, tuple(added), tuple(removed)), quarantine

    def _edit(self, op: HeaderOp, name: bytes, value: bytes, index: int = 0) -> HeaderEdit:
        """A header change; the value folded with CRLF, with a leading space unless the
        milter negotiated to write its own (HDR_LEADSPC: `session` sent fields as is)."""
        if op is HeaderOp.DELETE:
            check_field(_text(name), "")
            return HeaderEdit(op, _text(name), "", index)
        raw = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not raw.startswith((b" ", b"\t")):
            raw = b" " + raw
        edit = HeaderEdit(op, _text(name), _text(raw), index)
        check_field(edit.name, edit.value)
        return edit


def _reply(reply: SmtpReply | None) -> Reply | None:
    if reply is None:
        return None
    default = "5.7.1" if reply.code >= 500 else "4.7.1"
    return Reply(reply.code, reply.enhanced or default, reply.text)
