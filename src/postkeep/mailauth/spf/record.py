"""Parsing one SPF record (RFC 7208 §4.5, §4.6.1, §5, §6, §7.1; the ABNF of §12).

    record     = version terms *SP
    version    = "v=spf1"
    terms      = *( 1*SP ( directive / modifier ) )
    directive  = [ qualifier ] mechanism
    mechanism  = ( all / include / a / mx / ptr / ip4 / ip6 / exists )
    modifier   = redirect / explanation / unknown-modifier
    unknown-modifier = name "=" macro-string
    name       = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )

The whole record is parsed before any term is evaluated, so a syntax error anywhere is a
permerror (§4.6). Terms are separated by spaces only: any other control character, and any
octet outside 7-bit ASCII (§3.1, §4.6.1), is a syntax error. "redirect" and "exp" appear at
most once each (§6); unknown modifiers are checked as macro-strings and otherwise ignored
(§6). Bounds, so that no record costs more than a fixed amount to parse: `MAX_RECORD`
characters and `MAX_TERMS` terms (a record beyond them is a permerror: RFC 7208 §3.4 keeps
records "small", 450 octets being the advice).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from postkeep.mailauth.spf import macros

#: Longest record text accepted (characters, after its strings are joined, §3.3).
MAX_RECORD = 4096
#: Most terms accepted in one record.
MAX_TERMS = 256

MECHANISMS = frozenset(("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"))

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)
_DIRECTIVE = re.compile(r"([+\-?~]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.S)
_DUAL_CIDR = re.compile(r"(.*?)(?:/(0|[1-9][0-9]{0,2}))?(?://(0|[1-9][0-9]{0,2}))?", re.S)
_CIDR = re.compile(r"(.*?)(?:/(0|[1-9][0-9]{0,2}))?", re.S)
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP4 = re.compile(rf"{_QNUM}\.{_QNUM}\.{_QNUM}\.{_QNUM}")
_IP6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")


class SpfSyntaxError(ValueError):
    """A record that RFC 7208's grammar refuses (a permerror); the message says why."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive (§4.6.2, §5): qualifier ("+", "-", "~", "?"), mechanism name, its
    domain-spec (unexpanded; None: the current domain), CIDR lengths, and for ip4/ip6 the
    network. `text` is the term as published, lower-cased name."""

    qualifier: str
    name: str
    domain_spec: str | None
    cidr4: int
    cidr6: int
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    text: str


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed record: its directives in order, and the redirect= and exp= domain-specs."""

    mechanisms: tuple[Mechanism, ...]
    redirect: str | None
    exp: str | None


def is_spf(txt: bytes) -> bool:
    """Whether a TXT record is an SPF record (§4.5): "v=spf1" (any case) then a space or the
    end. Other TXT records, whatever they hold, are ignored."""
    return txt[:6].lower() == b"v=spf1" and (len(txt) == 6 or txt[6:7] == b" ")


def _domain_spec(value: str, term: str) -> str:
    try:
        macros.check_domain_spec(value)
    except macros.MacroError as e:
        raise SpfSyntaxError(f"{term[:80]!r}: {e}") from None
    return value


def _mechanism(qualifier: str, name: str, rest: str, term: str) -> Mechanism:
    cidr4, cidr6 = 32, 128
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    domain: str | None = None
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"{term[:80]!r}: 'all' takes no argument (RFC 7208 §5.1)")
    elif name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SpfSyntaxError(f"{term[:80]!r}: '{name}' needs ':domain' (RFC 7208 §5)")
        domain = _domain_spec(rest[1:], term)
    elif name in ("a", "mx"):
        match = _DUAL_CIDR.fullmatch(rest)
        assert match is not None  # every group optional
        head, four, six = match.groups()
        if four is not None:
            cidr4 = int(four)
        if six is not None:
            cidr6 = int(six)
        if cidr4 > 32 or cidr6 > 128:
            raise SpfSyntaxError(f"{term[:80]!r}: CIDR length out of range (RFC 7208 §5.6)")
        if head:
            if not head.startswith(":"):
                raise SpfSyntaxError(f"{term[:80]!r}: not '{name}[:domain][/n][//n]'")
            domain = _domain_spec(head[1:], term)
    elif name == "ptr":
        if rest:
            if not rest.startswith(":"):
                raise SpfSyntaxError(f"{term[:80]!r}: not 'ptr[:domain]' (RFC 7208 §5.5)")
            domain = _domain_spec(rest[1:], term)
    else:  # ip4, ip6
        match = _CIDR.fullmatch(rest)
        assert match is not None
        head, length = match.groups()
        if not head.startswith(":"):
            raise SpfSyntaxError(f"{term[:80]!r}: '{name}' needs ':network' (RFC 7208 §5.6)")
        address = head[1:]
        if name == "ip4":
            if not _IP4.fullmatch(address) or (length is not None and int(length) > 32):
                raise SpfSyntaxError(f"{term[:80]!r}: not an ip4-network[/0-32]")
            network = ipaddress.IPv4Network(f"{address}/{length or 32}", strict=False)
        else:
            try:
                if not _IP6.fullmatch(address):
                    raise ValueError(address)
                network = ipaddress.IPv6Network(f"{address}/{length or 128}", strict=False)
            except ValueError:
                raise SpfSyntaxError(f"{term[:80]!r}: not an ip6-network[/0-128]") from None
    return Mechanism(qualifier or "+", name, domain, cidr4, cidr6, network, term)


@lru_cache(maxsize=1024)
def parse(text: str) -> Record:
    """The record `text` (already known to start with "v=spf1", §4.5), parsed whole, or
    SpfSyntaxError. A pure function of the text, its (immutable) result kept for the
    domains that recur."""
    if len(text) > MAX_RECORD:
        raise SpfSyntaxError(f"a record of {len(text)} characters (at most {MAX_RECORD})")
    if not text.isascii():
        raise SpfSyntaxError("non-ASCII characters in the record (RFC 7208 §3.1)")
    terms = text.split(" ")[1:]
    if sum(1 for term in terms if term) > MAX_TERMS:
        raise SpfSyntaxError(f"more than {MAX_TERMS} terms")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, str] = {}
    for term in terms:
        if not term:
            continue  # 1*SP between terms, *SP at the end
        if not term.isprintable():
            raise SpfSyntaxError(f"{term[:80]!r}: a control character (RFC 7208 §4.6.1)")
        modifier = _MODIFIER.fullmatch(term)
        if modifier is not None:
            key, value = modifier.group(1).lower(), modifier.group(2)
            if key in ("redirect", "exp"):
                if key in modifiers:
                    raise SpfSyntaxError(f"'{key}=' twice (RFC 7208 §6)")
                modifiers[key] = _domain_spec(value, term)
            else:
                try:
                    macros.check(value)
                except macros.MacroError as e:
                    raise SpfSyntaxError(f"{term[:80]!r}: {e}") from None
            continue
        directive = _DIRECTIVE.fullmatch(term)
        if directive is None or directive.group(2).lower() not in MECHANISMS:
            raise SpfSyntaxError(f"{term[:80]!r}: not a mechanism or modifier "
                                 "(RFC 7208 §4.6.1)")
        qualifier, name, rest = directive.groups()
        mechanisms.append(_mechanism(qualifier, name.lower(), rest, term))
    return Record(tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))
