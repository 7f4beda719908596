"""The webmail's messages, sans-IO: a compose form's fields checked and made into an
RFC 5322 / MIME message, and the fields a reply, a forward or a reopened draft starts from.

- Header fields (RFC 5322 §2.2): a line break or another control character in a field's value
  refuses the form (`FormError`): no header can be injected. Addresses are read by the email
  package's RFC 5322 §3.4 parser; an address it finds defects in, or without a local part and
  a domain, refuses the form with its text.
- The message (`build`): `email.message.EmailMessage` under policy SMTP (CRLF, lines folded),
  or SMTPUTF8 when an address is not ASCII (RFC 6532 §3.2; the envelope then asks SMTPUTF8,
  RFC 6531); display names and the Subject in RFC 2047 encoded words otherwise. From, To, Cc,
  Subject, Date (RFC 5322 §3.3), Message-ID with the server's host name (§3.6.4), In-Reply-To
  and References of a reply (§3.6.4), MIME-Version (RFC 2045 §4); the body text/plain UTF-8
  (quoted-printable unless it is short-lined ASCII: 7-bit, RFC 2045 §6.7);
  attachments as application parts with ``filename*`` (RFC 2231 §4) when the name is not
  ASCII. Bcc (§3.6.3) is in the copy kept in Sent, never in the one sent.
- A reply (`reply_fields`, §3.6.4): To the original's Reply-To or else From; reply-all adds its
  To and Cc, less the user's own addresses; "Re: " once; In-Reply-To its Message-ID, References
  its References (or In-Reply-To) then its Message-ID; its text quoted. A forward: "Fwd: ",
  the original's header summary and text, its attachments offered again (`attachments_of`).
"""

from __future__ import annotations

import email.policy
import mimetypes
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

from postkeep.addresses import address_key

MAX_FIELD = 998 * 4  # characters of one header field's value (RFC 5322 §2.1.1's line, folded)
MAX_BODY_CHARS = 2_000_000
MAX_MSGIDS = 50  # message ids kept in References
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MSGID = re.compile(r"<[\x21-\x3d\x3f-\x7e]{1,250}>")  # id-left "@" id-right, no "<" ">" inside
_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg)\s*:\s*)+", re.IGNORECASE)
_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}$")


class FormError(ValueError):
    """The form cannot make a message: what to tell the user."""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str  # "maintype/subtype"
    data: bytes


@dataclass(frozen=True, slots=True)
class Fields:
    """What a compose form holds (the text fields as the user typed them)."""

    sender: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""


@dataclass(frozen=True, slots=True)
class Built:
    """A message made from a form: the text to send (no Bcc), the copy to keep (with Bcc),
    its Message-ID, the envelope's sender and recipients, and whether it needs SMTPUTF8."""

    sent: bytes
    kept: bytes
    message_id: str
    sender: str
    recipients: list[str] = field(default_factory=list)
    smtputf8: bool = False


def check_line(label: str, value: str) -> str:
    """A header field's value as typed: refused with a line break or a control character."""
    if _CONTROL.search(value):
        raise FormError(f"{label} may not contain line breaks or control characters.")
    if len(value) > MAX_FIELD:
        raise FormError(f"{label} is too long.")
    return value.strip()


def parse_addresses(label: str, value: str) -> list[Address]:
    """The addresses of a To, Cc, Bcc or From field (RFC 5322 §3.4 address-list)."""
    value = check_line(label, value)
    if not value:
        return []
    try:
        parsed = email.policy.SMTPUTF8.header_factory("to", value)
        defects, found = parsed.defects, list(parsed.addresses)
    except Exception:  # the email package's parser fails in odd ways on odd input
        raise FormError(f"{label}: {value!r} is not a list of addresses.") from None
    defects = [d for d in defects if not isinstance(d, NonASCIILocalPartDefect)]  # RFC 6532
    if defects:
        raise FormError(f"{label}: {value!r} is not a valid address list ({defects[0]}).")
    for address in found:
        if not address.username or not address.domain or " " in address.domain:
            raise FormError(f"{label}: {address.addr_spec!r} is not a valid address.")
    return found


def _message_ids(label: str, value: str) -> list[str]:
    value = check_line(label, value)
    ids = _MSGID.findall(value)
    if "".join(value.split()) != "".join(ids):
        raise FormError(f"{label} is not a list of message ids.")
    return ids[-MAX_MSGIDS:]


def _ascii(addresses: Sequence[Address]) -> bool:
    return all(a.addr_spec.isascii() for a in addresses)


def build(fields: Fields, attachments: Sequence[Attachment], *, hostname: str,
          draft: bool = False, when: datetime | None = None) -> Built:
    """The message `fields` and `attachments` make (see the module docstring); a `draft`
    may have no recipient yet."""
    (sender, *more) = parse_addresses("From", fields.sender) or [None]
    if sender is None or more:
        raise FormError("From must be one address.")
    to = parse_addresses("To", fields.to)
    cc = parse_addresses("Cc", fields.cc)
    bcc = parse_addresses("Bcc", fields.bcc)
    if not (to or cc or bcc or draft):
        raise FormError("Give at least one recipient (To, Cc or Bcc).")
    subject = check_line("Subject", fields.subject)
    in_reply_to = _message_ids("In-Reply-To", fields.in_reply_to)
    references = _message_ids("References", fields.references)
    if len(fields.body) > MAX_BODY_CHARS:
        raise FormError("The text is too long.")
    utf8 = not _ascii([sender, *to, *cc, *bcc])
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    msg["From"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when or datetime.now(UTC))
    message_id = make_msgid(domain=hostname)
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = " ".join(in_reply_to)
    if references:
        msg["References"] = " ".join(references)
    body = fields.body.replace("\r\n", "\n").replace("\r", "\n")
    body = body if body.endswith("\n") else body + "\n"
    plain = body.isascii() and all(len(line) <= 78 for line in body.split("\n"))
    # 7-bit on the wire (no 8BITMIME needed on the way): quoted-printable unless plain ASCII
    msg.set_content(body, charset="utf-8", cte="7bit" if plain else "quoted-printable")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                           filename=attachment.filename)
    sent = msg.as_bytes(policy=policy)
    kept = sent
    if bcc:  # the copy kept: Bcc after From (RFC 5322 §3.6.3 lets it be kept there)
        msg["Bcc"] = bcc
        kept = msg.as_bytes(policy=policy)
    recipients = [a.addr_spec for a in (*to, *cc, *bcc)]
    return Built(sent, kept, message_id, sender.addr_spec,
                 list(dict.fromkeys(recipients)), utf8)


def attachment_of(filename: str, declared: str, data: bytes) -> Attachment:
    """An uploaded file as an attachment: its name without a path or control characters,
    its type by the name (else the browser's, if well formed, else octet-stream)."""
    name = _CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()[:200]
    guessed = mimetypes.guess_type(name, strict=False)[0] if name else None
    kind = (guessed or declared.split(";")[0].strip()).lower()
    if not _TYPE.match(kind) or kind.startswith("multipart/") or kind.startswith("message/"):
        kind = "application/octet-stream"
    return Attachment(name or "attachment", kind, data)


# -- what a reply, a forward or a draft starts from ------------------------------------------

def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed field the parser cannot make into a header
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(message: Message, *names: str) -> list[Address]:
    found: list[Address] = []
    for name in names:
        try:
            value = message.get(name)
            found += list(getattr(value, "addresses", ()))
        except Exception:
            continue
    return [a for a in found if a.username and a.domain]


def _join(addresses: Sequence[Address]) -> str:
    seen: dict[str, Address] = {}
    for address in addresses:
        seen.setdefault(address_key(address.addr_spec), address)
    return ", ".join(str(a) for a in seen.values())


def text_of(message: EmailMessage) -> str:
    """The message's text: its text/plain body, else its HTML one without its tags."""
    part = message.get_body(("plain", "html"))
    if part is None:
        return ""
    try:
        text = str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):
        return ""
    if part.get_content_subtype() == "html":
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", text)
        text = re.sub(r"(?s)<[^>]*>", "", text)
    return text.replace("\r\n", "\n")[:MAX_BODY_CHARS]


def attachments_of(message: EmailMessage) -> list[Attachment]:
    """The message's attachments (not its text), decoded."""
    found = []
    for part in message.iter_attachments():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            found.append(Attachment(part.get_filename() or "attachment",
                                    part.get_content_type(), payload))
    return found


def _subject(prefix: str, subject: str) -> str:
    return f"{prefix} {_PREFIX.sub('', subject)}".strip()


def reply_fields(data: bytes, mode: str, own: frozenset[str], sender: str) -> Fields:
    """The form a reply ("reply", "all") or a forward ("forward") to `data` starts with;
    `own`: the user's addresses (lookup keys), left out of a reply-all."""
    original = parse(data)
    subject = _header(original, "Subject")
    text = text_of(original)
    who = _header(original, "From")
    date = _header(original, "Date")
    if mode == "forward":
        summary = "\n".join(f"{name}: {value}" for name, value in (
            ("From", who), ("Date", date), ("Subject", subject),
            ("To", _header(original, "To")), ("Cc", _header(original, "Cc"))) if value)
        return Fields(sender=sender, subject=_subject("Fwd:", subject),
                      body=f"\n\n---------- Forwarded message ----------\n{summary}\n\n{text}")
    to = _addresses(original, "Reply-To") or _addresses(original, "From")
    cc: list[Address] = []
    if mode == "all":
        cc = _addresses(original, "To", "Cc")
        to = [a for a in to if address_key(a.addr_spec) not in own] or to
        keys = {address_key(a.addr_spec) for a in to}
        cc = [a for a in cc if address_key(a.addr_spec) not in own | keys]
    msgid = _MSGID.findall(_header(original, "Message-ID"))[:1]
    references = _MSGID.findall(_header(original, "References")) or _MSGID.findall(
        _header(original, "In-Reply-To"))[:1]
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.rstrip("\n").split("\n"))
    return Fields(
        sender=sender, to=_join(to), cc=_join(cc), subject=_subject("Re:", subject),
        body=f"\n\nOn {date or 'an earlier date'}, {who or 'someone'} wrote:\n{quoted}\n",
        in_reply_to=" ".join(msgid),
        references=" ".join([*references, *msgid][-MAX_MSGIDS:]),
    )


def draft_fields(data: bytes) -> Fields:
    """The form a saved draft restores (its attachments: `attachments_of`)."""
    draft = parse(data)
    return Fields(
        sender=_join(_addresses(draft, "From")), to=_join(_addresses(draft, "To")),
        cc=_join(_addresses(draft, "Cc")), bcc=_join(_addresses(draft, "Bcc")),
        subject=_header(draft, "Subject"), body=text_of(draft),
        in_reply_to=" ".join(_MSGID.findall(_header(draft, "In-Reply-To"))),
        references=" ".join(_MSGID.findall(_header(draft, "References"))),
    )
