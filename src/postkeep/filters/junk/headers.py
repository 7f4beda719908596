"""The junk filter's header and encoding rules: what a sender's header fields and MIME
choices give away, in the manner of SpamAssassin's header tests and rspamd's
``FAKE_REPLY``, ``FREEMAIL_*``, ``DATE_IN_*`` and ``MIME_*`` symbols.

- the subject: ``FAKE_REPLY`` / ``FAKE_FORWARD`` ("Re:" or "Fwd:" without In-Reply-To or
  References, RFC 5322 §3.6.4, nor Outlook's Thread-Index), ``SUBJ_EDGE_JUNK`` (a run of
  three or more symbols opening or closing it: "*** ", " $$$");
- recipients: ``TO_UNDISCLOSED`` ("undisclosed-recipients:;", the empty group a mailer
  writes for Bcc-only mail, RFC 5322 §3.4), ``MISSING_TO`` (neither To nor Cc);
- the sender: ``FREEMAIL_BRAND_NAME`` (a freemail From: address whose display name claims
  a bank, a payment or parcel service, a brand or a support desk), ``FREEMAIL_REPLYTO``
  (replies go to a freemail address other than the From: address);
- dates (RFC 5322 §3.3), against the first Received field's date, else now:
  ``DATE_FUTURE`` (more than `FUTURE` ahead), ``DATE_PAST`` (more than `PAST` behind),
  ``DATE_INVALID`` (a Date field that does not parse);
- bulk mail: ``BULK_NO_UNSUBSCRIBE`` (Precedence: bulk or list, or text offering to
  unsubscribe, without the List-Unsubscribe field of RFC 2369 that honest bulk senders
  give; not for an RFC 3834 auto-reply);
- encoding: ``TEXT_BASE64`` (a text/plain part of plain US-ASCII sent base64: RFC 2045
  §6.1, 7bit or quoted-printable would do, base64 hides it from simple filters),
  ``CHARSET_MISMATCH`` (a text part's octets invalid in its declared charset),
  ``HEADER_8BIT`` (the Subject or From: in raw octets that are not UTF-8, RFC 6532 §3.2:
  neither encoded-words nor internationalized mail).
"""

from __future__ import annotations

import email.utils
import re
import time
from datetime import UTC, datetime

from postkeep.filters.junk.base import Facts, Hits
from postkeep.filters.junk.literals import anywhere, required_literals
from postkeep.filters.junk.message import Parsed, addresses
from postkeep.mailauth.uridomains import registered_domain

FUTURE = 24 * 3600.0  # seconds a Date may be ahead of its reference
PAST = 4 * 24 * 3600.0  # and behind it
UNSUBSCRIBE_SCAN = 64 * 1024  # characters of text looked at for an unsubscribe offer

FREEMAIL = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "rocketmail.com",
    "hotmail.com", "outlook.com", "live.com", "msn.com", "aol.com", "icloud.com", "me.com",
    "mail.com", "gmx.com", "gmx.net", "gmx.de", "web.de", "yandex.com", "yandex.ru",
    "mail.ru", "inbox.ru", "list.ru", "bk.ru", "rambler.ru", "zoho.com", "protonmail.com",
    "proton.me", "tutanota.com", "qq.com", "163.com", "126.com", "sina.com", "rediffmail.com",
    "libero.it", "virgilio.it", "laposte.net", "orange.fr", "free.fr", "t-online.de",
    "seznam.cz", "wp.pl", "o2.pl", "interia.pl", "naver.com", "daum.net", "hanmail.net",
    "usa.com", "email.com", "consultant.com", "post.com", "aim.com", "inbox.com",
    "lycos.com", "excite.com", "juno.com", "netzero.net", "hushmail.com", "cock.li",
})
_FREEMAIL_PREFIXES = ("yahoo.", "hotmail.", "outlook.", "live.")  # yahoo.co.uk, live.fr

_BRAND = re.compile(
    r"\b(?:bank|banking|paypal|apple|icloud|amazon|microsoft|office ?365|outlook|netflix"
    r"|google|facebook|instagram|whatsapp|linkedin|ebay|dhl|fedex|ups|usps|royal mail"
    r"|post ?office|irs|hmrc|tax|customs|visa|mastercard|american express|amex|western union"
    r"|security|verification|helpdesk|help desk|administrator|admin|webmail|mail ?box"
    r"|account(?:s)?|billing|support team|customer (?:care|service|support)"
    r"|it (?:department|support)|compliance|fraud|united nations|imf|world bank|fbi)\b",
    re.IGNORECASE)
_REPLY = re.compile(r"^\s*(?:re|aw|sv|antw|odp)\s*(?:\[\d{1,4}\])?\s*:", re.IGNORECASE)
_FORWARD = re.compile(r"^\s*(?:fwd?|wg|tr|rv|enc)\s*:", re.IGNORECASE)
_EDGE = re.compile(r"^[^\w\s.…?]{3}|[^\w\s.…?)\]\"']{3}$")
_UNSUBSCRIBE = re.compile(  # for lower-cased text (re.IGNORECASE is several times slower)
    r"\b(?:unsubscribe|opt[- ]out|remove yourself|stop receiving)\b")
_UNSUBSCRIBE_NEEDLES = required_literals(_UNSUBSCRIBE.pattern)


def freemail(domain: str) -> bool:
    """Whether `domain` is a well-known free mail provider's (subdomains not included)."""
    domain = domain.lower().rstrip(".")
    return domain in FREEMAIL or (domain.startswith(_FREEMAIL_PREFIXES)
                                  and registered_domain(domain) == domain)


def _mailbox(value: str | None) -> tuple[str, str]:
    for name, addr in addresses(value or "")[:1]:
        return name, addr.lower()
    return "", ""


def subject_tricks(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    threaded = any(m.header(k) is not None for k in ("in-reply-to", "references",
                                                       "thread-index"))
    if not threaded and _REPLY.match(m.subject):
        hits.append(("FAKE_REPLY", 1.0))
    elif not threaded and _FORWARD.match(m.subject):
        hits.append(("FAKE_FORWARD", 0.5))
    if _EDGE.search(m.subject.strip()):
        hits.append(("SUBJ_EDGE_JUNK", 0.8))
    return hits


def senders(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    to = " ".join(m.headers("to")).lower()
    if "undisclosed" in to and "recipient" in to:
        hits.append(("TO_UNDISCLOSED", 0.8))
    elif not to.strip() and not "".join(m.headers("cc")).strip():
        hits.append(("MISSING_TO", 0.5))
    name, sender = _mailbox(m.header("from"))
    if sender and freemail(sender.rpartition("@")[2]) and _BRAND.search(name):
        hits.append(("FREEMAIL_BRAND_NAME", 2.0))
    _, reply = _mailbox(m.header("reply-to"))
    if reply and reply != sender and freemail(reply.rpartition("@")[2]):
        hits.append(("FREEMAIL_REPLYTO", 1.5))
    return hits


def _when(value: str) -> float | None:
    try:
        moment: datetime = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": a UTC time, its place unknown (RFC 5322 §3.3)
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def dates(m: Parsed, _: Facts) -> Hits:
    date = m.header("date")
    if date is None:
        return []  # MISSING_DATE's
    sent = _when(date)
    if sent is None:
        return [("DATE_INVALID", 0.8)]
    received = next((t for r in m.headers("received")[:1]
                     if (t := _when(r.rpartition(";")[2])) is not None), None)
    reference = received if received is not None else time.time()
    if sent - reference > FUTURE:
        return [("DATE_FUTURE", 1.5)]
    if reference - sent > PAST:
        return [("DATE_PAST", 0.8)]
    return []


def bulk(m: Parsed, _: Facts) -> Hits:
    auto = (m.header("auto-submitted") or "no").strip().lower()
    if m.header("list-unsubscribe") is not None or auto != "no":
        return []  # a list's, or an auto-reply's (RFC 3834 §5)
    precedence = (m.header("precedence") or "").strip().lower()
    text = "\n".join([*m.plain, *(h.visible for h in m.html)])[:UNSUBSCRIBE_SCAN].lower()
    if precedence in ("bulk", "list", "junk") or (anywhere(_UNSUBSCRIBE_NEEDLES, text)
                                                   and _UNSUBSCRIBE.search(text)):
        return [("BULK_NO_UNSUBSCRIBE", 0.8)]
    return []


def encodings(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    if any(p.subtype == "plain" and p.encoding == "base64" and p.ascii
           for p in m.text_parts):
        hits.append(("TEXT_BASE64", 0.8))
    if any(not p.charset_ok for p in m.text_parts):
        hits.append(("CHARSET_MISMATCH", 0.7))
    if any("\ufffd" in (m.header(k) or "") for k in ("subject", "from")):
        hits.append(("HEADER_8BIT", 0.5))
    return hits


RULES = (subject_tricks, senders, dates, bulk, encodings)
