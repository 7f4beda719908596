"""SPF against hostile or broken DNS data, over the wire (NSD on loopback, `dns_server`, and
the real DnsResolver): huge records, include and redirect loops, macro blow-up, void lookups,
too many MX names, SERVFAIL, a nameserver that never answers and the overall timeout; then
the HELO identity and the header fields. Each ends in a result, never an exception."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.mailauth.spf import (
    Spf,
    SpfResult,
    authentication_results,
    check_helo,
    check_host,
    check_mailfrom,
    received_spf,
)
from postkeep.mailauth.spf import record as spf_record
from postkeep.mailauth.spf.macros import MAX_EXPANSION
from tests.dnsserver import AuthServer, start_dropping_relay

ZONE = "spf.test"


def _txt(text: str) -> str:
    """A TXT record's rdata: `text` (UTF-8) in character-strings of at most 255 octets, octets
    other than printable ASCII as \\DDD."""
    data = text.encode()
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join('"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}"
                                  for b in c) + '"' for c in chunks)


def publish(server: AuthServer, records: dict[str, str], extra: tuple[str, ...] = ()) -> None:
    server.add_zone(ZONE, [f"{name} TXT {_txt(text)}" for name, text in records.items()]
                    + list(extra))


def resolver(nameserver: str, **config: Any) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=[nameserver], **{"timeout": 2.0, "attempts": 1,
                                                               **config}))


def mailfrom(server: AuthServer, sender: str, ip: str = "192.0.2.1", **options: Any
             ) -> SpfResult:
    return asyncio.run(check_mailfrom(ip, sender, "client.example", resolver(server.nameserver),
                                      **options))


def test_a_huge_record_is_a_permerror_fetched_over_tcp(dns_server: AuthServer) -> None:
    """Over 4096 characters (asked again over TCP: more than the 1232-octet UDP payload)."""
    huge = "v=spf1 " + "ip4:198.51.100.1 " * 300 + "-all"
    publish(dns_server, {"huge": huge})
    result = mailfrom(dns_server, f"a@huge.{ZONE}")
    assert result.result is Spf.PERMERROR
    assert f"at most {spf_record.MAX_RECORD}" in (result.problem or "")
    assert dns_server.stats()["num.tcp"] >= 1


def test_too_many_terms_is_a_permerror(dns_server: AuthServer) -> None:
    many = "v=spf1 " + "?all " * (spf_record.MAX_TERMS + 1)
    assert len(many) < spf_record.MAX_RECORD
    publish(dns_server, {"many": many})
    result = mailfrom(dns_server, f"a@many.{ZONE}")
    assert result.result is Spf.PERMERROR and "terms" in (result.problem or "")


def test_include_and_redirect_loops_stop_at_ten_lookups(dns_server: AuthServer) -> None:
    publish(dns_server, {
        "loop1": f"v=spf1 include:loop2.{ZONE} -all",
        "loop2": f"v=spf1 include:loop1.{ZONE} -all",
        "self": f"v=spf1 redirect=self.{ZONE}",
        # a chain of 11 distinct includes: the 11th lookup is one too many
        **{f"c{i}": f"v=spf1 include:c{i + 1}.{ZONE} -all" for i in range(11)},
        "c11": "v=spf1 +all",
        # 10 in all is still fine
        "c1ok": f"v=spf1 include:c2.{ZONE} -all",
    })
    for sender in (f"a@loop1.{ZONE}", f"a@self.{ZONE}", f"a@c0.{ZONE}"):
        result = mailfrom(dns_server, sender)
        assert result.result is Spf.PERMERROR, result
        assert "more than 10 DNS-querying terms" in (result.problem or "")
    assert mailfrom(dns_server, f"a@c1ok.{ZONE}").result is Spf.PASS


def test_void_lookups_beyond_two_are_a_permerror(dns_server: AuthServer) -> None:
    publish(dns_server, {
        "void2": f"v=spf1 a:n1.{ZONE} exists:n2.{ZONE} ?all",
        "void3": f"v=spf1 a:n1.{ZONE} exists:n2.{ZONE} mx:n3.{ZONE} ?all",
    })
    assert mailfrom(dns_server, f"a@void2.{ZONE}").result is Spf.NEUTRAL
    result = mailfrom(dns_server, f"a@void3.{ZONE}")
    assert result.result is Spf.PERMERROR and "void" in (result.problem or "")


def test_more_than_ten_mx_names_is_a_permerror(dns_server: AuthServer) -> None:
    publish(dns_server, {"mx10": "v=spf1 mx -all", "mx11": "v=spf1 mx -all"},
            tuple(f"mx10 MX {i} h{i}" for i in range(10))
            + tuple(f"mx11 MX {i} h{i}" for i in range(11))
            + tuple(f"h{i} A 192.0.2.{i + 100}" for i in range(11)))
    assert mailfrom(dns_server, f"a@mx10.{ZONE}", ip="192.0.2.109").result is Spf.PASS
    result = mailfrom(dns_server, f"a@mx11.{ZONE}", ip="192.0.2.100")
    assert result.result is Spf.PERMERROR and "11 MX names" in (result.problem or "")


def test_macro_blow_up_is_bounded(dns_server: AuthServer) -> None:
    """A long local-part through many %{s}: the names are cut to 253 characters (RFC 7208
    §7.3) and asked (NXDOMAIN: no match); an explanation that would pass MAX_EXPANSION is
    dropped, the fail stands."""
    local = "x" * 50 + "." + "y" * 50
    publish(dns_server, {
        "blow": "v=spf1 " + " ".join([f"exists:%{{s}}%{{s}}%{{s}}.{ZONE}"] * 2)
                + f" -all exp=why.{ZONE}",
        "why": "%{s}" * 1000,
    })
    result = mailfrom(dns_server, f"{local}@blow.{ZONE}")
    assert result.result is Spf.FAIL and result.mechanism == "-all"
    assert result.explanation is None
    assert 1000 * len(f"{local}@blow.{ZONE}") > MAX_EXPANSION


def test_servfail_is_a_temperror(dns_server: AuthServer) -> None:
    dns_server.add_broken_zone("broken.test")
    publish(dns_server, {"inc": "v=spf1 include:broken.test -all"})
    for sender in ("a@broken.test", f"a@inc.{ZONE}"):
        result = mailfrom(dns_server, sender)
        assert result.result is Spf.TEMPERROR and "SERVFAIL" in (result.problem or "")


def test_the_overall_timeout_is_a_temperror(dns_server: AuthServer) -> None:
    """A nameserver that never answers the TXT query, a per-query timeout far longer than the
    check's own: the check's timeout ends it."""
    publish(dns_server, {"slow": "v=spf1 -all"})
    relay = start_dropping_relay(dns_server)
    try:
        relay.drop(f"slow.{ZONE}")
        r = resolver(relay.nameserver, timeout=30.0)
        result = asyncio.run(check_host("192.0.2.1", f"slow.{ZONE}", f"a@slow.{ZONE}",
                                        "client.example", r, timeout=0.2))
    finally:
        relay.stop()
    assert result.result is Spf.TEMPERROR and "no result within 0.2 s" in (result.problem or "")


def test_helo_identity(dns_server: AuthServer) -> None:
    publish(dns_server, {"mail": "v=spf1 a -all"}, ("mail A 192.0.2.7",))
    r = resolver(dns_server.nameserver)
    passed = asyncio.run(check_helo("192.0.2.7", f"mail.{ZONE}", r))
    assert (passed.result, passed.identity, passed.sender, passed.mechanism) == (
        Spf.PASS, "helo", f"postmaster@mail.{ZONE}", "a")
    assert asyncio.run(check_helo("::ffff:192.0.2.8", f"mail.{ZONE}", r)).result is Spf.FAIL
    for helo in ("[192.0.2.7]", "localhost"):
        assert asyncio.run(check_helo("192.0.2.7", helo, r)).result is Spf.NONE
    # A null reverse-path is checked as postmaster@<HELO> (RFC 7208 §2.4)
    null = asyncio.run(check_mailfrom("192.0.2.7", "", f"mail.{ZONE}", r))
    assert (null.result, null.identity, null.sender) == (
        Spf.PASS, "mailfrom", f"postmaster@mail.{ZONE}")


def test_header_fields() -> None:
    passed = SpfResult(Spf.PASS, "mailfrom", "example.com", "user@example.com", "192.0.2.1",
                       "mx.example.com", mechanism="ip4:192.0.2.0/24")
    assert received_spf(passed, "mybox.example.org") == (
        "Received-SPF: pass (mybox.example.org: domain of user@example.com designates "
        "192.0.2.1 as permitted sender) receiver=mybox.example.org; client-ip=192.0.2.1; "
        "envelope-from=\"user@example.com\"; helo=mx.example.com; identity=mailfrom; "
        'mechanism="ip4:192.0.2.0/24";')
    assert authentication_results(passed) == "spf=pass smtp.mailfrom=user@example.com"
    broken = SpfResult(Spf.PERMERROR, "mailfrom", "example.com", 'odd "one"@example.com',
                       "2001:db8::1", None, problem='example.com: bad (term) "x"')
    assert received_spf(broken, "mx") == (
        "Received-SPF: permerror (mx: error in processing during lookup of "
        "odd \"one\"@example.com) receiver=mx; client-ip=\"2001:db8::1\"; "
        'envelope-from="odd \\"one\\"@example.com"; identity=mailfrom; '
        'problem="example.com: bad (term) \\"x\\"";')
    assert authentication_results(broken) == (
        'spf=permerror reason="example.com: bad (term) \\"x\\"" '
        'smtp.mailfrom="odd \\"one\\""@example.com')
    helo = SpfResult(Spf.NONE, "helo", "mail.example", "postmaster@mail.example", "192.0.2.1",
                     "mail.example")
    assert authentication_results(helo) == "spf=none smtp.helo=mail.example"
    assert "identity=helo" in received_spf(helo, "mx")
    assert "envelope-from" not in received_spf(helo, "mx")


TERMS = ["a", "mx", "ptr", "-all", "~all", "?all", f"include:inc.{ZONE}",
         f"redirect=inc.{ZONE}", f"exists:%{{ir}}.%{{l}}.{ZONE}", "a:%{d2}/24//64",
         "ip4:192.0.2.0/24",
         "ip6:2001:db8::/32", f"exp=why.{ZONE}", "mx:%{o}", "ptr:%{p}", "a:%{H}.x",
         "foo=%{s}", "%{", "a/33", "exists:", "x", "\x01", "é", f"include:gone.{ZONE}"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TERMS), max_size=12), st.lists(st.sampled_from(TERMS),
                                                                max_size=6),
       st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.9"]))
def test_random_records_end_in_a_result(dns_server: AuthServer, top: list[str],
                                        inc: list[str], ip: str) -> None:
    """Records made of good and bad terms, served by NSD: a result, never an exception."""
    publish(dns_server, {"top": " ".join(["v=spf1", *top]), "inc": " ".join(["v=spf1", *inc]),
                         "why": "%{c} %{r} %{t} %{p} %{i}"},
            ("top A 192.0.2.1", "top MX 10 top", "top AAAA 2001:db8::1"))
    result = mailfrom(dns_server, f"who@top.{ZONE}", ip=ip)
    assert isinstance(result.result, Spf)
    assert (result.problem is not None) == (result.result in (Spf.PERMERROR, Spf.TEMPERROR))


def test_explanation_only_macros(dns_server: AuthServer) -> None:
    """c (the client, RFC 5952 text for IPv6), r (the receiver, "unknown" without one) and t
    (the time given) in an exp= text; URL escaping of an upper-case letter (RFC 7208 §7.3)."""
    publish(dns_server, {"exp": f"v=spf1 -all exp=why.{ZONE}",
                         "why": "%{c} via %{r} at %{t} for %{L} (%{ir}.%{v})"})
    r = resolver(dns_server.nameserver)
    sender = f"a+b@exp.{ZONE}"
    six = asyncio.run(check_mailfrom("2001:DB8::1", sender, "h.example", r,
                                     receiver="mx.example", now=1234.5))
    assert (six.result, six.mechanism) == (Spf.FAIL, "-all")
    assert six.explanation == (
        "2001:db8::1 via mx.example at 1234 for a%2Bb "
        "(1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6)")
    four = asyncio.run(check_mailfrom("192.0.2.3", sender, "h.example", r, now=0))
    assert four.explanation == "192.0.2.3 via unknown at 0 for a%2Bb (3.2.0.192.in-addr)"
