"""IMAP response rendering (sans-IO): strings, literals, sequence sets, mailbox names.

Implements the response grammar of RFC 9051 §4 and §9 for the values the server sends: quoted
strings (only 7-bit text without CR, LF, NUL; with \\ and " escaped), literals otherwise
(``{n}`` or literal8 ``~{n}`` for BINARY data with NUL, RFC 3516 §4.3), NIL, sequence sets in
compact "1:3,5" form, and mailbox names in UTF-8 (IMAP4rev2, UTF8=ACCEPT) or modified UTF-7
(RFC 3501 §5.1.3). Flag lists are rendered by `postkeep.imap.flags`, which knows the store's
flag bits.
"""

from __future__ import annotations

from collections.abc import Iterable

from postkeep.imap.wire.mailbox import encode_mailbox_utf7

_QUOTE_SAFE = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}


def string(value: str | bytes | None) -> bytes:
    """An IMAP string: NIL, a quoted string when possible, else a literal."""
    if value is None:
        return b"NIL"
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(raw) < 1024 and all(b in _QUOTE_SAFE or b in (0x22, 0x5C) for b in raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(raw)


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """A literal; with `binary`, literal8 when the data holds NUL (RFC 3516 §4.3). A plain
    literal may not hold NUL (RFC 9051 §4.3): it is sent as 0x80, as Dovecot does in headers."""
    if b"\x00" in data:
        if binary:
            return b"~{%d}\r\n" % len(data) + data
        data = data.replace(b"\x00", b"\x80")
    return b"{%d}\r\n" % len(data) + data


def astring(value: str) -> bytes:
    """An atom when the text allows, else a string (for names and keywords in lists)."""
    raw = value.encode("utf-8", "surrogateescape")
    if raw and all(0x21 <= b < 0x7F and b not in b'(){ %*"\\]' for b in raw):
        return raw
    return string(raw)


def number_set(numbers: Iterable[int]) -> str:
    """Ascending numbers as a compact sequence set ("1:3,7,9:10"); "" when empty."""
    return ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in ranges(numbers))


def ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted numbers as inclusive (low, high) runs."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n <= out[-1][1] + 1:
            if n > out[-1][1]:
                out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name as sent: UTF-8 string, or modified UTF-7 for IMAP4rev1 clients."""
    return string(name if utf8 else encode_mailbox_utf7(name))
