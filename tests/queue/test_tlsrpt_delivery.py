"""TLS-RPT (RFC 8460) over the wire: a postkeep instance delivers to another under an MTA-STS
`enforce` policy (published in NSD, served over HTTPS from a test CA) whose first MX host's
certificate does not match its name and whose second one verifies: one failure
(`certificate-host-mismatch`) and one success are counted; so are a `testing` domain's
delivery over TLS that did not verify (a failure) and a delivery without a policy (a
success). `postkeep queue tls-reports` then queues the day's reports, which the sender
delivers to the `mailto:` of each domain's `_smtp._tls` record, on the receiving instance,
where they are unpacked and checked, and their DKIM signatures (the sender's keys, published
in NSD) verified with dkimpy."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
import trustme

from postkeep import config as config_mod
from postkeep.queue.tlsrpt_report import DAY
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key
from tests.dnsserver import AuthServer
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.queue.wire import PolicyHost, submit, txt_lookup, wait_for

POLICY = b"version: STSv1\nmode: enforce\nmx: *.rpt.test\nmax_age: 86400\n"
TESTING = b"version: STSv1\nmode: testing\nmx: mx.try.test\nmax_age: 86400\n"
RUA = '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test"'


@pytest.fixture
def policy_host() -> Iterator[tuple[PolicyHost, trustme.CA]]:
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("mta-sts.rpt.test", "mta-sts.try.test").configure_cert(ctx)
    host = PolicyHost(ctx, {"mta-sts.rpt.test": POLICY, "mta-sts.try.test": TESTING})
    try:
        yield host, ca
    finally:
        host.stop()


def counted(inst: Instance, domain: str, day: int) -> int:
    """The sessions the instance has counted for `domain` on `day` (its store, beside it)."""
    async def read() -> int:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)
        try:
            return sum(r.count for r in await store.tls_results(domain, day))
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_days_results_reach_the_rua_mailbox(
    dns_server: AuthServer, policy_host: tuple[PolicyHost, trustme.CA], tmp_path: Path
) -> None:
    https, ca = policy_host
    for name in ("receiver", "sender"):
        (tmp_path / name).mkdir()
    receiver = make_instance(tmp_path / "receiver", domain="rpt.test", hostname="mx.rpt.test")
    receiver.cli("user", "add", "tlsrpt@rpt.test", "--password-stdin", input=PASSWORD + "\n")
    for domain in ("try.test", "plain.test"):
        receiver.cli("domain", "add", domain, "--no-dkim")
        receiver.cli("user", "add", f"bob@{domain}", "--password-stdin", input=PASSWORD + "\n")
    receiver.start()
    dns_server.add_zone("rpt.test", [
        "@ MX 10 bad", "@ MX 20 mx", "bad A 127.0.0.1", "mx A 127.0.0.1",
        "mta-sts A 127.0.0.1", '_mta-sts TXT "v=STSv1; id=1;"',
        '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test,https://rpt.test/r"'])
    # testing: its one MX host's certificate (mx.rpt.test's) does not match, mail goes anyway
    dns_server.add_zone("try.test", ["@ MX 10 mx", "mx A 127.0.0.1", "mta-sts A 127.0.0.1",
                                     '_mta-sts TXT "v=STSv1; id=1;"', RUA])
    dns_server.add_zone("plain.test", ["@ MX 10 mx.rpt.test.", RUA])  # no policy, verified
    sender = make_instance(tmp_path / "sender")  # `init` made its DKIM keys: in NSD
    dns_server.add_zone("example.test", [
        line for line in sender.cli("dkim", "show", "example.test").stdout.splitlines()
        if line and not line.startswith(";")])
    bundle = sender.dir / "cas.pem"
    bundle.write_bytes((receiver.dir / "tls" / "cert.pem").read_bytes() + ca.cert_pem.bytes())
    sender.hand_over(bundle)
    sender.set_config("dns", nameservers=[dns_server.nameserver], timeout=2.0, attempts=1)
    sender.set_config("delivery", remote_port=receiver.smtp_port, mta_sts_port=https.port,
                      tls_ca_file=str(bundle), poll_interval=0.5, retry_schedule=[1])
    sender.start()
    day = int(time.time()) // DAY * DAY
    date = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
    try:
        for domain in ("rpt.test", "try.test", "plain.test"):
            submit(sender, f"bob@{domain}", "rpt")
        for domain, sessions in (("rpt.test", 2), ("try.test", 1), ("plain.test", 1)):
            wait_for(f"delivery to {domain}", lambda d=domain: receiver.messages(f"bob@{d}"))
            wait_for(f"{domain} counted",
                     lambda d=domain, n=sessions: counted(sender, d, day) == n)
        run = sender.cli("queue", "tls-reports", "--day", date)
        assert f"3 TLS report(s) queued for {date}" in run.stdout, run
        got = wait_for("the reports", lambda: (m := receiver.messages("tlsrpt@rpt.test"))
                       and len(m) == 3 and m)
        reports = {email.message_from_bytes(m)["TLS-Report-Domain"]: m for m in got}
        raw = reports["rpt.test"]
        again = sender.cli("queue", "tls-reports", "--day", date).stdout
        assert f"0 TLS report(s) queued for {date}" in again  # once per (domain, day)
    finally:
        sender.stop()
        receiver.stop()
    signed = raw[raw.index(b"DKIM-Signature:"):]  # the receiver's trace fields off
    assert signed.count(b"DKIM-Signature:") == 2  # Ed25519 and RSA, d=example.test
    for index in (0, 1):
        assert dkim.DKIM(signed).verify(index, dnsfunc=txt_lookup(dns_server)), index
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "rpt.test"
    assert msg["TLS-Report-Submitter"] == "localhost"
    assert msg["Subject"].startswith("Report Domain: rpt.test Submitter: localhost Report-ID: <")
    body = unpack(raw)
    assert body["organization-name"] == "localhost"
    assert body["contact-info"] == "postmaster@example.test"
    assert body["date-range"] == {"start-datetime": f"{date}T00:00:00Z",
                                  "end-datetime": f"{date}T23:59:59Z"}
    (entry,) = body["policies"]
    assert entry["policy"] == {
        "policy-type": "sts", "policy-domain": "rpt.test",
        "policy-string": ["version: STSv1", "mode: enforce", "mx: *.rpt.test",
                          "max_age: 86400"],
        "mx-host": ["*.rpt.test"]}
    assert entry["summary"] == {"total-successful-session-count": 1,
                                "total-failure-session-count": 1}
    (failure,) = entry["failure-details"]
    assert failure["result-type"] == "certificate-host-mismatch"
    assert failure["receiving-mx-hostname"] == "bad.rpt.test"
    assert failure["receiving-ip"] == "127.0.0.1"
    assert failure["failed-session-count"] == 1
    assert "Hostname mismatch" in failure["additional-information"]
    (testing,) = unpack(reports["try.test"])["policies"]
    assert testing["policy"]["policy-string"][1] == "mode: testing"
    assert testing["summary"] == {"total-successful-session-count": 0,
                                  "total-failure-session-count": 1}
    assert testing["failure-details"][0]["result-type"] == "certificate-host-mismatch"
    assert testing["failure-details"][0]["receiving-mx-hostname"] == "mx.try.test"
    (plain,) = unpack(reports["plain.test"])["policies"]
    assert plain == {"policy": {"policy-type": "no-policy-found", "policy-domain": "plain.test"},
                     "summary": {"total-successful-session-count": 1,
                                 "total-failure-session-count": 0}}


def unpack(raw: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    (part,) = [p for p in msg.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
    body: dict[str, Any] = json.loads(gzip.decompress(part.get_content()))
    return body
