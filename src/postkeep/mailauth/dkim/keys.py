"""DKIM keys: RSA (RFC 6376 §3.3.1; 1024 bits at least, RFC 8301 §3.2) and Ed25519
(RFC 8463 §4): generation, private keys as PKCS #8 PEM, and the selector's public key record
(RFC 6376 §3.6.1: `v=DKIM1; k=...; p=...`), also as a zone-file line whose value is cut into
quoted character-strings of at most 255 octets (RFC 1035 §3.3.14, §5.1).

`p=` is, for RSA, the base64 of the DER SubjectPublicKeyInfo (RFC 6376 §3.6.1); for Ed25519
the base64 of the raw 32-octet public key (RFC 8463 §4.2), not a SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
KeyType = Literal["rsa", "ed25519"]

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers must not accept smaller keys
DEFAULT_RSA_BITS = 2048  # RFC 8301 §3.2: signers SHOULD use at least 2048
_TXT_STRING = 255  # RFC 1035 §3.3.14: one character-string is at most 255 octets


def generate_key(key_type: KeyType = "rsa", *, bits: int = DEFAULT_RSA_BITS) -> SigningKey:
    """A new private key; `bits` counts for RSA only (at least MIN_RSA_BITS)."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type != "rsa":
        raise ValueError(f"unknown DKIM key type {key_type!r}")
    if bits < MIN_RSA_BITS:
        raise ValueError(f"an RSA key for DKIM needs at least {MIN_RSA_BITS} bits, not {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_type(key: SigningKey) -> KeyType:
    """The k= of a key's record; TypeError for a key DKIM cannot sign with."""
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise TypeError(f"not a DKIM signing key: {type(key).__name__}")


def private_key_pem(key: SigningKey) -> bytes:
    """The private key as unencrypted PKCS #8 PEM (to be kept where only postkeep reads it)."""
    key_type(key)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes) -> SigningKey:
    """A private key from PEM (PKCS #8, or PKCS #1 for RSA). ValueError for anything else,
    for another kind of key, or for an RSA key under MIN_RSA_BITS."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits: DKIM needs {MIN_RSA_BITS}")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ValueError(f"not an RSA or Ed25519 key: {type(key).__name__}")


def public_key_value(key: SigningKey) -> str:
    """The p= value of the key's record."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def dns_record(key: SigningKey) -> str:
    """The TXT record's text: `v=DKIM1; k=rsa; p=...` (or `k=ed25519`)."""
    return f"v=DKIM1; k={key_type(key)}; p={public_key_value(key)}"


def record_name(selector: str, domain: str) -> str:
    """Where the record lives (RFC 6376 §3.6.2.1), fully qualified: `sel._domainkey.dom.`."""
    return f"{selector}._domainkey.{domain.rstrip('.')}."


def zone_line(selector: str, domain: str, key: SigningKey) -> str:
    """The record as a zone-file line: `sel._domainkey.example.com. IN TXT "..." "..."`,
    the value in quoted strings of at most 255 octets (a resolver joins them again)."""
    value = dns_record(key)  # ASCII, no quote or backslash: octets are characters
    strings = " ".join(f'"{value[i:i + _TXT_STRING]}"' for i in range(0, len(value), _TXT_STRING))
    return f"{record_name(selector, domain)} IN TXT {strings}"
