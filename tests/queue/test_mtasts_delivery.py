"""MTA-STS in delivery over the wire: the policies of the recipient domains are published in
real DNS (NSD) and served over real HTTPS (a test CA's certificate for each `mta-sts.DOMAIN`),
and a postkeep instance delivers to another one under them: `enforce` with a matching MX host
that verifies is delivered over verified TLS; an MX host the policy does not name, or one
whose certificate does not verify, keeps the mail queued (never sent unverified)."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.dnsserver import AuthServer
from tests.interop.conftest import PASSWORD, make_instance
from tests.queue.wire import PolicyHost, submit, wait_for

POLICIES = {
    "mta-sts.sts.test": b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n",
    "mta-sts.elsewhere.test": b"version: STSv1\nmode: enforce\nmx: *.other.test\nmax_age: 86400\n",
    "mta-sts.badcert.test": b"version: STSv1\nmode: enforce\nmx: mx.badcert.test\nmax_age: 600\n",
}




@pytest.fixture
def policy_host() -> Iterator[tuple[PolicyHost, trustme.CA]]:
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*POLICIES).configure_cert(ctx)
    host = PolicyHost(ctx, POLICIES)
    try:
        yield host, ca
    finally:
        host.stop()


def test_enforce_delivers_only_to_named_hosts_that_verify(
    dns_server: AuthServer, policy_host: tuple[PolicyHost, trustme.CA], tmp_path: Path
) -> None:
    https, ca = policy_host
    for name in ("receiver", "sender"):
        (tmp_path / name).mkdir()
    receiver = make_instance(tmp_path / "receiver", domain="sts.test", hostname="mx.sts.test")
    for domain in ("elsewhere.test", "badcert.test"):
        receiver.cli("domain", "add", domain, "--no-dkim")
        receiver.cli("user", "add", f"bob@{domain}", "--password-stdin", input=PASSWORD + "\n")
    receiver.start()
    for domain, mx in (("sts.test", "mx"), ("elsewhere.test", "mx.sts.test."),
                       ("badcert.test", "mx")):
        dns_server.add_zone(domain, [f"@ MX 10 {mx}", "mx A 127.0.0.1", "mta-sts A 127.0.0.1",
                                     '_mta-sts TXT "v=STSv1; id=20261202;"'])
    sender = make_instance(tmp_path / "sender")
    bundle = sender.dir / "cas.pem"  # the receiver's own certificate and the policy hosts' CA
    bundle.write_bytes((receiver.dir / "tls" / "cert.pem").read_bytes() + ca.cert_pem.bytes())
    sender.hand_over(bundle)
    sender.set_config("dns", nameservers=[dns_server.nameserver], timeout=2.0, attempts=1)
    sender.set_config("delivery", remote_port=receiver.smtp_port, mta_sts_port=https.port,
                      tls_ca_file=str(bundle), poll_interval=0.5, retry_schedule=[1])
    sender.start()
    try:
        ok = submit(sender, "bob@sts.test", "sts-ok")
        wait_for("delivery", lambda: any(b"Subject: sts-ok" in m
                                         for m in receiver.messages("bob@sts.test")))
        assert re.search(rf"qid={ok} relay=mx.sts.test \[127\.0\.0\.1\] tls=TLSv1\.3/verified",
                         sender.log())
        named = submit(sender, "bob@elsewhere.test", "sts-not-named")
        unverified = submit(sender, "bob@badcert.test", "sts-bad-cert")
        out = wait_for("both deferred", lambda: (o := sender.cli("queue", "list").stdout)
                       and named in o and unverified in o and o.count("last error") >= 2 and o)
        assert "4.7.5 MTA-STS: no MX host of elsewhere.test is one its policy names" in out
        shown = sender.cli("queue", "show", unverified).stdout
        assert "4.7.5" in shown and "certificate verify failed" in shown, shown
        time.sleep(2)  # more attempts: none may deliver them
        assert not receiver.messages("bob@elsewhere.test")
        assert not receiver.messages("bob@badcert.test")
    finally:
        sender.stop()
        receiver.stop()
