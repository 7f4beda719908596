"""TLSA records against a TLS peer's certificates, for SMTP (sans-IO: bytes in, a verdict out).

- Which records are usable (RFC 7672 §3.1, RFC 6698 §2.1, RFC 7671 §4.1): certificate usages
  DANE-TA(2) and DANE-EE(3) only; PKIX-TA(0) and PKIX-EE(1) are unusable in SMTP (RFC 7672
  §3.1.3: an MTA has no common set of trusted CAs); selectors Cert(0) and SPKI(1); matching
  types Full(0), SHA2-256(1), SHA2-512(2). A record with any other value, or a digest of the
  wrong length (it can never match), is unusable and ignored (RFC 7671 §4.1). Digest agility
  (RFC 7671 §9): of the records with one usage and selector, only the strongest digest
  (SHA2-512 over SHA2-256) is used; Full(0) records are always used.
- DANE-EE(3) (RFC 7672 §3.1.1, RFC 7671 §5.1): the leaf certificate's DER (Cert) or its
  SubjectPublicKeyInfo (SPKI), or their digest, equals the record's data. No name check and no
  validity dates: the DNS binds the key to the host.
- DANE-TA(2) (RFC 7672 §3.1.2, RFC 7671 §5.2): a certificate the server presented other than
  the leaf matches the record and is the trust anchor of a PKIX path from the leaf (RFC 5280
  §6: signatures, validity dates, CA constraints of the intermediates between them;
  `cryptography.x509.verification`), and the leaf's names match one of the reference
  identifiers (RFC 7672 §3.2.2: the TLSA base domain, the MX host name; §3.2.3: the DNS names
  of subjectAltName, else the subject's CN, a "*" only as the whole left-most label, matching
  one label). A DANE-TA record can only match a trust anchor the server sends (RFC 7672
  §3.1.2 requires servers to send it): Python's `ssl` before 3.13 gives only the leaf, so
  there DANE-TA never matches (see `postkeep.queue.dane`).

The SPKI compared is cryptography's DER encoding of the leaf's public key (DER has one
encoding per key; an EC key stored with a compressed point is compared uncompressed).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from postkeep.dns.results import TLSA

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
CERT, SPKI = 0, 1
FULL, SHA2_256, SHA2_512 = 0, 1, 2

_DIGEST_SIZE = {SHA2_256: 32, SHA2_512: 64}


def usable(records: Iterable[TLSA]) -> tuple[TLSA, ...]:
    """The records SMTP may use, in their order (see the module docstring)."""
    known = [r for r in records
             if r.usage in (DANE_TA, DANE_EE) and r.selector in (CERT, SPKI)
             and (len(r.data) > 0 if r.mtype == FULL
                  else len(r.data) == _DIGEST_SIZE.get(r.mtype))]
    strongest: dict[tuple[int, int], int] = {}
    for r in known:
        key = (r.usage, r.selector)
        strongest[key] = max(strongest.get(key, FULL), r.mtype)
    return tuple(r for r in known if r.mtype in (FULL, strongest[(r.usage, r.selector)]))


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == CERT:
        return der
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _associated(data: bytes, mtype: int) -> bytes:
    if mtype == SHA2_256:
        return hashlib.sha256(data).digest()
    if mtype == SHA2_512:
        return hashlib.sha512(data).digest()
    return data


def matches(record: TLSA, cert: x509.Certificate, der: bytes) -> bool:
    """Whether `record`'s data is `cert`'s (DER `der`) by its selector and matching type."""
    try:
        selected = _selected(cert, der, record.selector)
    except (ValueError, TypeError):  # a public key cryptography cannot load
        return False
    return hmac.compare_digest(_associated(selected, record.mtype), record.data)


def name_matches(presented: str, reference: str) -> bool:
    """RFC 7672 §3.2.3 (RFC 6125 §6.4.3): equal ignoring case, or "*.rest" where the
    reference is one label followed by "rest"."""
    presented = presented.lower().rstrip(".")
    reference = reference.lower().rstrip(".")
    if presented.startswith("*."):
        label, dot, rest = reference.partition(".")
        return bool(label and dot) and rest == presented[2:] and "*" not in rest
    return presented == reference


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return san.value.get_values_for_type(x509.DNSName)


def _load(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _ta_path(leaf: x509.Certificate, intermediates: list[x509.Certificate],
             anchor: x509.Certificate, now: datetime) -> str | None:
    """Why there is no PKIX path from `leaf` through `intermediates` to `anchor`, or None."""
    builder = (verification.PolicyBuilder().store(verification.Store([anchor])).time(now)
               .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                   ee_policy=verification.ExtensionPolicy.permit_all()))
    try:
        builder.build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as e:
        return str(e)
    return None


def check(records: Sequence[TLSA], chain: Sequence[bytes], reference_names: Sequence[str],
          now: datetime) -> str | None:
    """None when one of the usable `records` authenticates the peer whose certificates
    (DER, the leaf first, as sent) are `chain`; else why not, in one line.
    `reference_names` are DANE-TA's names for the leaf (RFC 7672 §3.2.2); `now` (aware, UTC)
    is the time the path's validity dates are checked at."""
    records = usable(records)
    if not records:
        return "no usable TLSA record"
    if not chain:
        return "the peer sent no certificate"
    certs = [_load(der) for der in chain]
    leaf = certs[0]
    if leaf is None:
        return "the peer's certificate cannot be parsed"
    if any(r.usage == DANE_EE and matches(r, leaf, chain[0]) for r in records):
        return None
    ta_records = [r for r in records if r.usage == DANE_TA]
    problems: list[str] = []
    for index in range(1, len(chain)):
        anchor = certs[index]
        if anchor is None or not any(matches(r, anchor, chain[index]) for r in ta_records):
            continue
        intermediates = [c for c in certs[1:index] if c is not None]
        problem = _ta_path(leaf, intermediates, anchor, now)
        if problem is None:
            presented = _names(leaf)
            if any(name_matches(p, ref) for p in presented for ref in reference_names):
                return None
            problem = (f"the certificate names {', '.join(presented) or 'nothing'}, not "
                       f"{' or '.join(reference_names)}")
        problems.append(f"DANE-TA anchor {anchor.subject.rfc4514_string()}: {problem}")
    if problems:
        return "; ".join(problems)
    kinds = sorted({"DANE-EE" if r.usage == DANE_EE else "DANE-TA" for r in records})
    if len(chain) == 1 and ta_records:
        return (f"no {' or '.join(kinds)} record matches (DANE-TA needs the server's chain, "
                "and only its leaf is known)")
    return f"no {' or '.join(kinds)} record matches the certificates"
