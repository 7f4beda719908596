"""IMAP command tokens (sans-IO): the lexical layer of RFC 9051 §9 (formal syntax).

A `Lexer` walks the bytes of one complete command as `ImapReader` assembled it (lines and
literal octets, final CRLF removed) and reads the grammar's terminals: SP, atom, astring,
quoted, literal (RFC 9051 §4.3), literal8 (RFC 3516 §4.2), LITERAL+ / LITERAL- headers
(RFC 7888 §3), number / number64 / nz-number (§9), sequence-set with "$" (RFC 5182 §2.1), date
and date-time (§9), flags (§2.3.2), mailbox names (§5.1, via `imap_mailbox`) and parenthesized
lists, counting their nesting against `max_depth`.

Every failure raises `ParseFail` carrying the response text ("BAD ..."); `imap_parser.parse()`
turns it into a `ParseError` value, so nothing escapes to the driver. Nothing here echoes client
bytes other than validated atoms into a response.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from postkeep.imap.wire.commands import STAR, SequenceSet
from postkeep.imap.wire.mailbox import MailboxNameError, decode_mailbox

MAX_NUMBER: Final = 4294967295  # RFC 9051 §9 number: unsigned 32-bit
MAX_NUMBER64: Final = 9223372036854775807  # RFC 9051 §9 number64: signed 63-bit, >= 0


class ParseFail(Exception):
    """Internal: the command cannot be accepted; `text` is the response ("BAD ...")."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _char_class(chars: bytes) -> bytes:
    return b"[" + b"".join(re.escape(bytes([c])) for c in chars) + b"]"


# RFC 9051 §9: ATOM-CHAR = any CHAR except atom-specials ("(" ")" "{" SP CTL "%" "*" DQUOTE
# "\" "]"); ASTRING-CHAR adds "]"; a tag is ASTRING-CHARs except "+"; list-char adds "%" "*".
_ATOM_BYTES = bytes(c for c in range(0x21, 0x7F) if c not in b'(){%*"\\]')
ATOM_CHARS: Final = frozenset(_ATOM_BYTES)
ASTRING_CHARS: Final = ATOM_CHARS | {ord("]")}
TAG_CHARS: Final = ASTRING_CHARS - {ord("+")}
_ATOM = re.compile(_char_class(_ATOM_BYTES) + b"+")
_ASTRING = re.compile(_char_class(_ATOM_BYTES + b"]") + b"+")
_LIST_MAILBOX = re.compile(_char_class(_ATOM_BYTES + b"]%*") + b"+")
_TAG = re.compile(_char_class(bytes(sorted(TAG_CHARS))) + b"+")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r?\n")
_DIGITS = re.compile(rb"[0-9]+")
_SEQ = re.compile(rb"[0-9:*,$]+")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        [
            b"JAN",
            b"FEB",
            b"MAR",
            b"APR",
            b"MAY",
            b"JUN",
            b"JUL",
            b"AUG",
            b"SEP",
            b"OCT",
            b"NOV",
            b"DEC",
        ]
    )
}
# RFC 9051 §2.3.2 system flags, normalized to their canonical case.
SYSTEM_FLAGS: Final = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}

SP: Final = 0x20
LPAREN: Final = 0x28
RPAREN: Final = 0x29


def read_tag(data: bytes) -> tuple[str | None, int]:
    """The tag at the start of `data` and the offset after it (RFC 9051 §9 tag).

    The tag must be followed by SP or the end; otherwise (None, 0).
    """
    m = _TAG.match(data)
    if m is None or (m.end() < len(data) and data[m.end()] != SP):
        return None, 0
    return m.group().decode("ascii"), m.end()


class Lexer:
    """A cursor over one command. `command` names it in error texts."""

    __slots__ = ("command", "data", "depth", "max_depth", "pos", "utf8")

    def __init__(
        self, data: bytes, pos: int = 0, *, utf8: bool = False, max_depth: int = 32
    ) -> None:
        self.data = data
        self.pos = pos
        self.utf8 = utf8
        self.max_depth = max_depth
        self.depth = 0
        self.command = "command"

    # -- errors -------------------------------------------------------------------------------

    def error(self, expected: str) -> ParseFail:
        """A syntax error: "Missing argument" at the end of input, else what was expected."""
        if self.at_end():
            if expected == "a space":
                return ParseFail(f"BAD Missing argument for {self.command}")
            return ParseFail(f"BAD Missing argument for {self.command}: expected {expected}")
        return ParseFail(
            f"BAD Syntax error in {self.command} at octet {self.pos}: expected {expected}"
        )

    @staticmethod
    def fail(text: str) -> ParseFail:
        return ParseFail("BAD " + text)

    # -- primitives ---------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        """The next octet, or -1 at the end."""
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def sp(self) -> None:
        """Exactly one SP (RFC 9051 §9 SP)."""
        if self.peek() != SP:
            raise self.error("a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        """Consume one SP if present."""
        if self.peek() == SP:
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        """The command must end here."""
        if not self.at_end():
            raise self.fail(f"Unexpected extra arguments to {self.command}")

    def expect(self, token: bytes, what: str) -> None:
        if self.data[self.pos : self.pos + len(token)] != token:
            raise self.error(what)
        self.pos += len(token)

    def open_paren(self) -> None:
        """ "(" — counts nesting against `max_depth`."""
        if self.peek() != LPAREN:
            raise self.error('"("')
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.fail(f"Parenthesized lists nested deeper than {self.max_depth}")
        self.pos += 1

    def close_paren(self) -> None:
        if self.peek() != RPAREN:
            raise self.error('")"')
        self.depth -= 1
        self.pos += 1

    def _match(self, pattern: re.Pattern[bytes]) -> bytes | None:
        m = pattern.match(self.data, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    # -- atoms and strings --------------------------------------------------------------------

    def atom(self, what: str = "an atom") -> str:
        """1*ATOM-CHAR, as ASCII text."""
        raw = self._match(_ATOM)
        if raw is None:
            raise self.error(what)
        return raw.decode("ascii")

    def keyword(self, what: str = "a keyword") -> str:
        """An atom, upper-cased (IMAP keywords are case-insensitive, RFC 9051 §9 note 3)."""
        return self.atom(what).upper()

    def peek_keyword(self) -> str:
        """The upper-cased atom at the cursor without consuming it ("" if none)."""
        m = _ATOM.match(self.data, self.pos)
        return m.group().decode("ascii").upper() if m else ""

    def skip_keyword(self, word: str) -> bool:
        """Consume `word` (case-insensitive) if it is the whole atom at the cursor."""
        m = _ATOM.match(self.data, self.pos)
        if m and m.group().upper() == word.encode():
            self.pos = m.end()
            return True
        return False

    def quoted(self) -> bytes:
        """A quoted string (RFC 9051 §4.3): no CR, LF or NUL; only \\" and \\\\ escapes."""
        m = _QUOTED.match(self.data, self.pos)
        if m is None:
            raise self.error("a valid quoted string")
        self.pos = m.end()
        return _QUOTED_ESCAPE.sub(rb"\1", m.group(1))

    def literal(self, allow8: bool = False, allow_nul: bool = False) -> tuple[bytes, bool]:
        """A literal {n} / {n+} (RFC 9051 §4.3, RFC 7888) or, when `allow8`, a literal8 ~{n}
        (RFC 3516 §4.2). Returns (octets, is_literal8). NUL is refused in a plain literal
        unless `allow_nul` (RFC 9051 §4.3: literals are CHAR8)."""
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            raise self.error("a literal")
        binary = bool(m.group(1))
        if binary and not allow8:
            raise self.fail("literal8 (~{n}) is allowed only for APPEND data (RFC 3516)")
        digits = m.group(2)
        size = int(digits) if len(digits) <= 20 else MAX_NUMBER64 + 1
        if size > (MAX_NUMBER64 if binary else MAX_NUMBER):
            raise self.fail("Literal size out of range")
        start = m.end()
        if start + size > len(self.data):
            raise self.fail("Literal is shorter than announced")
        self.pos = start + size
        octets = self.data[start : self.pos]
        if not binary and not allow_nul and b"\x00" in octets:
            raise self.fail("NUL octet in literal (RFC 9051 4.3)")
        return octets, binary

    def string(self) -> bytes:
        """string = quoted / literal."""
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == 0x7B:
            return self.literal()[0]
        raise self.error("a string")

    def astring(self, what: str = "a string") -> bytes:
        """astring = 1*ASTRING-CHAR / string (RFC 9051 §9)."""
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        raw = self._match(_ASTRING)
        if raw is None:
            raise self.error(what)
        return raw

    def nstring(self) -> bytes | None:
        """nstring = string / NIL."""
        if self.skip_keyword("NIL"):
            return None
        return self.string()

    def text(self, raw: bytes, what: str) -> str:
        """Decode a string argument as UTF-8 (RFC 9051 §4.3; LOGIN, ID, quota roots...)."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def mailbox(self) -> str:
        """mailbox = "INBOX" / astring, decoded (RFC 9051 §5.1, RFC 3501 §5.1.3)."""
        return self.decode_mailbox(self.astring("a mailbox name"))

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string: a LIST pattern with "%" and "*" (§6.3.9)."""
        c = self.peek()
        if c in (0x22, 0x7B):
            raw = self.string()
        else:
            matched = self._match(_LIST_MAILBOX)
            if matched is None:
                raise self.error("a mailbox pattern")
            raw = matched
        return self.decode_mailbox(raw, inbox=False)

    def decode_mailbox(self, raw: bytes, inbox: bool = True) -> str:
        """A mailbox name or (with `inbox` false) a LIST pattern, decoded.

        A name that is not valid modified UTF-7 / UTF-8 is refused with NO (it names no
        mailbox that can exist, as Dovecot answers); a pattern is kept as its raw text, which
        then matches nothing.
        """
        try:
            name = decode_mailbox(raw, self.utf8)
        except MailboxNameError as e:
            if not inbox:
                return raw.decode("utf-8", "replace")
            raise ParseFail(f"NO [CANNOT] {e}") from None
        if not inbox and name == "INBOX":
            return raw.decode("ascii")  # a pattern keeps its case
        return name

    # -- numbers ------------------------------------------------------------------------------

    def number(self, limit: int = MAX_NUMBER, nonzero: bool = False, what: str = "") -> int:
        """number (32-bit) by default; number64 / mod-sequence with `limit` (RFC 9051 §9)."""
        raw = self._match(_DIGITS)
        if raw is None:
            raise self.error(what or "a number")
        value = int(raw) if len(raw) <= 20 else limit + 1
        if value > limit or (nonzero and value == 0):
            raise self.fail(f"Number out of range in {self.command}")
        return value

    def number64(self, nonzero: bool = False) -> int:
        return self.number(MAX_NUMBER64, nonzero)

    def sequence_set(self) -> SequenceSet:
        """sequence-set with "*" and "$" (RFC 9051 §9, RFC 5182 §2.1), normalized."""
        raw = self._match(_SEQ)
        if raw is None:
            raise self.error("a sequence set")
        result = parse_sequence_set(raw)
        if result is None:
            raise self.fail(f"Invalid sequence set in {self.command}")
        return result

    # -- dates --------------------------------------------------------------------------------

    def date(self) -> datetime.date:
        """date = date-text / DQUOTE date-text DQUOTE (RFC 9051 §9), e.g. 1-Feb-1994."""
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        m = _DATE.match(self.data, self.pos)
        if m is None:
            raise self.error("a date (d-Mon-yyyy)")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "a closing quote after the date")
        month = _MONTHS.get(m.group(2).upper())
        try:
            if month is None:
                raise ValueError
            return datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise self.fail("Invalid date") from None

    def date_time(self) -> datetime.datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone
        DQUOTE (RFC 9051 §9), e.g. "17-Jul-1996 02:44:25 -0700"."""
        m = _DATE_TIME.match(self.data, self.pos)
        if m is None:
            raise self.error("a date-time")
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.upper())
        try:
            if month is None or int(zm) >= 60 or int(zh) >= 24:
                raise ValueError
            offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
            zone = datetime.timezone(-offset if sign == b"-" else offset)
            return datetime.datetime(
                int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone
            )
        except ValueError:
            raise self.fail("Invalid date-time") from None

    # -- flags --------------------------------------------------------------------------------

    def flag(self, allow_recent: bool = False) -> str:
        """flag = system flag / "\\" atom / keyword atom (RFC 9051 §2.3.2, §9)."""
        if self.peek() == 0x5C:  # "\"
            self.pos += 1
            name = "\\" + self.atom("a flag name")
            canonical = SYSTEM_FLAGS.get(name.upper(), name)
            if canonical == "\\Recent" and not allow_recent:
                raise self.fail("\\Recent cannot be set by a client (RFC 3501 2.3.2)")
            return canonical
        return self.atom("a flag")

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")"."""
        self.open_paren()
        flags: list[str] = []
        if self.peek() != RPAREN:
            flags.append(self.flag())
            while self.maybe_sp():
                flags.append(self.flag())
        self.close_paren()
        return tuple(dict.fromkeys(flags))

    def atom_list(self, what: str) -> list[str]:
        """ "(" atom *(SP atom) ")" (upper-cased), at least one."""
        self.open_paren()
        items = [self.keyword(what)]
        while self.maybe_sp():
            items.append(self.keyword(what))
        self.close_paren()
        return items


def _seq_number(raw: bytes) -> int | None:
    if raw == b"*":
        return STAR
    if not raw.isdigit() or raw[0] == 0x30 or len(raw) > 10:
        return None  # nz-number: no zero, no leading zero
    value = int(raw)
    return value if value <= MAX_NUMBER else None


def parse_sequence_set(raw: bytes) -> SequenceSet | None:
    """Parse "1,3:5,7:*,$"; None when malformed (RFC 9051 §9 sequence-set)."""
    pairs: list[tuple[int, int]] = []
    saved = False
    for item in raw.split(b","):
        if item == b"$":
            saved = True
            continue
        first, colon, second = item.partition(b":")
        a = _seq_number(first)
        b = _seq_number(second) if colon else a
        if a is None or b is None:
            return None
        pairs.append((a, b))
    return SequenceSet.normalized(pairs, saved)
