"""What the queue's wire tests share: alice submitting over STARTTLS with smtplib, waiting for
a condition (a message arriving, a deferral in `postkeep queue list`) with a bound, dkimpy's
DNS lookups on the test's NSD, and an HTTPS host serving MTA-STS policies."""

from __future__ import annotations

import http.server
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import dns.resolver

from tests.dnsserver import AuthServer
from tests.interop.conftest import PASSWORD, Instance

ALICE = "alice@example.test"


def submit(inst: Instance, rcpts: str | Sequence[str], subject: str, *,
           mail_options: Sequence[str] = (), rcpt_options: Sequence[str] = ()) -> str:
    """alice@example.test submits a message to `rcpts`; its queue id (from the 250)."""
    rcpts = [rcpts] if isinstance(rcpts, str) else list(rcpts)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20) as c:
        c.starttls(context=ctx)
        c.login(ALICE, PASSWORD)
        code, text = c.mail(ALICE, list(mail_options))
        assert code == 250, text
        for rcpt in rcpts:
            assert c.rcpt(rcpt, list(rcpt_options))[0] == 250
        code, text = c.data(f"From: {ALICE}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
                            f"Message-ID: <{subject}@example.test>\r\n\r\nHello there.\r\n"
                            .encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]


def wait_for(what: str, condition: Callable[[], Any], seconds: float = 30.0) -> Any:
    """`condition()`'s first true value, polled every 0.1 s; AssertionError after `seconds`
    (a bound on a wait for something that must happen, not a timing measurement)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def txt_lookup(server: AuthServer) -> Callable[..., bytes | None]:
    """dkimpy's `dnsfunc` on the test's NSD: a TXT record's strings joined."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.address]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


class PolicyHost:
    """An HTTPS server on 127.0.0.1 answering /.well-known/mta-sts.txt with `policies` by the
    Host header (`mta-sts.DOMAIN`)."""

    def __init__(self, context: ssl.SSLContext, policies: dict[str, bytes]) -> None:
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
