"""IMAP FETCH and STORE arguments (sans-IO): fetch items, sections, partials, modifiers.

Implements the fetch grammar of RFC 9051 §6.4.5 and §9 (fetch-att, the macros ALL / FAST /
FULL, BODY[section]<partial>, BODY.PEEK, RFC822.*), BINARY / BINARY.PEEK / BINARY.SIZE
(RFC 3516 §4.1), MODSEQ and the CHANGEDSINCE / VANISHED fetch modifiers (RFC 7162 §3.1.4,
§3.2.6), SAVEDATE (RFC 8514 §3), EMAILID / THREADID (RFC 8474 §5); and the STORE arguments of
RFC 9051 §6.4.6 with the UNCHANGEDSINCE store modifier (RFC 7162 §3.1.3).
"""

from __future__ import annotations

import re
from typing import Final

from postkeep.imap.wire.commands import FetchAtt, Section, StoreMode
from postkeep.imap.wire.lexer import LPAREN, MAX_NUMBER64, RPAREN, Lexer

SIMPLE_ATTS: Final = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",  # RFC 7162 §3.1.4.1
        "SAVEDATE",  # RFC 8514 §3
        "EMAILID",  # RFC 8474 §5.1
        "THREADID",  # RFC 8474 §5.2
    }
)
# RFC 9051 §6.4.5 macros.
MACROS: Final = {
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext
_DIGITS: Final = frozenset(b"0123456789")
_MSGTEXT: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"})


def fetch_items(lx: Lexer) -> tuple[tuple[FetchAtt, ...], str | None]:
    """("ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")").

    Returns the attributes (macros expanded, duplicates removed) and the macro's name.
    """
    for macro, names in MACROS.items():
        if lx.skip_keyword(macro):
            return tuple(FetchAtt(n) for n in names), macro
    if lx.peek() == LPAREN:
        lx.open_paren()
        atts = [fetch_att(lx)]
        while lx.maybe_sp():
            atts.append(fetch_att(lx))
        lx.close_paren()
        return tuple(dict.fromkeys(atts)), None
    return (fetch_att(lx),), None


def fetch_att(lx: Lexer) -> FetchAtt:
    """One fetch-att (RFC 9051 §9, RFC 3516 §4.1, RFC 7162, RFC 8474, RFC 8514)."""
    m = _NAME.match(lx.data, lx.pos)
    if m is None:
        raise lx.error("a fetch attribute")
    name = m.group().decode("ascii").upper()
    lx.pos = m.end()
    if name in SIMPLE_ATTS:
        return FetchAtt(name)
    if name in ("BODY", "BODY.PEEK"):
        if lx.peek() != 0x5B:  # "["
            if name == "BODY":
                return FetchAtt("BODY")
            raise lx.error('"[" after BODY.PEEK')
        section = _section(lx)
        return FetchAtt("BODY", section, _partial(lx), peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        section = _section_binary(lx)
        if name == "BINARY.SIZE":
            return FetchAtt(name, section)
        return FetchAtt("BINARY", section, _partial(lx), peek=name == "BINARY.PEEK")
    raise lx.fail(f"Unknown FETCH attribute {name[:40]}")


def _part(lx: Lexer) -> list[int]:
    """section-part = nz-number *("." nz-number)."""
    part = [lx.number(nonzero=True, what="a part number")]
    data = lx.data
    while lx.peek() == 0x2E and lx.pos + 1 < len(data) and data[lx.pos + 1] in _DIGITS:
        lx.pos += 1
        part.append(lx.number(nonzero=True, what="a part number"))
    return part


def _section(lx: Lexer) -> Section:
    """section = "[" [section-spec] "]" (RFC 9051 §9)."""
    lx.expect(b"[", '"["')
    if lx.peek() == 0x5D:
        lx.pos += 1
        return Section()
    part: list[int] = []
    if lx.peek() in _DIGITS:
        part = _part(lx)
        if lx.peek() == 0x5D:
            lx.pos += 1
            return Section(tuple(part))
        lx.expect(b".", '"." or "]" after a part number')
    m = _SECTION_TEXT.match(lx.data, lx.pos)
    text = m.group().decode("ascii").upper() if m else ""
    if text not in _MSGTEXT and not (text == "MIME" and part):
        raise lx.error("HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT or MIME")
    assert m is not None
    lx.pos = m.end()
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        lx.sp()
        fields = _header_list(lx)
    lx.expect(b"]", '"]" closing the section')
    return Section(tuple(part), text, fields)


def _header_list(lx: Lexer) -> tuple[str, ...]:
    """header-list = "(" header-fld-name *(SP header-fld-name) ")"."""
    lx.open_paren()
    names: list[str] = []
    while True:
        name = lx.text(lx.astring("a header field name"), "Header field name")
        if not _HEADER_NAME.fullmatch(name):
            raise lx.fail("Invalid header field name in FETCH")
        names.append(name)
        if not lx.maybe_sp():
            break
    lx.close_paren()
    return tuple(names)


def _section_binary(lx: Lexer) -> Section:
    """section-binary = "[" [section-part] "]" (RFC 3516 §4.1)."""
    lx.expect(b"[", '"[" after BINARY')
    part: list[int] = []
    if lx.peek() != 0x5D:
        part = _part(lx)
    lx.expect(b"]", '"]" closing the section')
    return Section(tuple(part))


def _partial(lx: Lexer) -> tuple[int, int] | None:
    """partial = "<" number64 "." nz-number64 ">" (RFC 9051 §9)."""
    if lx.peek() != 0x3C:
        return None
    lx.pos += 1
    offset = lx.number64()
    lx.expect(b".", '"." in a partial range')
    length = lx.number64(nonzero=True)
    lx.expect(b">", '">" closing a partial range')
    return offset, length


def fetch_modifiers(lx: Lexer) -> tuple[int | None, bool]:
    """ "(" fetch-modifier *(SP fetch-modifier) ")" — CHANGEDSINCE, VANISHED (RFC 7162)."""
    changed_since: int | None = None
    vanished = False
    lx.open_paren()
    while True:
        name = lx.keyword("a FETCH modifier")
        if name == "CHANGEDSINCE" and changed_since is None:
            lx.sp()
            changed_since = lx.number(MAX_NUMBER64)
        elif name == "VANISHED" and not vanished:
            vanished = True
        else:
            raise lx.fail(f"Unknown or repeated FETCH modifier {name[:40]}")
        if not lx.maybe_sp():
            break
    lx.close_paren()
    return changed_since, vanished


def store_modifiers(lx: Lexer) -> int:
    """ "(" UNCHANGEDSINCE mod-sequence-valzer ")" (RFC 7162 §3.1.3); returns the value."""
    lx.open_paren()
    name = lx.keyword("a STORE modifier")
    if name != "UNCHANGEDSINCE":
        raise lx.fail(f"Unknown STORE modifier {name[:40]}")
    lx.sp()
    value = lx.number(MAX_NUMBER64)
    if lx.peek() != RPAREN:
        raise lx.fail("Unknown or repeated STORE modifier")
    lx.close_paren()
    return value


def store_action(lx: Lexer) -> tuple[StoreMode, bool, tuple[str, ...]]:
    """store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))."""
    item = lx.keyword("FLAGS, +FLAGS or -FLAGS")
    mode = StoreMode.REPLACE
    if item[:1] in ("+", "-"):
        mode = StoreMode(item[0])
        item = item[1:]
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise lx.fail(f"Unknown STORE data item {item[:40]}")
    lx.sp()
    if lx.peek() == LPAREN:
        flags = lx.flag_list()
    else:
        found = [lx.flag()]
        while lx.maybe_sp():
            found.append(lx.flag())
        flags = tuple(dict.fromkeys(found))
    return mode, item == "FLAGS.SILENT", flags
