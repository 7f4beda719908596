"""ARC chain validation (RFC 8617 §5.2) of one message, sans-IO like `dkim.verify`: header
fields and body chunks in, key record names out, the records (or why there are none) in,
one `ArcResult` out. `postkeep.mailauth.arc_check` looks the keys up over DNS.

The steps of §5.2: no ARC Set is `none`; a chain of the wrong form (`headers.collect`: a
field that does not parse, a gap, a duplicate, more than 50 instances, cv=fail anywhere, cv
not none on i=1 or not pass later) fails; then the newest AMS is verified (§5.1.1: as a
DKIM signature, over the fields its h= names and its own field with b= removed, and the body
hash), failing the chain when it does not; the older AMSs are verified downwards until one
fails, for `oldest_pass` (§5.2 step 6: 0 when all pass, else the lowest instance whose AMS
passed); then every AS from N down to 1 (§5.1.2: the signature over the ARC Sets 1 to i in
increasing instance order, AAR, AMS, AS within each, relaxed header canonicalisation, the AS
verified without b='s value and without its final CRLF), any failure failing the chain.

Keys are DKIM key records (`selector._domainkey.domain` TXT, RFC 6376 §3.6.1), checked as
DKIM checks them (revoked, k=, h=, RSA under 1024 bits). A key that cannot be had fails the
signature it is for; the reason says whether the failure was temporary.

Bounds: the header section has at most `dkim.verify.MAX_HEADER_FIELDS` fields, the chain at
most 50 instances (each field bounded by `headers`), at most MAX_KEY_RECORDS records tried per
key name, one body hasher per (canonicalisation, l=) pair the AMSs use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from postkeep.mailauth.arc.headers import (
    ArcSet,
    ArcStructureError,
    AuthResults,
    collect,
)
from postkeep.mailauth.dkim.canon import BodyHasher, Canon, canon_header, parse_header_fields
from postkeep.mailauth.dkim.keys import MIN_RSA_BITS, record_name
from postkeep.mailauth.dkim.tags import KeyRecordError, parse_key_record
from postkeep.mailauth.dkim.verify import (
    MAX_HEADER_FIELDS,
    MAX_KEY_RECORDS,
    KeyLookup,
    KeyUnavailable,
    header_hash_input,
    load_public_key,
    signature_valid,
)


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The chain's validation status (`result`: "none", "pass" or "fail") and why.
    `instances` is N; `oldest_pass` is §5.2's (None unless the chain passed); `sealers` the AS
    d= of each instance, oldest first; `newest` the AAR of instance N (a passing chain's)."""

    result: str
    reason: str = ""
    instances: int = 0
    oldest_pass: int | None = None
    sealers: tuple[str, ...] = ()
    newest: AuthResults | None = None

    def auth_result(self, remote_ip: str | None = None) -> str:
        """The ``arc=`` resinfo (RFC 8617 §7.1): the instance and the newest sealer in a
        comment, ``header.oldest-pass`` and ``smtp.remote-ip``."""
        notes = []
        if self.instances:
            notes.append(f"i={self.instances}")
        if self.result == "pass" and self.sealers:
            notes.append(f"d={self.sealers[-1]}")
        elif self.reason:
            notes.append("".join(c for c in self.reason if c.isprintable()
                                 and c not in "()\\")[:120])
        out = f"arc={self.result}" + (f" ({' '.join(notes)})" if notes else "")
        if self.oldest_pass is not None:
            out += f" header.oldest-pass={self.oldest_pass}"
        if remote_ip and self.result != "none":
            out += f" smtp.remote-ip={remote_ip}"
        return out


class ChainVerifier:
    """Validates the ARC chain of one message (see the module docstring)."""

    def __init__(self, header_block: bytes) -> None:
        fields = parse_header_fields(header_block)
        self._fields: dict[str, list[bytes]] = {}
        for f in fields:
            self._fields.setdefault(f.key, []).append(f.raw)
        self._sets: list[ArcSet] = []
        self._error = ""
        if len(fields) > MAX_HEADER_FIELDS:
            self._error = f"more than {MAX_HEADER_FIELDS} header fields"
        else:
            try:
                self._sets = collect(fields)
            except ArcStructureError as e:
                self._error = str(e)
        self._hashers: dict[tuple[Canon, int | None], BodyHasher] = {}
        for s in self._sets:
            key = (s.ams.body_canon, s.ams.length)
            if key not in self._hashers:
                self._hashers[key] = BodyHasher(key[0], limit=key[1])
        self._digests: dict[tuple[Canon, int | None], tuple[bytes, int]] | None = None

    @property
    def instances(self) -> int:
        return len(self._sets)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next piece of the body (what follows the empty line after the header)."""
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def key_names(self) -> list[str]:
        """The key records to look up, each once (none for a chain that fails on its form)."""
        names: list[str] = []
        for s in self._sets:
            for signer in (s.ams, s.seal):
                name = record_name(signer.selector, signer.domain)
                if name not in names:
                    names.append(name)
        return names

    def result(self, keys: Mapping[str, KeyLookup]) -> ArcResult:
        """The chain's status, the body complete; `keys` as for `dkim.verify`."""
        if self._error:
            return ArcResult("fail", self._error)
        if not self._sets:
            return ArcResult("none")
        if self._digests is None:
            self._digests = {key: (hasher.digest(), hasher.length)
                             for key, hasher in self._hashers.items()}
        sets = self._sets
        top = len(sets)
        sealers = tuple(s.seal.domain for s in sets)
        failed = self._ams_problem(sets[-1], keys)
        if failed:
            return ArcResult("fail", f"ARC-Message-Signature i={top}: {failed}", top,
                             sealers=sealers)
        oldest = 0
        for s in reversed(sets[:-1]):
            if self._ams_problem(s, keys):
                oldest = s.instance + 1
                break
        for s in reversed(sets):
            failed = self._seal_problem(s, keys)
            if failed:
                return ArcResult("fail", f"ARC-Seal i={s.instance}: {failed}", top,
                                 sealers=sealers)
        return ArcResult("pass", "", top, oldest, sealers, sets[-1].aar)

    def _ams_problem(self, s: ArcSet, keys: Mapping[str, KeyLookup]) -> str:
        ams = s.ams
        assert self._digests is not None
        digest, length = self._digests[(ams.body_canon, ams.length)]
        if ams.length is not None and length < ams.length:
            return "l= is longer than the body"
        if digest != ams.body_hash:
            return "body hash mismatch (bh=)"
        data = header_hash_input(self._fields, ams.headers, ams.header_canon, s.ams_raw,
                                 ams.b_span)
        return _signature_problem(keys, ams.selector, ams.domain, ams.key_type, ams.signature,
                                  data)

    def _seal_problem(self, s: ArcSet, keys: Mapping[str, KeyLookup]) -> str:
        parts = []
        for older in self._sets[: s.instance - 1]:
            parts += [canon_header(raw, "relaxed")
                      for raw in (older.aar_raw, older.ams_raw, older.seal_raw)]
        parts += [canon_header(s.aar_raw, "relaxed"), canon_header(s.ams_raw, "relaxed")]
        colon = s.seal_raw.index(b":") + 1
        start, end = s.seal.b_span
        unsigned = s.seal_raw[: colon + start] + s.seal_raw[colon + end:]
        parts.append(canon_header(unsigned, "relaxed").removesuffix(b"\r\n"))
        seal = s.seal
        return _signature_problem(keys, seal.selector, seal.domain, seal.key_type,
                                  seal.signature, b"".join(parts))


def _signature_problem(keys: Mapping[str, KeyLookup], selector: str, domain: str,
                       key_type: str, signature: bytes, data: bytes) -> str:
    """Why `signature` does not sign `data` with the key at selector/domain ("" when it does)."""
    name = record_name(selector, domain)
    found = keys.get(name)
    if found is None:
        return f"key {name} not looked up"
    if isinstance(found, KeyUnavailable):
        return f"no key ({'temporary' if found.temporary else 'permanent'}): {found.reason}"
    problems = []
    for text in found[:MAX_KEY_RECORDS]:
        try:
            record = parse_key_record(text)
            if not record.public_key:
                raise KeyRecordError("key revoked (empty p=)")
            if record.key_type != key_type:
                raise KeyRecordError(f"key is k={record.key_type}, not {key_type}")
            if record.hashes is not None and "sha256" not in record.hashes:
                raise KeyRecordError("key record's h= does not allow sha256")
            public = load_public_key(record)
        except KeyRecordError as e:
            problems.append(str(e))
            continue
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            problems.append(f"RSA key of {public.key_size} bits")
        elif signature_valid(public, signature, data):
            return ""
        else:
            problems.append("signature mismatch (b=)")
    return problems[0] if problems else f"no TXT record at {name}"

