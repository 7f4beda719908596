"""The AD bit through postkeep.dns: Unbound on loopback validating zones NSD serves, signed by
ldns-signzone (tests/dnsserver.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postkeep.config import DnsConfig
from postkeep.dns import Answer, DnsResolver, NoData, NxDomain, TempFail
from tests.dnsserver import AuthServer, Resolver, corrupt_rrsig, sign_zone, zone_text


@pytest.fixture
def zones(dns_server: AuthServer, validating_resolver: Resolver, tmp_path: Path) -> Resolver:
    """signed.test (trusted, one RRset with a broken signature) and plain.test (unsigned)."""
    signed = sign_zone(tmp_path, "signed.test", zone_text("signed.test", [
        "@ MX 10 mx", "mx A 192.0.2.1", "_25._tcp.mx TLSA 3 1 1 " + "cd" * 32,
        "tampered A 192.0.2.66",
    ]))
    dns_server.add_zone_text("signed.test",
                             corrupt_rrsig(signed.text, "tampered.signed.test", "A"))
    dns_server.add_zone("plain.test", ["@ MX 10 mx", "mx A 192.0.2.2"])
    validating_resolver.trust(signed.trust_anchor)
    return validating_resolver


def lookup(resolver: Resolver, name: str, rdtype: str, *, trust_ad: bool) -> object:
    dns = DnsResolver(DnsConfig(nameservers=[resolver.nameserver], timeout=5.0, attempts=1,
                                trust_ad=trust_ad))
    return asyncio.run(dns.lookup(name, rdtype))


def test_signed_answers_are_authenticated(zones: Resolver) -> None:
    for name, rdtype in (("signed.test", "MX"), ("mx.signed.test", "A"),
                         ("_25._tcp.mx.signed.test", "TLSA")):
        result = lookup(zones, name, rdtype, trust_ad=True)
        assert isinstance(result, Answer) and result.authenticated, (name, result)


def test_signed_denials_are_authenticated(zones: Resolver) -> None:
    nx = lookup(zones, "nothing.signed.test", "A", trust_ad=True)
    assert isinstance(nx, NxDomain) and nx.authenticated
    nodata = lookup(zones, "_25._tcp.mx.signed.test", "A", trust_ad=True)
    assert isinstance(nodata, NoData) and nodata.authenticated


def test_unsigned_answers_are_not(zones: Resolver) -> None:
    result = lookup(zones, "plain.test", "MX", trust_ad=True)
    assert isinstance(result, Answer) and not result.authenticated
    nx = lookup(zones, "nothing.plain.test", "A", trust_ad=True)
    assert isinstance(nx, NxDomain) and not nx.authenticated


def test_ad_is_ignored_unless_trusted(zones: Resolver) -> None:
    result = lookup(zones, "signed.test", "MX", trust_ad=False)
    assert isinstance(result, Answer) and not result.authenticated


def test_bogus_data_is_a_temporary_failure(zones: Resolver) -> None:
    result = lookup(zones, "tampered.signed.test", "A", trust_ad=True)
    assert isinstance(result, TempFail) and "SERVFAIL" in result.reason
    # The same name's other data, correctly signed, still validates.
    nodata = lookup(zones, "tampered.signed.test", "AAAA", trust_ad=True)
    assert isinstance(nodata, NoData) and nodata.authenticated
