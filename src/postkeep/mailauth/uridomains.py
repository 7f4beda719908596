"""The domains a message's text links to, for domain block lists (URIBL/DBL, RFC 5782 §3).

The text parts (text/plain, text/html; a part without Content-Type is text/plain, RFC 2045
§5.2) are decoded (their Content-Transfer-Encoding, then their charset), HTML character
references resolved, and the common obfuscations undone before looking for links:

- "hxxp://", "h**p://" for "http://"; "[.]", "(.)", "{.}", "[dot]", "(dot)" for ".";
- invisible characters inside names (zero-width space, joiners, soft hyphen, BOM);
- percent-encoded host names (``http://%65vil.example``), and user-info that puts a trusted
  name in front of the real host (``http://bank.example@evil.example``): the host counts;
- internationalised names, looked up as A-labels (IDNA 2008 / UTS #46, the `idna` package).

Links are URLs with a scheme (http, https, ftp) and names beginning with "www.", in the text
and in HTML attributes alike (after character references are resolved). Each host is reduced
to its registered domain with the Public Suffix List (`publicsuffixlist`): lists such as
Spamhaus DBL and SURBL list those. IP literals are not domains and are skipped.

Bounded: at most `MAX_TEXT` decoded octets of text are read (over all parts), at most
`MAX_PARTS` parts looked at, and the first `max_domains` distinct domains returned.
"""

from __future__ import annotations

import codecs
import html
import ipaddress
import re
import urllib.parse
from functools import cache, lru_cache

import idna
from publicsuffixlist import PublicSuffixList

from postkeep.mime.decoding import decoder
from postkeep.mime.structure import Part, Text, parse_structure

MAX_TEXT = 512 * 1024
MAX_PARTS = 64
MAX_DOMAINS = 20
_CHUNK = 64 * 1024

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_DOTS = re.compile(r" ?[\[({](?:\.|dot)[\])}] ?", re.IGNORECASE)
_SCHEME = re.compile(r"\b(?:hxxps?|h\*\*ps?)(?=://)", re.IGNORECASE)
_LINK_END = re.compile(r"[\s<>\"'`()\[\]{}|\\^]")
_SCHEMES = ("http", "https", "ftp")


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def _text_parts(part: Part, out: list[Part]) -> None:
    if len(out) >= MAX_PARTS:
        return
    if part.children:
        for child in part.children:
            _text_parts(child, out)
    elif part.type == "text" and part.subtype in ("plain", "html"):
        out.append(part)


def _decoded(data: Text, part: Part, budget: int) -> str:
    try:
        dec = decoder(part.encoding)
    except ValueError:
        return ""
    raw = bytearray()
    for start in range(part.body_start, part.body_end, _CHUNK):
        raw += dec.feed(bytes(data[start : min(start + _CHUNK, part.body_end)]))
        if len(raw) >= budget:
            break
    else:
        raw += dec.finish()
    charset = dict(part.params).get("charset", "utf-8")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return bytes(raw[:budget]).decode(charset, "replace")


@lru_cache(maxsize=4096)
def _domain(candidate: str) -> str | None:
    """The registered domain a link's host belongs to (None: no domain); hosts recur from
    message to message, and the IDNA and PSL work is the costly part."""
    host = _host(candidate)
    return None if host is None else _psl().privatesuffix(host)


def registered_domain(link: str) -> str | None:
    """The registered domain of a link's host, the link given without its scheme ("www."
    and all); None for an IP literal or a name that is none."""
    return _domain(link)


def _host(candidate: str) -> str | None:
    """The host of a link (scheme and "www." already cut off by the caller's match)."""
    host = candidate.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host = host.rpartition("@")[2]  # user-info is not the host
    host = urllib.parse.unquote(host)
    if host.startswith("["):
        return None  # an IPv6 literal
    host = host.split(":", 1)[0].strip(".").lower().translate(_INVISIBLE)
    if not host or "." not in host:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return None


def _word_start(low: str, i: int) -> bool:
    return i == 0 or not (low[i - 1].isalnum() or low[i - 1] == "_")


def _links(text: str) -> list[str]:
    """What follows each "http://", "https://", "ftp://" (the scheme starting a word) and each
    word starting "www.", up to a character no URL holds unquoted (RFC 3986 appendix C's
    delimiters). Found with str.find, not one regular expression over the whole text: a
    pattern that must try every position is what made this the slowest of the checks."""
    low = text.lower()
    out: list[tuple[int, str]] = []
    i = low.find("://")
    while i != -1:
        for scheme in _SCHEMES:
            start = i - len(scheme)
            if start >= 0 and low.startswith(scheme, start) and _word_start(low, start):
                end = _LINK_END.search(text, i + 3)
                out.append((start, text[i + 3 : end.start() if end else len(text)]))
                break
        i = low.find("://", i + 3)
    i = low.find("www.")
    while i != -1:
        if _word_start(low, i) and not low.startswith("://", max(0, i - 3)):
            end = _LINK_END.search(text, i)
            out.append((i, text[i : end.start() if end else len(text)]))
        i = low.find("www.", i + 4)
    return [link for _, link in sorted(out)]  # in the order they appear


def _domains_in(text: str, html_part: bool, found: dict[str, None], limit: int) -> None:
    if html_part and "&" in text:
        text = html.unescape(text)
    text = text.translate(_INVISIBLE)
    if "." in text and any(c in text for c in "[({"):
        text = _DOTS.sub(".", text)
    if "://" in text and ("x" in text or "X" in text or "*" in text):
        text = _SCHEME.sub("http", text)
    for candidate in _links(text):
        domain = _domain(candidate.removeprefix("www.").removeprefix("WWW."))
        if domain:
            found.setdefault(domain, None)
            if len(found) >= limit:
                return


def body_domains(data: Text, *, max_domains: int = MAX_DOMAINS) -> list[str]:
    """The registered domains the message's text links to, in order of first appearance."""
    found: dict[str, None] = {}
    parts: list[Part] = []
    _text_parts(parse_structure(data), parts)
    budget = MAX_TEXT
    for part in parts:
        if budget <= 0 or len(found) >= max_domains:
            break
        text = _decoded(data, part, budget)
        budget -= len(text)
        _domains_in(text, part.subtype == "html", found, max_domains)
    return list(found)
