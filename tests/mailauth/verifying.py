"""Helpers for the verifier's tests: the sans-IO core run over a message with key records
given as text, a signature field made by hand (tags of the test's choosing, Ed25519 over From
alone, relaxed/relaxed: RFC 6376 §3.7 done the plain way), and dkimpy as a signer."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postkeep.mailauth.dkim.canon import body_hash, canon_header, parse_header_fields, split_message
from postkeep.mailauth.dkim.keys import SigningKey, dns_record, record_name
from postkeep.mailauth.dkim.verify import DkimResult, KeyLookup, KeyUnavailable, MessageVerifier
from tests.mailauth.conftest import DOMAIN

Records = Mapping[str, str | Sequence[str] | KeyUnavailable]


def records_of(keys: Mapping[str, SigningKey], domain: str = DOMAIN) -> dict[str, str]:
    """The key records of `keys` (selector -> key), by record name."""
    return {record_name(selector, domain): dns_record(key) for selector, key in keys.items()}


def verify(message: bytes, records: Records, *, now: float | None = None, chunk: int = 0,
           **options: int) -> list[DkimResult]:
    """The verifier's results for `message`, its body fed in `chunk`-octet pieces (0: whole),
    with `records` as the TXT records found at each name."""
    header_block, body = split_message(message)
    verifier = MessageVerifier(header_block, now=time.time() if now is None else now,
                               **options)
    step = chunk or max(len(body), 1)
    for start in range(0, len(body), step):
        verifier.update(body[start:start + step])
    keys: dict[str, KeyLookup] = {}
    for name, found in records.items():
        if isinstance(found, KeyUnavailable):
            keys[name] = found
        else:
            keys[name] = [found.encode()] if isinstance(found, str) else [
                text.encode() for text in found]
    return verifier.results(keys)


def craft(message: bytes, key: ed25519.Ed25519PrivateKey, tags: str) -> bytes:
    """`message` with a DKIM-Signature field of `tags` (everything but bh= and b=; h= must be
    "from") prepended, signed with `key` over the bottom From field and the field itself."""
    header_block, body = split_message(message)
    bh = base64.b64encode(body_hash(body, "relaxed")).decode()
    field = f"DKIM-Signature: {tags}; bh={bh}; b=".encode()
    from_field = [f for f in parse_header_fields(header_block) if f.key == "from"][-1]
    data = (canon_header(from_field.raw, "relaxed")
            + canon_header(field + b"\r\n", "relaxed").removesuffix(b"\r\n"))
    signature = key.sign(hashlib.sha256(data).digest())
    return field + base64.b64encode(signature) + b"\r\n" + message


def dkimpy_sign(message: bytes, selector: str, key: SigningKey, *, domain: str = DOMAIN,
                canon: tuple[str, str] = ("relaxed", "relaxed"), **options: object) -> bytes:
    """`message` with a DKIM-Signature field made by dkimpy prepended."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        secret = base64.b64encode(key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
        algorithm = b"ed25519-sha256"
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        secret = key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
        algorithm = b"rsa-sha256"
    options.setdefault("signature_algorithm", algorithm)
    field = dkim.sign(message, selector.encode(), domain.encode(), secret,
                      canonicalize=(canon[0].encode(), canon[1].encode()),
                      **options)  # type: ignore[arg-type]
    return field + message
