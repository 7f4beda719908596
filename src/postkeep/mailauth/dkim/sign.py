"""DKIM signing (RFC 6376 §5; rsa-sha256 §3.3.1, ed25519-sha256 RFC 8463 §3): the
DKIM-Signature header field (§3.5) to prepend to a message.

Which fields are signed (§5.4): those of `DEFAULT_HEADERS` (§5.4.1's list, MIME and List-*
fields) that the message has, From always (§5.4: it MUST be), each named once more than it
occurs (§5.4.2, §8.15: the extra name stands for an absent instance, so a field added on the
way, a second From above all, breaks the signature). Instances are taken from the bottom up
(§5.4.2). The header hash is §3.7: the selected fields, then the signature field itself with
an empty b=, without its final CRLF.

t= is the injected clock's time, x= (optional) that plus `expire_after` seconds (§3.5). The
field is folded at 78 characters (RFC 5322 §2.1.1, §2.2.3), between tags, after the colons
of h= and inside base64 values (§3.5 allows FWS there); b= comes last, so its value is folded
after it is computed without changing what was hashed.

Dual signing (RSA and Ed25519, RFC 8463 §1): `sign_all` gives one field per signer over the
same message, the body hashed once per body canonicalisation; prepend them together. No
signature covers another (DKIM-Signature is never in h=): each verifies on its own, in any
order, whichever other signatures are added above it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from postkeep.mailauth.dkim.canon import (
    BodyHasher,
    Canon,
    canon_header,
    canonical_fields,
    split_message,
)
from postkeep.mailauth.dkim.keys import MIN_RSA_BITS, SigningKey, key_type

DEFAULT_HEADERS: tuple[str, ...] = (
    "From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
    "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID",
    "Content-Description", "In-Reply-To", "References",
    "Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc",
    "Resent-Message-ID",
    "List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe",
    "List-Post", "List-Owner", "List-Archive",
)

WIDTH = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, CRLF excluded
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext


class DkimSigner:
    """Signs for one domain and selector with one key. `sign(message)` for a message held
    whole; for one read piece by piece, feed the body to a `BodyHasher(signer.body_canon)`
    and call `sign_headers(header_block, hasher.digest())`."""

    def __init__(self, domain: str, selector: str, key: SigningKey, *,
                 headers: Iterable[str] = DEFAULT_HEADERS,
                 canonicalization: tuple[Canon, Canon] = ("relaxed", "relaxed"),
                 expire_after: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`domain` (d=) and `selector` (s=) in ASCII (A-labels); `headers` the names to sign
        when present (From among them); `canonicalization` (header, body); `expire_after` the
        seconds from t= to x=; `clock` the Unix time."""
        for what, name in (("domain", domain), ("selector", selector)):
            if not _NAME.fullmatch(name.rstrip(".") if what == "domain" else name):
                raise ValueError(f"DKIM {what} must be ASCII labels (A-labels): {name!r}")
        kind = key_type(key)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key under {MIN_RSA_BITS} bits")
        names = []
        for header in headers:
            if not _FIELD_NAME.fullmatch(header):
                raise ValueError(f"not a header field name: {header!r}")
            if header.lower() not in names:
                names.append(header.lower())
        if "from" not in names:
            raise ValueError("From must be signed (RFC 6376 §5.4)")
        if "dkim-signature" in names:
            raise ValueError("signatures never cover each other: no DKIM-Signature in h=")
        for canon in canonicalization:
            if canon not in ("simple", "relaxed"):
                raise ValueError(f"unknown canonicalisation {canon!r}")
        if expire_after is not None and expire_after <= 0:
            raise ValueError("expire_after must be positive")
        self.domain = domain.rstrip(".")
        self.selector = selector
        self.key = key
        self.algorithm = f"{kind}-sha256"
        self.header_canon, self.body_canon = canonicalization
        self.headers: tuple[str, ...] = tuple(names)
        self.expire_after = expire_after
        self._clock = clock
        self._keys = [name.encode("ascii") for name in names]
        # The tags that are the same in every signature, folded once.
        self._prefix = fold(["DKIM-Signature:"], [
            "v=1;", f"a={self.algorithm};", f"c={self.header_canon}/{self.body_canon};",
            f"d={self.domain};", f"s={selector};"])

    def sign(self, message: bytes) -> bytes:
        """The DKIM-Signature field (CRLF-terminated) for `message`, to prepend to it."""
        return sign_all(message, [self])

    def sign_headers(self, header_block: bytes, body_hash: bytes) -> bytes:
        """The DKIM-Signature field for a message whose header block is `header_block` (its
        fields with their CRLFs) and whose body hashes to `body_hash` (raw SHA-256 from a
        `BodyHasher` of `body_canon`)."""
        present = canonical_fields(header_block, self._keys, self.header_canon)
        if not present[b"from"]:
            raise ValueError("the message has no From field (RFC 5322 §3.6: it must)")
        signed = []
        hashed = []
        for name, instances in zip(self.headers, present.values(), strict=True):
            if instances:
                signed += [name] * (len(instances) + 1)
                # Bottom up (§5.4.2); the extra name has no instance and adds nothing.
                hashed += reversed(instances)
        now = int(self._clock())
        pieces = [f"t={now};"]
        if self.expire_after is not None:
            pieces.append(f"x={now + self.expire_after};")
        pieces += _h_pieces(signed)
        pieces += [f"bh={base64.b64encode(body_hash).decode('ascii')};", "b="]
        lines = fold(self._prefix, pieces)
        unsigned = "\r\n".join(lines).encode("ascii")
        hashed.append(canon_header(unsigned, self.header_canon).removesuffix(b"\r\n"))
        signature = base64.b64encode(sign_data(self.key, b"".join(hashed))).decode("ascii")
        return ("\r\n".join(fold_value(lines, signature)) + "\r\n").encode("ascii")


def sign_data(key: SigningKey, data: bytes) -> bytes:
    """b= for the header hash input `data`: RSA PKCS #1 v1.5 with SHA-256, or Ed25519 of its
    SHA-256 (RFC 8463 §3)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(hashlib.sha256(data).digest())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def sign_all(message: bytes, signers: Sequence[DkimSigner]) -> bytes:
    """One DKIM-Signature field per signer (each CRLF-terminated, in `signers`' order), all
    over `message` as it is; prepend their concatenation. The body is hashed once for each
    body canonicalisation the signers use."""
    header_block, body = split_message(message)
    body_hashes: dict[str, bytes] = {}
    fields = []
    for signer in signers:
        if signer.body_canon not in body_hashes:
            hasher = BodyHasher(signer.body_canon)
            hasher.update(body)
            body_hashes[signer.body_canon] = hasher.digest()
        fields.append(signer.sign_headers(header_block, body_hashes[signer.body_canon]))
    return b"".join(fields)


def _h_pieces(signed: list[str]) -> list[str]:
    """h= as pieces a fold may come between (FWS is allowed around its colons, §3.5)."""
    pieces = [f"{name}:" for name in signed]
    pieces[0] = "h=" + pieces[0]
    pieces[-1] = pieces[-1][:-1] + ";"
    return pieces


def fold(lines: list[str], pieces: list[str]) -> list[str]:
    """`lines` (the field so far) with `pieces` appended: a tag ("...;") and the next
    separated by SP, the pieces of one tag by nothing, a fold before a piece that would pass
    WIDTH (continuation lines start with SP)."""
    lines = list(lines)
    line = lines.pop()
    separator = " " if line.endswith((":", ";")) else ""
    for piece in pieces:
        if len(line) + len(separator) + len(piece) > WIDTH:
            lines.append(line)
            line = " " + piece
        else:
            line += separator + piece
        separator = " " if piece[-1] == ";" else ""
    lines.append(line)
    return lines


def fold_value(lines: list[str], value: str) -> list[str]:
    """`lines` with base64 `value` appended to the last one and folded (FWS inside base64 is
    ignored, §3.5; b= removal in verifiers takes it too)."""
    lines = list(lines)
    room = max(WIDTH - len(lines[-1]), 0)
    lines[-1] += value[:room]
    lines += [" " + value[i:i + WIDTH - 1] for i in range(room, len(value), WIDTH - 1)]
    return lines
