"""The ARC header fields (RFC 8617 §4.1) parsed within bounds, and a message's ARC Sets
collected and checked for structure (§4.2, §5.2 steps 2 to 4).

- ARC-Authentication-Results (AAR, §4.1.1): ``i=N;`` then an Authentication-Results value
  (RFC 8601 §2.2): the authserv-id and resinfos, each ``method=result`` with ``ptype.property=
  value`` properties. Comments are dropped, quoted strings kept whole; at most MAX_AAR octets and
  MAX_RESINFO resinfos.
- ARC-Message-Signature (AMS, §4.1.2): a DKIM-Signature (RFC 6376 §3.5) without v=, i= the
  instance; its tags are checked as DKIM's are (`dkim.tags`), From must be in h=, ARC-Seal must
  not (§4.1.2).
- ARC-Seal (AS, §4.1.3): i=, cv= (none, pass or fail), a=, b=, d=, s=, t=; no h= (§4.1.3).

`collect` groups the fields by instance and checks the chain's form: every field parses, the
instances are 1..N with no gap, each has exactly one AAR, one AMS and one AS, N is at most
MAX_INSTANCES (§4.2.1: 50), the newest AS's cv is not fail (§5.2 step 2), instance 1 says
cv=none and every later one cv=pass (§5.2 step 4). Anything else is an `ArcStructureError`,
which makes the chain fail.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from postkeep.mailauth.dkim.canon import Canon, HeaderField
from postkeep.mailauth.dkim.tags import (
    MAX_HEADERS,
    SignatureError,
    TagListError,
    base64_value,
    domain_value,
    parse_tag_list,
    selector_value,
    timestamp_value,
)

MAX_INSTANCES = 50  # §4.2.1: i= is 1 to 50
MAX_AAR = 16384  # octets of one ARC-Authentication-Results value
MAX_RESINFO = 64  # resinfos read from one AAR
ARC_FIELDS = ("arc-authentication-results", "arc-message-signature", "arc-seal")
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")  # rsa-sha1 never (RFC 8301 §3.1)
_INSTANCE = re.compile(r"[1-9][0-9]?")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_AAR_INSTANCE = re.compile(rb"[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,3})[ \t\r\n]*;")
_WORD = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*")+')


class ArcStructureError(ValueError):
    """A field that does not parse, or a chain of the wrong form (§5.2: the chain fails)."""


@dataclass(frozen=True, slots=True)
class ResInfo:
    """One result of an AAR: ``method=result`` (lower-case) and its properties
    (``"header.d"`` -> value, names lower-case)."""

    method: str
    result: str
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthResults:
    instance: int
    authserv_id: str
    results: tuple[ResInfo, ...]


@dataclass(frozen=True, slots=True)
class MessageSignature:
    """An AMS's tags (names lower-case, `headers` h= in order, b_span as in `dkim.tags`)."""

    instance: int
    algorithm: str
    signature: bytes
    body_hash: bytes
    header_canon: Canon
    body_canon: Canon
    domain: str
    selector: str
    headers: tuple[str, ...]
    length: int | None
    b_span: tuple[int, int]

    @property
    def key_type(self) -> str:
        return self.algorithm.partition("-")[0]


@dataclass(frozen=True, slots=True)
class Seal:
    instance: int
    cv: str  # "none", "pass" or "fail"
    algorithm: str
    signature: bytes
    domain: str
    selector: str
    timestamp: int | None
    b_span: tuple[int, int]

    @property
    def key_type(self) -> str:
        return self.algorithm.partition("-")[0]


@dataclass(frozen=True, slots=True)
class ArcSet:
    """One instance: its three fields as written (CRLF included) and parsed."""

    instance: int
    aar_raw: bytes
    ams_raw: bytes
    seal_raw: bytes
    aar: AuthResults
    ams: MessageSignature
    seal: Seal


def _value(raw: bytes) -> bytes:
    """A field's value: after the colon, without the final CRLF."""
    value = raw.partition(b":")[2]
    return value[:-2] if value.endswith(b"\r\n") else value


def _tags(raw: bytes, what: str) -> dict[str, str]:
    try:
        tags = parse_tag_list(_value(raw))
    except TagListError as e:
        raise ArcStructureError(f"{what}: malformed tag list: {e}") from None
    return {name: tag.value for name, tag in tags.items()}


def _instance(text: str, what: str) -> int:
    if not _INSTANCE.fullmatch(text) or int(text) > MAX_INSTANCES:
        raise ArcStructureError(f"{what}: i={text[:8]} is not an instance (1 to "
                                f"{MAX_INSTANCES})")
    return int(text)


def _require(text: dict[str, str], names: Sequence[str], what: str) -> None:
    missing = [n + "=" for n in names if n not in text]
    if missing:
        raise ArcStructureError(f"{what}: {', '.join(missing)} missing")


def _algorithm(text: dict[str, str], what: str) -> str:
    algorithm = text["a"].lower()
    if algorithm not in ALGORITHMS:
        raise ArcStructureError(f"{what}: algorithm a={text['a'][:24]} not acceptable")
    return algorithm


def parse_ams(raw: bytes) -> MessageSignature:
    """An ARC-Message-Signature field (as written, CRLF included)."""
    text = _tags(raw, "ARC-Message-Signature")
    what = "ARC-Message-Signature"
    _require(text, ("i", "a", "b", "bh", "d", "h", "s"), what)
    instance = _instance(text["i"], what)
    algorithm = _algorithm(text, what)
    header_canon, _, body_canon = text.get("c", "simple").lower().partition("/")
    body_canon = body_canon or "simple"
    if header_canon not in ("simple", "relaxed") or body_canon not in ("simple", "relaxed"):
        raise ArcStructureError(f"{what}: unknown canonicalisation c={text['c'][:24]}")
    headers = tuple(name.strip(" \t").lower() for name in text["h"].split(":"))
    if len(headers) > MAX_HEADERS or not all(_FIELD_NAME.fullmatch(n) for n in headers):
        raise ArcStructureError(f"{what}: h= is not a list of at most {MAX_HEADERS} names")
    if "from" not in headers or "arc-seal" in headers:
        raise ArcStructureError(f"{what}: h= must name From and not ARC-Seal (§4.1.2)")
    length = text.get("l")
    if length is not None and not re.fullmatch(r"[0-9]{1,20}", length):
        raise ArcStructureError(f"{what}: l= is not a number")
    try:
        domain = domain_value(text["d"], "d=")
        signature = MessageSignature(
            instance, algorithm, base64_value(text["b"], "b="), base64_value(text["bh"], "bh="),
            header_canon,  # type: ignore[arg-type]
            body_canon,  # type: ignore[arg-type]
            domain, selector_value(text["s"], domain), headers,
            None if length is None else int(length), _b_span(raw))
    except SignatureError as e:
        raise ArcStructureError(f"{what}: {e}") from None
    if not signature.signature or len(signature.body_hash) != 32:
        raise ArcStructureError(f"{what}: b= empty or bh= not a SHA-256")
    return signature


def parse_seal(raw: bytes) -> Seal:
    """An ARC-Seal field (as written, CRLF included)."""
    what = "ARC-Seal"
    text = _tags(raw, what)
    _require(text, ("i", "cv", "a", "b", "d", "s"), what)
    if "h" in text:
        raise ArcStructureError(f"{what}: h= is not allowed (§4.1.3)")
    cv = text["cv"].lower()
    if cv not in ("none", "pass", "fail"):
        raise ArcStructureError(f"{what}: cv={text['cv'][:24]} is not none, pass or fail")
    try:
        domain = domain_value(text["d"], "d=")
        seal = Seal(_instance(text["i"], what), cv, _algorithm(text, what),
                    base64_value(text["b"], "b="), domain, selector_value(text["s"], domain),
                    timestamp_value(text, "t"), _b_span(raw))
    except SignatureError as e:
        raise ArcStructureError(f"{what}: {e}") from None
    if not seal.signature:
        raise ArcStructureError(f"{what}: b= is empty")
    return seal


def _b_span(raw: bytes) -> tuple[int, int]:
    tag = parse_tag_list(_value(raw))["b"]
    return tag.start, tag.end


def _strip_comments(value: str) -> str:
    """`value` with RFC 5322 comments replaced by a space, quoted strings kept."""
    out = []
    depth = 0
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if quoted:
            out.append(c)
            if c == "\\" and i + 1 < len(value):
                out.append(value[i + 1])
                i += 1
            elif c == '"':
                quoted = False
        elif depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if not depth:
                    out.append(" ")
        elif c == "(":
            depth = 1
        else:
            quoted = c == '"'
            out.append(c)
        i += 1
    return "".join(out)


def _split_semicolons(value: str) -> list[str]:
    """`value` cut at the semicolons outside quoted strings."""
    parts, start, quoted, i = [], 0, False, 0
    while i < len(value):
        c = value[i]
        if quoted and c == "\\":
            i += 1
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == '"' and word[-1] == '"':
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    return word


def parse_aar(raw: bytes) -> AuthResults:
    """An ARC-Authentication-Results field (as written, CRLF included)."""
    what = "ARC-Authentication-Results"
    value = _value(raw)
    if len(value) > MAX_AAR:
        raise ArcStructureError(f"{what}: {len(value)} octets (at most {MAX_AAR})")
    match = _AAR_INSTANCE.match(value)
    if match is None:
        raise ArcStructureError(f"{what}: does not start with i=N;")
    instance = _instance(match[1].decode("ascii"), what)
    text = _strip_comments(value[match.end():].decode("utf-8", "replace")
                           .replace("\r\n", " "))
    parts = _split_semicolons(text)
    words = parts[0].split()
    if not words:
        raise ArcStructureError(f"{what}: no authserv-id")
    results = []
    for part in parts[1:MAX_RESINFO + 1]:
        tokens = _WORD.findall(part)
        if not tokens or tokens[0].lower() == "none":
            continue
        method, eq, result = tokens[0].partition("=")
        if not eq or not result:
            continue  # not a resinfo (a reason= on its own, garbage): skipped
        properties = {}
        for token in tokens[1:]:
            name, eq, prop = token.partition("=")
            if eq and "." in name:
                properties.setdefault(name.lower(), _unquote(prop))
        results.append(ResInfo(method.partition("/")[0].lower(), result.lower(), properties))
    return AuthResults(instance, _unquote(words[0]).lower().rstrip("."), tuple(results))


def collect(fields: Sequence[HeaderField]) -> list[ArcSet]:
    """The message's ARC Sets, oldest first (empty: no ARC fields); ArcStructureError when a
    field does not parse or the chain is not of the form of §5.2 (module docstring)."""
    found: dict[int, dict[str, list[bytes]]] = {}
    count = 0
    for f in fields:
        if f.key not in ARC_FIELDS:
            continue
        count += 1
        if count > 3 * MAX_INSTANCES:
            raise ArcStructureError(f"more than {3 * MAX_INSTANCES} ARC header fields")
        instance = (parse_aar(f.raw).instance if f.key == ARC_FIELDS[0] else
                    _instance(_tags(f.raw, f.key).get("i", ""), f.key))
        found.setdefault(instance, {}).setdefault(f.key, []).append(f.raw)
    if not found:
        return []
    top = max(found)
    if sorted(found) != list(range(1, top + 1)):
        raise ArcStructureError(f"instances {sorted(found)} are not 1 to {top}")
    sets = []
    for instance in range(1, top + 1):
        got = found[instance]
        if any(len(got.get(name, ())) != 1 for name in ARC_FIELDS):
            raise ArcStructureError(f"instance {instance} has not exactly one AAR, AMS and AS")
        aar_raw, ams_raw, seal_raw = (got[name][0] for name in ARC_FIELDS)
        sets.append(ArcSet(instance, aar_raw, ams_raw, seal_raw, parse_aar(aar_raw),
                           parse_ams(ams_raw), parse_seal(seal_raw)))
    if sets[-1].seal.cv == "fail":
        raise ArcStructureError(f"ARC-Seal i={top} says cv=fail: the chain has failed")
    for s in sets:
        expected = "none" if s.instance == 1 else "pass"
        if s.seal.cv != expected:
            raise ArcStructureError(f"ARC-Seal i={s.instance} says cv={s.seal.cv}, not "
                                    f"{expected}")
    return sets


def highest_instance(fields: Sequence[HeaderField]) -> int:
    """The highest i= among the ARC fields that name one (0: none): where a sealer adds."""
    top = 0
    for f in fields:
        if f.key not in ARC_FIELDS:
            continue
        try:
            top = max(top, parse_aar(f.raw).instance if f.key == ARC_FIELDS[0] else
                      _instance(_tags(f.raw, f.key).get("i", ""), f.key))
        except ArcStructureError:
            continue
    return top

