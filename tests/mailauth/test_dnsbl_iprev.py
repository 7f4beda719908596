"""DNSBL/DNSWL, URIBL/DBL (postkeep.mailauth.dnsbl) and iprev (postkeep.mailauth.iprev) against
list and reverse zones served by a real DNS server (NSD on loopback, tests/dnsserver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.mailauth.dnsbl import (
    SPAMHAUS_DBL,
    SPAMHAUS_ZEN,
    Code,
    DnsList,
    check_domains,
    check_ip,
    ip_query_name,
    score,
)
from postkeep.mailauth.iprev import check_iprev
from tests.dnsserver import AuthServer, auth_server

V6_LISTED = "2001:db8::1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    with auth_server(tmp_path_factory.mktemp("nsd")) as srv:
        nibbles = ip_query_name(V6_LISTED, "zen.test").removesuffix(".zen.test")
        srv.add_zone("zen.test", [
            "2.0.0.127 A 127.0.0.2",  # RFC 5782 §5: the test entry
            '2.0.0.127 TXT "Listed: see https://zen.test/query/ip/127.0.0.2"',
            "10.2.0.192 A 127.0.0.4", "10.2.0.192 A 127.0.0.11",  # XBL and PBL
            f"{nibbles} A 127.0.0.2",
            "20.2.0.192 A 127.255.255.254",  # "query via a public resolver": refused
            "30.2.0.192 A 192.0.2.99",  # not a return code: a broken or hijacked list
            "50.2.0.192 A 127.0.0.200",  # a code the list's table does not count
        ])
        srv.add_zone("wl.test", ["40.2.0.192 A 127.0.10.1"])
        srv.add_zone("dbl.test", [
            "spam.example A 127.0.1.2", "phish.example A 127.0.1.4",
            "ipquery.example A 127.0.1.255",
        ])
        srv.add_broken_zone("down.test")
        srv.add_zone("2.0.192.in-addr.arpa", [
            "5 PTR mail.good.test.", "6 PTR liar.good.test.",
            "8 PTR nowhere.good.test.", "8 PTR mail.good.test.",  # one of two names confirms
            "9 PTR mail.down.test.",
        ])
        srv.add_zone("8.b.d.0.1.0.0.2.ip6.arpa", [
            ip_query_name("2001:db8::5", "x").removesuffix(".x").removesuffix(
                ".8.b.d.0.1.0.0.2") + " PTR mail6.good.test.",
        ])
        srv.add_zone("good.test", [
            "mail A 192.0.2.5", "mail A 192.0.2.8", "liar A 198.51.100.1",
            "mail6 AAAA 2001:db8::5",
        ])
        yield srv


def run(server: AuthServer, coro_fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        r = DnsResolver(DnsConfig(nameservers=[server.nameserver], timeout=2.0, attempts=1))
        return await coro_fn(r)
    return asyncio.run(go())


ZEN = DnsList("zen.test", codes=SPAMHAUS_ZEN)
WL = DnsList("wl.test", weight=-2.0)
DOWN = DnsList("down.test")


def test_query_names() -> None:
    assert ip_query_name("192.0.2.10", "zen.test") == "10.2.0.192.zen.test"
    assert ip_query_name("::ffff:192.0.2.10", "zen.test.") == "10.2.0.192.zen.test"
    assert ip_query_name("2001:db8::1", "zen.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test")


def test_listed_ipv4_with_codes_and_reason(server: AuthServer) -> None:
    [hit] = run(server, lambda r: check_ip(r, "127.0.0.2", [ZEN]))
    assert (hit.zone, hit.labels, hit.weight, hit.error) == ("zen.test", ("SBL",), 1.0, "")
    assert hit.reason == "Listed: see https://zen.test/query/ip/127.0.0.2"
    [two] = run(server, lambda r: check_ip(r, "192.0.2.10", [ZEN]))
    assert two.codes == ("127.0.0.11", "127.0.0.4") and set(two.labels) == {"XBL", "PBL"}


def test_listed_ipv6(server: AuthServer) -> None:
    [hit] = run(server, lambda r: check_ip(r, V6_LISTED, [ZEN]))
    assert hit.labels == ("SBL",) and hit.subject == V6_LISTED


def test_not_listed_and_allow_list(server: AuthServer) -> None:
    assert run(server, lambda r: check_ip(r, "127.0.0.1", [ZEN, WL])) == []  # RFC 5782 §5
    found = run(server, lambda r: check_ip(r, "192.0.2.40", [ZEN, WL]))
    assert [(f.zone, f.weight) for f in found] == [("wl.test", -2.0)]
    assert score(found) == -2.0


def test_refusals_and_broken_answers_are_errors_not_listings(server: AuthServer) -> None:
    [refused] = run(server, lambda r: check_ip(r, "192.0.2.20", [ZEN]))
    assert refused.error.startswith("list refused the query (127.255.255.254)")
    assert refused.weight == 0 and score([refused]) == 0
    [hijacked] = run(server, lambda r: check_ip(r, "192.0.2.30", [ZEN]))
    assert hijacked.error == "answer outside 127.0.0.0/8"
    assert run(server, lambda r: check_ip(r, "192.0.2.50", [ZEN])) == []  # uncounted code
    [failed] = run(server, lambda r: check_ip(r, "192.0.2.10", [DOWN]))
    assert failed.error.startswith("lookup failed") and score([failed]) == 0


def test_several_lists_score_together(server: AuthServer) -> None:
    heavy = DnsList("zen.test", codes={"127.0.0.4/30": Code("XBL", 3.0),
                                       "127.0.0.10/31": Code("PBL", 0.5)})
    found = run(server, lambda r: check_ip(r, "192.0.2.10", [heavy, WL, DOWN]))
    assert sorted(f.zone for f in found) == ["down.test", "zen.test"]
    assert score(found) == 3.0  # the heaviest code of a list counts, errors do not


def test_domain_lists(server: AuthServer) -> None:
    dbl = DnsList("dbl.test", codes=SPAMHAUS_DBL)
    found = run(server, lambda r: check_domains(
        r, ["SPAM.example", "clean.example", "phish.example.", "spam.example", "ipquery.example"],
        [dbl]))
    by = {f.subject: f for f in found}
    assert set(by) == {"spam.example", "phish.example", "ipquery.example"}
    assert by["spam.example"].labels == ("spam domain",)
    assert by["phish.example"].labels == ("phish domain",)
    assert by["ipquery.example"].error.startswith("list refused")
    many = [f"d{i}.example" for i in range(100)] + ["spam.example"]
    assert run(server, lambda r: check_domains(r, many, [dbl])) == []  # only the first 20


def test_iprev(server: AuthServer) -> None:
    ok = run(server, lambda r: check_iprev(r, "192.0.2.5"))
    assert (ok.result, ok.name) == ("pass", "mail.good.test")
    assert ok.auth_result() == "iprev=pass (mail.good.test) policy.iprev=192.0.2.5"
    assert run(server, lambda r: check_iprev(r, "192.0.2.8")).result == "pass"
    liar = run(server, lambda r: check_iprev(r, "192.0.2.6"))
    assert liar.result == "fail" and "liar.good.test" in liar.reason
    assert run(server, lambda r: check_iprev(r, "192.0.2.7")).result == "permerror"
    assert run(server, lambda r: check_iprev(r, "192.0.2.9")).result == "temperror"
    assert run(server, lambda r: check_iprev(r, "::ffff:192.0.2.5")).result == "pass"
    v6 = run(server, lambda r: check_iprev(r, "2001:db8::5"))
    assert (v6.result, v6.name) == ("pass", "mail6.good.test")
    assert run(server, lambda r: check_iprev(r, "not-an-ip")).result == "permerror"
