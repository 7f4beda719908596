"""DMARC aggregate reports, outgoing, sans-IO (RFC 7489 §7.1-7.2 and Appendix C; RFC 9990,
DMARC Aggregate Reporting, which obsoletes them): one evaluation's report row, the report's
XML, the message that carries it, the report URIs with their size limits, and the name that
verifies an external destination.

- **Rows** (RFC 9990 §3 "record"): `row_for` turns one DMARC evaluation of a message whose
  policy record asks for reports (``rua``) into a `ReportRow`: the source IP, the identifiers
  (RFC5322.From, RFC5321.MailFrom domains), the SPF and DKIM results uninterpreted, the
  policy evaluated (the disposition applied, the DKIM and SPF alignment results, and why the
  disposition is not the one asked for: ``local_policy`` when `[inbound] dmarc_reject` /
  `dmarc_quarantine` chose another action, ``policy_test_mode`` under ``t=y``). DKIM
  signatures are listed as §3 "DKIM Signatures in Aggregate Reports" orders them (passing
  ones of the author domain first, failing ones last), at most `MAX_DKIM`. `ReportRow.key`
  is its JSON, what the store counts identical rows by.
- **The report** (RFC 9990 §3, Appendix C's XML schema; RFC 7489 Appendix C): `report_xml`
  is the ``feedback`` document of one policy domain and one period, in the namespace
  `NAMESPACE` with ``version`` 1.0, ``report_metadata``, ``policy_published`` and one
  ``record`` per distinct row. The elements are those of RFC 7489's schema too, so reports
  are read by consumers of either.
- **The message** (RFC 7489 §7.2.1.1, RFC 9990 §4 "Email"): `report_message` with the
  Subject ``Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>``, the XML
  gzip'd as ``application/gzip`` named ``receiver!policy-domain!begin!end.xml.gz`` and a
  short text part.
- **Report URIs** (RFC 7489 §6.2, §6.3 "rua"): `report_uris` reads the ``rua`` tag of the
  record's text with the ``!size`` limits (``k``, ``m``, ``g``, ``t``: powers of 2^10), which
  `postkeep.mailauth.dmarc.record` drops (RFC 9989 ignores them; a receiver sending reports
  to an RFC 7489 domain honours them: a report larger than a URI's limit is not sent there).
- **External destinations** (RFC 7489 §7.1, RFC 9990 §5): `verification_name` is the
  ``<policy-domain>._report._dmarc.<destination-host>`` name whose TXT record must start
  with ``v=DMARC1`` (`authorizes`) before reports go to a destination whose Organizational
  Domain is not the policy domain's; the caller decides when that applies (its lookups). A
  ``rua`` in that record replaces the destination (`overriding`: URIs at the same host only,
  so it cannot send reports elsewhere).
"""

from __future__ import annotations

import gzip
import json
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from xml.etree import ElementTree

from postkeep.mailauth.dmarc.evaluate import DmarcVerdict
from postkeep.mailauth.dmarc.record import MAX_URIS, DmarcRecord, Policy, is_dmarc_text

DAY = 86400
#: RFC 9990's XML namespace (Appendix C).
NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
#: RFC 9990 §3: at most this many DKIM signatures per row.
MAX_DKIM = 100
#: RFC 9990 §3 "Policy Override Reason".
OVERRIDES = frozenset({"local_policy", "mailing_list", "other", "policy_test_mode",
                       "trusted_forwarder"})
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """What RFC 9990 §3 reports about a set of identical messages: `spf` is (domain, scope
    "mfrom" or "helo", result) or None (not checked); `dkim` (domain, selector, result) per
    signature; `disposition` the one applied ("none", "quarantine", "reject"); `reason` the
    override type or None."""

    source_ip: str
    header_from: str
    envelope_from: str
    spf: tuple[str, str, str] | None
    dkim: tuple[tuple[str, str, str], ...]
    disposition: str
    dkim_aligned: bool
    spf_aligned: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in OVERRIDES:
            raise ValueError(f"not an RFC 9990 policy override type: {self.reason}")

    @property
    def key(self) -> str:
        return json.dumps([self.source_ip, self.header_from, self.envelope_from,
                           self.spf, self.dkim, self.disposition, self.dkim_aligned,
                           self.spf_aligned, self.reason], separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> ReportRow:
        ip, header_from, envelope_from, spf, dkim, disposition, dk, sp, reason = json.loads(key)
        return cls(ip, header_from, envelope_from, tuple(spf) if spf else None,
                   tuple(tuple(d) for d in dkim), disposition, dk, sp, reason)


def row_for(verdict: DmarcVerdict, applied: Policy, *, source_ip: str, envelope_from: str,
            spf: tuple[str, str, str] | None, dkim: Sequence[tuple[str, str, str]]
            ) -> tuple[str, ReportRow] | None:
    """The (policy domain, row) of one evaluation, or None when there is nothing to report
    (no policy record, no ``rua``, or no verdict: temperror, permerror). `applied` is the
    disposition the receiver chose; `envelope_from` the MAIL FROM address ("" for <>); `spf`
    (domain, identity "mailfrom" or "helo", result); `dkim` (d=, s=, result) per signature."""
    record = verdict.record
    if record is None or not record.rua or verdict.result not in ("pass", "fail"):
        return None
    reason = None
    if verdict.result == "fail" and verdict.disposition is not None:
        if applied is not verdict.disposition:
            reason = "local_policy"
        elif record.testing and verdict.disposition is not verdict.policy:
            reason = "policy_test_mode"
    author = verdict.header_from

    def rank(sig: tuple[str, str, str]) -> int:
        domain, _, result = sig
        if result != "pass":
            return 3
        if domain == author:
            return 0
        return 1 if author.endswith("." + domain) or domain.endswith("." + author) else 2

    signatures = tuple(sorted(((d.lower(), s, r) for d, s, r in dkim), key=rank))[:MAX_DKIM]
    spf_row = None
    if spf is not None:
        domain, identity, result = spf
        spf_row = (domain.lower(), "helo" if identity == "helo" else "mfrom", result)
    row = ReportRow(source_ip, author, envelope_from.rpartition("@")[2].lower(), spf_row,
                    signatures, applied.value, verdict.dkim_aligned, verdict.spf_aligned,
                    reason)
    return verdict.policy_domain, row


@dataclass(frozen=True, slots=True)
class ReportUri:
    """A ``mailto:`` report URI: its address and its size limit in octets (None: none)."""

    address: str
    limit: int | None = None


def report_uris(text: str) -> tuple[ReportUri, ...]:
    """The ``mailto:`` URIs of the ``rua`` tag of a DMARC record's text, in order, with their
    ``!size`` limits (RFC 7489 §6.2); other schemes and malformed URIs are left out."""
    value = ""
    for part in text.split(";")[1:]:
        name, eq, tag = part.partition("=")
        if eq and name.strip().lower() == "rua":
            value = tag.strip()
            break
    out = []
    for uri in value.split(",")[:MAX_URIS]:
        uri, _, size = uri.strip().partition("!")
        if not uri.lower().startswith("mailto:"):
            continue
        address = urllib.parse.unquote(uri[len("mailto:"):].split("?", 1)[0])
        local, at, domain = address.rpartition("@")
        if (not at or not local or "@" in local or "." not in domain or "," in address
                or len(address) > 320):
            continue
        limit = None
        size = size.strip().lower()
        if size:
            digits, unit = (size[:-1], size[-1]) if size[-1] in _UNITS else (size, "")
            if not digits.isdigit() or len(digits) > 12:
                continue  # a malformed limit: the URI is not usable
            limit = int(digits) * _UNITS[unit]
        out.append(ReportUri(f"{local}@{domain.lower()}", limit))
    return tuple(out)


def verification_name(policy_domain: str, destination_host: str) -> str | None:
    """``<policy domain>._report._dmarc.<destination host>`` (RFC 7489 §7.1 steps 1-3, the
    policy domain as A-labels), or None when it is too long for the DNS (step 4)."""
    try:
        domain = policy_domain.rstrip(".").encode("idna").decode("ascii")
        host = destination_host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return None
    name = f"{domain}._report._dmarc.{host}".lower()
    if len(name) > 253 or any(not 0 < len(label) <= 63 for label in name.split(".")):
        return None
    return name


def authorizes(records: Iterable[bytes]) -> bool:
    """Whether the TXT records at `verification_name` authorize the reports (RFC 7489 §7.1
    steps 6-8: at least one starts with ``v=DMARC1``)."""
    return any(is_dmarc_text(t) for t in records)


def overriding(records: Iterable[bytes], host: str) -> tuple[ReportUri, ...]:
    """The destinations an authorizing record names instead (RFC 7489 §7.1 step 9, RFC 9990
    §5: its ``rua``, only the URIs at the same `host`), () when it names none."""
    for text in records:
        if is_dmarc_text(text):
            uris = report_uris(text.decode("ascii", "replace"))
            if uris:
                return tuple(u for u in uris if u.address.rpartition("@")[2] == host.lower())
    return ()


def _sub(parent: ElementTree.Element, tag: str, text: str | int | None = None
         ) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def report_xml(*, org_name: str, email: str, report_id: str, domain: str, begin: int,
               end: int, record: DmarcRecord, discovery: str,
               rows: Iterable[tuple[ReportRow, int]], generator: str = "postkeep") -> bytes:
    """The ``feedback`` document (RFC 9990 §3) of `domain` for [begin, end]: the policy
    published is `record` (found by `discovery`: "psl" or "treewalk"), one ``record``
    element per row with its count."""
    root = ElementTree.Element("feedback", xmlns=NAMESPACE)
    _sub(root, "version", "1.0")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", begin)
    _sub(dates, "end", end)
    _sub(meta, "generator", generator)
    published = _sub(root, "policy_published")
    _sub(published, "domain", domain)
    _sub(published, "discovery_method", discovery)
    _sub(published, "adkim", "s" if record.adkim_strict else "r")
    _sub(published, "aspf", "s" if record.aspf_strict else "r")
    _sub(published, "p", record.p.value)
    _sub(published, "sp", (record.sp or record.p).value)
    if record.np is not None:
        _sub(published, "np", record.np.value)
    _sub(published, "fo", record.fo)
    _sub(published, "testing", "y" if record.testing else "n")
    for row, count in rows:
        rec = _sub(root, "record")
        head = _sub(rec, "row")
        _sub(head, "source_ip", row.source_ip)
        _sub(head, "count", count)
        evaluated = _sub(head, "policy_evaluated")
        _sub(evaluated, "disposition", row.disposition)
        _sub(evaluated, "dkim", "pass" if row.dkim_aligned else "fail")
        _sub(evaluated, "spf", "pass" if row.spf_aligned else "fail")
        if row.reason is not None:
            _sub(_sub(evaluated, "reason"), "type", row.reason)
        ids = _sub(rec, "identifiers")
        _sub(ids, "envelope_from", row.envelope_from)
        _sub(ids, "header_from", row.header_from)
        results = _sub(rec, "auth_results")
        for d, s, r in row.dkim:
            sig = _sub(results, "dkim")
            _sub(sig, "domain", d)
            _sub(sig, "selector", s)
            _sub(sig, "result", r)
        if row.spf is not None:
            spf = _sub(results, "spf")
            _sub(spf, "domain", row.spf[0])
            _sub(spf, "scope", row.spf[1])
            _sub(spf, "result", row.spf[2])
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def report_filename(receiver: str, domain: str, begin: int, end: int) -> str:
    """RFC 7489 §7.2.1.1: ``receiver!policy-domain!begin!end.xml.gz``."""
    return f"{receiver}!{domain}!{begin}!{end}.xml.gz"


def report_message(xml: bytes, *, submitter: str, domain: str, report_id: str, begin: int,
                   end: int, sender: str, recipients: Sequence[str], now: float) -> bytes:
    """The report as the message of RFC 7489 §7.2.1.1: a text part and the XML gzip'd
    (``application/gzip``, `report_filename`); the Message-ID is the Report-ID."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Message-ID"] = f"<{report_id}>"
    msg.set_content(f"This is a DMARC aggregate report (RFC 7489, RFC 9990) from {submitter} "
                    f"about mail from {domain} received from "
                    f"{_stamp(begin)} to {_stamp(end)}.\n")
    msg.add_attachment(gzip.compress(xml, mtime=0), maintype="application", subtype="gzip",
                       filename=report_filename(submitter, domain, begin, end))
    return msg.as_bytes()


def _stamp(when: int) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
