"""Interop: testssl.sh grades the TLS policy (BCP 195 / RFC 9325) of a real `postkeep serve`.

One run of `testssl -p -S -U` (protocols, server defaults with the certificate, vulnerabilities)
per listener in `TARGETS`, about 20-60 s each. Passing means: every finding is OK, INFO or LOW;
nothing below TLS 1.2 is offered; no vulnerability is reported as VULNERABLE.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import require_tool
from tests.interop.test_tls_policy import TlsSetup, started_tls_instance

ACCEPTED_SEVERITIES = {"OK", "INFO", "LOW"}  # MEDIUM, HIGH, CRITICAL, FATAL and WARN fail,
# except these scanner-side WARNs, keyed by (id, finding):
KNOWN_WARNINGS = {
    # testssl 3.0.8 calls a session-ID resumption "unclear" when s_client prints "Reused" but
    # has read more bytes than it wrote; with -t smtp the count includes the plaintext greeting
    # and EHLO reply (239 bytes here), so a resumed TLS 1.2 session (141 bytes read, 300
    # written) looks new. `openssl s_client -tls1_2 -no_ticket -sess_in` shows "Reused".
    ("sessionresumption_ID", "check failed, pls report"),
}
OLD_PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")

# (attribute of Instance holding the port, testssl's STARTTLS protocol or None for implicit TLS)
TARGETS = [
    pytest.param("smtp_port", "smtp", id="smtp-starttls"),
    pytest.param("submissions_port", None, id="submissions-implicit-tls"),  # RFC 8314 §3.3
]

pytestmark = pytest.mark.slow


def run_testssl(host: str, port: int, starttls: str | None, ca_file: Path,
                workdir: Path) -> list[dict[str, str]]:
    """Run testssl.sh offline against host:port; its JSON findings, each with its `section`.

    `starttls` is testssl's `-t` protocol (smtp, imap, ...) or None for implicit TLS.
    """
    testssl = require_tool("testssl", "testssl.sh")
    out = workdir / f"testssl-{port}.json"
    command = [
        testssl, "--quiet", "--color", "0", "--nodns", "none", "--ip", host,
        "--warnings", "off", "--add-ca", str(ca_file), "--jsonfile-pretty", str(out),
        *(["-t", starttls] if starttls else []),
        "-p", "-S", "-U", f"{host}:{port}",
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"testssl wrote no JSON: {result.stdout[-3000:]}{result.stderr}"
    findings: list[dict[str, str]] = []
    for target in json.loads(out.read_text())["scanResult"]:
        for section, items in target.items():
            if isinstance(items, list):
                findings += [{**item, "section": section} for item in items]
    return findings


def describe(findings: list[dict[str, str]], severities: set[str]) -> list[str]:
    """The findings with one of `severities`, one line each (for messages and the log)."""
    return [f"{f['section']}/{f['id']} {f['severity']}: {f['finding']}"
            for f in findings if f["severity"] in severities]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSetup]:
    yield from started_tls_instance(tmp_path_factory.mktemp("testssl"))


@pytest.mark.parametrize(("port_attribute", "starttls"), TARGETS)
def test_testssl_finds_nothing(tls_server: TlsSetup, port_attribute: str,
                               starttls: str | None) -> None:
    port = getattr(tls_server.inst, port_attribute)
    findings = run_testssl("127.0.0.1", port, starttls, tls_server.ca_file,
                           tls_server.inst.dir.parent)
    remarks = describe(findings, {"INFO", "LOW", "WARN"})
    print("\n".join(remarks))  # shown with -rP: what testssl noted without objecting
    by_id = {f["id"]: f for f in findings}
    # the scan really ran: both good protocols seen, vulnerabilities checked, chain trusted
    assert by_id["TLS1_2"]["finding"] == "offered", remarks
    assert by_id["TLS1_3"]["finding"].startswith("offered"), remarks
    assert "heartbleed" in by_id and "LUCKY13" in by_id, remarks
    assert by_id["cert_chain_of_trust"]["severity"] == "OK", by_id["cert_chain_of_trust"]
    objections = [f for f in findings if f["severity"] not in ACCEPTED_SEVERITIES
                  and not (f["severity"] == "WARN" and (f["id"], f["finding"]) in KNOWN_WARNINGS)]
    assert not objections, "\n".join(describe(objections, {f["severity"] for f in objections}))
    for protocol in OLD_PROTOCOLS:
        assert by_id[protocol]["finding"].startswith("not offered"), by_id[protocol]
    vulnerable = [f"{f['id']}: {f['finding']}" for f in findings
                  if f["section"] == "vulnerabilities" and "VULNERABLE" in f["finding"]]
    assert not vulnerable, vulnerable
