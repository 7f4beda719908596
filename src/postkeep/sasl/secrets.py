"""Stored per-mechanism SASL secrets: deriving them from a password, and using them (no I/O).

`derive_secrets` is called when a password is set; the store keeps its result and hands it to
`sasl.ServerMechanism.provide` at authentication time. None of the values is the password, but
each is password-equivalent *for its own mechanism* (RFC 5802 §9 for SCRAM's StoredKey and
ServerKey; CRAM-MD5 and DIGEST-MD5 secrets allow logging in with that mechanism): keep them as
secret as password hashes.

- SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802 §3, RFC 7677): ``"<i>$<b64 salt>$<b64 StoredKey>$<b64
  ServerKey>"``, the password normalized with SASLprep (RFC 4013) as a stored string.
- CRAM-MD5 (RFC 2195): the HMAC-MD5 (RFC 2104 §2) outer then inner MD5 chaining states after
  compressing ``key XOR opad`` and ``key XOR ipad``, as 16 little-endian bytes each, 64 hex
  characters in all: Dovecot's ``{CRAM-MD5}`` scheme, byte for byte.
- DIGEST-MD5 (RFC 2831 §2.1.2.1): ``hex(MD5(username ":" realm ":" password))`` with username
  = the full address and realm = its domain in lower case; each part is hashed in ISO 8859-1
  when it fits, else in UTF-8 (the ``charset=utf-8`` rule of §2.1.2.1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stringprep
import unicodedata
from dataclasses import dataclass

from postkeep.sasl import md5state

SCRAM_HASHES: dict[str, str] = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
SCRAM_MIN_ITERATIONS = 4096  # RFC 7677 §4
SCRAM_MAX_ITERATIONS = 10_000_000  # bounds the work one forged secret or fake user can cost
SALT_SIZE = 16


# -- SASLprep (RFC 4013) ------------------------------------------------------------------------


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare `text` with the SASLprep profile (RFC 4013 §2) of stringprep (RFC 3454).

    Mapping (§2.1), NFKC (§2.2), prohibited output (§2.3: control characters, private use,
    surrogates, non-characters, ...), bidi rules (§2.4, RFC 3454 §6). Unassigned code points
    (RFC 3454 §7) are refused unless `allow_unassigned` (query strings, e.g. a username).
    Raises ValueError for a string SASLprep refuses.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    out = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for c in out:
        if (
            stringprep.in_table_c12(c)
            or stringprep.in_table_c21_c22(c)
            or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c)
            or stringprep.in_table_c5(c)
            or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c)
            or stringprep.in_table_c8(c)
            or stringprep.in_table_c9(c)
        ):
            raise ValueError(f"prohibited character U+{ord(c):04X}")
        if not allow_unassigned and stringprep.in_table_a1(c):
            raise ValueError(f"unassigned code point U+{ord(c):04X}")
    if any(stringprep.in_table_d1(c) for c in out):
        if any(stringprep.in_table_d2(c) for c in out):
            raise ValueError("mixed right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1])):
            raise ValueError("right-to-left text must start and end with an R/AL character")
    return out


def scram_normalize(password: str) -> bytes:
    """Normalize(password) of RFC 5802 §2.2 as UTF-8: SASLprep as a stored string.

    A password SASLprep refuses (or maps to nothing) is used as its raw UTF-8, as PostgreSQL
    does, so any password that can be set can be used with SCRAM by a client doing the same.
    """
    try:
        prepared = saslprep(password)
    except ValueError:
        prepared = ""
    return (prepared or password).encode("utf-8", "surrogatepass")


# -- SCRAM (RFC 5802 §3, RFC 7677) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScramSecret:
    """One stored SCRAM secret (RFC 5802 §3: SaltedPassword's StoredKey and ServerKey)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return "$".join(
            (str(self.iterations), b64(self.salt).decode(), b64(self.stored_key).decode(),
             b64(self.server_key).decode())
        )


def scram_secret(
    mechanism: str, password: str, *, salt: bytes | None = None, iterations: int = 4096
) -> ScramSecret:
    """Derive the SCRAM secret for `mechanism` ("SCRAM-SHA-1" or "SCRAM-SHA-256").

    SaltedPassword = Hi(Normalize(password), salt, i); ClientKey = HMAC(SaltedPassword,
    "Client Key"); StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key")
    (RFC 5802 §3). A fresh random 16-byte salt unless one is given (tests).
    """
    hash_name = SCRAM_HASHES[mechanism.removesuffix("-PLUS")]
    if not 1 <= iterations <= SCRAM_MAX_ITERATIONS:
        raise ValueError("SCRAM iteration count out of range")
    if salt is None:
        salt = os.urandom(SALT_SIZE)
    salted = hashlib.pbkdf2_hmac(hash_name, scram_normalize(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramSecret(
        iterations=iterations,
        salt=salt,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


def parse_scram_secret(value: str, mechanism: str) -> ScramSecret:
    """Parse a stored SCRAM secret for `mechanism`; ValueError if it is not one."""
    hash_name = SCRAM_HASHES[mechanism.removesuffix("-PLUS")]
    size = hashlib.new(hash_name).digest_size
    parts = value.split("$")
    if len(parts) != 4 or not parts[0].isascii() or not parts[0].isdigit():
        raise ValueError("not a SCRAM secret")
    iterations = int(parts[0])
    try:
        salt, stored_key, server_key = (base64.b64decode(p, validate=True) for p in parts[1:])
    except (binascii.Error, ValueError):
        raise ValueError("not a SCRAM secret") from None
    if not 1 <= iterations <= SCRAM_MAX_ITERATIONS or not salt:
        raise ValueError("SCRAM secret out of range")
    if len(stored_key) != size or len(server_key) != size:
        raise ValueError("SCRAM secret of another hash")
    return ScramSecret(iterations, salt, stored_key, server_key)


# -- CRAM-MD5 (RFC 2195, RFC 2104) ------------------------------------------------------------


def cram_md5_secret(password: str) -> str:
    """The HMAC-MD5 outer and inner contexts for the password as key (Dovecot's format)."""
    key = password.encode("utf-8", "surrogatepass")
    if len(key) > md5state.BLOCK_SIZE:
        key = hashlib.md5(key).digest()  # RFC 2104 §2
    key = key.ljust(md5state.BLOCK_SIZE, b"\x00")
    inner = md5state.compress(md5state.IV, bytes(k ^ 0x36 for k in key))
    outer = md5state.compress(md5state.IV, bytes(k ^ 0x5C for k in key))
    return (md5state.pack_state(outer) + md5state.pack_state(inner)).hex()


_DUMMY_CRAM = cram_md5_secret(os.urandom(16).hex())


def cram_md5_digest(secret: str, challenge: bytes) -> bytes:
    """HMAC-MD5(password, challenge) resumed from the stored contexts; ValueError if malformed."""
    raw = bytes.fromhex(secret) if len(secret) == 64 else b""
    if len(raw) != 32:
        raise ValueError("not a CRAM-MD5 secret")
    outer, inner = md5state.unpack_state(raw[:16]), md5state.unpack_state(raw[16:])
    return md5state.resume(outer, md5state.resume(inner, challenge))


def verify_cram_md5(secret: str, challenge: bytes, digest_hex: str) -> bool:
    """Whether `digest_hex` is the client's correct RFC 2195 answer to `challenge`.

    Compared in constant time; a malformed secret does the same work with a dummy one and fails.
    Hex digits are accepted in either case.
    """
    ok = True
    try:
        expected = cram_md5_digest(secret, challenge)
    except ValueError:
        ok = False
        expected = cram_md5_digest(_DUMMY_CRAM, challenge)
    given = digest_hex.lower().encode("ascii", "replace")
    return hmac.compare_digest(expected.hex().encode(), given) and ok


# -- DIGEST-MD5 (RFC 2831 §2.1.2.1) -------------------------------------------------------------


def digest_md5_encode(text: str) -> bytes:
    """A username, realm or password as hashed: ISO 8859-1 when it fits, else UTF-8."""
    try:
        return text.encode("iso-8859-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def address_domain(address: str) -> str:
    """The realm we use for an address: its domain in lower case ("" without an "@")."""
    _, at, domain = address.rpartition("@")
    return domain.lower() if at else ""


def digest_md5_ha1_base(username: str, realm: str, password: str) -> bytes:
    """H({username-value, ":", realm-value, ":", passwd}) of RFC 2831 §2.1.2.1, 16 bytes."""
    enc = digest_md5_encode
    return hashlib.md5(enc(username) + b":" + enc(realm) + b":" + enc(password)).digest()


def digest_md5_response(
    ha1_base: bytes,
    *,
    nonce: str,
    cnonce: str,
    nc: str,
    qop: str,
    digest_uri: str,
    authzid: str | None = None,
    rspauth: bool = False,
) -> str:
    """The response-value (or with `rspauth`, the server's rspauth value) of RFC 2831 §2.1.2.1.

    A1 = { H(user:realm:pass), ":", nonce, ":", cnonce [, ":", authzid] };
    A2 = { "AUTHENTICATE:", digest-uri } (":" digest-uri for rspauth, §2.1.3), qop "auth" only;
    value = HEX(KD(HEX(H(A1)), { nonce ":" nc ":" cnonce ":" qop ":" HEX(H(A2)) })).
    """
    if qop != "auth":
        raise ValueError("only qop=auth is supported")
    a1 = ha1_base + b":" + nonce.encode() + b":" + cnonce.encode()
    if authzid:
        a1 += b":" + authzid.encode("utf-8", "surrogatepass")
    a2 = (b":" if rspauth else b"AUTHENTICATE:") + digest_uri.encode()
    kd = b":".join((
        hashlib.md5(a1).hexdigest().encode(), nonce.encode(), nc.encode(), cnonce.encode(),
        qop.encode(), hashlib.md5(a2).hexdigest().encode(),
    ))
    return hashlib.md5(kd).hexdigest()


def digest_md5_secret(address: str, password: str) -> str:
    """hex(H(address:domain:password)), the stored DIGEST-MD5 secret of an address."""
    return digest_md5_ha1_base(address, address_domain(address), password).hex()


def parse_digest_md5_secret(value: str) -> bytes:
    """The 16-byte H(user:realm:pass) of a stored DIGEST-MD5 secret; ValueError if malformed."""
    raw = bytes.fromhex(value) if len(value) == 32 else b""
    if len(raw) != 16:
        raise ValueError("not a DIGEST-MD5 secret")
    return raw


# -- all of them --------------------------------------------------------------------------------


def derive_secrets(address: str, password: str, *, scram_iterations: int = 4096) -> dict[str, str]:
    """Every per-mechanism secret of an account, keyed by mechanism name (see module doc).

    Values are ASCII strings, safe for a text column. Each SCRAM secret gets its own random
    salt, so two calls never return the same SCRAM values.
    """
    return {
        "SCRAM-SHA-1": scram_secret(
            "SCRAM-SHA-1", password, iterations=scram_iterations
        ).encode(),
        "SCRAM-SHA-256": scram_secret(
            "SCRAM-SHA-256", password, iterations=scram_iterations
        ).encode(),
        "CRAM-MD5": cram_md5_secret(password),
        "DIGEST-MD5": digest_md5_secret(address, password),
    }
