"""Hypothesis fuzzing of the IMAP reader and parser: only events and values, bounded memory."""

from __future__ import annotations

import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.imap.wire.commands import (
    STAR,
    Authenticate,
    Command,
    Fetch,
    Idle,
    ParseError,
    Search,
    SearchAnd,
    SearchFlag,
    SearchKey,
    SearchNot,
    SearchOr,
    SequenceSet,
)
from postkeep.imap.wire.mailbox import MailboxNameError, decode_utf7, encode_mailbox_utf7
from postkeep.imap.wire.parser import parse
from postkeep.imap.wire.reader import (
    AuthLine,
    Bad,
    CommandReceived,
    IdleDone,
    ImapReader,
    NeedContinuation,
    ReaderEvent,
    ReaderLimits,
    TooBig,
)

COMMAND_TYPES = (*typing.get_args(Command), ParseError)
EVENT_TYPES = (CommandReceived, NeedContinuation, TooBig, Bad, AuthLine, IdleDone)

TOKENS = [
    b"a1 ", b"A2 ", b"* ", b"+ ", b"UID ", b"FETCH ", b"SEARCH ", b"STORE ", b"APPEND ",
    b"LOGIN ", b"AUTHENTICATE PLAIN ", b"SELECT ", b"LIST ", b"STATUS ", b"SORT ", b"THREAD ",
    b"ENABLE ", b"ID ", b"IDLE", b"DONE", b"COPY ", b"MOVE ", b"CREATE ", b"EXPUNGE", b"NOOP",
    b"(", b")", b"[", b"]", b"<0.5>", b"{3}\r\nabc", b"{2+}\r\nxy", b"~{2}\r\n\x00\x01",
    b"{4", b"}", b"{99999999999+}\r\n", b"\"", b"\\", b"\\Seen", b"$", b"1:*", b"*", b"0",
    b"4294967296", b"NOT ", b"OR ", b"ALL", b"CHARSET UTF-8 ", b"RETURN (MIN) ", b"BODY[",
    b"BODY.PEEK[HEADER.FIELDS (", b"BINARY[1.2]", b"HEADER.FIELDS", b"TEXT", b"MIME",
    b"(CHANGEDSINCE 1 VANISHED)", b"(UNCHANGEDSINCE 0)", b"+FLAGS.SILENT ", b"INBOX",
    b"&U,BTFw-", b"&-", b"&", "台北".encode(), b"\xff\xfe", b'"17-Jul-1996 02:44:25 -0700"',
    b"1-Feb-1994", b"MODSEQ ", b"(QRESYNC (1 2 1:5 (1 2)))", b"RETURN (STATUS (MESSAGES))",
    b" ", b" ", b" ", b"\r\n", b"\r\n", b"\n", b"\r", b"\x00",
]

token_soup = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.binary(max_size=24)), max_size=50
).map(b"".join)

SMALL = ReaderLimits(
    max_line=96, max_literal=48, max_literals=3, max_command=256, max_auth_line=96
)


def drive(
    stream: bytes, limits: ReaderLimits, splits: list[int]
) -> tuple[list[ReaderEvent], int]:
    """Feed `stream` in the given chunk sizes, acting like the driver; check the memory bound
    after every drain. Returns the events and the largest buffered size seen."""
    reader = ImapReader(limits)
    events: list[ReaderEvent] = []
    bound = max(limits.max_command, limits.max_auth_line, limits.max_line) + 64
    peak = 0
    pos = 0
    i = 0
    while pos < len(stream):
        size = splits[i % len(splits)] if splits else len(stream)
        i += 1
        reader.feed(stream[pos : pos + size])
        pos += size
        while (event := reader.next()) is not None:
            assert isinstance(event, EVENT_TYPES)
            events.append(event)
            if isinstance(event, CommandReceived):
                assert len(event.data) <= limits.max_command
                result = parse(event.data, max_depth=limits.max_depth)
                assert isinstance(result, COMMAND_TYPES)
                if isinstance(result, Authenticate):
                    reader.expect_auth_response(result.tag)
                elif isinstance(result, Idle):
                    reader.expect_done()
            elif isinstance(event, TooBig | Bad):
                assert event.response().endswith(b"\r\n")
                assert event.response().count(b"\n") == 1
        peak = max(peak, reader.buffered)
        assert reader.buffered <= bound
    return events, peak


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_parse_random_bytes_returns_a_value(data: bytes) -> None:
    result = parse(data)
    assert isinstance(result, COMMAND_TYPES)
    if isinstance(result, ParseError):
        assert result.text.startswith(("BAD ", "NO "))
        assert b"\n" not in result.response()[:-1] and b"\r" not in result.response()[:-2]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_soup, st.booleans())
def test_parse_token_soup_returns_a_value(data: bytes, utf8: bool) -> None:
    result = parse(data, utf8=utf8, max_depth=8, max_search_depth=8)
    assert isinstance(result, COMMAND_TYPES)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_soup)
def test_parse_valid_prefixes_never_raise(tail: bytes) -> None:
    for head in (b"a UID SEARCH ", b"a FETCH 1:* ", b"a APPEND INBOX ", b"a LIST ", b"a STORE 1 "):
        assert isinstance(parse(head + tail), COMMAND_TYPES)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_soup, st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_reader_survives_token_soup_in_random_splits(stream: bytes, splits: list[int]) -> None:
    events, _ = drive(stream, SMALL, splits)
    # the way the input is split never changes what the reader sees
    assert drive(stream, SMALL, [])[0] == events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(1, 300), min_size=1, max_size=5))
def test_reader_survives_random_bytes(stream: bytes, splits: list[int]) -> None:
    events, _ = drive(stream, SMALL, splits)
    assert drive(stream, SMALL, [])[0] == events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=64), st.integers(1, 4096))
def test_memory_bounded_before_authentication(chunk: bytes, split: int) -> None:
    """Whatever an unauthenticated client sends, the reader holds only a few KB."""
    stream = (b"a LOGIN {1000+}\r\n" + chunk * 300 + b"{5000}\r\n") * 3
    _, peak = drive(stream, ReaderLimits(), [split])
    assert peak <= 12 * 1024 + 64


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30))
def test_modified_utf7_round_trip(name: str) -> None:
    encoded = encode_mailbox_utf7(name)
    assert encoded.isascii()
    assert decode_utf7(encoded.encode()) == name


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_modified_utf7_decoding_is_canonical(raw: bytes) -> None:
    try:
        name = decode_utf7(raw)
    except MailboxNameError:
        return
    assert encode_mailbox_utf7(name).encode() == raw


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 40) | st.just(STAR), st.integers(1, 40) | st.just(STAR)),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 50),
)
def test_sequence_set_normalization_keeps_the_numbers(
    pairs: list[tuple[int, int]], largest: int
) -> None:
    def numbers(ranges: typing.Iterable[tuple[int, int]]) -> set[int]:
        out: set[int] = set()
        for a, b in ranges:
            if largest == 0 and STAR in (a, b):
                continue
            a = largest if a == STAR else a
            b = largest if b == STAR else b
            out |= set(range(min(a, b), max(a, b) + 1))
        return {n for n in out if 1 <= n <= largest}

    normalized = SequenceSet.normalized(pairs)
    assert numbers(normalized.ranges) == numbers(pairs)
    assert set(normalized.iter_numbers(largest)) == numbers(pairs)
    text = str(normalized).encode()
    reparsed = parse(b"a FETCH " + text + b" UID")  # renders as valid, equivalent syntax
    assert isinstance(reparsed, Fetch) and reparsed.sequence_set == normalized


# -- search programs: generated with their meaning, parsed, evaluated ------------------------

FLAG_LEAVES = [b"ALL", b"SEEN", b"UNSEEN", b"FLAGGED", b"UNFLAGGED", b"DELETED", b"UNDELETED"]
Program = tuple[bytes, typing.Callable[[frozenset[str]], bool]]


def _leaf_meaning(word: bytes) -> typing.Callable[[frozenset[str]], bool]:
    name = word.decode()
    if name == "ALL":
        return lambda flags: True
    if name.startswith("UN"):
        return lambda flags: name[2:] not in flags
    return lambda flags: name in flags


def _not(p: Program) -> Program:
    return b"NOT " + p[0], lambda f: not p[1](f)


def _or(pair: tuple[Program, Program]) -> Program:
    a, b = pair
    return b"OR " + a[0] + b" " + b[0], lambda f: a[1](f) or b[1](f)


def _group(items: list[Program]) -> Program:
    return b"(" + b" ".join(p[0] for p in items) + b")", lambda f: all(p[1](f) for p in items)


programs: st.SearchStrategy[Program] = st.recursive(
    st.sampled_from(FLAG_LEAVES).map(lambda w: (w, _leaf_meaning(w))),
    lambda inner: st.one_of(
        inner.map(_not),
        st.tuples(inner, inner).map(_or),
        st.lists(inner, min_size=1, max_size=4).map(_group),
    ),
    max_leaves=25,
)


def _evaluate(key: SearchKey, flags: frozenset[str]) -> bool:
    match key:
        case SearchFlag(key="ALL"):
            return True
        case SearchFlag(key=name) if name.startswith("UN"):
            return name[2:] not in flags
        case SearchFlag(key=name):
            return name in flags
        case SearchNot(key=inner):
            return not _evaluate(inner, flags)
        case SearchOr(keys=keys):
            return any(_evaluate(k, flags) for k in keys)
        case SearchAnd(keys=keys):
            return all(_evaluate(k, flags) for k in keys)
    raise AssertionError(key)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(programs, min_size=1, max_size=3))
def test_search_programs_keep_their_meaning(items: list[Program]) -> None:
    text = b" ".join(p[0] for p in items)
    result = parse(b"a SEARCH " + text, max_depth=1000, max_search_depth=1000)
    assert isinstance(result, Search), (text, result)
    for bits in range(8):
        flags = frozenset(
            name for i, name in enumerate(("SEEN", "FLAGGED", "DELETED")) if bits >> i & 1
        )
        assert _evaluate(result.key, flags) == all(p[1](flags) for p in items)
