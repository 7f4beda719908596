"""DMARC aggregate reports, incoming, sans-IO (RFC 7489 §7.2 and Appendix C; RFC 9990 §3,
§4): the reports a message carries, and what each says.

- **Attachments** (RFC 7489 §7.2.1.1, RFC 9990 §4 "Email": "no specific MIME message
  structure is required"): `documents` (of a message of at most `MAX_MESSAGE` octets) takes
  every part that is a report: ``application/gzip``
  (or a name ending ``.gz``), ``application/zip`` (the form large receivers send; the XML
  entries of the archive) or ``text/xml`` / ``application/xml`` (plain), at most
  `MAX_DOCUMENTS`. Hostile input is bounded: a part of more than `MAX_COMPRESSED` octets is
  not read; decompression stops past `MAX_XML` octets of output (a zip or gzip bomb costs at
  most that), a zip's entries are read up to that size whatever their header claims, and
  archives inside archives are not opened.
- **The XML** (`parse`): read with defusedxml, which refuses a DTD and so every entity
  (the "billion laughs" expansion, external entities); element names are taken without their
  namespace, so RFC 7489's un-namespaced documents and RFC 9990's ``dmarc-2.0`` ones read
  alike. It is read as it streams (`iterparse`), each ``record`` dropped once counted: a
  report of more than `MAX_RECORDS` records is refused, as is one without ``org_name``,
  ``report_id``, ``date_range`` or ``policy_published/domain``. Texts are cut to `MAX_TEXT`.
- **What is kept** (`Report`): the reporting organization, the period, the policy domain,
  how many messages passed DMARC (an aligned DKIM or SPF pass in ``policy_evaluated``) and
  how many failed, and each record in short (source IP, count, disposition, the alignment
  results, header_from).

Every failure is a `FeedbackError` with a short reason: the caller logs it and delivers the
message all the same.
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse

#: Most octets of one compressed attachment read.
MAX_COMPRESSED = 10 << 20
#: Longest message read (a part of `MAX_COMPRESSED` octets in base64, and room for the rest).
MAX_MESSAGE = 2 * MAX_COMPRESSED
#: Most octets of XML one report may decompress to.
MAX_XML = 50 << 20
#: Most ``record`` elements in one report.
MAX_RECORDS = 100_000
#: Most reports taken from one message.
MAX_DOCUMENTS = 8
#: Longest text kept of one element.
MAX_TEXT = 255
_GZIP = ("application/gzip", "application/x-gzip")
_ZIP = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_XML = ("text/xml", "application/xml")


class FeedbackError(ValueError):
    """Not a report this reader takes (the message is delivered all the same)."""


@dataclass(frozen=True, slots=True)
class Record:
    source_ip: str
    count: int
    disposition: str
    dkim: str  # the DKIM alignment result of policy_evaluated
    spf: str
    header_from: str

    @property
    def passed(self) -> bool:
        return self.dkim == "pass" or self.spf == "pass"


@dataclass(slots=True)
class Report:
    org_name: str = ""
    email: str = ""
    report_id: str = ""
    domain: str = ""
    begin: int = -1
    end: int = -1
    records: list[Record] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.count for r in self.records if r.passed)

    @property
    def failed(self) -> int:
        return sum(r.count for r in self.records if not r.passed)

    def records_json(self) -> list[dict[str, Any]]:
        return [{"source_ip": r.source_ip, "count": r.count, "disposition": r.disposition,
                 "dkim": r.dkim, "spf": r.spf, "header_from": r.header_from}
                for r in self.records]


def documents(message: bytes) -> list[bytes]:
    """The XML of each report `message` carries (FeedbackError if it carries none)."""
    if len(message) > MAX_MESSAGE:
        raise FeedbackError(f"message over {MAX_MESSAGE} octets")
    msg = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    found: list[bytes] = []
    for part in msg.walk():
        if part.is_multipart() or len(found) >= MAX_DOCUMENTS:
            continue
        kind = part.get_content_type()
        name = (part.get_filename() or "").lower()
        is_zip = kind in _ZIP or name.endswith(".zip")
        is_gzip = kind in _GZIP or name.endswith(".gz")
        if not (is_zip or is_gzip or kind in _XML or name.endswith(".xml")):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        if len(payload) > MAX_COMPRESSED:
            raise FeedbackError(f"attachment {name or kind} over {MAX_COMPRESSED} octets")
        if is_zip or payload.startswith(b"PK\x03\x04"):
            found += _unzip(payload)[: MAX_DOCUMENTS - len(found)]
        elif is_gzip or payload.startswith(b"\x1f\x8b"):
            found.append(gunzip(payload))
        else:
            found.append(payload)
    if not found:
        raise FeedbackError("no report attached (gzip, zip or XML)")
    return found


def gunzip(data: bytes) -> bytes:
    """`data` decompressed, FeedbackError past `MAX_XML` octets or if it is not gzip."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflater.decompress(data, MAX_XML + 1)
    except zlib.error as e:
        raise FeedbackError(f"bad gzip data: {e}") from None
    if len(out) > MAX_XML or inflater.unconsumed_tail:
        raise FeedbackError(f"report decompresses to more than {MAX_XML} octets")
    return out


def _unzip(data: bytes) -> list[bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [i for i in archive.infolist() if not i.is_dir()
                   and i.filename.lower().endswith(".xml")][:MAX_DOCUMENTS]
        out, total = [], 0
        for info in entries:
            if info.file_size > MAX_XML:
                raise FeedbackError(f"zip entry {info.filename} over {MAX_XML} octets")
            with archive.open(info) as entry:
                text = entry.read(MAX_XML + 1 - total)  # whatever the header claims
            total += len(text)
            if total > MAX_XML:
                raise FeedbackError(f"zip decompresses to more than {MAX_XML} octets")
            out.append(text)
    # zipfile raises NotImplementedError for a compression method it lacks (an attacker picks
    # one), RuntimeError for an encrypted entry: each is a bad archive, not a crash
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            ValueError) as e:
        if isinstance(e, FeedbackError):
            raise
        raise FeedbackError(f"bad zip archive: {e}") from None
    if not out:
        raise FeedbackError("zip archive holds no .xml entry")
    return out


def _name(element: Element) -> str:
    return element.tag.rpartition("}")[2]


def _text(element: Element | None, path: str) -> str:
    """The text of the child at `path` (names without namespace, "/"-separated), "" if none."""
    for step in path.split("/"):
        if element is None:
            return ""
        element = next((c for c in element if _name(c) == step), None)
    if element is None or element.text is None:
        return ""
    return element.text.strip()[:MAX_TEXT]


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 15:
        raise FeedbackError(f"{what} is not a number: {text[:40]!r}")
    return int(text)


def _events(xml: bytes) -> Iterator[tuple[str, Element]]:
    try:
        yield from iterparse(io.BytesIO(xml), events=("start", "end"), forbid_dtd=True)
    except DefusedXmlException as e:
        raise FeedbackError(f"refused XML: {type(e).__name__}") from None
    except ParseError as e:
        raise FeedbackError(f"not XML: {e}") from None


def parse(xml: bytes) -> Report:
    """The report `xml` holds (FeedbackError if it is not a valid aggregate report)."""
    if len(xml) > MAX_XML:
        raise FeedbackError(f"report over {MAX_XML} octets")
    report = Report()
    root: Element | None = None
    depth = 0
    for event, element in _events(xml):
        if event == "start":
            depth += 1
            if root is None:
                root = element
                if _name(root) != "feedback":
                    raise FeedbackError(f"root element is {_name(root)!r}, not 'feedback'")
            continue
        depth -= 1
        if depth != 1:
            continue
        name = _name(element)
        if name == "report_metadata":
            report.org_name = _text(element, "org_name")
            report.email = _text(element, "email")
            report.report_id = _text(element, "report_id")
            report.begin = _int(_text(element, "date_range/begin"), "date_range/begin")
            report.end = _int(_text(element, "date_range/end"), "date_range/end")
        elif name == "policy_published":
            report.domain = _text(element, "domain").lower().rstrip(".")
        elif name == "record":
            if len(report.records) >= MAX_RECORDS:
                raise FeedbackError(f"more than {MAX_RECORDS} records")
            report.records.append(Record(
                _text(element, "row/source_ip"),
                _int(_text(element, "row/count"), "row/count"),
                _text(element, "row/policy_evaluated/disposition"),
                _text(element, "row/policy_evaluated/dkim"),
                _text(element, "row/policy_evaluated/spf"),
                _text(element, "identifiers/header_from").lower()))
        if root is not None:
            root.remove(element)  # keeps memory to one record at a time
    for what, value in (("org_name", report.org_name), ("report_id", report.report_id),
                        ("policy_published/domain", report.domain)):
        if not value:
            raise FeedbackError(f"no {what}")
    if report.begin < 0 or report.end < report.begin:
        raise FeedbackError("no valid date_range")
    return report
