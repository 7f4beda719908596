"""MTA-STS in delivery over the wire: the policies of the recipient domains are published in
real DNS (NSD) and served over real HTTPS (a test CA's certificate for each `mta-sts.DOMAIN`),
and a postkeep instance delivers to another one under them: `enforce` with a matching MX host
that verifies is delivered over verified TLS; an MX host the policy does not name, or one
whose certificate does not verify, keeps the mail queued (never sent unverified)."""

from __future__ import annotations

import http.server
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.dnsserver import AuthServer
from tests.interop.conftest import PASSWORD, Instance, make_instance

ALICE = "alice@example.test"
POLICIES = {
    "mta-sts.sts.test": b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n",
    "mta-sts.elsewhere.test": b"version: STSv1\nmode: enforce\nmx: *.other.test\nmax_age: 86400\n",
    "mta-sts.badcert.test": b"version: STSv1\nmode: enforce\nmx: mx.badcert.test\nmax_age: 600\n",
}


class PolicyHost:
    """An HTTPS server on 127.0.0.1 answering /.well-known/mta-sts.txt by the Host header."""

    def __init__(self, context: ssl.SSLContext, policies: dict[str, bytes] = POLICIES) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = policies.get((self.headers.get("Host") or "").split(":")[0])
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_response(404)
                    body = b""
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def submit(inst: Instance, rcpt: str, subject: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20) as c:
        c.starttls(context=ctx)
        c.login(ALICE, PASSWORD)
        assert c.mail(ALICE)[0] == 250 and c.rcpt(rcpt)[0] == 250
        code, text = c.data(f"From: {ALICE}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


@pytest.fixture
def policy_host() -> Iterator[tuple[PolicyHost, trustme.CA]]:
    ca = trustme.CA()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*POLICIES).configure_cert(ctx)
    host = PolicyHost(ctx)
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
