"""MTA-STS records and policies, sans-IO (RFC 8461): the TXT record's id, the policy text, MX
host matching. `postkeep.queue.mtasts` does the lookups, the HTTPS fetch and the caching.

- The `_mta-sts` TXT record (§3.1): records that do not begin with `v=STSv1` are discarded;
  not exactly one left, or one that breaks the grammar (`v=STSv1` first, `;`-separated
  `name=value` fields, `id=` of 1 to 32 letters and digits, US-ASCII only), is no policy.
  `record_id` returns its id, None when no record is an MTA-STS one, and raises
  `PolicyError` for several or a bad one (no policy either, but worth a log line).
- The policy (§3.2): `key: value` lines ending in LF or CRLF (the last one may lack it), with
  `version: STSv1`, `mode: enforce|testing|none`, `max_age` (1 to 10 digits, at most
  31557600 seconds: a year), and one `mx:` line per pattern (an RFC 5321 Domain, A-labels,
  optionally `*.` first); at least one unless the mode is `none`. Keys and the known values are
  case-sensitive (RFC 7405 `%s`). Unknown keys are ignored when their line is well formed; of a
  key other than `mx` seen twice, the first is used (§3.2: "ignore all but the first
  instance"). Blank lines are tolerated (the grammar has none; skipping them costs nothing).
  Anything else makes the whole policy invalid: `parse_policy` raises `PolicyError`.
- MX host matching (§4.1): a pattern is an exact host name, or `*.` and a domain, matching
  exactly one more left-most label: `*.example.com` matches `mx.example.com`, not
  `example.com` nor `a.b.example.com`. Case-insensitive; a host's trailing dot is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

#: The largest `max_age` a policy may state (RFC 8461 §3.2: 31557600 seconds, about a year).
MAX_AGE_LIMIT = 31_557_600


class PolicyError(ValueError):
    """A TXT record or a policy text that is not a valid MTA-STS one (the message says why)."""


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy: its mode, its `mx` patterns (lower case), how long it may be used
    (`max_age` seconds from its fetch), and the TXT record's `id` it was fetched for."""

    mode: Mode
    mx_patterns: tuple[str, ...]
    max_age: int
    id: str

    def allows(self, mx_host: str) -> bool:
        """Whether `mx_host` (an MX record's exchange) matches one of the patterns (§4.1)."""
        host = mx_host.lower().removesuffix(".")
        return any(mx_matches(pattern, host) for pattern in self.mx_patterns)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1 for one pattern (lower case) and one host name (lower case, no trailing
    dot): equal, or `*.rest` and `host` is one label (not empty, no dot) before `.rest`."""
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".rest"
        head = host[: -len(suffix)]
        return host.endswith(suffix) and bool(head) and "." not in head
    return host == pattern


# §3.1: sts-field = sts-id / sts-extension; sts-ext-name and sts-ext-value.
_TXT_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=([\x21-\x3a\x3c\x3e-\x7e]+)")
_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TXT_DELIM = re.compile(r"[ \t]*;[ \t]*")


def record_id(texts: Sequence[bytes]) -> str | None:
    """The policy id of a domain's `_mta-sts` TXT records (each one's strings joined, as the
    resolver gives them); None when none begins with `v=STSv1`; `PolicyError` when more than
    one does, or the one that does is not valid (§3.1: in both cases there is no policy)."""
    candidates = [t for t in texts if t[:8] in (b"v=STSv1", b"v=STSv1;", b"v=STSv1 ",
                                                 b"v=STSv1\t")]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise PolicyError(f"{len(candidates)} v=STSv1 TXT records (one is needed)")
    try:
        text = candidates[0].decode("ascii")
    except UnicodeDecodeError:
        raise PolicyError("TXT record is not US-ASCII") from None
    fields = _TXT_DELIM.split(text.removeprefix("v=STSv1").rstrip(" \t"))
    if fields[0] != "":
        raise PolicyError(f"TXT record: {text!r} does not start with 'v=STSv1;'")
    if fields[-1] == "" and len(fields) > 1:
        fields.pop()  # the optional final ";"
    found: str | None = None
    for field in fields[1:]:
        match = _TXT_FIELD.fullmatch(field)
        if match is None:
            raise PolicyError(f"TXT record: bad field {field!r}")
        name, value = match.groups()
        if name == "id" and found is None:
            if not _TXT_ID.fullmatch(value):
                raise PolicyError(f"TXT record: bad id {value!r} (1 to 32 letters, digits)")
            found = value
    if found is None:
        raise PolicyError("TXT record has no id= field")
    return found


# §3.2: sts-policy-ext-name, sts-policy-field-delim, the value to the end of the line.
_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*", re.DOTALL)
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_KNOWN = ("version", "mode", "max_age")


def _checked_value(number: int, value: str) -> str:
    """An sts-policy-ext-value: visible characters (UTF-8 allowed) with inner spaces only."""
    if not value or any(c != " " and (c <= " " or c == "\x7f") for c in value):
        raise PolicyError(f"line {number}: bad value {value!r}")
    return value


def parse_policy(body: bytes, policy_id: str) -> Policy:
    """The policy that `body` (the fetched text) states, for the TXT record's `policy_id`;
    `PolicyError` if it is not a valid one (§3.2)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8") from None
    first: dict[str, str] = {}
    patterns: list[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r")
        if not line.strip(" \t"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise PolicyError(f"line {number}: not 'key: value': {line[:80]!r}")
        key, value = match[1], _checked_value(number, match[2])
        if key == "mx":
            if not _DOMAIN.fullmatch(value):
                raise PolicyError(f"line {number}: bad mx pattern {value!r}")
            patterns.append(value.lower())
        elif key in _KNOWN:
            first.setdefault(key, value)
    missing = [key for key in _KNOWN if key not in first]
    if missing:
        raise PolicyError(f"policy lacks {', '.join(missing)}")
    if first["version"] != "STSv1":
        raise PolicyError(f"version {first['version']!r} is not STSv1")
    try:
        mode = Mode(first["mode"])
    except ValueError:
        raise PolicyError(f"mode {first['mode']!r} is not enforce, testing or none") from None
    if not _MAX_AGE.fullmatch(first["max_age"]):
        raise PolicyError(f"max_age {first['max_age']!r} is not 1 to 10 digits")
    max_age = int(first["max_age"])
    if max_age > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age {max_age} is over {MAX_AGE_LIMIT} (RFC 8461 §3.2)")
    if not patterns and mode is not Mode.NONE:
        raise PolicyError(f"mode {mode} with no mx pattern")
    return Policy(mode, tuple(dict.fromkeys(patterns)), max_age, policy_id)
