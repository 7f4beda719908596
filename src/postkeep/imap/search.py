"""Evaluating IMAP search programs against messages (sans-IO).

Implements the search keys of RFC 9051 §6.4.4 and RFC 3501 §6.4.4 (NEW, OLD, RECENT), MODSEQ
(RFC 7162 §3.1.5), OLDER/YOUNGER (RFC 5032 §3), SAVEDBEFORE/SAVEDON/SAVEDSINCE and
SAVEDATESUPPORTED (RFC 8514 §4), EMAILID/THREADID (RFC 8474 §6) and the saved result "$"
(RFC 5182 §2.1) over the `SearchKey` trees built by `postkeep.imap.wire.search`.

A key is compiled once into a predicate (`predicate()`) with three-valued logic: evaluated
without the message content it answers True, False or None ("needs the content"), so a message
is read and parsed only when the keys that need no content cannot decide alone. Within AND and
OR the cheap keys run first, then header keys, then body keys. SEARCH evaluates in two passes
with the content read in batches in between (`postkeep.imap.searching`); `search()` does the
same for candidates whose contents can be loaded one at a time, and is what the evaluator's own
tests drive. `key_count` and `text_needles` tell what a program costs and looks for.

The content keys read the message through `MessageContent` (`postkeep.imap.content`): header
fields RFC 2047 decoded, the address fields of FROM, TO, CC and BCC normalised as RFC 5322 §3.4
address lists, the text/* parts for BODY and TEXT, the Date: field (RFC 5322 §3.6.1) for
SENTBEFORE, SENTON and SENTSINCE.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from postkeep.imap.content import MessageContent
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
)
from postkeep.store.api import Flag


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the server knows about a message without reading it.

    `keywords` are as stored (case-preserving); they are compared case-insensitively.
    `savedate` is None when unknown (RFC 8514 §4: the internal date is used instead).
    """

    seq: int
    uid: int
    flags: Flag
    keywords: frozenset[str]
    size: int
    internaldate: float
    savedate: float | None
    modseq: int
    recent: bool = False
    email_id: str = ""
    thread_id: str = ""


@dataclass(frozen=True, slots=True)
class SearchContext:
    """The mailbox and session state a search depends on.

    `saved` holds the UIDs of the result saved by SEARCH RETURN (SAVE), named "$" (RFC 5182
    §2.1) in UID and non-UID sets alike; `now` is the server time for OLDER/YOUNGER
    (RFC 5032); `tz` the server zone giving the date of an internal date (BEFORE, ON, SINCE).
    """

    largest_seq: int
    largest_uid: int
    saved: frozenset[int] = frozenset()
    now: float = 0.0
    tz: datetime.tzinfo = datetime.UTC


# -- evaluation -----------------------------------------------------------------------------

# A compiled key: True or False, or None when the answer needs the content and it is None.
Predicate = Callable[[Candidate, MessageContent | None], bool | None]

_FLAG_TESTS: Final[dict[str, Callable[[Candidate], bool]]] = {
    "ALL": lambda m: True,
    "SAVEDATESUPPORTED": lambda m: True,  # RFC 8514 §4: every mailbox supports SAVEDATE
    "ANSWERED": lambda m: Flag.ANSWERED in m.flags,
    "DELETED": lambda m: Flag.DELETED in m.flags,
    "DRAFT": lambda m: Flag.DRAFT in m.flags,
    "FLAGGED": lambda m: Flag.FLAGGED in m.flags,
    "SEEN": lambda m: Flag.SEEN in m.flags,
    "UNANSWERED": lambda m: Flag.ANSWERED not in m.flags,
    "UNDELETED": lambda m: Flag.DELETED not in m.flags,
    "UNDRAFT": lambda m: Flag.DRAFT not in m.flags,
    "UNFLAGGED": lambda m: Flag.FLAGGED not in m.flags,
    "UNSEEN": lambda m: Flag.SEEN not in m.flags,
    "RECENT": lambda m: m.recent,  # RFC 3501 §6.4.4
    "NEW": lambda m: m.recent and Flag.SEEN not in m.flags,
    "OLD": lambda m: not m.recent,
}
_HEADER_KEYS: Final = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
_ADDRESS_KEYS: Final = frozenset({"FROM", "TO", "CC", "BCC"})
_DATE_TESTS: Final[dict[str, Callable[[datetime.date, datetime.date], bool]]] = {
    "BEFORE": lambda have, want: have < want,
    "ON": lambda have, want: have == want,
    "SINCE": lambda have, want: have >= want,
}


def _cost(key: SearchKey) -> int:
    """0: decided without the content; 1: needs the header; 2: needs the body."""
    if isinstance(key, SearchText):
        return 2 if key.key in ("BODY", "TEXT") else 1
    if isinstance(key, SearchHeader):
        return 1
    if isinstance(key, SearchDate):
        return 1 if key.key.startswith("SENT") else 0
    if isinstance(key, SearchNot):
        return _cost(key.key)
    if isinstance(key, SearchAnd | SearchOr):
        return max(_cost(k) for k in key.keys)
    return 0


def needs_content(key: SearchKey) -> bool:
    """Whether evaluating `key` may need the message header or body."""
    return _cost(key) > 0


def needs_body(key: SearchKey) -> bool:
    """Whether evaluating `key` may need the message body (BODY, TEXT), not just its header."""
    return _cost(key) > 1


def _leaves(key: SearchKey) -> list[SearchKey]:
    """The keys of a program that are not NOT, OR or AND (the tree's depth is bounded by the
    parser's `max_search_depth`)."""
    if isinstance(key, SearchNot):
        return _leaves(key.key)
    if isinstance(key, SearchAnd | SearchOr):
        return [leaf for k in key.keys for leaf in _leaves(k)]
    return [key]


def key_count(key: SearchKey) -> int:
    """How many search keys a program holds, NOT, OR and parentheses aside: what evaluating it
    against one message costs at most (the `imap.max_search_keys` and `max_search_work`
    bounds)."""
    return len(_leaves(key))


def text_needles(key: SearchKey) -> frozenset[str]:
    """The casefolded strings of a program's BODY and TEXT keys: what a scan of a message's
    text (`postkeep.imap.textscan`) looks for."""
    return frozenset(
        leaf.value.casefold()
        for leaf in _leaves(key)
        if isinstance(leaf, SearchText) and leaf.key in ("BODY", "TEXT")
    )


def _day(timestamp: float, tz: datetime.tzinfo) -> datetime.date:
    return datetime.datetime.fromtimestamp(timestamp, tz).date()


def _in_ranges(ranges: tuple[tuple[int, int], ...], number: int) -> bool:
    i = bisect.bisect_right(ranges, (number, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= number <= ranges[i][1]


def _compile_set(key: SearchSet, ctx: SearchContext) -> Predicate:
    """Message numbers or UIDs, "*" resolved; "$" always names UIDs (RFC 5182 §2.1)."""
    ranges = key.set.resolve(ctx.largest_uid if key.uid else ctx.largest_seq)
    saved = ctx.saved if key.set.saved else frozenset()
    if key.uid:
        return lambda m, c: _in_ranges(ranges, m.uid) or m.uid in saved
    return lambda m, c: _in_ranges(ranges, m.seq) or m.uid in saved


def _compile_date(key: SearchDate, ctx: SearchContext) -> Predicate:
    test = _DATE_TESTS[key.key.removeprefix("SENT").removeprefix("SAVED")]
    want = key.date
    if key.key.startswith("SENT"):

        def sent(m: Candidate, c: MessageContent | None) -> bool | None:
            if c is None:
                return None
            have = c.sent_date()
            return have is not None and test(have, want)

        return sent
    tz = ctx.tz
    if key.key.startswith("SAVED"):  # RFC 8514 §4: no save date, the internal date counts
        return lambda m, c: test(
            _day(m.internaldate if m.savedate is None else m.savedate, tz), want
        )
    return lambda m, c: test(_day(m.internaldate, tz), want)


def _compile_text(key: SearchText | SearchHeader) -> Predicate:
    needle = key.value.casefold()
    if isinstance(key, SearchHeader):
        field, which = key.field, "HEADER"
    else:
        field, which = _HEADER_KEYS.get(key.key, ""), key.key

    def text(m: Candidate, c: MessageContent | None) -> bool | None:
        if c is None:
            return None
        if which == "BODY":
            return c.body_contains(needle)
        if which == "TEXT":
            return c.text_contains(needle)
        if which in _ADDRESS_KEYS:
            return c.address_contains(field, needle)
        return c.header_contains(field, needle)

    return text


def _compile_not(inner: Predicate) -> Predicate:
    def negation(m: Candidate, c: MessageContent | None) -> bool | None:
        result = inner(m, c)
        return None if result is None else not result

    return negation


def _compile_group(preds: list[Predicate], any_of: bool) -> Predicate:
    """AND (`any_of` False) or OR over `preds`, short-circuiting, Kleene logic for None."""
    decisive = any_of  # the value that decides the whole group

    def group(m: Candidate, c: MessageContent | None) -> bool | None:
        unknown = False
        for pred in preds:
            result = pred(m, c)
            if result is None:
                unknown = True
            elif result is decisive:
                return decisive
        return None if unknown else not decisive

    return group


def _compile(key: SearchKey, ctx: SearchContext) -> Predicate:
    if isinstance(key, SearchFlag):
        test = _FLAG_TESTS[key.key]
        return lambda m, c: test(m)
    if isinstance(key, SearchText | SearchHeader):
        return _compile_text(key)
    if isinstance(key, SearchKeyword):
        wanted, present = key.keyword.casefold(), key.present
        return lambda m, c: any(k.casefold() == wanted for k in m.keywords) is present
    if isinstance(key, SearchDate):
        return _compile_date(key, ctx)
    if isinstance(key, SearchSize):
        size = key.size
        if key.key == "LARGER":
            return lambda m, c: m.size > size
        return lambda m, c: m.size < size
    if isinstance(key, SearchAge):  # RFC 5032 §3: relative to the internal date
        cutoff = ctx.now - key.seconds
        if key.key == "OLDER":
            return lambda m, c: m.internaldate < cutoff
        return lambda m, c: m.internaldate > cutoff
    if isinstance(key, SearchSet):
        return _compile_set(key, ctx)
    if isinstance(key, SearchModSeq):
        # RFC 7162 §3.1.5: without per-flag mod-sequences, the message's one is used.
        modseq = key.modseq
        return lambda m, c: m.modseq >= modseq
    if isinstance(key, SearchObjectId):
        wanted_id = key.object_id
        if key.key == "EMAILID":
            return lambda m, c: m.email_id == wanted_id
        return lambda m, c: m.thread_id == wanted_id
    if isinstance(key, SearchNot):
        return _compile_not(_compile(key.key, ctx))
    ordered = sorted(key.keys, key=_cost)  # stable: cheap keys first, body keys last
    return _compile_group([_compile(k, ctx) for k in ordered], isinstance(key, SearchOr))


def predicate(key: SearchKey, ctx: SearchContext) -> Predicate:
    """`key` compiled once: called with a candidate and its content (None at first), it
    answers True, False, or None when the content is needed and was not given."""
    return _compile(key, ctx)


def matches(
    key: SearchKey, msg: Candidate, content: MessageContent | None, ctx: SearchContext
) -> bool:
    """Whether `msg` satisfies `key`. `content` may be None when `key` does not need it
    (`needs_content`); ValueError if it does and the answer depends on it."""
    result = _compile(key, ctx)(msg, content)
    if result is None:
        raise ValueError("this search key needs the message content")
    return result


def search(
    key: SearchKey,
    candidates: Sequence[Candidate],
    load: Callable[[Candidate], MessageContent] | None,
    ctx: SearchContext,
) -> list[Candidate]:
    """The candidates satisfying `key`, in the given order.

    `load` is called only for candidates whose fate the content-free keys leave open; it may
    be None when `key` needs no content (ValueError otherwise, when a content is needed).
    """
    pred = _compile(key, ctx)
    found: list[Candidate] = []
    for msg in candidates:
        result = pred(msg, None)
        if result is None:
            if load is None:
                raise ValueError("this search key needs the message content")
            result = pred(msg, load(msg))
        if result:
            found.append(msg)
    return found
