"""MIME structure of a message with byte offsets, computed once at delivery.

An IMAP server answers FETCH ENVELOPE / BODY / BODYSTRUCTURE / BODY[section] / BINARY from the
`Part` tree stored at delivery (`to_json`) plus byte ranges of the raw message, never
re-parsing it. This is a hand-written parser: the stdlib `email` package gives no byte offsets
and has no bounds. Implemented:

- RFC 5322 §2.2 header fields (names case-insensitive, first occurrence wins), §2.2.3
  unfolding, §3.2.2 comments, §3.2.4 quoted strings, §3.4 address lists with groups and
  §4.4 obs-route addresses (for ENVELOPE); the header ends at the first empty line, or at the
  part's end when there is none. LF-only line ends are accepted as well as CRLF.
- RFC 2045 §5.1 Content-Type (invalid → the default of §5.2), §6.1 Content-Transfer-Encoding
  (not a token → "7BIT"), §6.7 quoted-printable and §6.8 base64 decoding, §7 Content-ID, §8
  Content-Description; RFC 1864 Content-MD5; RFC 2183 Content-Disposition; RFC 3282
  Content-Language; RFC 2557 Content-Location; RFC 2231 §3-§4 parameter continuations and
  charset decoding.
- RFC 2046 §5.1.1 boundaries: a delimiter line is "--boundary" at a line start, then optional
  space/tab, then the line end; "--boundary--" closes; the line end before a delimiter belongs
  to the delimiter; preamble and epilogue are ignored; an unclosed last part runs to the end
  of the enclosing body. §5.1.5 multipart/digest children default to message/rfc822; §5.2.1
  message/rfc822 (and RFC 6532 message/global) bodies are parsed as messages.
- RFC 9051 §7.5.2 / RFC 3501 §7.4.2 ENVELOPE, BODY and BODYSTRUCTURE, §6.4.5 part numbering;
  RFC 3516 BINARY decoding.

Choices where the RFCs are loose follow Dovecot: sizes are raw body octets, "lines" counts LFs,
text parts without a charset get ("charset" "us-ascii"), a multipart without parts gets one
empty text/plain part, and a multipart or message part past `max_depth` / `max_parts` becomes
an application/octet-stream leaf (params kept); once the part budget is nearly spent, the rest
of a multipart body is one such leaf; quoted-printable decodes to exactly the octets Dovecot's
decoder writes (trailing blanks dropped, line ends CRLF). Unlike Dovecot, a multipart without a
boundary parameter is treated as text/plain (its body stays readable as part 1), and invalid
quoted-printable is decoded leniently instead of failing BINARY.

The tree is found with `find`, `count`, `startswith` and bounded slices of the message (no
regular expression runs over the message itself), so `parse_structure` and `envelope` work on a
`mime.window.Window` as on bytes: a message spooled to disk is parsed without being read into
memory whole.

Strings hold header octets decoded as UTF-8 with "surrogateescape", so 8-bit headers
round-trip; rendered IMAP text must be encoded with ("utf-8", "surrogateescape").
"""

from __future__ import annotations

import binascii
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from postkeep.mime.window import Window

Text = bytes | Window  # a message in memory, or read a block at a time (`mime.window`)
Params = tuple[tuple[str, str], ...]
Address = tuple[str | None, str | None, str | None, str | None]  # name, route, mailbox, host

_DEPTH_CAP: Final = 200  # keeps the recursion far below Python's limit
_MAX_VALUE: Final = 256 * 1024  # octets of one header field value that are looked at
_MAX_HEADER: Final = 1024 * 1024  # octets of one part's header that are looked at
_MAX_PARAMS: Final = 64
_MESSAGE: Final = frozenset({"rfc822", "global"})
_EMPTY_ENVELOPE: Final = "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
_FIELDS: Final = frozenset(  # the Content-* fields (RFC 2045 §3) and the ENVELOPE fields
    {
        "content-type", "content-transfer-encoding", "content-id", "content-description",
        "content-md5", "content-disposition", "content-language", "content-location",
        "date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to",
        "message-id",
    }
)  # fmt: skip
_FIELD_END = re.compile(rb"\n(?![ \t])")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_LINE_START = re.compile(rb"^(?=[^ \t])", re.M)
_COMMENT_PIECE = re.compile(r"[^()\\]+|\\.?|[()]", re.S)
_MIME_PIECE = re.compile(r'[^"(]+|"(?:[^"\\]|\\.)*"?|\(', re.S)
_TYPE = re.compile(r'\s*([^\s/;"]+)\s*/\s*([^\s/;"]+)')
_DISPOSITION = re.compile(r'\s*([^\s;"]+)')
_PARAM = re.compile(r'\s*;\s*([^\s;="]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"?|([^;]*))', re.S)
_SECTION = re.compile(r"(.+?)\*(?:(\d{1,3})(\*)?)?")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_CTE = re.compile(r"\s*([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)\s*")
_UNQUOTE = re.compile(r"\\(.)", re.S)
_QUOTED_INNER = re.compile(r'"((?:[^"\\]|\\.)*)', re.S)
_ADDR_TOKEN = re.compile(
    r'(\s+)|("(?:[^"\\]|\\.)*"?)|(\[(?:[^\]\\]|\\.)*\]?)|([<>@,;:.])|(\()'
    r'|([^\s"\[\]()<>@,;:.]+|.)',
    re.S,
)
_QUOTABLE = re.compile(r"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
# What quoted-printable decoding changes, once line ends are CRLF (see `_qp_token`): "=XX"; a
# soft line break "=" blanks CRLF; "=" blanks ending the body; blanks (from a run's start) then
# CRLF or the body's end. Everything else, "=" not starting one of these included, is copied.
_QP_TOKEN = re.compile(rb"=(?:([0-9A-Fa-f]{2})|[ \t]*(\r\n)|[ \t]*\Z)|(?<![ \t])[ \t]+(\r\n|\Z)")
_QP_FIXED: Final = {  # the common tokens, looked up without inspecting the match
    b"=\r\n": b"",
    **{b"=%02x" % i: bytes([i]) for i in range(256)},
    **{b"=%02X" % i: bytes([i]) for i in range(256)},
}


@dataclass(frozen=True, slots=True)
class Part:
    """One MIME part (RFC 2045 §2.4) with byte offsets into the raw message.

    `header_start`..`body_start` is the part's header including the empty line that ends it
    (BODY[n.MIME], or HEADER of a message); `body_start`..`body_end` is its body. For a
    multipart, `children` are the subparts; for message/rfc822 or message/global exactly one
    child, the encapsulated message's top part (whose range equals this part's body), and
    `envelope` is that message's rendered ENVELOPE.
    """

    header_start: int
    body_start: int
    body_end: int
    type: str
    subtype: str
    params: Params
    id: str | None
    description: str | None
    encoding: str
    md5: str | None
    disposition: tuple[str, Params] | None
    language: tuple[str, ...] | None
    location: str | None
    lines: int
    children: tuple[Part, ...] = ()
    envelope: str | None = None


def imap_string(value: str | bytes | None) -> str:
    """nstring (RFC 9051 §4.3, §9): NIL, a quoted string, or a literal "{n}\\r\\n" + octets.

    Quoted when 7-bit without NUL, CR or LF; otherwise a literal whose length counts the
    octets of `value` encoded as ("utf-8", "surrogateescape").
    """
    if value is None:
        return "NIL"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if _QUOTABLE.fullmatch(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{{{len(value.encode('utf-8', 'surrogateescape'))}}}\r\n{value}"


# --- header fields (RFC 5322 §2.2) ---------------------------------------------------------


def _unfold(raw: bytes) -> str:
    """A field body unfolded (RFC 5322 §2.2.3), trimmed; NUL becomes 0x80 like in Dovecot."""
    value = _FOLD.sub(b"", raw[:_MAX_VALUE]).strip(b" \t\r\n").replace(b"\0", b"\x80")
    return value.decode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=256)
def _field_start(names: frozenset[str]) -> re.Pattern[bytes]:
    """Matches the start of a field named in `names`: a header scan matches each name once."""
    alternatives = b"|".join(re.escape(n.encode()) for n in sorted(names))
    initials = "".join(sorted({n[0] for n in names})).encode()  # rejects most lines quickly
    return re.compile(rb"^(?=[" + initials + rb"])(" + alternatives + rb")[ \t]*:", re.I | re.M)


def _header(data: Text, start: int, end: int) -> tuple[int, dict[str, str]]:
    """(body start, {lower-case name: first value}) of the part at data[start:end].

    Only the Content-* and ENVELOPE fields are collected; the body starts after the first
    empty line, or at `end` when the header has none.
    """
    if data.startswith(b"\n", start, end):
        hdr_end, body = start, start + 1
    elif data.startswith(b"\r\n", start, end):
        hdr_end, body = start, start + 2
    else:  # the first LF CRLF or LF LF
        crlf = data.find(b"\n\r\n", start, end)
        lf = data.find(b"\n\n", start, crlf + 1 if crlf >= 0 else end)
        if lf >= 0:
            hdr_end, body = lf + 1, lf + 2
        else:
            hdr_end, body = (crlf + 1, crlf + 3) if crlf >= 0 else (end, end)
    block = data[start : min(hdr_end, start + _MAX_HEADER)]
    fields: dict[str, str] = {}
    pos = 0
    while len(fields) < len(_FIELDS):
        m = _field_start(_FIELDS.difference(fields)).search(block, pos)
        if m is None:
            break
        stop = _FIELD_END.search(block, m.end())
        fields[m.group(1).lower().decode()] = _unfold(
            block[m.end() : stop.start() if stop else len(block)]
        )
        pos = m.end()
    return body, fields


@functools.lru_cache(maxsize=1024)
def _named_fields(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """Matches the start of a field line named in `names` (any case, blanks before the colon)."""
    alternatives = b"|".join(re.escape(n.encode("utf-8", "surrogateescape")) for n in names)
    return re.compile(rb"^(?:" + alternatives + rb")[ \t]*:", re.I | re.M)


def _header_block(data: bytes, part: Part) -> bytes:
    """The part's header lines without the empty line that ends them."""
    region = data[part.header_start : part.body_start]
    if region in (b"\n", b"\r\n"):
        return b""
    if region.endswith(b"\n\r\n"):
        return region[:-2]
    return region[:-1] if region.endswith(b"\n\n") else region


def header_fields(data: bytes, part: Part, names: Sequence[str], *, exclude: bool) -> bytes:
    """BODY[HEADER.FIELDS (...)] / HEADER.FIELDS.NOT (RFC 9051 §6.4.5) of `part`'s header.

    The raw matching (or, with `exclude`, non-matching) field lines in message order,
    continuation lines kept, followed by the empty line CRLF.
    """
    block = _header_block(data, part)
    if not exclude:  # jump from one wanted field to the next
        if not names:
            return b"\r\n"
        out = []
        # one pattern per set of names, whatever their order and repetitions (clients vary both)
        for m in _named_fields(tuple(sorted(set(names)))).finditer(block):
            stop = _FIELD_END.search(block, m.end())
            field = block[m.start() : stop.end() if stop else len(block)]
            out.append(field if field.endswith(b"\n") else field + b"\r\n")
        return b"".join(out) + b"\r\n"
    wanted = {n.lower() for n in names}
    starts = [m.start() for m in _LINE_START.finditer(block)]
    if not starts or starts[0]:
        starts.insert(0, 0)
    out = []
    for begin, stop in zip(starts, [*starts[1:], len(block)], strict=True):
        field = block[begin:stop]
        name = field.split(b":", 1)[0].strip().lower().decode("latin-1")
        if (name in wanted) != exclude and field:
            out.append(field if field.endswith(b"\n") else field + b"\r\n")
    return b"".join(out) + b"\r\n"


# --- MIME field values (RFC 2045 §5.1, RFC 2231) ---------------------------------------------


def _skip_comment(text: str, i: int) -> int:
    """Index after the (nested) comment that starts at text[i] == "(" (RFC 5322 §3.2.2)."""
    depth = 0
    for m in _COMMENT_PIECE.finditer(text, i):
        piece = m.group()
        if piece == "(":
            depth += 1
        elif piece == ")":
            depth -= 1
            if depth == 0:
                return m.end()
    return len(text)


def _strip_comments(text: str) -> str:
    """`text` with comments outside quoted strings replaced by a space."""
    if "(" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        m = _MIME_PIECE.match(text, i)
        assert m is not None  # the alternatives cover every character
        if m.group() == "(":
            out.append(" ")
            i = _skip_comment(text, i)
        else:
            out.append(m.group())
            i = m.end()
    return "".join(out)


def _join_sections(sections: dict[int, tuple[str, bool]]) -> str:
    """One RFC 2231 parameter from its sections: joined, %-decoded, charset-decoded."""
    charset, chunks = "", []
    for index, num in enumerate(sorted(sections)):
        value, extended = sections[num]
        if extended:
            if index == 0 and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            raw = value.encode("utf-8", "surrogateescape")
            chunks.append(_PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw))
        else:
            chunks.append(value.encode("utf-8", "surrogateescape"))
    joined = b"".join(chunks)
    try:
        text = joined.decode(charset or "utf-8")
        text.encode("utf-8")  # no lone surrogates from an exotic codec
    except (LookupError, ValueError):
        return joined.decode("utf-8", "surrogateescape")
    return text


def _params(text: str, pos: int) -> Params:
    """The `; name=value` parameters of text[pos:], names lower-cased, RFC 2231 applied.

    Lenient like common agents: an unquoted value runs to the next ";"; junk without "=" is
    skipped. A name given both plainly and in RFC 2231 form takes the RFC 2231 value.
    """
    plain: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    order: dict[str, None] = {}
    while pos < len(text) and len(order) < _MAX_PARAMS:
        m = _PARAM.match(text, pos)
        if m is None:
            pos = text.find(";", pos + 1)
            if pos < 0:
                break
            continue
        pos = m.end()
        name, quoted = m.group(1).lower(), m.group(2)
        value = _UNQUOTE.sub(r"\1", quoted) if quoted is not None else m.group(3).strip()
        section = _SECTION.fullmatch(name)
        if section is None:
            plain.setdefault(name, value)
        else:
            name, num, star = section.groups()
            extended = num is None or star is not None
            sections.setdefault(name, {}).setdefault(int(num or 0), (value, extended))
        order.setdefault(name, None)
    return tuple((n, _join_sections(sections[n]) if n in sections else plain[n]) for n in order)


def _content_type(value: str | None, digest: bool) -> tuple[str, str, Params]:
    """(type, subtype, params); the RFC 2045 §5.2 / RFC 2046 §5.1.5 default if invalid."""
    m = _TYPE.match(_strip_comments(value)) if value is not None else None
    if m is None:
        return ("message", "rfc822", ()) if digest else ("text", "plain", ())
    return m.group(1).lower(), m.group(2).lower(), _params(m.string, m.end())


def _disposition(value: str | None) -> tuple[str, Params] | None:
    m = _DISPOSITION.match(_strip_comments(value)) if value is not None else None
    return None if m is None else (m.group(1).lower(), _params(m.string, m.end()))


def _encoding(value: str | None) -> str:
    m = _CTE.fullmatch(_strip_comments(value)) if value is not None else None
    return "7BIT" if m is None else m.group(1).upper()


def _language(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    tags = tuple(t for t in (x.strip() for x in _strip_comments(value).split(",")) if t)
    return tags or None


# --- structure (RFC 2046 §5) ----------------------------------------------------------------


def _empty_part(at: int) -> Part:
    return Part(at, at, at, "text", "plain", (), None, None, "7BIT", None, None, None, None, 0)


class _Parser:
    """Builds the tree top-down; each multipart searches only its own body for delimiters."""

    def __init__(self, data: Text, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth
        self.count = 0

    def part(self, start: int, end: int, depth: int, limit: int, digest: bool) -> Part:
        """The part at data[start:end]; the part count may grow to `limit`, not beyond."""
        self.count += 1
        data = self.data
        body, fields = _header(data, start, end)
        ctype, subtype, params = _content_type(fields.get("content-type"), digest)
        descend = depth + 1 < self.max_depth and self.count < limit
        children: tuple[Part, ...] = ()
        env = None
        if ctype == "multipart":
            boundary = dict(params).get("boundary", "")
            if not boundary:
                ctype, subtype, params = "text", "plain", ()
            elif descend:
                children = self.multipart(body, end, boundary, depth + 1, limit, subtype)
        elif ctype == "message" and subtype in _MESSAGE and descend:
            children = (self.part(body, end, depth + 1, limit, False),)
            env = envelope(data, children[0])
        if not children and (ctype == "multipart" or (ctype == "message" and subtype in _MESSAGE)):
            ctype, subtype = "application", "octet-stream"
        counted = ctype == "text" or (ctype == "message" and bool(children))
        return Part(
            start,
            body,
            end,
            ctype,
            subtype,
            params,
            fields.get("content-id"),
            fields.get("content-description"),
            _encoding(fields.get("content-transfer-encoding")),
            fields.get("content-md5"),
            _disposition(fields.get("content-disposition")),
            _language(fields.get("content-language")),
            fields.get("content-location"),
            data.count(b"\n", body, end) if counted else 0,
            children,
            env,
        )

    def multipart(
        self, start: int, end: int, boundary: str, depth: int, limit: int, subtype: str
    ) -> tuple[Part, ...]:
        """The subparts of the multipart body data[start:end] (RFC 2046 §5.1.1)."""
        data = self.data
        try:
            mark = boundary.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            mark = boundary.encode("utf-8", "replace")
        # The body start follows the LF of the empty line, so "\n--" also finds a delimiter
        # on the body's first line. The line end stays outside the match.
        delimiter = b"\n--" + mark
        digest = subtype == "digest"
        kids: list[Part] = []
        current: int | None = None
        pos = max(start - 1, 0)
        while (m := _delimiter(data, delimiter, pos, end)) is not None:
            at, pos, closing = m
            if current is not None:  # the CRLF before the delimiter is not the part's
                stop = at - (at > current and data[at - 1] == 13)
                kids.append(self.part(current, max(stop, current), depth, limit - 1, digest))
                current = None
            if closing:
                break
            current = pos + (
                2 if data.startswith(b"\r\n", pos, end) else data.startswith(b"\n", pos, end)
            )
            if self.count + 1 >= limit:  # the last part allowed: it takes the rest
                break
        if current is not None:
            kids.append(self.part(current, end, depth, limit, digest))
        if not kids:
            self.count += 1
            kids.append(_empty_part(end))
        return tuple(kids)


def _delimiter(data: Text, delimiter: bytes, pos: int, end: int) -> tuple[int, int, bool] | None:
    """The first delimiter line in data[pos:end] (RFC 2046 §5.1.1): `delimiter` ("\\n--" and
    the boundary), optionally "--" (closing), blanks, then a line end or `end`, which is not
    part of the match. Returns (start, end, closing) of the match, or None."""
    while (at := data.find(delimiter, pos, end)) >= 0:
        after = at + len(delimiter)
        closing = data.startswith(b"--", after, end)
        after += 2 * closing
        step = 16
        while after < end:  # the blanks: a few octets, then more while there are only blanks
            piece = data[after : min(end, after + step)]
            blanks = len(piece) - len(piece.lstrip(b" \t"))
            after += blanks
            if blanks < len(piece):
                break
            step = min(2 * step, 1 << 16)
        if after == end or data.startswith(b"\n", after, end) or data.startswith(
            b"\r\n", after, end
        ):
            return at, after, closing
        pos = at + 1
    return None


def parse_structure(data: Text, *, max_depth: int = 32, max_parts: int = 1000) -> Part:
    """The MIME tree of the raw message `data`; never raises on any input.

    At most `max_parts` parts (at least 1) and `max_depth` levels (1..200, the root is level
    1): a multipart or message part that would exceed either is an application/octet-stream
    leaf. Work is linear in len(data) per level, memory proportional to the part count; of a
    part's header the first 1 MiB is looked at, of a header field value the first 256 KiB.
    `data` is the message in memory or a `Window` onto it (a spooled message, read a block
    at a time): the tree is the same.
    """
    parser = _Parser(data, min(max(max_depth, 1), _DEPTH_CAP))
    return parser.part(0, len(data), 0, max(max_parts, 1), False)


# --- ENVELOPE (RFC 9051 §7.5.2, RFC 5322 §3.4) ----------------------------------------------


def _addr_tokens(text: str) -> list[tuple[str, str, bool]]:
    """(kind, text, preceded by space or comment) tokens; kind is "a" atom, "q" quoted
    (text unquoted), "d" domain literal, "(" comment (inner text), or the special itself."""
    tokens: list[tuple[str, str, bool]] = []
    space, i = False, 0
    while i < len(text):
        m = _ADDR_TOKEN.match(text, i)
        assert m is not None  # the last alternative matches any character
        kind, token = m.lastindex, m.group()
        i = m.end()
        if kind == 1:
            space = True
            continue
        if kind == 5:
            i = _skip_comment(text, m.start())
            inner = text[m.end() : i]
            tokens.append(("(", inner[:-1] if inner.endswith(")") else inner, space))
            space = True
            continue
        if kind == 2:
            quoted = _QUOTED_INNER.match(token)
            assert quoted is not None
            tokens.append(("q", _UNQUOTE.sub(r"\1", quoted.group(1)), space))
        else:
            tokens.append(({3: "d", 4: token}.get(kind or 0, "a"), token, space))
        space = False
    return tokens


def _phrase(tokens: list[tuple[str, str, bool]]) -> str:
    out: list[str] = []
    for _kind, text, space in tokens:
        if out and space:
            out.append(" ")
        out.append(text)
    return "".join(out)


def _addr_spec(tokens: list[tuple[str, str, bool]]) -> tuple[str, str]:
    """(local part, domain) split at the last "@", whitespace dropped."""
    at = max((i for i, t in enumerate(tokens) if t[0] == "@"), default=len(tokens))
    return "".join(t[1] for t in tokens[:at]), "".join(t[1] for t in tokens[at + 1 :])


def _mailbox(tokens: list[tuple[str, str, bool]], out: list[Address]) -> None:
    """Append the address of one mailbox (RFC 5322 §3.4) to `out`, filling in like Dovecot:
    no name-addr → the last comment is the name; a missing part → MISSING_MAILBOX/_DOMAIN."""
    words = [t for t in tokens if t[0] != "("]
    if not words:
        return
    kinds = [t[0] for t in words]
    route = None
    if "<" in kinds:
        lt = kinds.index("<")
        name: str | None = _phrase(words[:lt]) or None
        inner = words[lt + 1 :]
        gt = [t[0] for t in inner].index(">") if ">" in kinds[lt:] else len(inner)
        inner = inner[:gt]
        if inner and inner[0][0] == "@" and ":" in (t[0] for t in inner):
            colon = [t[0] for t in inner].index(":")
            route, inner = "".join(t[1] for t in inner[:colon]), inner[colon + 1 :]
        mailbox, host = _addr_spec(inner)
    else:
        comments = [t[1] for t in tokens if t[0] == "("]
        name = comments[-1] if comments else None
        if "@" in kinds or len(words) == 1:
            mailbox, host = _addr_spec(words)
        else:
            name, mailbox, host = _phrase(words), "", ""
    out.append((name, route, mailbox or "MISSING_MAILBOX", host or "MISSING_DOMAIN"))


def _addresses(value: str | None) -> list[Address]:
    """An RFC 5322 address-list; a group is (NIL NIL name NIL) ... (NIL NIL NIL NIL)."""
    out: list[Address] = []
    if not value:
        return out
    current: list[tuple[str, str, bool]] = []
    in_group = in_angle = has_addr = False
    for token in _addr_tokens(value):
        kind = token[0]
        if in_angle or kind == "<":
            in_angle = kind != ">"
            has_addr = True
            current.append(token)
        elif kind == ",":
            _mailbox(current, out)
            current, has_addr = [], False
        elif kind == ":" and not in_group and not has_addr and _phrase(current):
            out.append((None, None, _phrase([t for t in current if t[0] != "("]), None))
            current, in_group = [], True
        elif kind == ";":
            _mailbox(current, out)
            current, has_addr = [], False
            if in_group:
                out.append((None, None, None, None))
                in_group = False
        else:
            has_addr = has_addr or kind == "@"
            current.append(token)
    _mailbox(current, out)
    if in_group:
        out.append((None, None, None, None))
    return out


def _address_list(addresses: list[Address]) -> str:
    if not addresses:
        return "NIL"
    return "(" + "".join("(" + " ".join(map(imap_string, a)) + ")" for a in addresses) + ")"


def envelope(data: Text, part: Part | None = None) -> str:
    """ENVELOPE (RFC 9051 §7.5.2) of the header of `part` (default: the message's own).

    Values are the raw unfolded field bodies (RFC 2047 encoded-words left as they are); Sender
    and Reply-To default to From when absent or empty.
    """
    start, end = (0, len(data)) if part is None else (part.header_start, part.body_end)
    _body, f = _header(data, start, end)
    sender = _addresses(f.get("from"))
    items = [
        imap_string(f.get("date")),
        imap_string(f.get("subject")),
        _address_list(sender),
        _address_list(_addresses(f.get("sender")) or sender),
        _address_list(_addresses(f.get("reply-to")) or sender),
        _address_list(_addresses(f.get("to"))),
        _address_list(_addresses(f.get("cc"))),
        _address_list(_addresses(f.get("bcc"))),
        imap_string(f.get("in-reply-to")),
        imap_string(f.get("message-id")),
    ]
    return "(" + " ".join(items) + ")"


# --- BODYSTRUCTURE (RFC 9051 §7.5.2, §9 body) ------------------------------------------------


def _param_list(params: Params) -> str:
    if not params:
        return "NIL"
    return "(" + " ".join(f"{imap_string(k)} {imap_string(v)}" for k, v in params) + ")"


def bodystructure(part: Part, *, extensible: bool = True) -> str:
    """`body` (RFC 9051 §9) of `part`, parenthesized: BODYSTRUCTURE, or BODY without
    extension data. Size is the raw body octet count."""
    if part.type == "multipart":
        kids = "".join(bodystructure(c, extensible=extensible) for c in part.children)
        fields = [kids, imap_string(part.subtype)]
        if extensible:
            fields.append(_param_list(part.params))
    else:
        params = part.params
        if part.type == "text" and all(k != "charset" for k, _v in params):
            params += (("charset", "us-ascii"),)
        fields = [
            imap_string(part.type),
            imap_string(part.subtype),
            _param_list(params),
            imap_string(part.id),
            imap_string(part.description),
            imap_string(part.encoding),
            str(part.body_end - part.body_start),
        ]
        if part.type == "message" and part.children:
            inner = bodystructure(part.children[0], extensible=extensible)
            fields += [part.envelope or _EMPTY_ENVELOPE, inner, str(part.lines)]
        elif part.type == "text":
            fields.append(str(part.lines))
        if extensible:
            fields.append(imap_string(part.md5))
    if extensible:
        disposition = part.disposition
        language = part.language
        fields += [
            "NIL"
            if disposition is None
            else f"({imap_string(disposition[0])} {_param_list(disposition[1])})",
            "NIL" if language is None else "(" + " ".join(map(imap_string, language)) + ")",
            imap_string(part.location),
        ]
    return "(" + " ".join(fields) + ")"


# --- sections, BINARY, storage --------------------------------------------------------------


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    """The part a section-part names (RFC 9051 §6.4.5), or None; () is the root.

    A non-multipart message's part 1 is the message body itself; in a message/rfc822 part N,
    N.1 is the encapsulated message's first part, or its body when it is not multipart. For
    N.HEADER / N.TEXT use `children[0]` of part N; N.MIME is part N's own header.
    """
    part = root
    for level, number in enumerate(path):
        if part.type == "multipart":
            subparts = part.children
        elif level == 0:
            subparts = (part,)
        elif part.type == "message" and part.children:
            inner = part.children[0]
            subparts = inner.children if inner.type == "multipart" else (inner,)
        else:
            return None
        if not 1 <= number <= len(subparts):
            return None
        part = subparts[number - 1]
    return part


def _qp_token(m: re.Match[bytes], fixed: dict[bytes, bytes] = _QP_FIXED) -> bytes:
    value = fixed.get(m[0])
    if value is not None:
        return value
    if m[1] is not None:  # "=XX" in mixed case
        return binascii.unhexlify(m[1])
    if m[2] is not None:  # soft line break with blanks after the "="
        return b""
    if m[3] is None:  # "=" (and blanks) ending the body: invalid, kept as it is
        return m[0]
    return m[3]  # blanks before a line end or the end dropped (rule 3)


def decode_quoted_printable(raw: bytes) -> bytes:
    """Quoted-printable decoding (RFC 2045 §6.7), octet for octet what Dovecot's qp-decoder
    writes (src/lib-mail/qp-decoder.c).

    "=XX" (either case) is the octet; "=" then optional blanks then a line end is a soft line
    break; spaces and tabs before a line end or the end of the data are dropped (rule 3); line
    ends, CRLF or a bare LF, become CRLF. Invalid input never fails but is copied, as RFC 2045
    §6.7 suggests and as Dovecot's decoder writes it before it reports the error: "=" that
    starts none of the above (e.g. "=4x", or "=" or "= " at the very end) and a bare CR stay
    as they are. (Dovecot then answers BINARY with NO; it also drops the blanks of a run longer
    than 77 that text follows, which are kept here.)
    """
    if raw.count(b"\n") != raw.count(b"\r\n"):  # bare LF: the decoder treats it as CRLF
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return _QP_TOKEN.sub(_qp_token, raw)


def decoded_body(data: bytes, part: Part) -> bytes:
    """The body with its Content-Transfer-Encoding removed, for BINARY[] (RFC 3516 §4.2).

    Raises ValueError for undecodable base64 and for an encoding other than 7BIT, 8BIT,
    BINARY, BASE64 or QUOTED-PRINTABLE (the server answers NO [UNKNOWN-CTE], RFC 3516 §4.3).
    Quoted-printable is decoded as `decode_quoted_printable` does, so never fails.
    """
    raw = data[part.body_start : part.body_end]
    if part.encoding == "BASE64":
        try:
            return binascii.a2b_base64(raw)
        except binascii.Error as exc:
            raise ValueError(f"undecodable base64: {exc}") from None
    if part.encoding == "QUOTED-PRINTABLE":
        return decode_quoted_printable(raw)
    if part.encoding in ("7BIT", "8BIT", "BINARY"):
        return raw
    raise ValueError(f"unknown Content-Transfer-Encoding {part.encoding}")


def _to_obj(p: Part) -> list[Any]:
    return [
        p.header_start, p.body_start, p.body_end, p.type, p.subtype, p.params, p.id,
        p.description, p.encoding, p.md5, p.disposition, p.language, p.location, p.lines,
        [_to_obj(c) for c in p.children], p.envelope,
    ]  # fmt: skip


def _from_obj(o: list[Any]) -> Part:
    hs, bs, be, ctype, sub, params, cid, desc, enc, md5, disp, lang, loc, lines, kids, env = o
    return Part(
        hs, bs, be, ctype, sub, tuple((k, v) for k, v in params), cid, desc, enc, md5,
        None if disp is None else (disp[0], tuple((k, v) for k, v in disp[1])),
        None if lang is None else tuple(lang), loc, lines, tuple(map(_from_obj, kids)), env,
    )  # fmt: skip


def to_json(part: Part) -> str:
    """`part` as compact JSON: one array of the fields in declaration order per part."""
    return json.dumps(_to_obj(part), separators=(",", ":"))


def from_json(text: str) -> Part:
    """The Part `to_json` produced; ValueError if `text` is not such a document."""
    try:
        return _from_obj(json.loads(text))
    except (TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not a stored MIME structure: {exc}") from None
