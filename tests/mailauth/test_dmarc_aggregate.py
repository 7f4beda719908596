"""DMARC aggregate reports, sans-IO (RFC 7489 §7.1-7.2, Appendix C; RFC 9990): rows from
verdicts, the XML against the schema's structure, the message, a round trip through the
incoming reader, the rua size limits, and hostile attachments refused cleanly (a zip bomb, a
gzip bomb, entity expansion, too many records, garbage)."""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import zipfile
from collections.abc import Callable
from xml.etree import ElementTree

import pytest

from postkeep.mailauth.dmarc import DmarcVerdict, Policy, parse_record
from postkeep.mailauth.dmarc.aggregate import (
    NAMESPACE,
    ReportRow,
    ReportUri,
    authorizes,
    overriding,
    report_message,
    report_uris,
    report_xml,
    row_for,
    verification_name,
)
from postkeep.mailauth.dmarc.feedback import (
    MAX_MESSAGE,
    MAX_RECORDS,
    MAX_XML,
    FeedbackError,
    documents,
    parse,
)

DAY = 1_800_000_000 // 86400 * 86400
RECORD = parse_record("v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:agg@bank.test")
assert RECORD is not None


def _verdict(result: str, disposition: Policy, testing: bool = False) -> DmarcVerdict:
    record = parse_record("v=DMARC1; p=reject; rua=mailto:a@bank.test" + ("; t=y" * testing))
    return DmarcVerdict(result, "bank.test", Policy.REJECT, disposition, record, "bank.test",
                        "bank.test", spf_aligned=False, dkim_aligned=result == "pass")


def test_rows_name_the_policy_domain_and_why_policy_was_overridden() -> None:
    dkim = [("other.test", "s2", "fail"), ("mail.bank.test", "s1", "pass"),
            ("bank.test", "s0", "pass")]
    got = row_for(_verdict("pass", Policy.NONE), Policy.NONE, source_ip="192.0.2.1",
                  envelope_from="bounce@Mail.Bank.test", spf=("mail.bank.test", "mailfrom",
                                                              "pass"), dkim=dkim)
    assert got is not None
    domain, row = got
    assert domain == "bank.test"
    assert row.dkim == (("bank.test", "s0", "pass"), ("mail.bank.test", "s1", "pass"),
                        ("other.test", "s2", "fail"))  # RFC 9990's order
    assert row.spf == ("mail.bank.test", "mfrom", "pass")
    assert row.envelope_from == "mail.bank.test" and row.reason is None
    assert ReportRow.from_key(row.key) == row
    tagged = row_for(_verdict("fail", Policy.REJECT), Policy.NONE, source_ip="192.0.2.9",
                     envelope_from="", spf=None, dkim=[])
    assert tagged is not None and tagged[1].reason == "local_policy"
    assert tagged[1].disposition == "none" and tagged[1].envelope_from == ""
    testing = row_for(_verdict("fail", Policy.QUARANTINE, testing=True), Policy.QUARANTINE,
                      source_ip="192.0.2.9", envelope_from="", spf=None, dkim=[])
    assert testing is not None and testing[1].reason == "policy_test_mode"
    norua = DmarcVerdict("fail", "x.test", Policy.REJECT, Policy.REJECT,
                         parse_record("v=DMARC1; p=reject"), "x.test")
    assert row_for(norua, Policy.REJECT, source_ip="192.0.2.1", envelope_from="", spf=None,
                   dkim=[]) is None
    assert row_for(DmarcVerdict("temperror", "x.test"), Policy.NONE, source_ip="192.0.2.1",
                   envelope_from="", spf=None, dkim=[]) is None


PASS = ReportRow("192.0.2.1", "bank.test", "bank.test", ("bank.test", "mfrom", "pass"),
                 (("bank.test", "s1", "pass"),), "none", True, True)
FAIL = ReportRow("2001:db8::5", "bank.test", "evil.test", ("evil.test", "mfrom", "fail"), (),
                 "reject", False, False)


def _xml() -> bytes:
    assert RECORD is not None
    return report_xml(org_name="mx.example.org", email="noreply-dmarc@mx.example.org",
                      report_id="2027-01-15.R1@mx.example.org", domain="bank.test",
                      begin=DAY, end=DAY + 86399, record=RECORD, discovery="treewalk",
                      rows=[(PASS, 7), (FAIL, 3)])


def test_the_xml_has_the_schemas_structure() -> None:
    root = ElementTree.fromstring(_xml())
    ns = {"d": NAMESPACE}
    assert root.tag == f"{{{NAMESPACE}}}feedback"
    assert [c.tag.split("}")[1] for c in root] == [
        "version", "report_metadata", "policy_published", "record", "record"]
    assert root.findtext("d:version", namespaces=ns) == "1.0"
    meta = root.find("d:report_metadata", ns)
    assert meta is not None
    assert [c.tag.split("}")[1] for c in meta] == ["org_name", "email", "report_id",
                                                   "date_range", "generator"]
    assert meta.findtext("d:date_range/d:begin", namespaces=ns) == str(DAY)
    pp = root.find("d:policy_published", ns)
    assert pp is not None
    assert {c.tag.split("}")[1]: c.text for c in pp} == {
        "domain": "bank.test", "discovery_method": "treewalk", "adkim": "s", "aspf": "r",
        "p": "reject", "sp": "quarantine", "fo": "0", "testing": "n"}
    rec = root.findall("d:record", ns)[1]
    assert [c.tag.split("}")[1] for c in rec] == ["row", "identifiers", "auth_results"]
    assert rec.findtext("d:row/d:source_ip", namespaces=ns) == "2001:db8::5"
    assert rec.findtext("d:row/d:count", namespaces=ns) == "3"
    evaluated = rec.find("d:row/d:policy_evaluated", ns)
    assert evaluated is not None
    assert [(c.tag.split("}")[1], c.text) for c in evaluated] == [
        ("disposition", "reject"), ("dkim", "fail"), ("spf", "fail")]
    assert rec.findtext("d:auth_results/d:spf/d:scope", namespaces=ns) == "mfrom"
    first = root.findall("d:record", ns)[0]
    assert first.findtext("d:auth_results/d:dkim/d:selector", namespaces=ns) == "s1"


def test_message_and_round_trip_through_the_reader() -> None:
    raw = report_message(_xml(), submitter="mx.example.org", domain="bank.test",
                         report_id="2027-01-15.R1@mx.example.org", begin=DAY,
                         end=DAY + 86399, sender="noreply-dmarc@mx.example.org",
                         recipients=["agg@bank.test"], now=DAY + 86700.0)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == ("Report Domain: bank.test Submitter: mx.example.org "
                              "Report-ID: <2027-01-15.R1@mx.example.org>")
    (part,) = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
    assert part.get_filename() == f"mx.example.org!bank.test!{DAY}!{DAY + 86399}.xml.gz"
    (xml,) = documents(raw)
    assert xml == _xml()
    report = parse(xml)
    assert (report.org_name, report.email, report.report_id, report.domain) == (
        "mx.example.org", "noreply-dmarc@mx.example.org", "2027-01-15.R1@mx.example.org",
        "bank.test")
    assert (report.begin, report.end, report.passed, report.failed) == (DAY, DAY + 86399, 7, 3)
    assert report.records[1].source_ip == "2001:db8::5"
    assert report.records[1].disposition == "reject"


RFC7489_SAMPLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback><report_metadata><org_name>google.com</org_name>
<email>noreply-dmarc-support@google.com</email><report_id>5717107811868587391</report_id>
<date_range><begin>1706832000</begin><end>1706918399</end></date_range></report_metadata>
<policy_published><domain>Example.org</domain><adkim>r</adkim><aspf>r</aspf><p>none</p>
<sp>none</sp><pct>100</pct></policy_published>
<record><row><source_ip>192.0.2.7</source_ip><count>2</count><policy_evaluated>
<disposition>none</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
<identifiers><header_from>example.org</header_from></identifiers><auth_results>
<spf><domain>example.org</domain><result>softfail</result></spf></auth_results></record>
</feedback>"""


def _mail(part: bytes, kind: str, name: str) -> bytes:
    msg = email.message.EmailMessage()
    msg["Subject"] = "Report Domain: example.org Submitter: google.com Report-ID: <1>"
    msg.set_content("report attached")
    main, sub = kind.split("/")
    msg.add_attachment(part, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("kind,name,wrap", [
    ("application/zip", "google.com!example.org!1706832000!1706918399.zip",
     lambda x: _zip({"google.com!example.org!1706832000!1706918399.xml": x})),
    ("application/octet-stream", "r.xml.gz", gzip.compress),
    ("text/xml", "r.xml", lambda x: x),
])
def test_an_rfc7489_report_reads_from_zip_gzip_and_plain(
        kind: str, name: str, wrap: Callable[[bytes], bytes]) -> None:
    (xml,) = documents(_mail(wrap(RFC7489_SAMPLE), kind, name))
    report = parse(xml)
    assert (report.org_name, report.domain, report.passed, report.failed) == (
        "google.com", "example.org", 0, 2)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<feedback><report_metadata><org_name>&lol3;</org_name></report_metadata></feedback>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE f [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&x;</org_name></report_metadata></feedback>"""


def _many_records(n: int) -> bytes:
    head, _, tail = RFC7489_SAMPLE.partition(b"<record>")
    record = b"<record>" + tail.rpartition(b"</feedback>")[0]
    return head + record * n + b"</feedback>"


@pytest.mark.parametrize("xml,why", [
    (BILLION_LAUGHS, "refused XML"),
    (EXTERNAL, "refused XML"),
    (b"\x00\x01garbage", "not XML"),
    (b"<html><body>hi</body></html>", "not 'feedback'"),
    (b"<feedback><report_metadata><org_name>x</org_name></report_metadata></feedback>",
     "not a number"),
    (RFC7489_SAMPLE.replace(b"<count>2</count>", b"<count>-2</count>"), "not a number"),
    (_many_records(MAX_RECORDS + 1), f"more than {MAX_RECORDS} records"),
])
def test_hostile_or_broken_xml_is_refused(xml: bytes, why: str) -> None:
    with pytest.raises(FeedbackError, match=why):
        parse(xml)


def test_many_records_within_the_limit_are_read() -> None:
    assert parse(_many_records(1000)).failed == 2000


def test_bombs_are_refused_without_inflating_them() -> None:
    zeros = b"<" + b" " * (MAX_XML + 10)
    bomb = _zip({"a.xml": zeros})
    assert len(bomb) < 200_000
    with pytest.raises(FeedbackError, match=r"over|more than"):
        documents(_mail(bomb, "application/zip", "a.zip"))
    lying = bytearray(_zip({"a.xml": zeros}))  # its headers claim 1 octet
    for header in (b"PK\x03\x04", b"PK\x01\x02"):
        at = lying.index(header)
        size_at = at + (22 if header == b"PK\x03\x04" else 24)
        lying[size_at:size_at + 4] = (1).to_bytes(4, "little")
    with pytest.raises(FeedbackError):
        documents(_mail(bytes(lying), "application/zip", "a.zip"))
    with pytest.raises(FeedbackError, match="more than"):
        documents(_mail(gzip.compress(zeros), "application/gzip", "a.xml.gz"))
    with pytest.raises(FeedbackError, match="bad gzip"):
        documents(_mail(b"\x1f\x8bnot gzip at all", "application/gzip", "a.xml.gz"))
    with pytest.raises(FeedbackError, match="bad zip"):
        documents(_mail(b"PK\x03\x04broken", "application/zip", "a.zip"))
    with pytest.raises(FeedbackError, match="no report attached"):
        documents(b"Subject: hello\r\n\r\njust text\r\n")
    with pytest.raises(FeedbackError, match="message over"):
        documents(b"Subject: big\r\n\r\n" + b"x" * MAX_MESSAGE)


def test_report_uris_keep_their_size_limits() -> None:
    text = ("v=DMARC1; p=none; rua=mailto:a@Bank.test!10m, mailto:b%40x@y.test,"
            "https://r.test/, mailto:c@z.test!50k,mailto:d@w.test!oops, mailto:nodomain")
    assert report_uris(text) == (ReportUri("a@bank.test", 10 << 20),
                                 ReportUri("c@z.test", 50 << 10))
    assert report_uris("v=DMARC1; rua=mailto:r%2Bx@y.test") == (ReportUri("r+x@y.test"),)
    assert report_uris("v=DMARC1; p=none") == ()


def test_the_verification_name_and_record() -> None:
    assert verification_name("bank.test", "Reports.example") == (
        "bank.test._report._dmarc.reports.example")
    assert verification_name("bücher.test", "r.example") == (
        "xn--bcher-kva.test._report._dmarc.r.example")
    assert verification_name("a" * 60 + "." + "b" * 60 + "." + "c" * 60, "d" * 60 + ".e") is None
    assert authorizes([b"v=DMARC1"]) and authorizes([b"x", b"v=DMARC1;"])
    assert not authorizes([b"v=spf1 -all"]) and not authorizes([])
    assert overriding([b"v=DMARC1"], "r.example") == ()
    assert overriding([b"v=spf1", b"v=DMARC1; rua=mailto:a@R.example!5m,mailto:b@x.example"],
                      "r.example") == (ReportUri("a@r.example", 5 << 20),)
