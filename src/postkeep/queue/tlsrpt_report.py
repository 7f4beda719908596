"""SMTP TLS Reporting (RFC 8460), sans-IO: what one session's TLS came to, the `_smtp._tls`
TXT record, the aggregate report and the message that carries it.

- **Results** (§4.3): `TlsResult` is one session to an MX host under the policy applied
  (`AppliedPolicy`: `sts` with the MTA-STS policy's lines and `mx` patterns, `tlsa` with the
  host's TLSA records, or `no-policy-found`), a success (`result_type` None) or a failure with
  its result type. `classify` gives the result type of a session that could not be opened, from
  the stage and the words of the failure (None: not a TLS failure, e.g. a refused connection).
  `TlsResult.key` is its JSON, what the store counts by.
- **The TXT record** (§3): `parse_record` of `v=TLSRPTv1; rua=mailto:a@b,https://...`.
- **The report** (§4.4): `report` is the JSON object of one policy domain and one UTC day, one
  entry per policy with its summary counts and failure details; `report_message` the message
  of §5.3 (`multipart/report; report-type="tlsrpt"`, the report gzip'd as
  `application/tlsrpt+gzip` with the file name of §5.1, `TLS-Report-Domain` and
  `TLS-Report-Submitter`, the Subject of §5.3).
"""

from __future__ import annotations

import gzip
import json
import re
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from typing import Any

from postkeep.smtp.client.protocol import Reply, Stage

DAY = 86400


class PolicyType(StrEnum):
    STS = "sts"
    TLSA = "tlsa"
    NONE = "no-policy-found"


#: RFC 8460 §4.3: negotiation failures (§4.3.1), policy failures (§4.3.2 DANE, §4.3.3 STS)
#: and the general one (§4.3.4).
RESULT_TYPES = frozenset({
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
})


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """The policy a session was held to (§4.4 "policy"): its type, its text as lines
    (`policy-string`) and the MX hosts it names (`mx-host`)."""

    type: PolicyType
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()

    @classmethod
    def sts(cls, mode: str, mx_patterns: Sequence[str], max_age: int) -> AppliedPolicy:
        """An MTA-STS policy (RFC 8461 §3.2), its lines as the policy file has them."""
        lines = ("version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in mx_patterns),
                 f"max_age: {max_age}")
        return cls(PolicyType.STS, lines, tuple(mx_patterns))

    @classmethod
    def tlsa(cls, mx_host: str, records: Iterable[tuple[int, int, int, bytes]]
             ) -> AppliedPolicy:
        """The TLSA records (usage, selector, matching type, data) of one MX host, in the
        presentation format of RFC 6698 §2.2."""
        lines = tuple(f"{u} {s} {m} {data.hex()}" for u, s, m, data in records)
        return cls(PolicyType.TLSA, lines, (mx_host,))


NO_POLICY = AppliedPolicy(PolicyType.NONE)


@dataclass(frozen=True, slots=True)
class TlsResult:
    """One session's TLS result (`result_type` None: it met the policy)."""

    policy: AppliedPolicy
    result_type: str | None
    mx_host: str
    receiving_ip: str | None = None
    sending_ip: str | None = None
    info: str | None = None  # "additional-information"

    def __post_init__(self) -> None:
        if self.result_type is not None and self.result_type not in RESULT_TYPES:
            raise ValueError(f"not an RFC 8460 result type: {self.result_type}")

    @property
    def key(self) -> str:
        return json.dumps([self.policy.type, self.policy.strings, self.policy.mx_hosts,
                           self.result_type, self.mx_host, self.receiving_ip, self.sending_ip,
                           self.info], separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> TlsResult:
        ptype, strings, mx_hosts, result, mx_host, ip, sending, info = json.loads(key)
        return cls(AppliedPolicy(PolicyType(ptype), tuple(strings), tuple(mx_hosts)), result,
                   mx_host, ip, sending, info)


def classify(stage: Stage, reply: Reply) -> str | None:
    """The result type of a session that failed at `stage` with `reply` (§4.3), None when
    the failure was not one of TLS (the connection, the greeting, EHLO)."""
    text = reply.text.lower()
    if stage is Stage.STARTTLS:  # not offered, or refused by the server
        return "starttls-not-supported"
    if stage is not Stage.TLS:
        return None
    if "peer certificate refused: dane" in text:
        return "tlsa-invalid"
    return verify_failure(text)


def verify_failure(text: str) -> str:
    """The result type of a failed TLS handshake or certificate check, from OpenSSL's words."""
    text = text.lower()
    if "certificate has expired" in text or "certificate is not yet valid" in text:
        return "certificate-expired"
    if "hostname mismatch" in text or "ip address mismatch" in text:
        return "certificate-host-mismatch"
    if "certificate verify failed" in text:
        return "certificate-not-trusted"
    return "validation-failure"


_FIELD = re.compile(r"\s*([A-Za-z0-9_]+)\s*=\s*([^;]*?)\s*(?:;|$)")


def parse_record(txt: str) -> tuple[str, ...]:
    """The `rua` URIs of a TLSRPT TXT record (§3: `v=TLSRPTv1` first, `rua` required, URIs
    comma-separated, `mailto:` and `https:`); ValueError if it is not a valid one."""
    fields: dict[str, str] = {}
    pos = 0
    txt = txt.strip()
    while pos < len(txt):
        m = _FIELD.match(txt, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"bad TLSRPT field at {txt[pos:]!r}")
        if not fields and m.group(1) != "v":
            raise ValueError("a TLSRPT record begins with v=")
        fields.setdefault(m.group(1), m.group(2))
        pos = m.end()
    if fields.get("v") != "TLSRPTv1":
        raise ValueError("not v=TLSRPTv1")
    uris = tuple(u.strip() for u in fields.get("rua", "").split(",") if u.strip())
    if not uris or not all(u.startswith(("mailto:", "https:")) for u in uris):
        raise ValueError("rua must list mailto: or https: URIs")
    return uris


def mailto_address(uri: str) -> str | None:
    """The address of a `mailto:` rua (RFC 6068, %-decoded, no query), None if it has none."""
    if not uri.startswith("mailto:"):
        return None
    address = urllib.parse.unquote(uri[len("mailto:"):].split("?", 1)[0])
    return address if "@" in address and "," not in address else None


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(*, organization: str, contact: str, report_id: str, domain: str, day: int,
           results: Iterable[tuple[TlsResult, int]]) -> dict[str, Any]:
    """The aggregate report (§4.4) of `domain` for the UTC day starting at `day`: one entry
    per policy applied, its successes and failures counted, each failure kind detailed."""
    policies: dict[AppliedPolicy, dict[str, Any]] = {}
    for result, count in results:
        entry = policies.setdefault(result.policy, {
            "policy": _policy(result.policy, domain),
            "summary": {"total-successful-session-count": 0, "total-failure-session-count": 0},
            "failure-details": [],
        })
        summary = entry["summary"]
        if result.result_type is None:
            summary["total-successful-session-count"] += count
            continue
        summary["total-failure-session-count"] += count
        detail: dict[str, Any] = {"result-type": result.result_type,
                                  "receiving-mx-hostname": result.mx_host,
                                  "failed-session-count": count}
        if result.receiving_ip:
            detail["receiving-ip"] = result.receiving_ip
        if result.sending_ip:
            detail["sending-mta-ip"] = result.sending_ip
        if result.info:
            detail["additional-information"] = result.info
        entry["failure-details"].append(detail)
    for entry in policies.values():
        if not entry["failure-details"]:
            del entry["failure-details"]
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _stamp(day), "end-datetime": _stamp(day + DAY - 1)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": list(policies.values()),
    }


def _policy(policy: AppliedPolicy, domain: str) -> dict[str, Any]:
    out: dict[str, Any] = {"policy-type": str(policy.type), "policy-domain": domain}
    if policy.strings:
        out["policy-string"] = list(policy.strings)
    if policy.mx_hosts:
        out["mx-host"] = list(policy.mx_hosts)
    return out


def report_message(body: dict[str, Any], *, submitter: str, domain: str, sender: str,
                   recipients: Sequence[str], now: float | None = None) -> bytes:
    """The report as the message of §5.3: multipart/report (report-type "tlsrpt") with a
    human-readable part and the JSON gzip'd (`application/tlsrpt+gzip`, file name of §5.1)."""
    when = time.time() if now is None else now
    report_id = body["report-id"]
    start = int(datetime.strptime(body["date-range"]["start-datetime"], "%Y-%m-%dT%H:%M:%SZ")
                .replace(tzinfo=UTC).timestamp())
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.fromtimestamp(when, UTC))
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg.set_content(f"This is an aggregate TLS report (RFC 8460) from {submitter} about "
                    f"mail sent to {domain} on {body['date-range']['start-datetime'][:10]}.\n")
    data = gzip.compress(json.dumps(body, indent=1).encode(), mtime=0)
    name = f"{submitter}!{domain}!{start}!{start + DAY - 1}!{report_id.split('@')[0]}.json.gz"
    msg.add_attachment(data, maintype="application", subtype="tlsrpt+gzip", filename=name)
    msg.set_type("multipart/report")  # was multipart/mixed; its boundary kept
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()
