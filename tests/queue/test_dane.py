"""DANE's lookup (`postkeep.queue.dane.dane_for`) through real DNSSEC: zones signed with
ldns-signzone, served by NSD and validated by Unbound (tests/dnsserver.py), asked by postkeep's
`DnsResolver` trusting the AD bit; and its check over the wire, the outbound client against
postkeep's own MX (the harness) whose certificate the TLSA records name (RFC 7672 §2.2, §3.1)."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.dns.results import TLSA
from postkeep.queue.dane import DanePolicy, dane_for
from postkeep.queue.outcome import Outcome
from postkeep.smtp.client.protocol import Envelope, Recipient, Stage
from postkeep.smtp.client.session import ClientSession, SessionFailure, connect
from tests.conftest import HarnessFactory
from tests.dnsserver import AuthServer, Resolver, corrupt_rrsig, sign_zone, zone_text
from tests.harness import Harness

DIGEST = "ab" * 32
DOMAIN = "example.test"


def dns_resolver(resolver: Resolver, *, trust_ad: bool = True) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=[resolver.nameserver], timeout=5.0, attempts=1,
                                 trust_ad=trust_ad))


def lookup(resolver: Resolver, host: str, port: int = 25, *, trust_ad: bool = True
           ) -> DanePolicy | Outcome | None:
    async def go() -> DanePolicy | Outcome | None:
        return await dane_for(dns_resolver(resolver, trust_ad=trust_ad), host, port)

    return asyncio.run(go())


def serve_signed(dns_server: AuthServer, resolver: Resolver, tmp_path: Path, origin: str,
                 records: list[str], *, bogus: tuple[str, str] | None = None,
                 trusted: bool = True) -> None:
    signed = sign_zone(tmp_path / origin, origin, zone_text(origin, records))
    text = corrupt_rrsig(signed.text, *bogus) if bogus else signed.text
    dns_server.add_zone_text(origin, text)
    if trusted:
        resolver.trust(signed.trust_anchor)


@pytest.fixture
def zones(dns_server: AuthServer, validating_resolver: Resolver, tmp_path: Path) -> Resolver:
    """dane.test: signed and trusted, one TLSA RRset with a broken signature; plain.test:
    unsigned; untrusted.test: signed, but no trust anchor leads to it."""
    serve_signed(dns_server, validating_resolver, tmp_path, "dane.test", [
        "mx A 192.0.2.1",
        "mx AAAA 2001:db8::1",
        f"_25._tcp.mx TLSA 3 1 1 {DIGEST}",
        f"_25._tcp.mx TLSA 0 0 1 {DIGEST}",
        f"_2525._tcp.mx TLSA 2 0 1 {DIGEST}",
        "nodane A 192.0.2.2",
        "nodata A 192.0.2.3",
        '_25._tcp.nodata TXT "not a TLSA record"',
        "unusable A 192.0.2.4",
        f"_25._tcp.unusable TLSA 1 1 1 {DIGEST}",
        f"_25._tcp.unusable TLSA 3 1 7 {DIGEST}",
        "tampered A 192.0.2.5",
        f"_25._tcp.tampered TLSA 3 1 1 {DIGEST}",
        "alias CNAME target",
        "target A 192.0.2.6",
        f"_25._tcp.target TLSA 3 1 2 {'cd' * 64}",
        f"_25._tcp.alias TLSA 3 1 1 {'ef' * 32}",
        "alias2 CNAME target2",
        "target2 A 192.0.2.7",
        f"_25._tcp.alias2 TLSA 3 1 1 {'ef' * 32}",
        "insecure-tlsa A 192.0.2.8",
        "_25._tcp.insecure-tlsa CNAME _25._tcp.mx.plain.test.",
        "outside A 192.0.2.9",
        "outside AAAA 2001:db8::9",
        "into-plain CNAME mx.plain.test.",
    ], bogus=("_25._tcp.tampered.dane.test", "TLSA"))
    dns_server.add_zone("plain.test", ["mx A 192.0.2.10", f"_25._tcp.mx TLSA 3 1 1 {DIGEST}"])
    serve_signed(dns_server, validating_resolver, tmp_path, "untrusted.test", [
        "mx A 192.0.2.11", f"_25._tcp.mx TLSA 3 1 1 {DIGEST}"], trusted=False)
    return validating_resolver


def test_authenticated_tlsa_records_make_a_policy(zones: Resolver) -> None:
    policy = lookup(zones, "mx.dane.test")
    assert isinstance(policy, DanePolicy)
    # The PKIX-TA record is unusable in SMTP (RFC 7672 §3.1.3) and left out.
    assert policy.records == (TLSA(3, 1, 1, bytes.fromhex(DIGEST)),)
    assert policy.sni == policy.base_domain == policy.host == "mx.dane.test"
    assert policy.names == ("mx.dane.test",)
    assert policy.authenticates and policy.peer_check == policy.check
    # The port is part of the name (RFC 6698 §3).
    other_port = lookup(zones, "mx.dane.test", 2525)
    assert isinstance(other_port, DanePolicy)
    assert other_port.records == (TLSA(2, 0, 1, bytes.fromhex(DIGEST)),)


def test_only_unusable_records_still_require_tls(zones: Resolver) -> None:
    policy = lookup(zones, "unusable.dane.test")
    assert isinstance(policy, DanePolicy)
    assert policy.records == () and not policy.authenticates and policy.peer_check is None


def test_secure_denial_means_no_dane(zones: Resolver) -> None:
    assert lookup(zones, "nodane.dane.test") is None  # NXDOMAIN, authenticated
    assert lookup(zones, "nodata.dane.test") is None  # NODATA, authenticated


def test_bogus_tlsa_records_are_a_temporary_failure(zones: Resolver) -> None:
    outcome = lookup(zones, "tampered.dane.test")
    assert isinstance(outcome, Outcome) and not outcome.permanent
    assert outcome.enhanced == "4.4.3" and "_25._tcp.tampered.dane.test" in outcome.text
    assert "SERVFAIL" in outcome.text


def test_insecure_hosts_have_no_dane(zones: Resolver, dns_server: AuthServer) -> None:
    tlsa_asked = dns_server.query_count("TLSA")
    assert lookup(zones, "mx.plain.test") is None  # an unsigned zone
    assert lookup(zones, "mx.untrusted.test") is None  # signed, no trust anchor
    assert lookup(zones, "into-plain.dane.test") is None  # a CNAME out to an unsigned zone
    # The address records were insecure: no TLSA lookup was made at all.
    assert dns_server.query_count("TLSA") == tlsa_asked
    assert isinstance(lookup(zones, "mx.dane.test"), DanePolicy)  # a secure host's is made
    assert dns_server.query_count("TLSA") > tlsa_asked
    # Without trust in the AD bit nothing is authenticated.
    assert lookup(zones, "mx.dane.test", trust_ad=False) is None


def test_an_insecure_tlsa_answer_means_no_dane(zones: Resolver) -> None:
    # The host's address is signed, its TLSA name is a CNAME into an unsigned zone.
    assert lookup(zones, "insecure-tlsa.dane.test") is None


def test_cname_expansion_gives_the_base_domain(zones: Resolver) -> None:
    # RFC 7672 §2.2.3: TLSA records at the expanded name first; SNI is that name.
    policy = lookup(zones, "alias.dane.test")
    assert isinstance(policy, DanePolicy)
    assert policy.base_domain == policy.sni == "target.dane.test"
    assert policy.host == "alias.dane.test"
    assert policy.names == ("target.dane.test", "alias.dane.test")
    assert policy.records == (TLSA(3, 1, 2, bytes.fromhex("cd" * 64)),)
    # None at the expanded name: those of the MX host name itself.
    policy = lookup(zones, "alias2.dane.test")
    assert isinstance(policy, DanePolicy)
    assert policy.base_domain == policy.sni == "alias2.dane.test"


# -- over the wire ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h(harness_factory: HarnessFactory) -> Harness:
    harness = harness_factory()
    harness.add_domain(DOMAIN)
    return harness


def spki_sha256(h: Harness) -> str:
    cert = x509.load_pem_x509_certificate(h.cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def cert_sha256(h: Harness) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(h.cert_file.read_text())).hexdigest()


@pytest.fixture
def mx_zone(h: Harness, dns_server: AuthServer, validating_resolver: Resolver,
            tmp_path: Path) -> Resolver:
    """mx.wire.test names the harness's certificate (3 1 1), bad.wire.test another key, and
    ta.wire.test has the harness's certificate as a DANE-TA (2 0 1); all at 127.0.0.1 and
    the harness MX's port."""
    port = h.smtp_port
    serve_signed(dns_server, validating_resolver, tmp_path, "wire.test", [
        "mx A 127.0.0.1", f"_{port}._tcp.mx TLSA 3 1 1 {spki_sha256(h)}",
        "bad A 127.0.0.1", f"_{port}._tcp.bad TLSA 3 1 1 {DIGEST}",
        "ta A 127.0.0.1", f"_{port}._tcp.ta TLSA 2 0 1 {cert_sha256(h)}",
    ])
    return validating_resolver


def unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_with_dane(h: Harness, resolver: Resolver, host: str
                         ) -> ClientSession | SessionFailure:
    policy = await dane_for(dns_resolver(resolver), host, h.smtp_port)
    assert isinstance(policy, DanePolicy) and policy.authenticates, policy
    return await connect("127.0.0.1", h.smtp_port, helo_name="out.example.net",
                         tls_context=unverified(), tls_verify="none", tls_name=policy.sni,
                         starttls="required", peer_check=policy.peer_check)


async def one_chunk(text: bytes) -> AsyncIterator[bytes]:
    yield text


def test_matching_tlsa_authenticates_the_session(h: Harness, mx_zone: Resolver) -> None:
    user = h.new_user(DOMAIN)
    text = b"From: a@remote.test\r\nSubject: DANE\r\n\r\nover DANE-EE\r\n"

    async def go() -> None:
        session = await open_with_dane(h, mx_zone, "mx.wire.test")
        assert isinstance(session, ClientSession), session
        assert session.tls is not None
        assert session.tls.authenticated and not session.tls.verified
        result = await session.send(Envelope("a@remote.test", (Recipient(user),)),
                                    one_chunk(text))
        assert [r.code for r in result.recipients] == [250], result
        await session.quit()

    asyncio.run(go())
    assert len(h.messages(user)) == 1


def test_mismatching_tlsa_ends_the_session(h: Harness, mx_zone: Resolver) -> None:
    failure = asyncio.run(open_with_dane(h, mx_zone, "bad.wire.test"))
    assert isinstance(failure, SessionFailure), failure
    assert failure.stage is Stage.TLS
    assert (failure.reply.code, failure.reply.status) == (451, "4.7.5")
    assert "DANE (TLSA at bad.wire.test): no DANE-EE record matches" in failure.reply.text


def test_dane_ta_of_a_lone_leaf_does_not_match(h: Harness, mx_zone: Resolver) -> None:
    # The harness sends its self-signed certificate alone: a DANE-TA record can match only a
    # certificate of the chain other than the leaf (and Python 3.11 sees the leaf only).
    failure = asyncio.run(open_with_dane(h, mx_zone, "ta.wire.test"))
    assert isinstance(failure, SessionFailure), failure
    assert failure.reply.status == "4.7.5"
    assert "DANE-TA needs the server's chain" in failure.reply.text
