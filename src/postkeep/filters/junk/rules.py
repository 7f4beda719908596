"""The junk filter's rules: each a small named function of the parsed message
(`junk.message.Parsed`) and what the MX knew (`Facts`), returning the symbols it matched
with their scores (SpamAssassin's model: a message's score is the sum of its rules').

- ``GTUBE``: the Generic Test for Unsolicited Bulk Email string (SpamAssassin's, also
  rspamd's) in the text: a reject-level score, for testing a setup end to end;
- header anomalies (RFC 5322 §3.6: Date and From are required, Message-ID should be
  there): ``MISSING_DATE``, ``MISSING_MESSAGE_ID``, ``FROM_NAME_SPOOF`` (a display name
  holding an address of another domain than the From: address's), ``RCVD_MALFORMED`` (a
  Received field without its "by" clause or its date, RFC 5321 §4.4), ``SUBJ_ALL_CAPS``,
  ``MANY_RECIPIENTS`` (To and Cc together);
- HTML: ``HTML_TEXT_MISMATCH`` (a multipart/alternative whose text/plain and text/html say
  different things, RFC 2046 §5.1.4: the parts should be the same content), ``HTML_ONLY``,
  ``HTML_HIDDEN_TEXT`` (text hidden by styles or in a 1-2 px font: keyword stuffing for
  classifiers), ``HTML_IMAGE_ONLY`` (remote images and under `IMAGE_ONLY_TEXT` characters
  of text: the pitch is in the picture), ``HTML_FORM`` (a form asking for input in mail);
- URLs: ``URL_TEXT_MISMATCH`` (a link's text names one domain, its href goes to another),
  ``URL_IP_LITERAL``, ``URL_SHORTENER``, ``URL_MIXED_SCRIPT`` (a punycode host, RFC 3492,
  whose label mixes Latin with Cyrillic or Greek: a lookalike), ``URL_USERINFO`` (user
  information before the host, RFC 3986 §3.2.1: "http://www.bank.example@198.51.100.7/"),
  ``URL_DATA_URI`` (a link to a ``data:`` URI, RFC 2397: a page carried in the mail);
- attachments: ``ATTACH_DANGEROUS`` (a type Windows runs or mounts), ``ATTACH_DOUBLE_EXT``
  ("invoice.pdf.exe"), ``ZIP_DANGEROUS``, ``ZIP_ENCRYPTED``, ``ZIP_NESTED_DEEP``,
  ``ZIP_BROKEN`` (`junk.inspect.list_zip`), ``IMAGE_HUGE`` (a decompression bomb's
  dimensions), ``IMAGE_TEXT`` (large PNG text chunks);
- the MX's authentication (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489 DMARC, in
  `ScanContext.auth_results`): ``SPF_FAIL``, ``SPF_SOFTFAIL``, ``DKIM_FAIL``, ``DMARC_FAIL``.

The header and encoding rules are `junk.headers`', the content rules (phrases, greetings,
the text's shape) `junk.content`'s; `RULES` is all of them.

Rules only read: every bound is the parser's (`junk.message`) or the inspector's
(`junk.inspect`); a rule looks at no more than `MAX_URLS` links.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from postkeep.filters.junk import content, headers
from postkeep.filters.junk.base import MAX_URLS, Facts, Hits, Rule, host_of, urls
from postkeep.filters.junk.inspect import image_info, is_zip, list_zip
from postkeep.filters.junk.message import Parsed, addresses
from postkeep.mailauth.uridomains import registered_domain

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0
MANY_RECIPIENTS = 50
HUGE_SIDE = 10000
HUGE_PIXELS = 50_000_000
IMAGE_TEXT = 4096
IMAGE_ONLY_TEXT = 300  # characters of text at most beside remote images

DANGEROUS = frozenset({
    "exe", "scr", "com", "pif", "bat", "cmd", "js", "jse", "vbs", "vbe", "wsf", "wsh",
    "hta", "msi", "msp", "jar", "lnk", "iso", "img", "vhd", "vhdx", "ps1", "cpl", "reg",
    "chm", "application", "msc", "scf", "gadget", "appx", "msix",
})
DOCUMENT = frozenset({"pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "rtf", "txt",
                      "jpg", "jpeg", "png", "gif", "zip", "html", "htm", "csv", "odt"})
SHORTENERS = frozenset({
    "bit.ly", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly", "rebrand.ly",
    "cutt.ly", "shorturl.at", "tiny.cc", "t.ly", "rb.gy", "s.id", "v.gd", "bl.ink",
    "shorte.st", "adf.ly", "lnkd.in",
})

_DOMAINISH = re.compile(r"(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+[a-z]{2,63})(?:[/:?#]|$)",
                        re.IGNORECASE)
_NAME_ADDRESS = re.compile(r"[\w.+-]+@((?:[\w-]+\.)+[a-z]{2,63})\b", re.IGNORECASE)
_USERINFO = re.compile(r"(?:https?|ftp)://[^/?#@\s]{1,512}@", re.IGNORECASE)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_WORD = re.compile(r"\w{2,}")


def gtube(m: Parsed, _: Facts) -> Hits:
    text = m.subject + "\n" + "\n".join([*m.plain, *(h.visible for h in m.html)])
    return [("GTUBE", GTUBE_SCORE)] if GTUBE in text else []


def header_anomalies(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    if m.header("date") is None:
        hits.append(("MISSING_DATE", 1.0))
    if m.header("message-id") is None:
        hits.append(("MISSING_MESSAGE_ID", 0.8))
    for name, addr in addresses(m.header("from") or "")[:1]:
        shown = _NAME_ADDRESS.search(name)
        real = registered_domain(addr.rpartition("@")[2].lower())
        if shown and registered_domain(shown.group(1).lower()) != real:
            hits.append(("FROM_NAME_SPOOF", 2.5))
    for received in m.headers("received"):
        if " by " not in f" {received} " or ";" not in received:
            hits.append(("RCVD_MALFORMED", 1.0))
            break
    letters = [c for c in m.subject if c.isalpha()]
    if len(letters) >= 10 and all(c.isupper() for c in letters):
        hits.append(("SUBJ_ALL_CAPS", 1.2))
    count = sum(len(addresses(v)) for k in ("to", "cc") for v in m.headers(k))
    if count > MANY_RECIPIENTS:
        hits.append(("MANY_RECIPIENTS", 1.0))
    return hits


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())[:5000])


def html_mismatch(m: Parsed, _: Facts) -> Hits:
    hits: Hits = []
    for plain, visible in m.alternatives:
        a, b = _words(plain), _words(visible)
        if len(a | b) >= 20 and len(a & b) / len(a | b) < 0.25:
            hits.append(("HTML_TEXT_MISMATCH", 1.5))
            break
    if m.html and not m.plain:
        hits.append(("HTML_ONLY", 0.3))
    if any(len(h.hidden) >= 100 for h in m.html):
        hits.append(("HTML_HIDDEN_TEXT", 2.0))
    remote = any(src.lower().startswith(("http://", "https://"))
                 for h in m.html for src in h.images)
    if remote and len(" ".join(m.text().split())) < IMAGE_ONLY_TEXT:
        hits.append(("HTML_IMAGE_ONLY", 1.2))
    if any(h.forms for h in m.html):
        hits.append(("HTML_FORM", 1.0))
    return hits


def _scripts(label: str) -> set[str]:
    out = set()
    for c in label:
        if c.isalpha():
            name = unicodedata.name(c, "")
            out.add(name.split(" ", 1)[0])
    return out


def url_tricks(m: Parsed, _: Facts) -> Hits:
    hits: dict[str, float] = {}
    for h in m.html:
        for href, text in h.links[:MAX_URLS]:
            shown = _DOMAINISH.match(text.strip()) if "." in text else None
            if not shown or "://" not in href:
                continue
            target = registered_domain(host_of(href))
            if target and registered_domain(shown.group(1).lower()) not in (None, target):
                hits["URL_TEXT_MISMATCH"] = 2.5
    if any(href.lower().startswith("data:") for h in m.html for href, _ in h.links):
        hits["URL_DATA_URI"] = 2.0
    for url in urls(m):
        if _USERINFO.match(url):
            hits["URL_USERINFO"] = 1.5
        host = host_of(url)
        if _IPV4.match(host) or ":" in host:
            hits["URL_IP_LITERAL"] = 1.5
        elif host in SHORTENERS or registered_domain(host) in SHORTENERS:
            hits["URL_SHORTENER"] = 0.8
        for label in host.split("."):
            try:
                decoded = label.encode("ascii").decode("idna") if label.startswith("xn--") \
                    else label
            except (UnicodeError, ValueError):
                decoded = label
            scripts = _scripts(decoded)
            if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
                hits["URL_MIXED_SCRIPT"] = 2.5
    return list(hits.items())


def _extensions(name: str) -> list[str]:
    return [p.lower().strip() for p in name.rsplit(".", 3)[1:]]


def attachments(m: Parsed, _: Facts) -> Hits:
    hits: dict[str, float] = {}
    for a in m.attachments:
        exts = _extensions(a.filename)
        if exts and exts[-1] in DANGEROUS:
            hits["ATTACH_DANGEROUS"] = 4.0
            if len(exts) >= 2 and exts[-2] in DOCUMENT:
                hits["ATTACH_DOUBLE_EXT"] = 3.0
        if is_zip(a.data):
            listing = list_zip(a.data)
            if any(_extensions(n) and _extensions(n)[-1] in DANGEROUS for n in listing.names):
                hits["ZIP_DANGEROUS"] = 4.0
            if listing.encrypted:
                hits["ZIP_ENCRYPTED"] = 2.0
            if listing.too_deep:
                hits["ZIP_NESTED_DEEP"] = 1.5
            if listing.broken:
                hits["ZIP_BROKEN"] = 1.0
        info = image_info(a.data) if a.content_type.startswith("image/") or not exts \
            or exts[-1] in ("png", "gif", "jpg", "jpeg") else None
        if info is not None:
            if max(info.width, info.height) > HUGE_SIDE or info.width * info.height > HUGE_PIXELS:
                hits["IMAGE_HUGE"] = 1.5
            if info.text_octets > IMAGE_TEXT:
                hits["IMAGE_TEXT"] = 1.0
    return list(hits.items())


def authentication(_: Parsed, facts: Facts) -> Hits:
    hits: Hits = []
    spf = facts.auth.get("spf")
    if spf == "fail":
        hits.append(("SPF_FAIL", 1.0))
    elif spf == "softfail":
        hits.append(("SPF_SOFTFAIL", 0.5))
    if facts.auth.get("dkim") == "fail":
        hits.append(("DKIM_FAIL", 1.0))
    if facts.auth.get("dmarc") == "fail":
        hits.append(("DMARC_FAIL", 2.0))
    return hits


RULES: Sequence[Rule] = (gtube, header_anomalies, html_mismatch, url_tricks, attachments,
                         authentication, *headers.RULES, *content.RULES)


def evaluate(m: Parsed, facts: Facts, rules: Sequence[Rule] = RULES) -> Hits:
    """Every rule's hits, in rule order."""
    return [hit for rule in rules for hit in rule(m, facts)]
