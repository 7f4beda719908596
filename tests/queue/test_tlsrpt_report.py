"""TLS-RPT (RFC 8460), sans-IO: the result types of failed sessions (§4.3), the TXT record
(§3), the report's JSON against the structure and types of §4.4, and its message (§5.3)."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from typing import Any

import pytest

from postkeep.queue.tlsrpt_report import (
    NO_POLICY,
    RESULT_TYPES,
    AppliedPolicy,
    PolicyType,
    TlsResult,
    classify,
    mailto_address,
    parse_record,
    report,
    report_message,
    verify_failure,
)
from postkeep.smtp.client.framing import Reply, local_reply
from postkeep.smtp.client.protocol import Stage

DAY = 1_800_000_000 // 86400 * 86400  # 2027-01-15
STS = AppliedPolicy.sts("enforce", ["mx1.example.net", "*.mx.example.net"], 86400)


@pytest.mark.parametrize(("stage", "text", "kind"), [
    (Stage.STARTTLS, "STARTTLS is required and was not offered", "starttls-not-supported"),
    (Stage.TLS, "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
     "failed: certificate has expired (_ssl.c:1006)", "certificate-expired"),
    (Stage.TLS, "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
     "failed: Hostname mismatch, certificate is not valid for 'mx'. (_ssl.c:1006)",
     "certificate-host-mismatch"),
    (Stage.TLS, "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
     "failed: self-signed certificate (_ssl.c:1006)", "certificate-not-trusted"),
    (Stage.TLS, "peer certificate refused: DANE (TLSA at mx.example.net): no TLSA record "
     "matches", "tlsa-invalid"),
    (Stage.TLS, "TLS handshake timed out", "validation-failure"),
    (Stage.CONNECT, "connection refused", None),
    (Stage.GREETING, "the server said 421", None),
    (Stage.EHLO, "EHLO refused", None),
])
def test_classify(stage: Stage, text: str, kind: str | None) -> None:
    assert classify(stage, local_reply(451, "4.7.5", text)) == kind


def test_a_refused_starttls_is_not_supported() -> None:
    refused = Reply(454, "4.7.0", ("TLS not available due to temporary reason",))
    assert classify(Stage.STARTTLS, refused) == "starttls-not-supported"
    assert verify_failure("certificate verify failed: unable to get local issuer "
                          "certificate") == "certificate-not-trusted"


def test_parse_record() -> None:
    assert parse_record("v=TLSRPTv1; rua=mailto:tls@example.net") == ("mailto:tls@example.net",)
    assert parse_record("v=TLSRPTv1;rua=mailto:a@example.net, https://r.example.net/x ;") == (
        "mailto:a@example.net", "https://r.example.net/x")
    for bad in ("v=TLSRPTv2; rua=mailto:a@b", "rua=mailto:a@b; v=TLSRPTv1", "v=TLSRPTv1",
                "v=TLSRPTv1; rua=ftp://x", "v=TLSRPTv1; rua=mailto:a@b; !!"):
        with pytest.raises(ValueError):
            parse_record(bad)
    assert mailto_address("mailto:tls%2Breports@example.net?subject=x") == \
        "tls+reports@example.net"
    assert mailto_address("https://r.example.net/") is None
    assert mailto_address("mailto:nobody") is None


def test_results_round_trip_and_reject_unknown_types() -> None:
    result = TlsResult(STS, "certificate-expired", "mx1.example.net", "192.0.2.1", None, "why")
    assert TlsResult.from_key(result.key) == result
    with pytest.raises(ValueError):
        TlsResult(NO_POLICY, "certificate-bad", "mx1.example.net")
    tlsa = AppliedPolicy.tlsa("mx1.example.net", [(3, 1, 1, b"\xab\xcd")])
    assert tlsa == AppliedPolicy(PolicyType.TLSA, ("3 1 1 abcd",), ("mx1.example.net",))


def _check_structure(body: dict[str, Any]) -> None:
    """RFC 8460 §4.4: the fields, their JSON types, the RFC 3339 date-times."""
    assert set(body) == {"organization-name", "date-range", "contact-info", "report-id",
                         "policies"}
    for key in ("organization-name", "contact-info", "report-id"):
        assert isinstance(body[key], str) and body[key]
    assert set(body["date-range"]) == {"start-datetime", "end-datetime"}
    assert isinstance(body["policies"], list)
    for entry in body["policies"]:
        assert set(entry) <= {"policy", "summary", "failure-details"}
        policy = entry["policy"]
        assert policy["policy-type"] in ("sts", "tlsa", "no-policy-found")
        assert isinstance(policy["policy-domain"], str)
        for key in ("policy-string", "mx-host"):
            assert all(isinstance(s, str) for s in policy.get(key, []))
        assert set(entry["summary"]) == {"total-successful-session-count",
                                         "total-failure-session-count"}
        assert all(type(n) is int for n in entry["summary"].values())
        failed = 0
        for detail in entry.get("failure-details", []):
            assert detail["result-type"] in RESULT_TYPES
            assert set(detail) <= {"result-type", "sending-mta-ip", "receiving-mx-hostname",
                                   "receiving-mx-helo", "receiving-ip", "failed-session-count",
                                   "additional-information", "failure-reason-code"}
            assert type(detail["failed-session-count"]) is int
            failed += detail["failed-session-count"]
        assert failed == entry["summary"]["total-failure-session-count"]


def test_report_json() -> None:
    dane = AppliedPolicy.tlsa("mx2.example.net", [(3, 1, 1, bytes(32))])
    results = [
        (TlsResult(STS, None, "mx1.example.net", "192.0.2.1"), 40),
        (TlsResult(STS, "certificate-expired", "mx1.example.net", "192.0.2.1", None,
                   "certificate has expired"), 3),
        (TlsResult(STS, "certificate-expired", "mx1.example.net", "2001:db8::1"), 2),
        (TlsResult(dane, None, "mx2.example.net", "192.0.2.2"), 5),
        (TlsResult(NO_POLICY, None, "mx3.example.net", "192.0.2.3"), 1),
    ]
    body = report(organization="mx.example.org", contact="postmaster@example.org",
                  report_id="2027-01-15.R1@mx.example.org", domain="example.net", day=DAY,
                  results=results)
    _check_structure(json.loads(json.dumps(body)))
    assert body["date-range"] == {"start-datetime": "2027-01-15T00:00:00Z",
                                  "end-datetime": "2027-01-15T23:59:59Z"}
    sts, tlsa, none = body["policies"]
    assert sts["policy"] == {
        "policy-type": "sts", "policy-domain": "example.net",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.example.net",
                          "mx: *.mx.example.net", "max_age: 86400"],
        "mx-host": ["mx1.example.net", "*.mx.example.net"]}
    assert sts["summary"] == {"total-successful-session-count": 40,
                              "total-failure-session-count": 5}
    assert sts["failure-details"][0] == {
        "result-type": "certificate-expired", "receiving-mx-hostname": "mx1.example.net",
        "receiving-ip": "192.0.2.1", "failed-session-count": 3,
        "additional-information": "certificate has expired"}
    assert tlsa["policy"]["policy-string"] == ["3 1 1 " + "00" * 32]
    assert "failure-details" not in tlsa
    assert none["policy"] == {"policy-type": "no-policy-found", "policy-domain": "example.net"}


def test_report_message() -> None:
    body = report(organization="mx.example.org", contact="postmaster@example.org",
                  report_id="2027-01-15.R1@mx.example.org", domain="example.net", day=DAY,
                  results=[(TlsResult(STS, None, "mx1.example.net", "192.0.2.1"), 1)])
    data = report_message(body, submitter="mx.example.org", domain="example.net",
                          sender="postmaster@example.org", recipients=["tls@example.net"],
                          now=DAY + 86400 + 300)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["Subject"] == ("Report Domain: example.net Submitter: mx.example.org "
                              "Report-ID: <2027-01-15.R1@mx.example.org>")
    assert msg["TLS-Report-Domain"] == "example.net"
    assert msg["TLS-Report-Submitter"] == "mx.example.org"
    assert msg["To"] == "tls@example.net"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    assert parts[1].get_filename() == (
        f"mx.example.org!example.net!{DAY}!{DAY + 86399}!2027-01-15.R1.json.gz")
    assert json.loads(gzip.decompress(parts[1].get_content())) == body
