"""DKIM tag lists (RFC 6376 §3.2), parsed strictly and within bounds, and the two records
written in them: the DKIM-Signature field (§3.5) and the key record (§3.6.1; Ed25519 keys,
RFC 8463 §4.2).

A tag list is `tag=value` pairs separated by ";", a final ";" allowed; FWS may surround a
name, the "=" and a value, and separates the words of a value. Names are ALPHA
*(ALPHA / DIGIT / "_"); values VALCHAR (%x21-3A / %x3C-7E) and, for RFC 8616's UTF-8 in
`i=`, octets above 0x7F that decode as UTF-8. A tag named twice makes the list invalid
(§3.2), and so does anything outside that grammar. Unknown tags are ignored (§3.2); so is
`z=` (copied header fields, diagnostics only).

`parse_signature` checks the signature's tags (§3.5, §6.1.1): v, a, b, bh, d, h and s
present; `v=1`; a known a= and c=; `dns/txt` among q=; i= within d=; From in h=; t= and x=
numbers with t < x; `l=` a number. A `SignatureError` says what is wrong; the verifier
reports it as `neutral` (RFC 8601 §2.7.1: "contained syntax errors"). `parse_key_record`
checks §3.6.1 (v=DKIM1 first if present, k=rsa or ed25519, p= base64, empty when revoked,
s= naming email, h= and t= lists); a `KeyRecordError` is a permerror.

Bounds: a field of at most MAX_FIELD octets, at most MAX_TAGS tags, MAX_HEADERS names in h=.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

from postkeep.mailauth.dkim.canon import Canon

MAX_FIELD = 16384  # octets of one DKIM-Signature field (a 4096-bit b= is 684; z= may be long)
MAX_RECORD = 8192  # octets of one key record (a 4096-bit key's p= is ~740)
MAX_TAGS = 64
MAX_HEADERS = 256  # names in h= (over-signing doubles the usual 20 or so)
MAX_NAME = 253  # d= and s=+d= are domain names (RFC 1035 §2.3.4)

Algorithm = Literal["rsa-sha256", "ed25519-sha256", "rsa-sha1"]
ALGORITHMS: frozenset[str] = frozenset({"rsa-sha256", "ed25519-sha256", "rsa-sha1"})
_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")
# VALCHAR words separated by WSP, or octets above 0x7F (checked as UTF-8 afterwards).
_VALUE = re.compile(rb"[!-:<-~\x80-\xff]+(?:[ \t]+[!-:<-~\x80-\xff]+)*")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext
_LABELS = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                     r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*")
_DIGITS = re.compile(r"[0-9]{1,12}")  # t= and x= are 1*12DIGIT (§3.5)
_LENGTH = re.compile(r"[0-9]{1,20}")  # l= is 1*76DIGIT; more than 20 digits is no real body
_WSP = re.compile(rb"[ \t]+")
# Tags whose values may have FWS anywhere (base64, colon lists): it is removed.
_SQUEEZED = frozenset({"b", "bh", "h", "p", "z"})


class TagListError(ValueError):
    """Not a tag list (§3.2), or one out of bounds."""


class SignatureError(ValueError):
    """A DKIM-Signature field whose tags are wrong (§3.5, §6.1.1)."""


class KeyRecordError(ValueError):
    """A key record that is invalid or unusable (§3.6.1, §6.1.2)."""


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag: its value (FWS unfolded; removed for base64 and lists) and, in the octets
    parsed, where its value starts and ends (all the FWS around it included: b= removal)."""

    value: str
    start: int
    end: int


def parse_tag_list(data: bytes, *, limit: int = MAX_FIELD,
                   allow_empty: bool = False) -> dict[str, Tag]:
    """The tags of `data` (a field's value, CRLFs of folding included, no final CRLF).
    `allow_empty`: an empty element (";;") is skipped rather than refused (key records)."""
    if len(data) > limit:
        raise TagListError(f"{len(data)} octets (at most {limit})")
    if b"\r" in data or b"\n" in data:
        # CRLF WSP as three WSP: the offsets in `unfolded` are those in `data`.
        unfolded = data.replace(b"\r\n ", b"   ").replace(b"\r\n\t", b"  \t")
        if b"\r" in unfolded or b"\n" in unfolded:
            raise TagListError("a CR or LF that is not folding whitespace")
    else:
        unfolded = data
    tags: dict[str, Tag] = {}
    position = 0
    for element in unfolded.split(b";"):
        start, position = position, position + len(element) + 1
        if not element.strip(b" \t"):
            if position > len(unfolded) or allow_empty:
                continue  # after a final ";" (or skipped, when allowed)
            raise TagListError("an empty tag")
        name, equals, value = element.partition(b"=")
        name = name.strip(b" \t")
        if not equals or not _TAG_NAME.fullmatch(name):
            raise TagListError(f"not a tag: {_show(element)}")
        key = name.decode("ascii")
        if key in tags:
            raise TagListError(f"tag {key}= twice")
        if len(tags) == MAX_TAGS:
            raise TagListError(f"more than {MAX_TAGS} tags")
        text = value.strip(b" \t")
        if text and not _VALUE.fullmatch(text):
            raise TagListError(f"tag {key}= has octets no value may have")
        if key in _SQUEEZED:
            text = _WSP.sub(b"", text)
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise TagListError(f"tag {key}= is not UTF-8") from None
        value_start = start + len(element) - len(value)
        tags[key] = Tag(decoded, value_start, start + len(element))
    return tags


def _show(element: bytes) -> str:
    text = element.strip(b" \t").decode("ascii", "backslashreplace")
    return repr(text if len(text) <= 40 else text[:40] + "...")


def base64_value(value: str, what: str) -> bytes:
    """A base64 tag value decoded; SignatureError naming `what` when it is not base64."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SignatureError(f"{what} is not base64") from None


@dataclass(frozen=True, slots=True)
class Signature:
    """A DKIM-Signature field's tags, checked (§3.5). Names lower-case; `identity` i= (default
    "@" + d=); `headers` h= in order, lower-case; `length` l= (None: the whole body)."""

    algorithm: Algorithm
    signature: bytes  # b=, decoded
    b_text: str  # b= as written, FWS removed (for header.b, RFC 6008)
    body_hash: bytes  # bh=, decoded
    header_canon: Canon
    body_canon: Canon
    domain: str
    selector: str
    identity: str
    headers: tuple[str, ...]
    length: int | None
    timestamp: int | None
    expiration: int | None
    b_span: tuple[int, int]  # where b='s value is, in the field's value

    @property
    def key_type(self) -> str:
        return self.algorithm.partition("-")[0]


def parse_signature(value: bytes) -> Signature:
    """The signature in a DKIM-Signature field's `value` (after the colon, no final CRLF).
    SignatureError (TagListError included) when it is not one."""
    try:
        tags = parse_tag_list(value)
    except TagListError as e:
        raise SignatureError(f"malformed tag list: {e}") from None
    missing = [name for name in ("v", "a", "b", "bh", "d", "h", "s") if name not in tags]
    if missing:
        raise SignatureError(f"required tag{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(n + '=' for n in missing)} missing")
    text = {name: tag.value for name, tag in tags.items()}
    if text["v"] != "1":
        raise SignatureError(f"unsupported version v={text['v']}")
    algorithm = text["a"].lower()
    if algorithm not in ALGORITHMS:
        raise SignatureError(f"unknown algorithm a={text['a']}")
    signature = base64_value(text["b"], "b=")
    if not signature:
        raise SignatureError("b= is empty")
    body_hash = base64_value(text["bh"], "bh=")
    if len(body_hash) != (20 if algorithm == "rsa-sha1" else 32):
        raise SignatureError(f"bh= of {len(body_hash)} octets for {algorithm}")
    header_canon, _, body_canon = text.get("c", "simple").lower().partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise SignatureError(f"unknown canonicalisation c={text['c']}")
    domain = domain_value(text["d"], "d=")
    selector = selector_value(text["s"], domain)
    headers = tuple(name.strip(" \t").lower() for name in text["h"].split(":"))
    if len(headers) > MAX_HEADERS:
        raise SignatureError(f"more than {MAX_HEADERS} names in h=")
    if not all(_FIELD_NAME.fullmatch(name) for name in headers):
        raise SignatureError("h= is not a list of field names")
    if "from" not in headers:
        raise SignatureError("From is not signed (h= lacks it, RFC 6376 §5.4)")
    identity = text.get("i", "@" + domain)
    local, at, auid_domain = identity.rpartition("@")
    if not at:
        raise SignatureError(f"i={identity} has no @")
    auid_domain = auid_domain.lower()
    if auid_domain != domain and not auid_domain.endswith("." + domain):
        raise SignatureError(f"i= domain {auid_domain} is not within d={domain}")
    if "q" in text and "dns/txt" not in text["q"].lower().replace(" ", "").split(":"):
        raise SignatureError(f"no known query method in q={text['q']}")
    timestamp = _number(text, "t", _DIGITS)
    expiration = _number(text, "x", _DIGITS)
    if timestamp is not None and expiration is not None and expiration <= timestamp:
        raise SignatureError("x= is not after t=")
    b = tags["b"]
    return Signature(
        algorithm=algorithm,  # type: ignore[arg-type]
        signature=signature, b_text=text["b"], body_hash=body_hash,
        header_canon=header_canon,  # type: ignore[arg-type]
        body_canon=body_canon,  # type: ignore[arg-type]
        domain=domain, selector=selector, identity=f"{local}@{auid_domain}",
        headers=headers, length=_number(text, "l", _LENGTH),
        timestamp=timestamp, expiration=expiration, b_span=(b.start, b.end))


def domain_value(value: str, what: str) -> str:
    """A d= value, lower-cased, checked as A-labels (SignatureError when it is none)."""
    domain = value.lower().removesuffix(".")
    if not _LABELS.fullmatch(domain) or len(domain) > MAX_NAME:
        raise SignatureError(f"{what}{value} is not a domain name in A-labels")
    return domain


def selector_value(value: str, domain: str) -> str:
    """An s= value, lower-cased, checked: labels whose key name (with d=) is a domain name."""
    selector = value.lower()
    if not _LABELS.fullmatch(selector) or len(selector) + len(domain) + 12 > MAX_NAME:
        raise SignatureError(f"s={value} is not a selector")
    return selector


def timestamp_value(text: dict[str, str], name: str) -> int | None:
    """t= or x= (1*12DIGIT, §3.5) when present; SignatureError when not a number."""
    return _number(text, name, _DIGITS)


def _number(text: dict[str, str], name: str, pattern: re.Pattern[str]) -> int | None:
    if name not in text:
        return None
    if not pattern.fullmatch(text[name]):
        raise SignatureError(f"{name}={text[name][:24]} is not a number (or too long)")
    return int(text[name])


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key record's tags, checked (§3.6.1). `public_key`: p= decoded, empty when the key
    is revoked; `hashes`: h= (None: any); `testing`: t=y; `strict`: t=s."""

    key_type: str
    public_key: bytes
    hashes: tuple[str, ...] | None
    testing: bool
    strict: bool


def parse_key_record(record: bytes) -> KeyRecord:
    """One TXT record (its strings joined) as a key record; KeyRecordError when it is none."""
    try:
        tags = parse_tag_list(record, limit=MAX_RECORD, allow_empty=True)
    except TagListError as e:
        raise KeyRecordError(f"malformed key record: {e}") from None
    if "v" in tags and (tags["v"].value != "DKIM1" or min(t.start for t in tags.values())
                        != tags["v"].start):
        raise KeyRecordError("key record with v= other than DKIM1, or v= not first")
    text = {name: tag.value for name, tag in tags.items()}
    if "p" not in text:
        raise KeyRecordError("key record without p=")
    key_type = text.get("k", "rsa").lower()
    if key_type not in ("rsa", "ed25519"):
        raise KeyRecordError(f"unknown key type k={text['k']}")
    services = [s.strip(" \t").lower() for s in text.get("s", "*").split(":")]
    if "*" not in services and "email" not in services:
        raise KeyRecordError(f"key not for email (s={text['s']})")
    try:
        public_key = base64.b64decode(text["p"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyRecordError("p= is not base64") from None
    hashes = (tuple(h.strip(" \t").lower() for h in text["h"].split(":"))
              if "h" in text else None)
    flags = {f.strip(" \t").lower() for f in text.get("t", "").split(":")}
    return KeyRecord(key_type, public_key, hashes, "y" in flags, "s" in flags)
