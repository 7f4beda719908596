"""DKIM canonicalisation (RFC 6376 §3.4): "simple" and "relaxed", for header fields and body.

A message is split at its first empty line (RFC 5322 §2.1) by `split_message`; its header
fields, each kept exactly as written (folding and CRLF included), come from
`parse_header_fields`; `canon_header` is §3.4.1 (simple: unchanged) and §3.4.2 (relaxed:
lower-case name, unfolded, runs of WSP as one SP, no WSP around the colon or at the end).

`BodyHasher` is §3.4.3 (simple) and §3.4.4 (relaxed) fed straight into SHA-256, incrementally:
chunks of any size, a CRLF split between two chunks, trailing empty lines held back (never
hashed unless a non-empty line follows), so a spooled message is hashed a block at a time
without being held whole. The work is done by bytes methods and regexes over whole chunks,
never a Python loop per byte or per line. For a verifier, `limit` is a signature's `l=`
(§3.5): only that many octets of the canonical body are hashed, and `length` tells how many
there were in all (what lies beyond the limit is not covered by the signature).

Only CRLF ends a line (RFC 5322 §2.3, RFC 6376 §3.4.3): a bare CR or LF is line content. The
SMTP core refuses text with either (RFC 5321 §2.3.8), so what postkeep signs has none.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal, NamedTuple

Canon = Literal["simple", "relaxed"]

_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by WSP ends a field
_WSP_RUN = re.compile(rb"[ \t]+")
_REVERSED_CRLFS = re.compile(rb"(?:\n\r)*")
_CRLFS = b"\r\n" * 32768  # empty lines are hashed from this, 64 KiB at a time


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """The header block (every field with its CRLF, without the empty line) and the body
    (what follows the empty line; empty when there is none)."""
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 2], message[end + 4 :]


class HeaderField(NamedTuple):
    """One header field: `key` its name lower-cased (ASCII), `raw` the field as written,
    continuation lines and final CRLF included."""

    key: str
    raw: bytes


@lru_cache(maxsize=4)
def parse_header_fields(header_block: bytes) -> tuple[HeaderField, ...]:
    """The fields of a header block, in order. A line that is no field (no colon, or a
    continuation with nothing before it) gets the key "" so no h= name ever selects it.
    The last few blocks' fields are kept: one message's DKIM, ARC and DMARC checks each
    read the same block."""
    fields = []
    for raw in _FIELD_SPLIT.split(header_block):
        if not raw:
            continue  # after the block's last CRLF
        name, colon, _ = raw.partition(b":")
        key = name.rstrip(b" \t").lower().decode("latin-1") if colon else ""
        if key[:1] in (" ", "\t"):
            key = ""
        fields.append(HeaderField(key, raw if raw.endswith(b"\r\n") else raw + b"\r\n"))
    return tuple(fields)


def _just_fws(data: bytes) -> bool:
    """Whether bytes.split() cuts `data` at WSP and CRLFs only (no bare CR or LF, no VT or
    FF): then it unfolds, reduces WSP runs and strips in one call (§3.4.2). Counting is ten
    times faster than a regex search here."""
    crlf = data.count(b"\r\n")
    return (data.count(b"\r") == crlf and data.count(b"\n") == crlf
            and b"\x0b" not in data and b"\x0c" not in data)


def canonical_fields(header_block: bytes, keys: Iterable[bytes], canon: Canon
                     ) -> dict[bytes, list[bytes]]:
    """For each of `keys` (lower-case names) the canonical form of its fields, in order, CRLF
    included: what `canon_header` gives, computed for a whole header block at once (the
    signer's path: one pass to split, one check that lets relaxed use bytes.split)."""
    found: dict[bytes, list[bytes]] = {key: [] for key in keys}
    fast = canon == "relaxed" and _just_fws(header_block)
    for raw in _FIELD_SPLIT.split(header_block):
        colon = raw.find(b":")
        if colon < 0:
            continue
        key = raw[:colon].rstrip(b" \t").lower()
        instances = found.get(key)
        if instances is None:
            continue
        if fast:
            instances.append(b"%s:%s\r\n" % (key, b" ".join(raw[colon + 1:].split())))
        else:
            instances.append(canon_header(raw + b"\r\n", canon))
    return found


def canon_header(raw: bytes, canon: Canon) -> bytes:
    """One header field (`raw` as parsed, CRLF included) in canonical form, CRLF included."""
    if canon == "simple":
        return raw
    name, _, value = raw.partition(b":")
    if value.endswith(b"\r\n"):
        value = value[:-2]
    if _just_fws(value):
        value = b" ".join(value.split())
    else:
        value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


class BodyHasher:
    """The SHA-256 of a body's canonical form (bh=), fed in chunks of any size (RFC 6376
    §3.4.3, §3.4.4, §3.7). `update` as often as needed, then `digest` once. `limit` (l=,
    §3.5): hash only the first `limit` octets of the canonical body; `length` counts them all."""

    __slots__ = ("_blank", "_done", "_hash", "_midline", "_relaxed", "_room", "_started",
                 "_tail", "length")

    def __init__(self, canon: Canon, *, limit: int | None = None) -> None:
        if canon not in ("simple", "relaxed"):
            raise ValueError(f"unknown body canonicalisation {canon!r}")
        if limit is not None and limit < 0:
            raise ValueError("a body length limit cannot be negative")
        self._relaxed = canon == "relaxed"
        self._hash = hashlib.sha256()
        self._room = limit  # octets that may still be hashed (None: no limit)
        self.length = 0  # octets of canonical body so far, hashed or beyond the limit
        # The end of an unfinished line that later bytes may change: a CR (perhaps the start
        # of a CRLF) and, relaxed, WSP (perhaps trailing, perhaps joining a longer run).
        self._tail = b""
        self._blank = 0  # empty lines seen and not hashed: only a non-empty line after them is
        self._midline = False  # part of the current line is hashed: the line is not empty
        self._started = False  # something was hashed
        self._done = False

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise RuntimeError("BodyHasher.update after digest")
        data = self._tail + chunk if self._tail else bytes(chunk)
        cut = data.rfind(b"\r\n") + 2
        if cut > 1:
            self._lines(data[:cut])
            data = data[cut:]
        self._partial(data)

    def digest(self) -> bytes:
        """The body hash (raw, not base64). Ends the hasher."""
        if self._done:
            raise RuntimeError("BodyHasher.digest called twice")
        self._done = True
        # An unfinished last line gets its CRLF (§3.4.4 b). Relaxed, its trailing WSP stays
        # (one SP) as dkimpy keeps it: "abc \t" hashes as "abc \r\n". Verifiers disagree
        # here (OpenDKIM 2.11 hashes "abc") and a DATA transfer adds a CRLF that changes the
        # body: a message to sign should end with CRLF.
        tail = self._tail
        if tail or self._midline:
            self._emit(tail + b"\r\n")
        elif not self._relaxed and not self._started:
            self._put(b"\r\n")  # §3.4.3: an empty body is one CRLF (relaxed: none)
        return self._hash.digest()

    def _lines(self, block: bytes) -> None:
        """Complete lines (`block` ends with CRLF and starts a line, or continues the
        current one when `_midline`)."""
        if self._relaxed:
            block = _single_spaces(block).replace(b" \r\n", b"\r\n")
        content = block.rstrip(b"\r\n")
        # The CRLFs ending the block; a CR or LF before them is content (a bare one).
        match = _REVERSED_CRLFS.match(block[len(content) :][::-1])
        assert match is not None  # the pattern matches the empty string
        trail = match.end()
        end = len(block) - trail
        if end or self._midline:  # the first of those CRLFs ends a non-empty line
            self._emit(block[: end + 2])
            self._blank = trail // 2 - 1
        else:
            self._blank += trail // 2
        self._midline = False

    def _partial(self, data: bytes) -> None:
        """The start of a line (no CRLF in `data`): hash what later bytes cannot change."""
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        if self._relaxed:
            head = data[:end].rstrip(b" \t")
            self._tail = (b" " if len(head) < end else b"") + data[end:]
            if head:
                self._emit(_single_spaces(head))
                self._midline = True
        else:
            if end:
                self._emit(data[:end])
                self._midline = True
            self._tail = data[end:]

    def _emit(self, canonical: bytes) -> None:
        """Hashes the empty lines held back (a non-empty line follows them), then `canonical`."""
        blank = self._blank
        while blank:
            count = min(blank, len(_CRLFS) // 2)
            self._put(_CRLFS[: 2 * count])
            blank -= count
        self._blank = 0
        self._put(canonical)
        self._started = True

    def _put(self, canonical: bytes) -> None:
        """Canonical body octets: counted, and hashed as far as the limit lets them."""
        self.length += len(canonical)
        room = self._room
        if room is None:
            self._hash.update(canonical)
        elif room:
            if len(canonical) > room:
                canonical = canonical[:room]
            self._hash.update(canonical)
            self._room = room - len(canonical)


def _single_spaces(data: bytes) -> bytes:
    """Every run of WSP as one SP (§3.4.4 a). Each split and join halves the runs; on text
    with a double space a line that is 2x faster than bytes.replace, 4x than re.sub."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = b" ".join(data.split(b"  "))
    return data


def body_hash(body: bytes, canon: Canon) -> bytes:
    """The body hash of a body held whole."""
    hasher = BodyHasher(canon)
    hasher.update(body)
    return hasher.digest()
