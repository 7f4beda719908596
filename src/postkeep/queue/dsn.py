"""Delivery status notifications: bounces and delay notices (RFC 3464, RFC 3461, RFC 6533).

A notice is a ``multipart/report; report-type=delivery-status`` (RFC 6522) of three parts: a
text for people, the ``message/delivery-status`` fields (RFC 3464 §2: per-message Reporting-MTA,
Original-Envelope-Id, Arrival-Date; per recipient Final-Recipient, Original-Recipient, Action,
Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until), and the original:
whole (``message/rfc822``) unless the sender asked for headers only (RET=HDRS, RFC 3461 §4.3)
or it is larger than `delivery.max_bounce_size`, then its header section
(``text/rfc822-headers``, RFC 6522 §4) with a note. A message sent with SMTPUTF8 gets the
internationalised types (``message/global-delivery-status``, ``message/global``,
``message/global-headers``, RFC 6533 §3).

Notices go from the null reverse-path (RFC 5321 §4.5.5), so a notice that cannot be delivered
is never answered by another one: no bounce loops. They carry ``Auto-Submitted:
auto-replied`` (RFC 3834 §5).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

from postkeep.store.api import DsnRecipient, Envelope, QueueEntry, QueueNotice


@dataclass(frozen=True, slots=True)
class Reported:
    """One recipient in a notice: its address and parameters, and the last word about it."""

    address: str
    orcpt: str | None
    action: str  # "failed", "delayed", "delivered", "relayed" (RFC 3464 §2.3.3)
    status: str  # enhanced status code, "5.1.1"
    diagnostic: str | None  # the SMTP reply, "550 5.1.1 No such user"
    remote: str | None  # the host that gave it
    when: float


def _date(when: float) -> str:
    return formatdate(when, localtime=False, usegmt=True)


def _header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def notice(
    entry: QueueEntry,
    message: bytes,
    reported: Sequence[Reported],
    *,
    hostname: str,
    max_returned: int,
    retry_until: float | None = None,
    now: float | None = None,
) -> QueueNotice:
    """The DSN about `reported` recipients of `entry`, from MAILER-DAEMON to its sender."""
    now = time.time() if now is None else now
    delayed = all(r.action == "delayed" for r in reported)
    succeeded = all(r.action in ("delivered", "relayed") for r in reported)
    utf8 = entry.smtputf8
    boundary = f"=_{secrets.token_hex(12)}"
    queue_id = f"N{secrets.token_hex(8).upper()}"
    subject = ("Delayed Mail (still being retried)" if delayed
               else "Successful Mail Delivery Report" if succeeded
               else "Undelivered Mail Returned to Sender")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.mail_from}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{queue_id}.{int(now)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    # RET (RFC 3461 §4.3) asks about failures: a success notice carries the header section only
    whole = entry.ret != "HDRS" and len(message) <= max_returned and not succeeded
    people = _text(entry, reported, hostname, delayed, retry_until, succeeded)
    if not whole and entry.ret != "HDRS" and not succeeded:
        people += (f"Your message was larger than {max_returned} octets: only its header "
                   "section is attached.\r\n")
    fields = [f"Reporting-MTA: dns; {hostname}", f"X-Postkeep-Queue-ID: {entry.queue_id}"]
    if entry.envid:
        fields.append(f"Original-Envelope-Id: {entry.envid}")
    fields.append(f"Arrival-Date: {_date(entry.created)}")
    for r in reported:
        fields += ["", f"Final-Recipient: {'utf-8' if utf8 else 'rfc822'}; {r.address}"]
        if r.orcpt:
            fields.append(f"Original-Recipient: {r.orcpt.replace(';', '; ', 1)}")
        fields += [f"Action: {r.action}", f"Status: {r.status}"]
        if r.remote:
            fields.append(f"Remote-MTA: dns; {r.remote.split(' ')[0]}")
        if r.diagnostic:
            fields.append(f"Diagnostic-Code: smtp; {r.diagnostic}")
        fields.append(f"Last-Attempt-Date: {_date(r.when)}")
        if r.action == "delayed" and retry_until is not None:
            fields.append(f"Will-Retry-Until: {_date(retry_until)}")
    if whole:
        original_type, original = ("message/global" if utf8 else "message/rfc822"), message
    else:
        original_type = "message/global-headers" if utf8 else "text/rfc822-headers"
        original = _header_section(message)
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    parts = [
        "\r\n".join(head).encode(),
        b"",
        b"This is a delivery status notification (RFC 3464), in MIME format.",
        b"",
        f"--{boundary}".encode(),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        people.encode(),
        f"--{boundary}".encode(),
        f"Content-Type: {status_type}".encode(),
        b"",
        "\r\n".join(fields).encode(),
        b"",
        f"--{boundary}".encode(),
        f"Content-Type: {original_type}".encode(),
        b"",
    ]
    body = b"\r\n".join(parts) + b"\r\n" + original
    if not original.endswith(b"\r\n"):
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    envelope = Envelope(queue_id, "", [DsnRecipient(entry.mail_from, notify="NEVER")],
                        "", hostname, now, body="8BITMIME", smtputf8=utf8)
    return QueueNotice(envelope, body)


def _text(entry: QueueEntry, reported: Sequence[Reported], hostname: str, delayed: bool,
          retry_until: float | None, succeeded: bool = False) -> str:
    if succeeded:
        lines = [f"This is the mail system at {hostname}.", "",
                 "Your message was delivered to the recipients below, as you asked to be told.",
                 "Where it says \"relayed\", the receiving server sends no delivery reports:",
                 "this is the last word about it.", ""]
    elif delayed:
        until = f" until {_date(retry_until)}" if retry_until else ""
        lines = [f"This is the mail system at {hostname}.", "",
                 "Your message could not be delivered yet to the recipients below. It is still",
                 f"in the queue and will be tried again{until}; you need not send it again.", ""]
    else:
        lines = [f"This is the mail system at {hostname}.", "",
                 "Your message could not be delivered to the recipients below. This is a",
                 "permanent failure: it will not be tried again.", ""]
    for r in reported:
        why = r.diagnostic or r.status
        by = f" (said {r.remote})" if r.remote else ""
        lines.append(f"<{r.address}>: {why}{by}")
    lines.append("")
    if entry.ret == "HDRS":
        lines.append("Only the header section of your message is attached, as you asked.")
    return "\r\n".join(lines) + "\r\n"
