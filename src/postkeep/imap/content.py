"""The content of one message as SEARCH, SORT and THREAD read it (sans-IO).

`MessageContent` holds what the content keys of SEARCH (RFC 9051 §6.4.4: HEADER, SUBJECT,
FROM, TO, CC, BCC, BODY, TEXT, SENTBEFORE/SENTON/SENTSINCE) and the criteria of SORT and THREAD
(RFC 5256, `postkeep.imap.thread`) look at: the top-level header fields (RFC 5322 §2.2
unfolded, §3.6; RFC 2047 decoded), the sent date of the Date: field (RFC 5322 §3.3, §3.6.1;
RFC 5256 §2.2) and the decoded text of the text/* body parts (RFC 2045 transfer encodings,
declared charsets), all built lazily and never raising on malformed input.

`decode_header_text` decodes RFC 2047 encoded-words (§2, §4, §6.2; RFC 2231 §5 language
suffixes), `decode_bytes` text in a declared charset.

`parse_addresses` parses an address list (RFC 5322 §3.4, and the obsolete syntax of §4.4)
leniently, as Dovecot (the reference of the imaptest conformance suite) does, into `Address`
entries shaped like ENVELOPE addresses (RFC 9051 §7.5.2). FROM, TO, CC and BCC match the address
fields in a normalised form made from it: each address written back as "name <mailbox@domain>",
"mailbox@domain" or "group: ...;", so comments, quoting and folding inside addresses do not
hide a match.
"""

from __future__ import annotations

import binascii
import calendar
import datetime
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass
from typing import Final

# -- decoding -------------------------------------------------------------------------------

_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext
# RFC 2047 §2 encoded-word (RFC 2231 §5 allows "*language" after the charset).
_ENCODED_WORD: Final = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?=")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*")


def decode_bytes(raw: bytes, charset: str | None) -> str:
    """`raw` decoded from `charset`; undecodable octets become U+FFFD. Without a charset, or
    with an unknown one, UTF-8 is tried and Latin-1 used when it fails. Never raises."""
    if charset:
        try:
            return raw.decode(charset.strip().strip('"'), "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass  # unknown charset, or a codec that is not a text encoding (e.g. "base64")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The octets of one encoded-word's encoded-text (RFC 2047 §4), None if malformed."""
    try:
        if encoding in "Bb":
            data = text.rstrip("=")
            if not _BASE64.fullmatch(data):
                return None
            return binascii.a2b_base64(data + "=" * (-len(data) % 4))
        return binascii.a2b_qp(text.encode("ascii"), header=True)
    except (binascii.Error, ValueError):
        return None


def decode_header_text(value: str) -> str:
    """RFC 2047 encoded-words in `value` decoded (§6.2: white space between adjacent encoded
    words is dropped; adjacent words in one charset are joined before decoding, so a character
    split across words survives). Malformed words are kept as they are. Never raises."""
    if "=?" not in value:
        return value
    out: list[str] = []
    run_charset: str | None = None
    run: list[bytes] = []
    pos = 0

    def flush() -> None:
        if run:
            out.append(decode_bytes(b"".join(run), run_charset))
            run.clear()

    for m in _ENCODED_WORD.finditer(value):
        raw = _word_bytes(m.group(2), m.group(3))
        if raw is None:
            continue
        gap = value[pos : m.start()]
        charset = m.group(1)
        if gap and not (run and gap.strip(" \t") == ""):
            flush()
            out.append(gap)
        elif run and charset.lower() != (run_charset or "").lower():
            flush()
        run_charset = charset
        run.append(raw)
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def _date_tuple(value: str) -> tuple[int, int, int, int, int, int, int] | None:
    """(year, month, day, hour, minute, second, offset seconds) of an RFC 5322 §3.3 date-time,
    validated; None when it cannot be parsed. A missing zone counts as UTC."""
    try:
        parsed = email.utils.parsedate_tz(value)
    except (ValueError, IndexError, TypeError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0
    try:
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except (ValueError, OverflowError):
        return None
    if abs(offset) >= 86400:
        return None
    return year, month, day, hour, minute, second, offset


# -- address lists --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """One entry of a parsed address list, shaped like an IMAP ENVELOPE address (RFC 9051 §7.5.2).

    A mailbox has a `domain` ("" when it has none). With `domain` None the entry marks a group
    (RFC 5322 §3.4): its start, `mailbox` being the group name, or, with `mailbox` None too, its
    end. `name` is the display name (for a bare addr-spec, the comment after it), unquoted but
    not RFC 2047 decoded; `route` the obsolete source route ("@a,@b").
    """

    name: str | None = None
    route: str | None = None
    mailbox: str | None = None
    domain: str | None = None


# RFC 5322 §3.2.3 atext runs (non-ASCII counts as atext, RFC 6532), with or without ".".
_ATEXT_RUN: Final = re.compile(r'[^\x00-\x20()<>\[\]:;@\\,."\x7f]+')
_ATEXT_OR_DOT_RUN: Final = re.compile(r'[^\x00-\x20()<>\[\]:;@\\,"\x7f]+')
_COMMENT_STOP: Final = re.compile(r"[()\\]")
_QUOTED_STOP: Final = re.compile(r'["\n\\]')
_LITERAL_STOP: Final = re.compile(r"[\]\\]")


def _is_atext(ch: str) -> bool:
    return _ATEXT_RUN.fullmatch(ch) is not None


class _AddressParser:
    """Dovecot's lenient address-list parser (lib-mail message-address.c, rfc822-parser.c),
    which SEARCH and SORT results are defined by. The parsing methods return 1 when input
    follows, 0 at its end and -1 on a syntax error; `_peek` gives "" at the end."""

    __slots__ = ("addresses", "comment", "domain", "end", "mailbox", "name", "pos", "route", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = len(text)
        self.comment = ""  # the last comment skipped
        self.addresses: list[Address] = []
        self.name: str | None = None
        self.route: str | None = None
        self.mailbox: str | None = None
        self.domain: str | None = None

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < self.end else ""

    def _add(self) -> None:
        self.addresses.append(Address(self.name, self.route, self.mailbox, self.domain))
        self.name = self.route = self.mailbox = self.domain = None

    def _add_mailbox(self) -> None:
        """Add the mailbox parsed so far; a missing local part or domain becomes ""."""
        if self.mailbox is None:
            self.mailbox = ""
        if self.domain is None:
            self.domain = ""
        self._add()

    # -- lexical level (RFC 5322 §3.2)

    def _skip_comment(self) -> int:
        text, level, start = self.text, 1, self.pos + 1
        parts: list[str] = []
        self.pos += 1
        while (m := _COMMENT_STOP.search(text, self.pos)) is not None:
            self.pos = m.start()
            ch = text[self.pos]
            if ch == "(":
                level += 1
            elif ch == ")":
                level -= 1
                if level == 0:
                    parts.append(text[start : self.pos])
                    self.comment = "".join(parts)
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            else:  # quoted-pair
                parts.append(text[start : self.pos])
                start = self.pos + 1
                self.pos += 1
                if self.pos >= self.end:
                    return -1
            self.pos += 1
        self.pos = self.end
        return -1  # no ")"

    def _skip_lwsp(self) -> int:
        """Skip CFWS."""
        while self.pos < self.end:
            ch = self.text[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif ch != "(":
                break
            elif self._skip_comment() < 0:
                return -1
        return 1 if self.pos < self.end else 0

    def _dot_atom(self, out: list[str]) -> int:
        """dot-atom, CFWS allowed around the dots (RFC 822)."""
        text = self.text
        if _ATEXT_RUN.match(text, self.pos) is None:
            return -1
        start = self.pos
        while True:
            m = _ATEXT_RUN.match(text, self.pos)
            if m is not None:
                self.pos = m.end()
            out.append(text[start : self.pos])
            if self.pos >= self.end:
                return 0
            ret = self._skip_lwsp()
            if ret <= 0:
                return ret
            if text[self.pos] != ".":
                return 1
            self.pos += 1
            out.append(".")
            ret = self._skip_lwsp()
            if ret <= 0:
                return ret
            start = self.pos

    def _quoted_string(self, out: list[str]) -> int:
        """quoted-string, unquoted and unfolded into `out`."""
        text = self.text
        self.pos += 1
        start = self.pos
        while (m := _QUOTED_STOP.search(text, self.pos)) is not None:
            self.pos = m.start()
            ch = text[self.pos]
            if ch == '"':
                out.append(text[start : self.pos])
                self.pos += 1
                return self._skip_lwsp()
            if ch == "\n":
                out.append(text[start : self.pos].removesuffix("\r"))
                start = self.pos + 1
            else:  # quoted-pair
                out.append(text[start : self.pos])
                start = self.pos + 1
                self.pos += 1
                if self.pos >= self.end:
                    return -1
            self.pos += 1
        self.pos = self.end
        return -1  # no closing quote

    def _phrase(self, out: list[str]) -> int:
        """phrase / obs-phrase: words joined by single spaces."""
        if self.pos >= self.end:
            return 0
        if self.text[self.pos] == ".":
            return -1
        while True:
            if self.text[self.pos] == '"':
                ret = self._quoted_string(out)
            else:
                m = _ATEXT_OR_DOT_RUN.match(self.text, self.pos)
                if m is not None:
                    out.append(m.group())
                    self.pos = m.end()
                ret = self._skip_lwsp() if self.pos < self.end else 0
            if ret <= 0:
                return ret
            ch = self.text[self.pos]
            if ch != '"' and ch != "." and not _is_atext(ch):
                break
            out.append(" ")
        return self._skip_lwsp()

    def _domain(self, out: list[str]) -> int:
        """ "@" domain: dot-atom or domain-literal."""
        self.pos += 1
        if self._skip_lwsp() <= 0:
            return -1
        if self.text[self.pos] != "[":
            return self._dot_atom(out)
        start = self.pos
        while (m := _LITERAL_STOP.search(self.text, self.pos)) is not None:
            self.pos = m.end()
            if m.group() == "]":
                out.append(self.text[start : self.pos])
                return self._skip_lwsp()
            self.pos += 1  # quoted-pair
        self.pos = self.end
        return -1  # no "]"

    # -- address level (RFC 5322 §3.4)

    def _local_part(self) -> int:
        out: list[str] = []
        ret = self._quoted_string(out) if self._peek() == '"' else self._dot_atom(out)
        if ret < 0:
            return -1
        self.mailbox = "".join(out)
        return ret

    def _parse_domain(self) -> int:
        out: list[str] = []
        ret = self._domain(out)
        if ret < 0:
            return -1
        self.domain = "".join(out)
        return ret

    def _route(self) -> int:
        """obs-domain-list: "@" domain *(*(CFWS / ",") [CFWS] "@" domain)."""
        out: list[str] = []
        while True:
            if self.pos >= self.end:
                return 0
            if self.text[self.pos] != "@":
                break
            if out:
                out.append(",")
            out.append("@")
            ret = self._domain(out)
            if ret <= 0:
                return ret
            while self._skip_lwsp() > 0 and self.text[self.pos] == ",":
                self.pos += 1
        self.route = "".join(out)
        return 1

    def _angle_addr(self) -> int:
        """ "<" [route ":"] local-part ["@" domain] ">"."""
        self.pos += 1
        ret = self._skip_lwsp()
        if ret <= 0:
            return ret
        if self.text[self.pos] == "@":
            if self._route() <= 0 or self._peek() != ":":
                self.route = None
                return -1
            self.pos += 1
            ret = self._skip_lwsp()
            if ret <= 0:
                return ret
        ret = self._local_part()
        if ret <= 0:
            return ret
        if self._peek() == "@":
            ret = self._parse_domain()
            if ret <= 0:
                return ret
        if self._peek() != ">":
            return -1
        self.pos += 1
        return self._skip_lwsp()

    def _name_addr(self) -> int:
        """[display-name] angle-addr."""
        out: list[str] = []
        if self._phrase(out) <= 0 or self._peek() != "<":
            return -1
        self.name = "".join(out) or None
        self._angle_addr()  # a broken angle-addr still makes an address
        return 1 if self.pos < self.end else 0

    def _addr_spec(self) -> int:
        """local-part "@" domain; a comment after it is taken as the display name."""
        self.comment = ""
        ret = self._local_part()
        if ret != 0 and self._peek() == "@":
            ret2 = self._parse_domain()
            if ret2 <= 0:
                ret = ret2
        if self.comment:
            self.name = self.comment
        return ret

    def _mailbox(self) -> int:
        start = self.pos
        ret = self._name_addr()
        if ret < 0:
            self.pos = start
            ret = self._addr_spec()
        self._add_mailbox()
        return ret

    def _group(self) -> int:
        """display-name ":" [mailbox-list / CFWS] ";" [CFWS]; -1 if this is no group."""
        out: list[str] = []
        if self._phrase(out) <= 0 or self._peek() != ":":
            return -1
        self.pos += 1
        ret = self._skip_lwsp()
        self.mailbox = "".join(out)
        self._add()  # group start
        if ret > 0 and self.text[self.pos] != ";":
            while True:
                if self._mailbox() <= 0:
                    ret = -1
                    break
                if self._peek() != ",":
                    break
                self.pos += 1
                if self._skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self._peek() != ";":
                ret = -1
            else:
                self.pos += 1
                ret = self._skip_lwsp()
        self._add()  # group end
        return 0 if ret == 0 else 1

    def parse(self) -> None:
        """address-list: stops at the end, or where the input stops making sense."""
        if self._skip_lwsp() <= 0:
            return
        while True:
            start = self.pos
            ret = self._group()
            if ret < 0:
                self.pos = start
                ret = self._mailbox()
            if ret == 0 or self._peek() != ",":
                return
            self.pos += 1
            if self._skip_lwsp() <= 0:
                return


def parse_addresses(value: str) -> list[Address]:
    """The address list in the raw (not RFC 2047 decoded) field `value` (RFC 5322 §3.4, and
    the obsolete syntax of §4.4), parsed leniently as Dovecot does. Never raises."""
    parser = _AddressParser(value)
    parser.parse()
    return parser.addresses


def _address_search_text(value: str) -> str:
    """The address field `value` as the address search keys see it: its addresses written as
    Dovecot's message_address_write does ("name <mailbox@domain>", "mailbox@domain",
    "group: ...;"), then RFC 2047 decoded. Text the parser gave up on is appended as it is,
    so that no searchable text is lost in a malformed field."""
    parser = _AddressParser(value)
    parser.parse()
    out: list[str] = []
    in_group = False
    previous = ""  # kind of the previous entry: "start", "end" or "mailbox"
    for addr in parser.addresses:
        if addr.domain is None:
            kind = "end" if in_group else "start"
            text = ";" if in_group else f"{addr.mailbox or ''}:"
            in_group = not in_group
        else:
            kind = "mailbox"
            text = f"{addr.mailbox}@{addr.domain}" if addr.domain else addr.mailbox or ""
            if addr.name or addr.route is not None:
                route = "" if addr.route is None else addr.route + ":"
                text = f"{addr.name or ''} <{route}{text}>".lstrip()
        if previous and kind != "end":
            out.append(" " if previous == "start" else ", ")
        out.append(text)
        previous = kind
    rest = value[parser.pos :].strip(" \t\r\n")
    if rest:
        out.append(" " + rest if out else rest)
    return decode_header_text("".join(out))


# -- message content ------------------------------------------------------------------------


class MessageContent:
    """The parts of a message that header and text search keys look at, decoded lazily.

    Only the top-level header is searched by header keys; TEXT and BODY see the decoded text of
    every text/* leaf part (quoted-printable and base64 undone, converted from the declared
    charset), including those of attached messages. Non-text parts are skipped. Header octets
    that are not UTF-8 (RFC 6532) are read as Latin-1.
    """

    __slots__ = (
        "_addresses",
        "_body",
        "_body_folded",
        "_data",
        "_decoded",
        "_fields",
        "_folded",
        "_head_folded",
    )

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._fields: list[tuple[str, str]] | None = None
        self._decoded: dict[str, list[str]] = {}
        self._folded: dict[str, list[str]] = {}
        self._addresses: dict[str, list[str]] = {}
        self._head_folded: str | None = None
        self._body: str | None = None
        self._body_folded: str | None = None

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = 8 << 20) -> MessageContent:
        """Content of the message `data`, of which only the first `max_bytes` octets count."""
        return cls(data[:max_bytes])

    def _all_fields(self) -> list[tuple[str, str]]:
        """(name, unfolded raw value) of each top-level header field (RFC 5322 §2.2)."""
        if self._fields is not None:
            return self._fields
        data = self._data
        if data.startswith((b"\r\n", b"\n")):
            head = b""
        else:
            m = _HEADER_END.search(data)
            head = data if m is None else data[: m.start()]
        fields: list[tuple[str, bytearray]] = []
        current: bytearray | None = None
        for line in head.split(b"\n"):
            line = line.removesuffix(b"\r")
            if line[:1] in (b" ", b"\t"):
                if current is not None:
                    current += line  # RFC 5322 §2.2.3 unfolding: the CRLF goes, the WSP stays
                continue
            name, colon, value = line.partition(b":")
            name = name.rstrip(b" \t")  # RFC 5322 §4.5.8 obs-optional
            if not colon or not _FIELD_NAME.fullmatch(name):
                current = None
                continue
            current = bytearray(value)
            fields.append((name.decode("ascii"), current))
        self._fields = [(n, decode_bytes(bytes(v), None).strip(" \t")) for n, v in fields]
        return self._fields

    def raw_header_values(self, name: str) -> list[str]:
        """Unfolded values of the header field `name` (any case), not RFC 2047 decoded."""
        lower = name.lower()
        return [value for n, value in self._all_fields() if n.lower() == lower]

    def header_values(self, name: str) -> list[str]:
        """Unfolded, RFC 2047 decoded values of the header field `name` (any case)."""
        lower = name.lower()
        values = self._decoded.get(lower)
        if values is None:
            values = [decode_header_text(v) for v in self.raw_header_values(lower)]
            self._decoded[lower] = values
        return values

    def header_contains(self, name: str, needle: str) -> bool:
        """Whether a `name` field contains `needle` (casefolded); "" matches any such field."""
        lower = name.lower()
        folded = self._folded.get(lower)
        if folded is None:
            folded = [v.casefold() for v in self.header_values(lower)]
            self._folded[lower] = folded
        needle = needle.casefold()
        return any(needle in value for value in folded)

    def address_contains(self, name: str, needle: str) -> bool:
        """Whether a `name` address field, normalised (`_address_search_text`), contains
        `needle` (casefolded); "" matches any such field. The FROM, TO, CC and BCC keys."""
        lower = name.lower()
        folded = self._addresses.get(lower)
        if folded is None:
            folded = [_address_search_text(v).casefold() for v in self.raw_header_values(lower)]
            self._addresses[lower] = folded
        needle = needle.casefold()
        return any(needle in value for value in folded)

    def header_text(self) -> str:
        """The whole top-level header as decoded "Name: value" lines."""
        return "\n".join(f"{n}: {decode_header_text(v)}" for n, v in self._all_fields())

    def body_text(self) -> str:
        """The decoded text of the text/* leaf parts, separated by newlines."""
        if self._body is None:
            self._body = self._extract_body()
        return self._body

    def _extract_body(self) -> str:
        try:
            message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(self._data)
            texts: list[str] = []
            for part in message.walk():
                if part.is_multipart() or part.get_content_maintype() != "text":
                    continue
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    texts.append(decode_bytes(payload, part.get_content_charset()))
            return "\n".join(texts)
        except Exception:  # hostile MIME (deep nesting, odd parameters): search the raw body
            m = _HEADER_END.search(self._data)
            return decode_bytes(self._data[m.end() :] if m else b"", None)

    def text_contains(self, needle: str) -> bool:
        """TEXT: `needle` (casefolded) in the header or the body (RFC 9051 §6.4.4)."""
        if self._head_folded is None:
            self._head_folded = self.header_text().casefold()
        needle = needle.casefold()
        return needle in self._head_folded or self.body_contains(needle)

    def body_contains(self, needle: str) -> bool:
        """BODY: `needle` (casefolded) in the body text (RFC 9051 §6.4.4)."""
        if self._body_folded is None:
            self._body_folded = self.body_text().casefold()
        return needle.casefold() in self._body_folded

    def _first_date(self) -> tuple[int, int, int, int, int, int, int] | None:
        values = self.raw_header_values("Date")
        return _date_tuple(values[0]) if values else None

    def sent_date(self) -> datetime.date | None:
        """The date of the Date: field in its own zone (RFC 9051 §6.4.4 SENTBEFORE/SENTON/
        SENTSINCE), None when missing or unparsable."""
        parsed = self._first_date()
        return None if parsed is None else datetime.date(*parsed[:3])

    def sent_time(self) -> float | None:
        """The Date: field as POSIX time (RFC 5256 §2.2 sent date), None when unusable."""
        parsed = self._first_date()
        if parsed is None:
            return None
        *fields, offset = parsed
        return float(calendar.timegm((*fields, 0, 0, 0)) - offset)
