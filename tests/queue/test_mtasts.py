"""MTA-STS discovery, fetch and cache (RFC 8461 §3.1, §3.3, §5.1) over the wire: the
`_mta-sts` TXT record and the policy host's address in real DNS (NSD, tests/dnsserver.py), the
policy served by a real HTTPS server on loopback (Python's `http.server` over TLS, in a thread)
with a certificate from a test CA (trustme). The policy clock is a test clock; the TXT records
have TTL 0, so every call asks NSD."""

from __future__ import annotations

import asyncio
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.queue.mtasts import MAX_BODY, RETRY_FETCH_AFTER, WELL_KNOWN, MtaStsPolicies
from postkeep.queue.mtasts_policy import Mode, Policy
from postkeep.queue.outcome import Outcome
from tests.dnsserver import AuthServer

DOMAIN = "sts.test"
HOST = f"mta-sts.{DOMAIN}"
ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmx: *.mx.sts.test\r\n" \
          b"max_age: 604800\r\n"
TESTING = b"version: STSv1\nmode: testing\nmx: other.sts.test\nmax_age: 86400\n"


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [
        ("Content-Type", "text/plain; charset=utf-8")])
    body: bytes = ENFORCE
    length: bool = True  # send Content-Length (else the body ends with the connection)


class PolicyServer:
    """An HTTPS server on 127.0.0.1: `replies` by path (404 otherwise), `requests` the
    (path, Host) of each request it read; `present(ctx)` changes the certificate it shows."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.replies: dict[str, Reply] = {WELL_KNOWN: Reply()}
        self.requests: list[tuple[str, str | None]] = []
        self._context = context
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Host")))
                reply = outer.replies.get(self.path, Reply(404, body=b"not found\n"))
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                if reply.length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply.body)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        dispatch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        dispatch.sni_callback = self._choose  # the certificate of the moment
        self.httpd.socket = dispatch.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _choose(self, sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.context = self._context

    def present(self, context: ssl.SSLContext) -> None:
        self._context = context

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    dns: AuthServer
    https: PolicyServer
    ca: trustme.CA
    clock: Clock
    client: ssl.SSLContext

    def zone(self, *txt: str, domain: str = DOMAIN) -> None:
        self.dns.add_zone(domain, [*(f'_mta-sts 0 TXT "{t}"' for t in txt),
                                   "mta-sts 0 A 127.0.0.1"])

    def policies(self, **kw: Any) -> MtaStsPolicies:
        resolver = DnsResolver(DnsConfig(nameservers=[self.dns.nameserver], timeout=2.0,
                                         attempts=1))
        kw.setdefault("https_port", self.https.port)
        return MtaStsPolicies(resolver, self.client, clock=self.clock, **kw)

    def fetches(self) -> int:
        return sum(path == WELL_KNOWN for path, _host in self.https.requests)


@pytest.fixture
def setup(dns_server: AuthServer) -> Iterator[Setup]:
    ca = trustme.CA()
    client = ssl.create_default_context()
    client.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    https = PolicyServer(server_context(ca, HOST))
    try:
        s = Setup(dns_server, https, ca, Clock(), client)
        s.zone("v=STSv1; id=one;")
        yield s
    finally:
        https.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_policy_fetched_then_used_from_the_cache_until_max_age(setup: Setup) -> None:
    async def check() -> None:
        p = setup.policies()
        first = await p.policy(DOMAIN)
        assert first == Policy(Mode.ENFORCE, ("mx.sts.test", "*.mx.sts.test"), 604800, "one")
        assert first.allows("mx.sts.test") and first.allows("a.mx.sts.test")
        assert not first.allows("sts.test")
        assert setup.https.requests == [(WELL_KNOWN, f"{HOST}:{setup.https.port}")]
        txt_queries = setup.dns.query_count("TXT")
        setup.clock.now += 3600
        assert await p.policy(DOMAIN) == first
        assert setup.fetches() == 1  # the same id: no fetch
        assert setup.dns.query_count("TXT") > txt_queries  # but the TXT record was asked
        setup.clock.now += 86400  # a day after the fetch: refreshed (§3.3)
        assert await p.policy(DOMAIN) == first
        assert setup.fetches() == 2
        setup.https.replies[WELL_KNOWN] = Reply(503)
        setup.clock.now += 86400  # a failed refresh keeps the cached policy
        assert await p.policy(DOMAIN) == first
        assert setup.fetches() == 3
        setup.clock.now += 604800  # expired, and the fetch fails: no policy
        assert await p.policy(DOMAIN) is None

    run(check())


def test_concurrent_calls_share_one_fetch(setup: Setup) -> None:
    async def check() -> None:
        p = setup.policies()
        results = await asyncio.gather(*(p.policy(DOMAIN) for _ in range(5)))
        assert len({r.id for r in results if isinstance(r, Policy)}) == 1
        assert all(isinstance(r, Policy) for r in results)
        assert setup.fetches() == 1

    run(check())


def test_a_new_id_refetches(setup: Setup) -> None:
    async def check() -> None:
        p = setup.policies()
        assert isinstance(await p.policy(DOMAIN), Policy)
        setup.https.replies[WELL_KNOWN] = Reply(body=TESTING)
        setup.zone("v=STSv1; id=two")
        second = await p.policy(DOMAIN)
        assert second == Policy(Mode.TESTING, ("other.sts.test",), 86400, "two")
        assert setup.fetches() == 2
        # mode none (how a domain removes its policy, §8.3) replaces it: no policy
        setup.https.replies[WELL_KNOWN] = Reply(body=b"version: STSv1\nmode: none\n"
                                                     b"max_age: 86400\n")
        setup.zone("v=STSv1; id=three")
        assert await p.policy(DOMAIN) is None
        assert await p.policy(DOMAIN) is None
        assert setup.fetches() == 3  # kept: the id is the cached one

    run(check())


def test_failed_fetch_keeps_the_cached_policy_and_waits_before_trying_again(
        setup: Setup) -> None:
    async def check() -> None:
        p = setup.policies()
        first = await p.policy(DOMAIN)
        assert isinstance(first, Policy) and first.id == "one"
        setup.https.replies[WELL_KNOWN] = Reply(500, body=b"oops\n")
        setup.zone("v=STSv1; id=two")
        assert await p.policy(DOMAIN) == first  # §5.1: the cached, unexpired policy
        assert setup.fetches() == 2
        assert await p.policy(DOMAIN) == first
        assert setup.fetches() == 2  # not again within five minutes for this id
        setup.https.replies[WELL_KNOWN] = Reply(body=TESTING)
        setup.clock.now += RETRY_FETCH_AFTER
        second = await p.policy(DOMAIN)
        assert isinstance(second, Policy) and second.id == "two"
        assert setup.fetches() == 3
        # the TXT record gone: the cached policy still applies (§3.1, §8.3)
        setup.dns.add_zone(DOMAIN, ["mta-sts 0 A 127.0.0.1"])
        assert await p.policy(DOMAIN) == second

    run(check())


def test_failed_fetch_without_a_cached_policy_is_no_policy(setup: Setup) -> None:
    setup.https.replies[WELL_KNOWN] = Reply(404, body=b"no\n")
    assert run(setup.policies().policy(DOMAIN)) is None
    assert setup.fetches() == 1


@pytest.mark.parametrize("which", ["other CA", "other name"])
def test_a_certificate_that_does_not_verify_is_no_policy_and_caches_nothing(
        setup: Setup, which: str) -> None:
    bad = (server_context(trustme.CA(), HOST) if which == "other CA"
           else server_context(setup.ca, "www.sts.test"))
    setup.https.present(bad)

    async def check() -> None:
        p = setup.policies()
        assert await p.policy(DOMAIN) is None
        assert setup.https.requests == []  # the handshake failed: no request was sent
        setup.https.present(server_context(setup.ca, HOST))
        setup.clock.now += RETRY_FETCH_AFTER
        fetched = await p.policy(DOMAIN)
        assert isinstance(fetched, Policy) and fetched.mode is Mode.ENFORCE
        assert setup.fetches() == 1

    run(check())


def test_a_redirect_is_not_followed(setup: Setup) -> None:
    setup.https.replies[WELL_KNOWN] = Reply(301, headers=[
        ("Location", f"https://{HOST}:{setup.https.port}/moved"),
        ("Content-Type", "text/plain")], body=b"")
    setup.https.replies["/moved"] = Reply()
    assert run(setup.policies().policy(DOMAIN)) is None
    assert [path for path, _ in setup.https.requests] == [WELL_KNOWN]


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_body_over_64_kib_is_refused(setup: Setup, length: bool) -> None:
    pad = b"x-pad: " + b"a" * 1000 + b"\n"
    fits = ENFORCE + pad * ((MAX_BODY - len(ENFORCE)) // len(pad))
    fits += b"x: " + b"b" * (MAX_BODY - len(fits) - 4) + b"\n"
    assert len(fits) == MAX_BODY
    setup.https.replies[WELL_KNOWN] = Reply(body=fits, length=length)
    assert isinstance(run(setup.policies().policy(DOMAIN)), Policy)
    setup.https.replies[WELL_KNOWN] = Reply(body=fits + b"\n", length=length)
    assert run(setup.policies().policy(DOMAIN)) is None


@pytest.mark.parametrize("media", ["text/html", "application/octet-stream", None])
def test_a_policy_not_served_as_text_plain_is_refused(setup: Setup, media: str | None) -> None:
    setup.https.replies[WELL_KNOWN] = Reply(
        headers=[("Content-Type", media)] if media else [])
    assert run(setup.policies().policy(DOMAIN)) is None
    assert setup.fetches() == 1


def test_an_invalid_policy_is_no_policy(setup: Setup) -> None:
    setup.https.replies[WELL_KNOWN] = Reply(body=b"version: STSv1\nmode: enforce\n"
                                                 b"max_age: 31557601\nmx: mx.sts.test\n")
    assert run(setup.policies().policy(DOMAIN)) is None


def test_txt_records_absent_several_or_bad_are_no_policy(setup: Setup) -> None:
    async def check(*txt: str) -> object:
        setup.zone(*txt)
        return await setup.policies().policy(DOMAIN)

    assert run(check()) is None
    assert run(check("v=spf1 -all")) is None
    assert run(check("v=STSv1; id=one", "v=STSv1; id=two")) is None
    assert run(check("v=STSv1; id=not-valid")) is None
    assert setup.fetches() == 0


def test_a_txt_lookup_failure_is_temporary_unless_a_policy_is_cached(setup: Setup) -> None:
    async def check() -> None:
        p = setup.policies()
        cached = await p.policy(DOMAIN)
        assert isinstance(cached, Policy)
        setup.dns.add_broken_zone(DOMAIN)  # SERVFAIL from NSD
        assert await p.policy(DOMAIN) == cached
        fresh = await setup.policies().policy(DOMAIN)
        assert isinstance(fresh, Outcome) and not fresh.permanent
        assert fresh.enhanced == "4.4.3" and "_mta-sts.sts.test" in fresh.text

    run(check())


def test_a_host_that_never_answers_times_out(setup: Setup) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts into the backlog, never speaks TLS
    try:
        p = setup.policies(fetch_timeout=0.5, https_port=silent.getsockname()[1])
        assert run(p.policy(DOMAIN)) is None
    finally:
        silent.close()


def test_a_context_that_does_not_verify_names_is_refused(setup: Setup) -> None:
    loose = ssl.create_default_context()
    loose.check_hostname = False
    with pytest.raises(ValueError):
        MtaStsPolicies(DnsResolver(DnsConfig(nameservers=[setup.dns.nameserver])), loose)
