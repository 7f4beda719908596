"""SPF macros (RFC 7208 §7): checking a macro-string and expanding it.

Grammar (§7.1)::

    macro-string  = *( macro-expand / macro-literal )
    macro-expand  = ( "%{" macro-letter transformers *delimiter "}" ) / "%%" / "%_" / "%-"
    macro-literal = %x21-24 / %x26-7E
    macro-letter  = "s" / "l" / "o" / "d" / "i" / "p" / "h" / "c" / "r" / "t" / "v"
    transformers  = *DIGIT [ "r" ]
    delimiter     = "." / "-" / "+" / "," / "/" / "_" / "="
    explain-string = *( macro-string / SP )

c, r and t are allowed only in an explanation string (§7.2, §7.3 "only in exp text"). A
digit transformer is non-zero (§7.3). Expansion (§7.3): the value is split on the delimiters
(default "."), reversed with "r", the right-most N parts kept, joined with "."; an upper-case
letter's expansion is URL-escaped (§7.3: every character but RFC 3986 unreserved ones).
"%%" is "%", "%_" a space, "%-" "%20". A domain name after expansion keeps at most 253
characters, its left-most labels removed (§7.3), and loses one trailing dot (§7.1). An
expansion longer than `MAX_EXPANSION` characters is a MacroError.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

#: Letters allowed in a domain-spec, and in an explanation string too.
DOMAIN_LETTERS = frozenset("slodiphv")
EXP_LETTERS = DOMAIN_LETTERS | frozenset("crt")
#: A digit transformer above this keeps every part; bounds the int() of a long digit run.
MAX_DIGITS = 128
#: Longest expansion made (characters): a record's worth of "%{s}" over a long sender
#: stops here instead of growing to megabytes.
MAX_EXPANSION = 8192

_TOKEN = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}|%[%_-]|%|[^%]+")
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]*")
_EXP_LITERAL = re.compile(r"[\x20-\x24\x26-\x7e]*")
_TOPLABEL = re.compile(r"([a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])", re.I)


class MacroError(ValueError):
    """A macro-string that the grammar of RFC 7208 §7.1 refuses; the message says why."""


def check(text: str, *, exp: bool = False) -> None:
    """Raises MacroError unless `text` is a macro-string (an explain-string if `exp`)."""
    literal = _EXP_LITERAL if exp else _LITERAL
    letters = EXP_LETTERS if exp else DOMAIN_LETTERS
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if match.group(1) is not None:
            if match.group(1).lower() not in letters:
                raise MacroError(f"macro letter {match.group(1)!r} not allowed here "
                                 f"(RFC 7208 §7.1, §7.3)")
            if match.group(2) and int(match.group(2)[:4]) == 0:
                raise MacroError(f"{token!r}: a digit transformer is non-zero (RFC 7208 §7.3)")
        elif token == "%":
            raise MacroError("'%' not followed by '{', '%', '_' or '-' (RFC 7208 §7.1)")
        elif not token.startswith("%") and not literal.fullmatch(token):
            raise MacroError(f"{token[:40]!r}: characters outside a macro-literal "
                             "(RFC 7208 §7.1)")


def check_domain_spec(text: str) -> None:
    """RFC 7208 §7.1: domain-spec = macro-string domain-end, where domain-end is
    ( "." toplabel [ "." ] ) / macro-expand. Raises MacroError otherwise."""
    if not text:
        raise MacroError("an empty domain-spec (RFC 7208 §7.1)")
    check(text)
    tokens = [m.group(0) for m in _TOKEN.finditer(text)]
    last = tokens[-1]
    if last.startswith("%"):  # ends with a macro-expand
        return
    body = last[:-1] if last.endswith(".") else last
    head, dot, top = body.rpartition(".")
    if not dot or not _TOPLABEL.fullmatch(top) or (not head and len(tokens) == 1):
        raise MacroError(f"{text[:60]!r} does not end in '.' and a top label "
                         "(RFC 7208 §7.1)")


def needs(text: str, letter: str) -> bool:
    """Whether `text` (a checked macro-string) uses macro `letter` (either case)."""
    return any(m.group(1) is not None and m.group(1).lower() == letter
               for m in _TOKEN.finditer(text))


def _transform(value: str, digits: str, reverse: bool, delimiters: str) -> str:
    parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
    if reverse:
        parts.reverse()
    if digits:
        keep = min(int(digits[:4]), MAX_DIGITS)
        parts = parts[-keep:]
    return ".".join(parts)


def expand(text: str, values: Mapping[str, str]) -> str:
    """`text` (checked with `check`) with its macros replaced by `values` (letter -> value);
    MacroError beyond `MAX_EXPANSION` characters."""
    out: list[str] = []
    size = 0
    for match in _TOKEN.finditer(text):
        if size > MAX_EXPANSION:
            raise MacroError(f"an expansion of more than {MAX_EXPANSION} characters")
        token = match.group(0)
        letter = match.group(1)
        if letter is None:
            out.append({"%%": "%", "%_": " ", "%-": "%20"}.get(token, token))
            size += len(out[-1])
            continue
        value = _transform(values[letter.lower()], match.group(2), bool(match.group(3)),
                           match.group(4))
        if letter.isupper():
            value = urllib.parse.quote(value, safe="~")
        out.append(value)
        size += len(value)
    if size > MAX_EXPANSION:
        raise MacroError(f"an expansion of more than {MAX_EXPANSION} characters")
    return "".join(out)


def domain_name(expanded: str) -> str:
    """An expanded domain-spec as the name to look up: one trailing dot dropped, and left-most
    labels removed while it is longer than 253 characters (RFC 7208 §7.3)."""
    name = expanded[:-1] if expanded.endswith(".") else expanded
    while len(name) > 253 and "." in name:
        name = name.partition(".")[2]
    return name
