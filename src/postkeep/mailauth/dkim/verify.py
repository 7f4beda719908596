"""DKIM verification (RFC 6376 §6; rsa-sha256 §3.3.1, ed25519-sha256 RFC 8463 §3, RFC 8301's
crypto floor) of the DKIM-Signature fields of one message. Sans-IO: header fields and body
chunks in, the key records' names out, the records (or why there are none) in, one result per
signature out; the caller looks the keys up (`postkeep.mailauth.dkim_check` does, over DNS).

Use: `MessageVerifier(header_block, now=...)`, `update(chunk)` with the body (any chunking:
the body hash is `canon.BodyHasher`, incremental, so a spooled body is never held whole),
`key_names()` to look up, `results(keys)` with each name's TXT records or `KeyUnavailable`.

What is checked, in order, for each signature (§6.1): its tags (`tags.parse_signature`, a
`neutral` result when wrong: RFC 8601 §2.7.1 "contained syntax errors"); `rsa-sha1` is
`policy` (RFC 8301 §3.1: MUST NOT be considered valid); x= past by more than `skew` seconds
is `fail` ("signature expired"), t= more than `skew` ahead `neutral`; the key (§6.1.2: no
record, a malformed or revoked one, another k=, h= without sha256, t=s with i= in a
subdomain, s= not email: `permerror`; the lookup failing for now: `temperror`; an RSA key
under 1024 bits, RFC 8301 §3.2: `fail`); the body hash (§6.1.3, over the first l= octets of
the canonical body when l= is given); then the signature over the header hash (§3.7): the
fields named by h=, each name taking the next instance from the bottom up (§5.4.2), a name
with no instance left adding nothing (so an over-signed field added later breaks the
signature, §8.15), then the signature field itself with b='s value (and the FWS around it)
removed, without its final CRLF. Ed25519 signs the SHA-256 of that (RFC 8463 §3).

`l=`: a `pass` covers only `body_length` octets of the canonical body; `unsigned_octets` says
how many came after them, content anyone could have appended (§8.2): the caller should treat
it as unsigned. Key t=y sets `testing` (§3.6.1: treat as unsigned).

Bounds: the first `max_signatures` DKIM-Signature fields from the top are verified, the rest
ignored (counted in `ignored`); a header of more than MAX_HEADER_FIELDS fields is refused
(each signature a permerror); at most MAX_KEY_RECORDS TXT records per name are tried; RSA
keys of more than MAX_RSA_BITS are refused; tag lists are bounded by `tags`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from postkeep.mailauth.dkim.canon import BodyHasher, Canon, canon_header, parse_header_fields
from postkeep.mailauth.dkim.keys import MIN_RSA_BITS, record_name
from postkeep.mailauth.dkim.tags import (
    KeyRecord,
    KeyRecordError,
    Signature,
    SignatureError,
    parse_key_record,
    parse_signature,
)

Verdict = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror"]

MAX_SIGNATURES = 10  # DKIM-Signature fields verified per message, from the top
MAX_HEADER_FIELDS = 1000
MAX_KEY_RECORDS = 4  # TXT records tried at one key name
MAX_RSA_BITS = 8192  # RFC 8301 §3.2 asks for 1024 to 4096; past 8192 is no real key
CLOCK_SKEW = 300  # seconds t= may be ahead, x= behind
HEADER_B_MIN = 8  # RFC 6008 §4: header.b is at least 8 characters of b=


@dataclass(frozen=True, slots=True)
class KeyUnavailable:
    """No key records to be had: `temporary` (TempFail, timeout: temperror) or not (no such
    name, no TXT record, a name that is none: permerror)."""

    temporary: bool
    reason: str


#: What the caller found at a key name: its TXT records (each one's strings joined), or why
#: there are none.
KeyLookup = Sequence[bytes] | KeyUnavailable


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One signature's result, as RFC 8601 §2.7.1 names them for `dkim=`, and what
    Authentication-Results reports with it: header.d (`domain`), header.i (`identity`),
    header.s, header.a, header.b (RFC 6008: the shortest prefix of b=, at least 8
    characters, telling this signature from the message's others). The tags are None when
    the field could not be parsed. `body_length` is l=; `unsigned_octets` the canonical body
    octets after them, which the signature does not cover."""

    result: Verdict
    reason: str
    domain: str | None = None
    identity: str | None = None
    selector: str | None = None
    algorithm: str | None = None
    header_b: str | None = None
    body_length: int | None = None
    unsigned_octets: int = 0
    testing: bool = False


@dataclass(slots=True)
class _Candidate:
    """A DKIM-Signature field to verify: the field, and its parse (or why it has none)."""

    raw: bytes
    signature: Signature | None
    error: str
    header_b: str | None = None


class MessageVerifier:
    """Verifies the DKIM signatures of one message (see the module docstring). `now` is the
    Unix time, `skew` the seconds allowed either way for t= and x=."""

    def __init__(self, header_block: bytes, *, now: float,
                 max_signatures: int = MAX_SIGNATURES, skew: int = CLOCK_SKEW) -> None:
        fields = parse_header_fields(header_block)
        self.now = now
        self.skew = skew
        self._refused = (f"more than {MAX_HEADER_FIELDS} header fields"
                         if len(fields) > MAX_HEADER_FIELDS else "")
        self._fields: dict[str, list[bytes]] = {}
        signature_fields = []
        for field in fields:
            self._fields.setdefault(field.key, []).append(field.raw)
            if field.key == "dkim-signature":
                signature_fields.append(field.raw)
        self.ignored = max(0, len(signature_fields) - max_signatures)
        self._candidates = [self._parse(raw) for raw in signature_fields[:max_signatures]]
        _name_header_b(self._candidates)
        self._hashers: dict[tuple[Canon, int | None], BodyHasher] = {}
        for candidate in self._candidates:
            if candidate.signature is not None and self._needs_key(candidate.signature):
                key = (candidate.signature.body_canon, candidate.signature.length)
                if key not in self._hashers:
                    self._hashers[key] = BodyHasher(key[0], limit=key[1])
        self._digests: dict[tuple[Canon, int | None], tuple[bytes, int]] | None = None

    @property
    def signatures(self) -> int:
        """How many signatures are verified (fields beyond `max_signatures` are not)."""
        return len(self._candidates)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next piece of the body (what follows the empty line after the header)."""
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def key_names(self) -> list[str]:
        """The key records to look up (`selector._domainkey.domain.`), each once."""
        names = []
        for candidate in self._candidates:
            signature = candidate.signature
            if signature is not None and self._needs_key(signature):
                name = record_name(signature.selector, signature.domain)
                if name not in names:
                    names.append(name)
        return names

    def results(self, keys: Mapping[str, KeyLookup]) -> list[DkimResult]:
        """One result per verified signature, top down, the body complete; `keys` holds what
        was found for each of `key_names()` (a name missing from it is a temperror)."""
        if self._digests is None:
            self._digests = {key: (hasher.digest(), hasher.length)
                             for key, hasher in self._hashers.items()}
        return [self._result(candidate, keys) for candidate in self._candidates]

    def _parse(self, raw: bytes) -> _Candidate:
        colon = raw.index(b":")
        try:
            return _Candidate(raw, parse_signature(raw[colon + 1:-2]), "")
        except SignatureError as e:
            return _Candidate(raw, None, str(e))

    def _needs_key(self, signature: Signature) -> bool:
        return (not self._refused and signature.algorithm != "rsa-sha1"
                and self._time_error(signature) is None)

    def _time_error(self, signature: Signature) -> tuple[Verdict, str] | None:
        if signature.expiration is not None and signature.expiration + self.skew < self.now:
            return "fail", "signature expired (x=)"
        if signature.timestamp is not None and signature.timestamp - self.skew > self.now:
            return "neutral", "signature timestamp (t=) in the future"
        return None

    def _result(self, candidate: _Candidate, keys: Mapping[str, KeyLookup]) -> DkimResult:
        signature = candidate.signature
        if signature is None:
            return DkimResult("neutral", candidate.error)
        base = DkimResult("pass", "", signature.domain, signature.identity, signature.selector,
                          signature.algorithm, candidate.header_b, signature.length)
        if self._refused:
            return replace(base, result="permerror", reason=self._refused)
        if signature.algorithm == "rsa-sha1":
            return replace(base, result="policy",
                           reason="rsa-sha1 is not acceptable (RFC 8301 §3.1)")
        failed = self._time_error(signature)
        if failed is not None:
            return replace(base, result=failed[0], reason=failed[1])
        found = keys.get(record_name(signature.selector, signature.domain))
        if found is None:
            return replace(base, result="temperror", reason="key not looked up")
        if isinstance(found, KeyUnavailable):
            return replace(base, result="temperror" if found.temporary else "permerror",
                           reason=f"no key: {found.reason}")
        records = []
        errors = []
        for text in found[:MAX_KEY_RECORDS]:
            try:
                records.append(parse_key_record(text))
            except KeyRecordError as e:
                errors.append(str(e))
        if not records:
            return replace(base, result="permerror",
                           reason=f"no key: {errors[0] if errors else 'no TXT record'}")
        assert self._digests is not None
        digest, length = self._digests[(signature.body_canon, signature.length)]
        outcomes = [self._verify(base, signature, candidate.raw, record, digest, length)
                    for record in records]
        return next((o for o in outcomes if o.result == "pass"), outcomes[0])

    def _verify(self, base: DkimResult, signature: Signature, raw: bytes, record: KeyRecord,
                digest: bytes, length: int) -> DkimResult:
        base = replace(base, testing=record.testing)
        problem = _key_problem(signature, record)
        if problem is not None:
            return replace(base, result="permerror", reason=problem)
        try:
            public = load_public_key(record)
        except KeyRecordError as e:
            return replace(base, result="permerror", reason=str(e))
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            return replace(base, result="fail", reason=f"RSA key of {public.key_size} bits "
                           f"(RFC 8301 §3.2: at least {MIN_RSA_BITS})")
        if signature.length is not None:
            if length < signature.length:
                return replace(base, result="fail", reason="l= is longer than the body")
            base = replace(base, unsigned_octets=length - signature.length)
        if not hmac.compare_digest(digest, signature.body_hash):
            return replace(base, result="fail", reason="body hash mismatch (bh=)")
        data = header_hash_input(self._fields, signature.headers, signature.header_canon, raw,
                                 signature.b_span)
        if not signature_valid(public, signature.signature, data):
            return replace(base, result="fail", reason="signature mismatch (b=)")
        return base

def header_hash_input(fields: Mapping[str, Sequence[bytes]], headers: Sequence[str], canon: Canon,
                      raw: bytes, b_span: tuple[int, int]) -> bytes:
    """§3.7: the fields `headers` (h=) names, each name taking the next instance of `fields`
    (raw fields by lower-case name, top down) from the bottom up, then the signature field
    `raw` without b='s value (`b_span`, offsets in its value), without its final CRLF."""
    left = {name: len(fields.get(name, ())) for name in set(headers)}
    parts = []
    for name in headers:
        if left[name]:
            left[name] -= 1
            parts.append(canon_header(fields[name][left[name]], canon))
    colon = raw.index(b":") + 1
    start, end = b_span
    unsigned = raw[:colon + start] + raw[colon + end:]
    parts.append(canon_header(unsigned, canon).removesuffix(b"\r\n"))
    return b"".join(parts)


def _key_problem(signature: Signature, record: KeyRecord) -> str | None:
    """Why the key record cannot verify this signature (§6.1.2), or None."""
    if not record.public_key:
        return "key revoked (empty p=)"
    if record.key_type != signature.key_type:
        return f"key is k={record.key_type}, signature a={signature.algorithm}"
    if record.hashes is not None and "sha256" not in record.hashes:
        return "key record's h= does not allow sha256"
    if record.strict and signature.identity.rpartition("@")[2] != signature.domain:
        return "key has t=s: i= must be in d= itself, not a subdomain"
    return None


def signature_valid(public: rsa.RSAPublicKey | ed25519.Ed25519PublicKey, signature: bytes,
                    data: bytes) -> bool:
    """Whether `signature` (b=) signs the header hash input `data`: RSASSA-PKCS1-v1_5 with
    SHA-256 (§3.3.1), or Ed25519 over the SHA-256 of `data` (RFC 8463 §3)."""
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, hashlib.sha256(data).digest())
        else:
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def load_public_key(record: KeyRecord) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    """The key of a record's p= (KeyRecordError when it is not one of k=, or too large)."""
    if record.key_type == "ed25519":
        if len(record.public_key) != 32:  # RFC 8463 §4.2: the raw 32-octet key
            raise KeyRecordError(f"Ed25519 key of {len(record.public_key)} octets, not 32")
        return ed25519.Ed25519PublicKey.from_public_bytes(record.public_key)
    try:
        public = serialization.load_der_public_key(record.public_key)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRecordError("p= is not an RSA public key (DER)") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise KeyRecordError("p= is not an RSA public key")
    if public.key_size > MAX_RSA_BITS:
        raise KeyRecordError(f"RSA key of {public.key_size} bits (at most {MAX_RSA_BITS})")
    return public


def _name_header_b(candidates: list[_Candidate]) -> None:
    """Each parsed signature's header.b: the shortest prefix of b=, HEADER_B_MIN characters
    or more, that no other signature of the message shares (RFC 6008 §4)."""
    values = [c.signature.b_text for c in candidates if c.signature is not None]
    for candidate in candidates:
        if candidate.signature is None:
            continue
        value = candidate.signature.b_text
        size = HEADER_B_MIN
        while size < len(value) and sum(v.startswith(value[:size]) for v in values) > 1:
            size += 1
        candidate.header_b = value[:size]
