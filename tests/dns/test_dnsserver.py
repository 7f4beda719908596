"""The test DNS servers themselves (tests/dnsserver.py): what other tests rely on them doing."""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dnsserver import (
    AuthServer,
    Resolver,
    corrupt_rrsig,
    sign_zone,
    start_auth_server,
    start_auth_server_port53,
    start_dropping_relay,
    zone_text,
)


def ask(host: str, port: int, name: str, rdtype: str, *, tcp: bool = False,
        dnssec: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=5)
    return dns.query.udp(query, host, port=port, timeout=5)


def test_zone_served_replaced_and_removed(dns_server: AuthServer) -> None:
    s = dns_server
    s.add_zone("example.test", ["@ MX 10 mx", "mx A 192.0.2.1", 'txt 60 TXT "a" "b"'])
    answer = ask(s.address, s.port, "txt.example.test", "TXT", tcp=True)
    assert answer.answer[0].ttl == 60
    assert [r.strings for r in answer.answer[0]] == [(b"a", b"b")]  # type: ignore[attr-defined]
    s.add_zone("example.test", ["@ MX 20 mx2"])
    answer = ask(s.address, s.port, "example.test", "MX")
    assert [r.to_text() for r in answer.answer[0]] == ["20 mx2.example.test."]
    assert ask(s.address, s.port, "mx.example.test", "A").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ValueError, match="serial 1 must be above the served 2"):
        s.add_zone_text("example.test", zone_text("example.test", [], serial=1))
    s.remove_zone("example.test")
    assert ask(s.address, s.port, "example.test", "MX").rcode() == dns.rcode.REFUSED


def test_broken_zone_is_servfail_and_can_be_fixed(dns_server: AuthServer) -> None:
    dns_server.add_broken_zone("broken.test")
    answer = ask(dns_server.address, dns_server.port, "x.broken.test", "A")
    assert answer.rcode() == dns.rcode.SERVFAIL
    dns_server.add_zone("broken.test", ["x A 192.0.2.7"])
    answer = ask(dns_server.address, dns_server.port, "x.broken.test", "A")
    assert answer.rcode() == dns.rcode.NOERROR


def test_query_count(dns_server: AuthServer) -> None:
    dns_server.add_zone("count.test", ['t TXT "x"'])
    before = dns_server.query_count("TXT")
    for _ in range(3):
        ask(dns_server.address, dns_server.port, "t.count.test", "TXT")
    assert dns_server.query_count("TXT") == before + 3


def test_port53_on_another_loopback_address(tmp_path: Path) -> None:
    server = start_auth_server_port53(tmp_path, "127.0.0.77")
    try:
        server.add_zone("p53.test", ["@ A 192.0.2.53"])
        assert server.nameserver == "127.0.0.77:53"
        assert ask("127.0.0.77", 53, "p53.test", "A").answer
    finally:
        server.stop()
    assert server.process.poll() is not None


def test_ipv6_loopback(tmp_path: Path) -> None:
    server = start_auth_server(tmp_path, "::1")
    try:
        server.add_zone("v6.test", ["@ AAAA 2001:db8::1"])
        assert server.nameserver == f"[::1]:{server.port}"
        assert ask("::1", server.port, "v6.test", "AAAA").answer
    finally:
        server.stop()


def test_refuses_non_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_auth_server(tmp_path, "192.0.2.1")


def test_validating_resolver(dns_server: AuthServer, validating_resolver: Resolver,
                             tmp_path: Path) -> None:
    signed = sign_zone(tmp_path, "signed.test",
                       zone_text("signed.test", ["@ A 192.0.2.9", "bad A 192.0.2.10"]))
    dns_server.add_zone_text("signed.test", corrupt_rrsig(signed.text, "bad.signed.test", "A"))
    dns_server.add_zone("plain.test", ["@ A 192.0.2.8"])
    r = validating_resolver
    # Before the trust anchor: answers, insecure.
    answer = ask(r.address, r.port, "signed.test", "A", dnssec=True)
    assert answer.rcode() == dns.rcode.NOERROR and not answer.flags & dns.flags.AD
    r.trust(signed.trust_anchor)
    answer = ask(r.address, r.port, "signed.test", "A", dnssec=True)
    assert answer.answer and answer.flags & dns.flags.AD
    answer = ask(r.address, r.port, "nx.signed.test", "A", dnssec=True)
    assert answer.rcode() == dns.rcode.NXDOMAIN and answer.flags & dns.flags.AD
    answer = ask(r.address, r.port, "plain.test", "A", dnssec=True)
    assert answer.answer and not answer.flags & dns.flags.AD
    assert ask(r.address, r.port, "bad.signed.test", "A").rcode() == dns.rcode.SERVFAIL


def test_root_zone_and_dropping_relay(dns_server: AuthServer) -> None:
    """A root zone makes every other name NXDOMAIN; the relay passes queries on (UDP and TCP)
    but leaves a dropped name's unanswered, except for the types it still answers."""
    dns_server.add_zone(".", ["quiet.example. A 192.0.2.1", 'quiet.example. TXT "t"',
                              "loud.example. A 192.0.2.2"])
    assert ask(dns_server.address, dns_server.port, "other.example", "A").rcode() == \
        dns.rcode.NXDOMAIN
    relay = start_dropping_relay(dns_server)
    try:
        relay.drop("quiet.example", answered=["TXT"])
        for tcp in (False, True):
            reply = ask(relay.address, relay.port, "loud.example", "A", tcp=tcp)
            assert reply.answer and reply.answer[0][0].address == "192.0.2.2"
            assert ask(relay.address, relay.port, "quiet.example", "TXT", tcp=tcp).answer
        query = dns.message.make_query("quiet.example", "A")
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(query, relay.address, port=relay.port, timeout=0.5)
        relay.clear()
        assert ask(relay.address, relay.port, "quiet.example", "A").answer
    finally:
        relay.stop()
