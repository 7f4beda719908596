"""A message as the junk filter reads it: header fields, text, links and attachments,
every part of it bounded.

The MIME tree is `mime.structure.parse_structure`'s (RFC 2045/2046; at most `MAX_PARTS`
parts, `MAX_DEPTH` levels, never raises); bodies are decoded with `mime.decoding` (RFC 2045
§6.7-6.8) and their charset, at most `MAX_TEXT` characters of text in all. Header fields
are the top-level ones (`MAX_FIELDS` of them, values cut at `MAX_VALUE`), encoded-words
decoded (RFC 2047, the stdlib's `email.header`). HTML is read with the stdlib's
`html.parser` for its visible text, the text hidden by styles or the ``hidden`` attribute
(HTML §6.1; a 1-2 px font counts as hidden), its links (``<a href>`` and the anchor's
text), its images' sources and its forms. Each text part's transfer encoding is kept with
whether its octets were ASCII and valid in its charset (a charset that is no text encoding,
"hex" or "zlib", is read as UTF-8). Attachments (parts with a
file name, or any non-text leaf) keep their name, type and first `MAX_ATTACHMENT` decoded
octets, at most `MAX_ATTACHMENTS` of them. Nothing here raises on a malformed message: what
cannot be read is left out.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import email.utils
import functools
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from postkeep.mailauth.dkim.canon import parse_header_fields
from postkeep.mime.decoding import decoder
from postkeep.mime.structure import Part, Text, parse_structure

MAX_PARTS = 200
MAX_DEPTH = 16
MAX_TEXT = 512 * 1024  # decoded characters of text, over all parts
MAX_FIELDS = 200
MAX_VALUE = 8 * 1024
MAX_HEADER = 256 * 1024  # octets of the top-level header looked at
MAX_ATTACHMENTS = 16
MAX_ATTACHMENT = 4 << 20  # decoded octets of one attachment kept
MAX_LINKS = 200
_CHUNK = 64 * 1024
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])"
    r"|font-size\s*:\s*[12](?:\.\d{1,3})?\s*(?:px|pt)\b"
    r"|opacity\s*:\s*0(?![.\d]*[1-9])", re.IGNORECASE)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                   "meta", "source", "track", "wbr"})


@dataclass(slots=True)
class Attachment:
    filename: str  # "" when the part names none
    content_type: str  # "application/zip"
    data: bytes  # the first MAX_ATTACHMENT decoded octets
    size: int  # the encoded body's octets


@dataclass(frozen=True, slots=True)
class TextPart:
    """How one text part came: its subtype, transfer encoding and what its octets were."""

    subtype: str  # "plain" or "html"
    encoding: str  # "base64", "quoted-printable", "7bit", ...
    ascii: bool  # its decoded octets are all US-ASCII
    charset_ok: bool  # they are valid in the charset it declares (or UTF-8 if none)


@dataclass(slots=True)
class Parsed:
    fields: list[tuple[str, str]] = field(default_factory=list)  # (lower name, decoded value)
    plain: list[str] = field(default_factory=list)  # each text/plain part's text
    html: list[HtmlText] = field(default_factory=list)  # each text/html part read
    alternatives: list[tuple[str, str]] = field(default_factory=list)  # (plain, html visible)
    attachments: list[Attachment] = field(default_factory=list)
    text_parts: list[TextPart] = field(default_factory=list)  # each text part read

    def header(self, name: str) -> str | None:
        """The first field of that (lower-case) name's value, None if there is none."""
        return next((v for k, v in self.fields if k == name), None)

    def headers(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]

    @property
    def subject(self) -> str:
        return self.header("subject") or ""

    def text(self) -> str:
        """The visible text of every text part, plain first."""
        return "\n".join([*self.plain, *(h.visible for h in self.html)])


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded; the value as it was when they cannot be."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


@functools.lru_cache(maxsize=64)  # the rules each read From: (and the classifier too)
def addresses(value: str) -> tuple[tuple[str, str], ...]:
    """(display name, address) of each mailbox in an address list, bounded to 1000."""
    try:
        return tuple((decode_words(n), a)
                     for n, a in email.utils.getaddresses([value])[:1000])
    except (ValueError, IndexError, TypeError):
        return ()


class HtmlText(HTMLParser):
    """One HTML part read: its visible text, its hidden text, its links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._visible: list[str] = []
        self._hidden: list[str] = []
        self.links: list[tuple[str, str]] = []  # (href, the anchor's text)
        self.images: list[str] = []  # each <img>'s src, at most MAX_LINKS
        self.forms = 0  # <form> elements
        self._stack: list[tuple[str, bool]] = []  # (tag, hidden)
        self._skip = 0  # inside <script> or <style>
        self._anchor: tuple[str, list[str]] | None = None

    @property
    def visible(self) -> str:
        return " ".join("".join(self._visible).split())

    @property
    def hidden(self) -> str:
        return " ".join("".join(self._hidden).split())

    def _is_hidden(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in ("script", "style"):
            self._skip += 1
            return
        if tag == "a" and "href" in values and len(self.links) < MAX_LINKS:
            self._anchor = (values["href"].strip(), [])
        if tag == "img" and len(self.images) < MAX_LINKS:
            self.images.append(values.get("src", "").strip())
        elif tag == "form":
            self.forms += 1
        if tag in _VOID:
            return
        hidden = (self._is_hidden() or "hidden" in values
                  or bool(_HIDDEN_STYLE.search(values.get("style", ""))))
        if len(self._stack) < 256:
            self._stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
            return
        if tag == "a" and self._anchor is not None:
            href, text = self._anchor
            self.links.append((href, " ".join("".join(text).split())))
            self._anchor = None
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        (self._hidden if self._is_hidden() else self._visible).append(data)
        if self._anchor is not None:
            self._anchor[1].append(data)


def _decoded(data: Text, part: Part, limit: int) -> bytes:
    try:
        dec = decoder(part.encoding)
    except ValueError:
        return b""
    out = bytearray()
    try:
        for start in range(part.body_start, part.body_end, _CHUNK):
            out += dec.feed(bytes(data[start : min(start + _CHUNK, part.body_end)]))
            if len(out) >= limit:
                return bytes(out[:limit])
        out += dec.finish()
    except ValueError:  # base64 with data after its padding: what came before it
        pass
    return bytes(out[:limit])


def _charset(part: Part) -> str:
    charset = dict(part.params).get("charset", "utf-8") or "utf-8"
    try:  # a bytes-to-bytes codec ("hex", "zlib") or one without "replace" is no charset
        codecs.lookup(charset)
        b"a\xff".decode(charset, "replace")
    except (LookupError, UnicodeError):
        return "utf-8"
    return charset


def _filename(part: Part) -> str:
    params = dict(part.disposition[1]) if part.disposition else {}
    name = params.get("filename") or dict(part.params).get("name") or ""
    return decode_words(name)[:255]


class _Reader:
    def __init__(self, data: Text) -> None:
        self.data = data
        self.budget = MAX_TEXT
        self.out = Parsed()

    def text(self, part: Part) -> str:
        if self.budget <= 0:
            return ""
        raw = _decoded(self.data, part, self.budget)
        charset = _charset(part)
        try:
            text, ok = raw.decode(charset), True
        except UnicodeError as e:  # a character cut at the budget does not count
            start = e.start if isinstance(e, UnicodeDecodeError) else 0
            text, ok = raw.decode(charset, "replace"), start >= len(raw) - 4
        self.out.text_parts.append(TextPart(part.subtype, part.encoding.lower(),
                                            raw.isascii(), ok))
        text = text[: self.budget]
        self.budget -= len(text)
        return text

    def html(self, part: Part) -> HtmlText:
        reader = HtmlText()
        try:
            reader.feed(self.text(part))
            reader.close()
        except (AssertionError, ValueError):  # what html.parser makes of broken markup
            pass
        return reader

    def walk(self, part: Part) -> None:
        if part.type == "multipart" and part.subtype == "alternative" and part.children:
            plain = [c for c in part.children if (c.type, c.subtype) == ("text", "plain")]
            html = [c for c in part.children if (c.type, c.subtype) == ("text", "html")]
            if plain and html:
                p, h = self.text(plain[0]), self.html(html[0])
                self.out.plain.append(p)
                self.out.html.append(h)
                self.out.alternatives.append((p, h.visible))
                for c in part.children:
                    if c is not plain[0] and c is not html[0]:
                        self.walk(c)
                return
        if part.children and part.type == "multipart":
            for child in part.children:
                self.walk(child)
            return
        if part.children:  # message/rfc822: its text counts, its header does not
            self.walk(part.children[0])
            return
        name = _filename(part)
        attached = part.disposition is not None and part.disposition[0].lower() == "attachment"
        if part.type == "text" and part.subtype in ("plain", "html") and not name \
                and not attached:
            if part.subtype == "html":
                self.out.html.append(self.html(part))
            else:
                self.out.plain.append(self.text(part))
            return
        if len(self.out.attachments) < MAX_ATTACHMENTS:
            self.out.attachments.append(Attachment(
                name, f"{part.type}/{part.subtype}".lower(),
                _decoded(self.data, part, MAX_ATTACHMENT), part.body_end - part.body_start))


def parse(data: Text) -> Parsed:
    """The message `data` read as the module docstring says; never raises for its content."""
    root = parse_structure(data, max_depth=MAX_DEPTH, max_parts=MAX_PARTS)
    reader = _Reader(data)
    head = bytes(data[root.header_start : min(root.body_start, MAX_HEADER)])
    for f in parse_header_fields(head)[:MAX_FIELDS]:
        if not f.key:
            continue
        value = f.raw.partition(b":")[2][:MAX_VALUE].decode("utf-8", "replace")
        reader.out.fields.append((f.key, decode_words(" ".join(value.split()))))
    reader.walk(root)
    return reader.out
