"""RFC 2308 §5's negative TTL (postkeep.dns.resolver.negative_ttl), on replies built here: NSD
already sends the SOA with its TTL lowered to MINIMUM (RFC 2308 §3), so over the wire the
choice between the two cannot be seen."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rrset

from postkeep.dns.resolver import negative_ttl


def reply(*authority: str, answer: tuple[str, ...] = ()) -> dns.message.Message:
    msg = dns.message.make_response(dns.message.make_query("x.example.test", "A"))
    msg.set_rcode(dns.rcode.NXDOMAIN)
    msg.authority = [dns.rrset.from_text(*line.split(" ", 4)) for line in authority]
    msg.answer = [dns.rrset.from_text(*line.split(" ", 4)) for line in answer]
    return msg


NAME = dns.name.from_text("x.example.test")
SOA = "SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400"


def test_lesser_of_soa_ttl_and_minimum() -> None:
    assert negative_ttl(reply(f"example.test. 40 IN {SOA} 20"), NAME, []) == 20
    assert negative_ttl(reply(f"example.test. 20 IN {SOA} 40"), NAME, []) == 20


def test_cname_ttls_lower_it() -> None:
    msg = reply(f"example.test. 300 IN {SOA} 300",
                answer=("alias.example.test. 10 IN CNAME x.example.test.",))
    assert negative_ttl(msg, NAME, list(msg.answer)) == 10


def test_without_the_zones_soa_it_is_not_kept() -> None:
    assert negative_ttl(reply(), NAME, []) is None
    assert negative_ttl(reply(f"other.test. 300 IN {SOA} 300"), NAME, []) is None
    assert negative_ttl(reply(f"y.example.test. 300 IN {SOA} 300"), NAME, []) is None
