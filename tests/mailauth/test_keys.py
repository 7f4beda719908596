"""DKIM keys: generation, PEM, the selector's record (RFC 6376 §3.6.1, RFC 8463 §4.2) and its
zone-file line, as NSD serves it; and what the signer refuses."""

from __future__ import annotations

import base64
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from postkeep.mailauth.dkim.keys import (
    SigningKey,
    dns_record,
    generate_key,
    key_type,
    load_private_key,
    private_key_pem,
    public_key_value,
    record_name,
    zone_line,
)
from postkeep.mailauth.dkim.sign import DkimSigner
from tests.mailauth.conftest import DOMAIN, Published


def test_pem_round_trip(rsa_key: SigningKey, ed25519_key: SigningKey) -> None:
    for key in (rsa_key, ed25519_key):
        pem = private_key_pem(key)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS #8
        again = load_private_key(pem)
        assert key_type(again) == key_type(key)
        assert public_key_value(again) == public_key_value(key)


def test_public_values(rsa_key: SigningKey, ed25519_key: SigningKey) -> None:
    spki = serialization.load_der_public_key(base64.b64decode(public_key_value(rsa_key)))
    assert isinstance(spki, rsa.RSAPublicKey) and spki.key_size == 2048
    raw = base64.b64decode(public_key_value(ed25519_key))
    assert len(raw) == 32  # RFC 8463 §4.2: the raw key, no SubjectPublicKeyInfo
    assert ed25519.Ed25519PublicKey.from_public_bytes(raw) == ed25519_key.public_key()
    assert dns_record(rsa_key) == f"v=DKIM1; k=rsa; p={public_key_value(rsa_key)}"
    assert dns_record(ed25519_key) == f"v=DKIM1; k=ed25519; p={public_key_value(ed25519_key)}"


def test_zone_line_strings(rsa_key: SigningKey, ed25519_key: SigningKey) -> None:
    line = zone_line("sel", "example.com.", rsa_key)
    head, _, strings = line.partition(" IN TXT ")
    assert head == record_name("sel", "example.com") == "sel._domainkey.example.com."
    parts = strings[1:-1].split('" "')
    assert len(parts) == 2 and len(parts[0]) == 255 and "".join(parts) == dns_record(rsa_key)
    assert zone_line("e", "example.com", ed25519_key).endswith(f'"{dns_record(ed25519_key)}"')


def test_published_record_is_served_whole(published: Published) -> None:
    lookup = published.dnsfunc()
    for selector, key in published.keys.items():
        name = record_name(selector, DOMAIN).encode()
        assert lookup(name) == dns_record(key).encode()


def test_rsa_bits() -> None:
    assert generate_key("rsa", bits=1024).key_size == 1024  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="at least 1024"):
        generate_key("rsa", bits=768)
    with pytest.raises(ValueError, match="unknown"):
        generate_key("dsa")  # type: ignore[arg-type]


def test_load_refuses_other_keys() -> None:
    weak = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                           "rsa_keygen_bits:512"], capture_output=True, check=True).stdout
    with pytest.raises(ValueError, match="512 bits"):
        load_private_key(weak)
    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="not an RSA or Ed25519 key"):
        load_private_key(p256)
    with pytest.raises(TypeError):
        key_type(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"domain": "exa mple.com"}, "domain"),
    ({"domain": "bücher.example"}, "A-labels"),
    ({"selector": "a;b"}, "selector"),
    ({"headers": ["To", "Subject"]}, "From must be signed"),
    ({"headers": ["From", "DKIM-Signature"]}, "never cover each other"),
    ({"headers": ["From", "Bad Name"]}, "not a header field name"),
    ({"canonicalization": ("relaxed", "nofws")}, "unknown canonicalisation"),
    ({"expire_after": 0}, "positive"),
])
def test_signer_refuses(ed25519_key: SigningKey, kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"domain": DOMAIN, "selector": "s", "key": ed25519_key}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DkimSigner(**arguments)  # type: ignore[arg-type]


def test_message_without_from_is_refused(ed25519_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="no From"):
        DkimSigner(DOMAIN, "s", ed25519_key).sign(b"To: a@b\r\n\r\nbody\r\n")
