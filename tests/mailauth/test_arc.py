"""ARC (RFC 8617): chains sealed by dkimpy (`dkim.arc_sign`, an independent implementation)
validated by `mailauth.arc` (sans-IO, with the key records as text) and by `arc_check` (keys
served by NSD, fetched through `postkeep.dns.DnsResolver`); broken chains; our own seal
checked by dkimpy's `dkim.arc_verify`; the AAR parser; the trusted-sealer policy."""

from __future__ import annotations

import asyncio
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.mailauth.arc.headers import ArcStructureError, parse_aar
from postkeep.mailauth.arc.seal import ArcSealer
from postkeep.mailauth.arc.verify import ArcResult, ChainVerifier
from postkeep.mailauth.arc_check import check_arc
from postkeep.mailauth.dkim.canon import body_hash, split_message
from postkeep.mailauth.dkim.keys import SigningKey, dns_record, generate_key, record_name, zone_line
from postkeep.mailauth.dkim.verify import KeyLookup
from postkeep.mailauth.dmarc import DmarcVerdict, Policy
from postkeep.policy.trust import arc_vouches, dmarc_outcome
from tests.dnsserver import AuthServer

ORIGINAL = (b"From: Alice <alice@bank.test>\r\nTo: list@lists.test\r\nSubject: minutes\r\n"
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@bank.test>\r\n\r\n"
            b"The minutes are attached.\r\n")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    k = generate_key("rsa", bits=2048)
    assert isinstance(k, rsa.RSAPrivateKey)
    return k


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def dkimpy_seal(message: bytes, key: rsa.RSAPrivateKey, domain: str, results: str) -> bytes:
    """`message` as the ADMD `domain` passes it on: its Authentication-Results (`results`),
    then dkimpy's ARC Set for it (selector s1)."""
    received = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    fields = dkim.arc_sign(received, b"s1", domain.encode(), pem(key), domain.encode())
    assert fields, "dkimpy added no ARC Set"
    return b"".join(fields) + received


def records(key: SigningKey, *domains: str) -> dict[str, KeyLookup]:
    return {record_name("s1", d): [dns_record(key).encode()] for d in domains}


def validate(message: bytes, keys: dict[str, KeyLookup]) -> ArcResult:
    header_block, body = split_message(message)
    verifier = ChainVerifier(header_block)
    for i in range(0, len(body), 7):  # the body in small pieces
        verifier.update(body[i:i + 7])
    return verifier.result(keys)


def one_hop(key: rsa.RSAPrivateKey) -> bytes:
    return dkimpy_seal(ORIGINAL, key, "lists.test",
                       "spf=pass smtp.mailfrom=alice@bank.test; dkim=pass header.d=bank.test")


def two_hops(key: rsa.RSAPrivateKey) -> bytes:
    return dkimpy_seal(one_hop(key), key, "relay.test", "arc=pass")


def test_no_chain_is_none(key: rsa.RSAPrivateKey) -> None:
    assert validate(ORIGINAL, {}) == ArcResult("none")
    assert ArcResult("none").auth_result("192.0.2.1") == "arc=none"


def test_one_hop_passes(key: rsa.RSAPrivateKey) -> None:
    found = validate(one_hop(key), records(key, "lists.test"))
    assert (found.result, found.instances, found.oldest_pass, found.sealers) == (
        "pass", 1, 0, ("lists.test",))
    assert found.newest is not None and found.newest.authserv_id == "lists.test"
    assert [(r.method, r.result) for r in found.newest.results] == [("spf", "pass"),
                                                                    ("dkim", "pass")]
    assert found.auth_result("192.0.2.7") == (
        "arc=pass (i=1 d=lists.test) header.oldest-pass=0 smtp.remote-ip=192.0.2.7")


def test_two_hops_pass(key: rsa.RSAPrivateKey) -> None:
    found = validate(two_hops(key), records(key, "lists.test", "relay.test"))
    assert (found.result, found.instances, found.oldest_pass) == ("pass", 2, 0)
    assert found.sealers == ("lists.test", "relay.test")


def test_a_body_changed_after_the_first_hop_gives_oldest_pass(key: rsa.RSAPrivateKey) -> None:
    """The second hop adds a footer, then seals: AMS 1 fails, AMS 2 passes, the chain passes
    with oldest-pass 2 (§5.2 step 6)."""
    footered = one_hop(key) + b"-- \r\nTo unsubscribe, write to list-off@lists.test\r\n"
    found = validate(dkimpy_seal(footered, key, "relay.test", "arc=pass"),
                     records(key, "lists.test", "relay.test"))
    assert (found.result, found.oldest_pass) == ("pass", 2)


def test_a_tampered_body_fails(key: rsa.RSAPrivateKey) -> None:
    found = validate(two_hops(key).replace(b"minutes are", b"minutes were"),
                     records(key, "lists.test", "relay.test"))
    assert found.result == "fail"
    assert found.reason == "ARC-Message-Signature i=2: body hash mismatch (bh=)"
    assert "arc=fail (i=2 ARC-Message-Signature i=2: body hash mismatch" in found.auth_result()


def test_a_tampered_seal_fails(key: rsa.RSAPrivateKey) -> None:
    message = two_hops(key)
    # the first AAR says dkim=fail instead: AMS 2 does not cover it, the seals do
    tampered = message.replace(b"i=1; lists.test;\r\n spf=pass", b"i=1; lists.test;\r\n spf=fail")
    assert tampered != message
    found = validate(tampered, records(key, "lists.test", "relay.test"))
    assert (found.result, found.reason) == ("fail", "ARC-Seal i=2: signature mismatch (b=)")
    # the newest seal's own t= changed
    seal_t = re.search(rb"ARC-Seal: i=2;[^\r]*t=(\d+)", message)
    assert seal_t is not None
    changed = message.replace(seal_t[0], seal_t[0][:-1] + b"0" if not seal_t[0].endswith(b"0")
                              else seal_t[0][:-1] + b"1")
    found = validate(changed, records(key, "lists.test", "relay.test"))
    assert (found.result, found.reason) == ("fail", "ARC-Seal i=2: signature mismatch (b=)")


def test_a_key_from_another_signer_fails(key: rsa.RSAPrivateKey) -> None:
    other = generate_key("rsa", bits=2048)
    found = validate(one_hop(key), records(other, "lists.test"))
    assert (found.result, found.reason) == (
        "fail", "ARC-Message-Signature i=1: signature mismatch (b=)")


def _fields(message: bytes, name: bytes, instance: int) -> bytes:
    match = re.search(rb"(?m)^" + name + rb": i=" + str(instance).encode()
                      + rb";.*?\r\n(?![ \t])", message, re.S)
    assert match is not None
    return match[0]


@pytest.mark.parametrize("breakage, reason", [
    ("missing", "instances [2] are not 1 to 2"),
    ("duplicate", "instance 2 has not exactly one AAR, AMS and AS"),
    ("no-seal", "instance 2 has not exactly one AAR, AMS and AS"),
    ("cv-fail", "ARC-Seal i=2 says cv=fail: the chain has failed"),
])
def test_broken_structure_fails(key: rsa.RSAPrivateKey, breakage: str, reason: str) -> None:
    message = two_hops(key)
    if breakage == "missing":
        for name in (b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"):
            message = message.replace(_fields(message, name, 1), b"")
    elif breakage == "duplicate":
        ams = _fields(message, b"ARC-Message-Signature", 2)
        message = ams + message
    elif breakage == "no-seal":
        message = message.replace(_fields(message, b"ARC-Seal", 2), b"")
    else:  # a hop that found the chain broken says so: cv=fail
        message = dkimpy_seal(one_hop(key), key, "relay.test", "arc=fail")
        assert b"cv=fail" in message
    found = validate(message, records(key, "lists.test", "relay.test"))
    assert (found.result, found.reason) == ("fail", reason)


def test_cv_must_be_none_on_the_first_instance(key: rsa.RSAPrivateKey) -> None:
    message = one_hop(key).replace(b"cv=none", b"cv=pass")
    found = validate(message, records(key, "lists.test"))
    assert (found.result, found.reason) == ("fail", "ARC-Seal i=1 says cv=pass, not none")


def test_more_than_fifty_instances_fail(key: rsa.RSAPrivateKey) -> None:
    message = one_hop(key)
    found = validate(message.replace(b"i=1;", b"i=51;"), records(key, "lists.test"))
    assert found.result == "fail" and "is not an instance (1 to 50)" in found.reason


def test_our_seal_verifies_with_dkimpy(key: rsa.RSAPrivateKey) -> None:
    """ArcSealer over no chain, and over dkimpy's two hops: dkimpy's verifier passes both,
    and so does ours."""
    dns = {name.encode(): value[0] for name, value in records(
        key, "lists.test", "relay.test", "mx.test").items() if isinstance(value, list)}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return dns.get(name)

    sealer = ArcSealer("mx.test", "s1", key, "mx.test", clock=lambda: 1_700_000_000)
    for message in (ORIGINAL, two_hops(key)):
        header_block, body = split_message(message)
        status = validate(message, records(key, "lists.test", "relay.test"))
        ours = sealer.seal(header_block, body_hash(body, "relaxed"),
                           [status.auth_result("192.0.2.9"), "dmarc=fail header.from=bank.test"],
                           status.result)
        sealed = ours + message
        cv, results, why = dkim.arc_verify(sealed, dnsfunc=dnsfunc)
        assert cv == b"pass", why
        assert results[0]["instance"] == status.instances + 1
        assert b"dmarc=fail header.from=bank.test" in results[0]["aar-value"]
        again = validate(sealed, records(key, "lists.test", "relay.test", "mx.test"))
        assert (again.result, again.instances) == ("pass", status.instances + 1)


def test_no_seal_on_an_ended_chain(key: rsa.RSAPrivateKey) -> None:
    failed = dkimpy_seal(one_hop(key), key, "relay.test", "arc=fail")
    header_block, body = split_message(failed)
    sealer = ArcSealer("mx.test", "s1", key, "mx.test")
    assert sealer.seal(header_block, body_hash(body, "relaxed"), ["arc=fail"], "fail") == b""


def test_aar_parser() -> None:
    aar = parse_aar(b'ARC-Authentication-Results: i=3; lists.test (list server);\r\n'
                    b' dkim=pass (good; signature) header.d=bank.test header.s="s;1";\r\n'
                    b'\tdmarc=pass header.from=Bank.Test; none\r\n')
    assert (aar.instance, aar.authserv_id) == (3, "lists.test")
    assert [(r.method, r.result, r.properties) for r in aar.results] == [
        ("dkim", "pass", {"header.d": "bank.test", "header.s": "s;1"}),
        ("dmarc", "pass", {"header.from": "Bank.Test"})]
    for bad in (b"ARC-Authentication-Results: lists.test; dkim=pass\r\n",
                b"ARC-Authentication-Results: i=0; lists.test\r\n",
                b"ARC-Authentication-Results: i=1;\r\n",
                b"ARC-Authentication-Results: i=1; x" + b"a" * 17000 + b"\r\n"):
        with pytest.raises(ArcStructureError):
            parse_aar(bad)


def failed_dmarc() -> DmarcVerdict:
    return DmarcVerdict("fail", "bank.test", Policy.REJECT, Policy.REJECT,
                        policy_domain="bank.test", org_domain="bank.test")


@pytest.mark.parametrize("results, trusted, vouches", [
    ("dmarc=pass header.from=bank.test", ["lists.test"], True),
    ("dkim=pass header.d=mail.bank.test", ["Lists.Test."], True),
    ("spf=pass smtp.mailfrom=bounce@bank.test", ["lists.test"], True),
    ("dkim=pass header.d=lists.test", ["lists.test"], False),  # not aligned
    ("dmarc=fail header.from=bank.test", ["lists.test"], False),
    ("dmarc=pass header.from=bank.test", ["other.test"], False),  # sealer not trusted
])
def test_trusted_sealer_override(key: rsa.RSAPrivateKey, results: str, trusted: list[str],
                                 vouches: bool) -> None:
    found = validate(dkimpy_seal(ORIGINAL, key, "lists.test", results),
                     records(key, "lists.test"))
    assert found.result == "pass"
    assert (arc_vouches(failed_dmarc(), found, trusted) is not None) is vouches
    outcome = dmarc_outcome(failed_dmarc(), "reject", "quarantine", False, found, trusted)
    if vouches:
        assert outcome.verdict is None and outcome.mailbox is None
        assert outcome.override.endswith("override=local_policy reason=arc sealer=lists.test")
    else:
        assert outcome.verdict is not None and outcome.verdict.reply.code == 550


def test_a_failed_chain_never_overrides(key: rsa.RSAPrivateKey) -> None:
    message = dkimpy_seal(ORIGINAL, key, "lists.test", "dmarc=pass header.from=bank.test")
    found = validate(message + b"appended\r\n", records(key, "lists.test"))
    assert found.result == "fail"
    assert arc_vouches(failed_dmarc(), found, ["lists.test"]) is None


def test_keys_over_dns(dns_server: AuthServer, key: rsa.RSAPrivateKey) -> None:
    """check_arc through the resolver: NSD serves lists.test's and relay.test's keys; a chain
    whose sealer has no key record fails, permanently."""
    for domain in ("lists.test", "relay.test"):
        dns_server.add_zone(domain, [zone_line("s1", domain, key)])
    dns_server.add_zone("nokey.test", ["@ A 192.0.2.1"])
    resolver = DnsResolver(DnsConfig(nameservers=[dns_server.nameserver], timeout=2.0,
                                     attempts=1))
    found = asyncio.run(check_arc(resolver, two_hops(key)))  # type: ignore[arg-type]
    assert (found.result, found.instances, found.oldest_pass) == ("pass", 2, 0)
    orphan = dkimpy_seal(ORIGINAL, key, "nokey.test", "spf=pass")
    found = asyncio.run(check_arc(resolver, orphan))  # type: ignore[arg-type]
    assert found.result == "fail"
    assert found.reason.startswith("ARC-Message-Signature i=1: no key (permanent): ")
