"""TLSA matching (`postkeep.queue.tlsa`) against certificates made here with cryptography: a
root CA, an intermediate and leaves (RFC 7672 §3.1, RFC 6698 §2.1, RFC 7671 §5, §9)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from postkeep.dns.results import TLSA
from postkeep.queue.tlsa import check, name_matches, usable

NOW = datetime(2030, 6, 1, tzinfo=UTC)
MX = "mx.example.test"


@dataclass(frozen=True)
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def make(cn: str, issuer: Cert | None = None, *, ca: bool = False, sans: tuple[str, ...] = (),
         days: tuple[int, int] = (-1, 30)) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.cert.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + timedelta(days=days[0]))
               .not_valid_after(NOW + timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False), critical=True)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return Cert(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


ROOT = make("Test Root", ca=True)
INTER = make("Test Intermediate", ROOT, ca=True)
LEAF = make(MX, INTER, sans=(MX,))
OTHER = make("other.example.test", INTER, sans=("other.example.test",))
CHAIN = (LEAF.der, INTER.der, ROOT.der)


def record(usage: int, selector: int, mtype: int, cert: Cert) -> TLSA:
    data = cert.der if selector == 0 else cert.spki
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TLSA(usage, selector, mtype, data)


def verdict(records: list[TLSA], chain: tuple[bytes, ...] = CHAIN,
            names: tuple[str, ...] = (MX,), now: datetime = NOW) -> str | None:
    return check(records, chain, names, now)


COMBINATIONS = [(s, m) for s in (0, 1) for m in (0, 1, 2)]


@pytest.mark.parametrize(("selector", "mtype"), COMBINATIONS)
def test_dane_ee_matches_the_leaf(selector: int, mtype: int) -> None:
    assert verdict([record(3, selector, mtype, LEAF)]) is None
    assert verdict([record(3, selector, mtype, LEAF)], chain=(LEAF.der,)) is None
    problem = verdict([record(3, selector, mtype, OTHER)])
    assert problem == "no DANE-EE record matches the certificates"


@pytest.mark.parametrize(("selector", "mtype"), COMBINATIONS)
def test_dane_ee_never_matches_another_certificate_of_the_chain(selector: int,
                                                                mtype: int) -> None:
    assert verdict([record(3, selector, mtype, INTER)]) is not None
    assert verdict([record(3, selector, mtype, ROOT)]) is not None


@pytest.mark.parametrize("anchor", [ROOT, INTER], ids=["root", "intermediate"])
@pytest.mark.parametrize(("selector", "mtype"), COMBINATIONS)
def test_dane_ta_matches_an_anchor_of_the_chain(selector: int, mtype: int, anchor: Cert) -> None:
    assert verdict([record(2, selector, mtype, anchor)]) is None
    problem = verdict([record(2, selector, mtype, make("Elsewhere", ca=True))])
    assert problem is not None and "no DANE-TA record matches" in problem


def test_dane_ta_with_the_anchor_left_out_of_the_chain() -> None:
    # The intermediate is sent, the root (the TLSA's) is not: RFC 7672 §3.1.2 says servers
    # must send it; the bare root's key is not looked for elsewhere.
    assert verdict([record(2, 1, 1, ROOT)], chain=(LEAF.der, INTER.der)) is not None


def test_dane_ta_with_the_leaf_only() -> None:
    # What Python 3.11 and 3.12 give (`ssl` has no chain before 3.13).
    problem = verdict([record(2, 0, 1, INTER)], chain=(LEAF.der,))
    assert problem == ("no DANE-TA record matches (DANE-TA needs the server's chain, and only "
                       "its leaf is known)")


def test_dane_ta_never_matches_the_leaf() -> None:
    self_signed = make(MX, sans=(MX,), ca=True)
    assert verdict([record(2, 0, 1, self_signed)], chain=(self_signed.der,)) is not None


def test_dane_ta_checks_the_name() -> None:
    problem = verdict([record(2, 1, 1, INTER)], names=("mx.elsewhere.test",))
    assert problem is not None and "not mx.elsewhere.test" in problem
    # Any one of the reference identifiers will do (the base domain, the MX host name).
    assert verdict([record(2, 1, 1, INTER)], names=("mx.elsewhere.test", MX)) is None


def test_dane_ta_wildcards_and_common_name() -> None:
    wild = make("ignored", INTER, sans=("*.example.test",))
    ta = [record(2, 0, 1, INTER)]
    assert verdict(ta, chain=(wild.der, INTER.der)) is None
    assert verdict(ta, chain=(wild.der, INTER.der), names=("a.mx.example.test",)) is not None
    assert verdict(ta, chain=(wild.der, INTER.der), names=("example.test",)) is not None
    cn_only = make(MX, INTER)
    assert verdict(ta, chain=(cn_only.der, INTER.der)) is None
    # With subjectAltName DNS names present, the CN is not looked at (RFC 6125 §6.4.4).
    cn_other = make(MX, INTER, sans=("other.example.test",))
    assert verdict(ta, chain=(cn_other.der, INTER.der)) is not None


def test_dane_ta_checks_validity_and_signatures() -> None:
    expired = make(MX, INTER, sans=(MX,), days=(-60, -1))
    problem = verdict([record(2, 1, 1, INTER)], chain=(expired.der, INTER.der))
    assert problem is not None and problem.startswith("DANE-TA anchor CN=Test Intermediate")
    # A leaf the anchor did not issue, sent with the anchor.
    stray = make(MX, make("Another CA", ca=True), sans=(MX,))
    assert verdict([record(2, 1, 1, INTER)], chain=(stray.der, INTER.der)) is not None
    # An intermediate that is no CA cannot issue.
    not_ca = make("Not a CA", ROOT)
    under = make(MX, not_ca, sans=(MX,))
    assert verdict([record(2, 1, 1, ROOT)], chain=(under.der, not_ca.der, ROOT.der)) is not None


def test_dane_ee_ignores_names_and_dates() -> None:
    expired = make("wrong.name.test", INTER, sans=("wrong.name.test",), days=(-60, -1))
    assert verdict([record(3, 1, 1, expired)], chain=(expired.der,)) is None


def test_either_kind_matching_is_enough() -> None:
    records = [record(3, 1, 1, OTHER), record(2, 1, 1, INTER)]
    assert verdict(records) is None
    records = [record(3, 1, 1, LEAF), record(2, 1, 1, make("Elsewhere", ca=True))]
    assert verdict(records) is None
    problem = verdict([record(3, 1, 1, OTHER), record(2, 1, 1, make("X", ca=True))])
    assert problem == "no DANE-EE or DANE-TA record matches the certificates"


@pytest.mark.parametrize("params", [(0, 1, 1), (1, 1, 1), (0, 0, 0), (1, 0, 2)],
                         ids=["PKIX-TA", "PKIX-EE", "PKIX-TA-full", "PKIX-EE-sha512"])
def test_pkix_usages_are_unusable(params: tuple[int, int, int]) -> None:
    usage, selector, mtype = params
    matching = record(usage, selector, mtype, LEAF if usage == 1 else ROOT)
    assert usable([matching]) == ()
    assert verdict([matching]) == "no usable TLSA record"


def test_unknown_and_malformed_records_are_unusable() -> None:
    good = record(3, 1, 1, LEAF)
    bad = [
        TLSA(4, 1, 1, good.data),  # unknown usage
        TLSA(3, 2, 1, good.data),  # unknown selector
        TLSA(3, 1, 3, good.data),  # unknown matching type
        TLSA(3, 1, 1, good.data[:31]),  # a SHA-256 digest of 31 octets
        TLSA(3, 1, 2, good.data),  # a SHA-512 digest of 32 octets
        TLSA(3, 0, 0, b""),  # nothing to compare
        TLSA(255, 1, 1, good.data),  # private use (RFC 6698 §7.2)
    ]
    assert usable(bad) == ()
    assert usable([*bad, good]) == (good,)
    assert verdict(bad) == "no usable TLSA record"
    assert verdict([*bad, good]) is None


def test_digest_agility_uses_the_strongest_digest() -> None:
    # RFC 7671 §9: of the records of one usage and selector, only SHA2-512 ones once there is
    # one; the SHA2-256 record (matching) is then ignored.
    sha256 = record(3, 1, 1, LEAF)
    sha512_other = record(3, 1, 2, OTHER)
    assert usable([sha256, sha512_other]) == (sha512_other,)
    assert verdict([sha256, sha512_other]) is not None
    assert verdict([record(3, 1, 1, OTHER), record(3, 1, 2, LEAF)]) is None
    # Full(0) records are no digest and stay; another selector is another set.
    full = record(3, 0, 0, LEAF)
    cert256 = record(3, 0, 1, LEAF)
    assert usable([full, cert256, sha512_other]) == (full, cert256, sha512_other)
    assert verdict([full, sha512_other]) is None
    assert verdict([cert256, sha512_other]) is None


def test_what_the_peer_sent_is_unusable() -> None:
    assert verdict([record(3, 1, 1, LEAF)], chain=()) == "the peer sent no certificate"
    assert verdict([record(3, 0, 0, LEAF)], chain=(b"\x30\x03\x02\x01\x00",)) == (
        "the peer's certificate cannot be parsed")


@pytest.mark.parametrize(("presented", "reference", "expected"), [
    ("mx.example.test", "MX.Example.Test.", True),
    ("mx.example.test", "mx2.example.test", False),
    ("*.example.test", "mx.example.test", True),
    ("*.example.test", "a.b.example.test", False),
    ("*.example.test", "example.test", False),
    ("*.example.test", ".example.test", False),
    ("m*.example.test", "mx.example.test", False),
    ("*.*.test", "a.b.test", False),
])
def test_name_matches(presented: str, reference: str, expected: bool) -> None:
    assert name_matches(presented, reference) is expected
