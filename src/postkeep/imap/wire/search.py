"""IMAP search programs (sans-IO): SEARCH, SORT and THREAD criteria into `SearchKey` trees.

Implements the search-key grammar of RFC 9051 §6.4.4 and §9 (including CHARSET, nested
parentheses, OR, NOT and sequence sets) with the IMAP4rev1 keys NEW/OLD/RECENT (RFC 3501
§6.4.4), "$" (SEARCHRES, RFC 5182 §2.1), MODSEQ (CONDSTORE, RFC 7162 §3.1.5), OLDER/YOUNGER
(WITHIN, RFC 5032), SAVEDBEFORE/SAVEDON/SAVEDSINCE/SAVEDATESUPPORTED (RFC 8514 §4),
EMAILID/THREADID (RFC 8474 §6); the RETURN options of ESEARCH (RFC 4731 §3.1) and SEARCHRES
(SAVE); the SORT criteria of RFC 5256 §3 (with DISPLAYFROM/DISPLAYTO, RFC 5957) and the THREAD
algorithms ORDEREDSUBJECT and REFERENCES.

The key grammar is parsed with an explicit stack, not recursion, so "NOT NOT NOT ..." or long
OR chains cannot exhaust the Python stack. OR chains and nested AND lists are flattened; the
depth of the resulting tree is bounded by `max_search_depth`, so whoever walks it recursively is
safe too. Parenthesized lists also count against the lexer's `max_depth`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from postkeep.imap.wire.commands import (
    SearchAge,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchKeyword,
    SearchModSeq,
    SearchNot,
    SearchObjectId,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    SortCriterion,
)
from postkeep.imap.wire.lexer import (
    LPAREN,
    MAX_NUMBER64,
    RPAREN,
    SP,
    SYSTEM_FLAGS,
    Lexer,
    ParseFail,
)

# RFC 9051 §6.4.4: US-ASCII and UTF-8 MUST be supported; a few common legacy charsets too.
SEARCH_CHARSETS: Final = (
    "US-ASCII",
    "UTF-8",
    "ISO-8859-1",
    "ISO-8859-2",
    "ISO-8859-15",
    "WINDOWS-1252",
)
_FLAG_KEYS: Final = frozenset(
    {
        "ALL",
        "ANSWERED",
        "DELETED",
        "DRAFT",
        "FLAGGED",
        "NEW",
        "OLD",
        "RECENT",
        "SEEN",
        "UNANSWERED",
        "UNDELETED",
        "UNDRAFT",
        "UNFLAGGED",
        "UNSEEN",
        "SAVEDATESUPPORTED",
    }
)
_TEXT_KEYS: Final = frozenset(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
_DATE_KEYS: Final = frozenset(
    {
        "BEFORE",
        "ON",
        "SINCE",
        "SENTBEFORE",
        "SENTON",
        "SENTSINCE",
        "SAVEDBEFORE",
        "SAVEDON",
        "SAVEDSINCE",
    }
)
_ARG_KEYS: Final = (
    _TEXT_KEYS
    | _DATE_KEYS
    | {
        "HEADER",
        "KEYWORD",
        "UNKEYWORD",
        "LARGER",
        "SMALLER",
        "OLDER",
        "YOUNGER",
        "UID",
        "MODSEQ",
        "EMAILID",
        "THREADID",
    }
)
SEARCH_RETURN_OPTIONS: Final = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
SORT_KEYS: Final = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
THREAD_ALGORITHMS: Final = frozenset({"ORDEREDSUBJECT", "REFERENCES"})
_OBJECTID = re.compile(rb"[A-Za-z0-9_-]{1,255}(?![A-Za-z0-9_-])")
_ENTRY_TYPES: Final = frozenset({"PRIV", "SHARED", "ALL"})
_SEQ_START: Final = frozenset(b"0123456789*$")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext

Decoder = Callable[[bytes], str]


def charset_decoder(lx: Lexer, charset: str | None) -> Decoder:
    """A strict decoder for search strings in `charset` (default UTF-8); NO [BADCHARSET] for
    an unsupported one (RFC 9051 §6.4.4)."""
    name = (charset or "UTF-8").upper()
    if name not in SEARCH_CHARSETS:
        raise ParseFail(f"NO [BADCHARSET ({' '.join(SEARCH_CHARSETS)})] Unsupported charset")
    codec = codecs.lookup("ascii" if name == "US-ASCII" else name)

    def decode(raw: bytes) -> str:
        try:
            return codec.decode(raw)[0]
        except UnicodeDecodeError:
            raise lx.fail(f"Search string is not valid {name}") from None

    return decode


def read_charset(lx: Lexer) -> str:
    """charset = atom / quoted (RFC 9051 §9), upper-cased."""
    if lx.peek() == 0x22:
        return lx.text(lx.quoted(), "Charset").upper()
    return lx.keyword("a charset")


def return_options(lx: Lexer, allowed: frozenset[str]) -> tuple[str, ...]:
    """RETURN (opt ...) after "RETURN" SP (RFC 4731 §3.1); "RETURN ()" means ALL."""
    lx.open_paren()
    options: list[str] = []
    if lx.peek() != RPAREN:
        options.append(lx.keyword("a return option"))
        while lx.maybe_sp():
            options.append(lx.keyword("a return option"))
    lx.close_paren()
    for option in options:
        if option not in allowed:
            raise lx.fail(f"Unknown RETURN option {option}")
    return tuple(dict.fromkeys(options)) or ("ALL",)


# -- the key grammar ------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    """A NOT / OR / AND under construction; `depth` is its depth once flattened."""

    kind: str  # "NOT", "OR", "AND"
    children: list[_Item]
    depth: int


_Item = SearchKey | _Node


def _depth(item: _Item) -> int:
    return item.depth if isinstance(item, _Node) else 1


@dataclass(slots=True)
class _Frame:
    kind: str  # "TOP", "GROUP", "NOT", "OR"
    items: list[_Item] = field(default_factory=list)


def _combine(kind: str, items: list[_Item]) -> _Item:
    """A NOT / OR / AND node over `items` (a one-item AND is the item itself).

    Same-kind children will be flattened into it by `_build`, so they count one level less.
    """
    if kind == "NOT":
        return _Node("NOT", items, _depth(items[0]) + 1)
    if len(items) == 1:
        return items[0]
    kind = "OR" if kind == "OR" else "AND"
    depth = 0
    for item in items:
        d = _depth(item)
        depth = max(depth, d - 1 if isinstance(item, _Node) and item.kind == kind else d)
    return _Node(kind, items, depth + 1)


def _build(item: _Item) -> SearchKey:
    """Turn nodes into `SearchKey`s, flattening OR-in-OR and AND-in-AND in linear time.

    Recursion happens only where the kind changes, so it is bounded by the flattened depth.
    """
    if not isinstance(item, _Node):
        return item
    if item.kind == "NOT":
        return SearchNot(_build(item.children[0]))
    keys: list[SearchKey] = []
    pending = [iter(item.children)]
    while pending:
        for child in pending[-1]:
            if isinstance(child, _Node) and child.kind == item.kind:
                pending.append(iter(child.children))
                break
            keys.append(_build(child))
        else:
            pending.pop()
    return SearchOr(tuple(keys)) if item.kind == "OR" else SearchAnd(tuple(keys))


def search_program(
    lx: Lexer, decode: Decoder, max_search_depth: int, max_keys: int | None = None
) -> SearchKey:
    """search-key *(SP search-key), up to the end of the command or whatever cannot follow.

    An explicit stack replaces recursion; `max_search_depth` bounds the flattened tree. Past
    `max_keys` keys (NOT, OR and parentheses aside) parsing stops with NO [LIMIT] (RFC 9051
    §7.1): what the rest would cost to parse is not spent.
    """
    stack = [_Frame("TOP")]
    keys = 0
    while True:
        if lx.peek() == LPAREN:
            lx.open_paren()
            stack.append(_Frame("GROUP"))
            continue
        word = lx.peek_keyword()
        if word in ("NOT", "OR"):
            lx.skip_keyword(word)
            lx.sp()
            stack.append(_Frame(word))
            continue
        keys += 1
        if max_keys is not None and keys > max_keys:
            raise ParseFail(f"NO [LIMIT] Too many search keys (at most {max_keys})")
        value: _Item = _leaf(lx, decode)
        while True:  # reduce
            frame = stack[-1]
            frame.items.append(value)
            if frame.kind == "NOT" or (frame.kind == "OR" and len(frame.items) == 2):
                stack.pop()
                value = _combine(frame.kind, frame.items)
            elif frame.kind == "OR":
                lx.sp()
                break
            elif frame.kind == "GROUP":
                if lx.peek() == RPAREN:
                    lx.close_paren()
                    stack.pop()
                    value = _combine("AND", frame.items)
                else:
                    if lx.peek() != SP:
                        raise lx.error('a space or ")" in a search key list')
                    lx.pos += 1
                    break
            elif lx.peek() == SP:  # TOP: more keys follow a space
                lx.pos += 1
                break
            else:  # TOP: anything else ends the program
                value = _combine("AND", frame.items)
                if _depth(value) > max_search_depth:
                    raise lx.fail(f"Search program nested deeper than {max_search_depth}")
                return _build(value)
            if _depth(value) > max_search_depth:
                raise lx.fail(f"Search program nested deeper than {max_search_depth}")


def _leaf(lx: Lexer, decode: Decoder) -> SearchKey:
    """One search key that is not NOT, OR or a parenthesized list."""
    c = lx.peek()
    if c in _SEQ_START:
        return SearchSet(lx.sequence_set())
    if c < 0:
        raise lx.error("a search key")
    key = lx.keyword("a search key")
    if key in _FLAG_KEYS:
        return SearchFlag(key)
    if key not in _ARG_KEYS:
        raise lx.fail(f"Unknown search key {key[:40]}")
    lx.sp()
    if key in _TEXT_KEYS:
        return SearchText(key, decode(lx.astring()))
    if key in _DATE_KEYS:
        return SearchDate(key, lx.date())
    if key == "HEADER":
        name = lx.text(lx.astring("a header field name"), "Header field name")
        if not _HEADER_NAME.fullmatch(name):
            raise lx.fail("Invalid header field name in HEADER search key")
        lx.sp()
        return SearchHeader(name, decode(lx.astring()))
    if key in ("KEYWORD", "UNKEYWORD"):
        return SearchKeyword(lx.atom("a keyword"), key == "KEYWORD")
    if key in ("LARGER", "SMALLER"):
        return SearchSize(key, lx.number64())
    if key in ("OLDER", "YOUNGER"):
        return SearchAge(key, lx.number(nonzero=True))
    if key == "UID":
        return SearchSet(lx.sequence_set(), uid=True)
    if key == "MODSEQ":
        return _modseq(lx)
    if key in ("EMAILID", "THREADID"):
        m = _OBJECTID.match(lx.data, lx.pos)
        if m is None:
            raise lx.error("an object id (RFC 8474)")
        lx.pos = m.end()
        return SearchObjectId(key, m.group().decode("ascii"))
    raise AssertionError(key)  # pragma: no cover - _ARG_KEYS lists every key handled above


def _modseq(lx: Lexer) -> SearchModSeq:
    """MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 §3.1.5)."""
    entry = entry_type = None
    if lx.peek() == 0x22:
        raw = lx.text(lx.quoted(), "MODSEQ entry name")
        if not raw.lower().startswith("/flags/") or len(raw) == 7:
            raise lx.fail("MODSEQ entry name must be /flags/<flag> (RFC 7162 3.1.5)")
        flag = raw[7:]
        entry = "/flags/" + SYSTEM_FLAGS.get(flag.upper(), flag)
        lx.sp()
        entry_type = lx.keyword("priv, shared or all")
        if entry_type not in _ENTRY_TYPES:
            raise lx.fail("MODSEQ entry type must be priv, shared or all")
        lx.sp()
    return SearchModSeq(lx.number(MAX_NUMBER64), entry, entry_type)


def search_criteria(
    lx: Lexer, max_search_depth: int, charset_required: bool, max_keys: int | None = None
) -> tuple[str | None, SearchKey]:
    """[CHARSET SP charset SP] keys (SEARCH), or charset SP keys (SORT, THREAD)."""
    charset: str | None = None
    if charset_required:
        charset = read_charset(lx)
        lx.sp()
    elif lx.peek_keyword() == "CHARSET":
        lx.skip_keyword("CHARSET")
        lx.sp()
        charset = read_charset(lx)
        lx.sp()
    decode = charset_decoder(lx, charset)
    return charset, search_program(lx, decode, max_search_depth, max_keys)


def sort_criteria(lx: Lexer) -> tuple[SortCriterion, ...]:
    """sort-criteria = "(" sort-criterion *(SP sort-criterion) ")" (RFC 5256 §4)."""
    lx.open_paren()
    criteria: list[SortCriterion] = []
    while True:
        reverse = False
        if lx.skip_keyword("REVERSE"):
            reverse = True
            lx.sp()
        key = lx.keyword("a sort key")
        if key not in SORT_KEYS:
            raise lx.fail(f"Unknown sort key {key[:40]}")
        criteria.append(SortCriterion(key, reverse))
        if not lx.maybe_sp():
            break
    lx.close_paren()
    return tuple(criteria)


def thread_algorithm(lx: Lexer) -> str:
    """thread-alg = "ORDEREDSUBJECT" / "REFERENCES" (RFC 5256 §4)."""
    algorithm = lx.keyword("a thread algorithm")
    if algorithm not in THREAD_ALGORITHMS:
        raise lx.fail(f"Unsupported thread algorithm {algorithm[:40]}")
    return algorithm
