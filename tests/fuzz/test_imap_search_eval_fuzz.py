"""Hypothesis tests of IMAP search evaluation: random search programs over random messages
agree with the boolean structure, load content only when needed, and never raise; message
content parsing never raises on arbitrary or malformed MIME; address lists parse without raising
and well-formed ones parse to what was written."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.imap.content import MessageContent, parse_addresses
from postkeep.imap.search import Candidate, SearchContext, matches, needs_content, search
from postkeep.imap.wire.commands import (
    STAR,
    Search,
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
    SequenceSet,
)
from postkeep.imap.wire.parser import parse
from postkeep.store.api import Flag

T0 = datetime.datetime(2024, 3, 10, tzinfo=datetime.UTC).timestamp()
DAY = 86400

words = st.sampled_from(["", "a", "x", "é", "ß", "SS", "foo bar", "=?", "Re:", "ü"])
dates = st.dates(datetime.date(2024, 3, 5), datetime.date(2024, 3, 15))
seq_sets = st.builds(
    SequenceSet.normalized,
    st.lists(
        st.tuples(st.sampled_from([1, 2, 3, 5, 8, 20, 40, STAR]), st.sampled_from([1, 4, STAR])),
        min_size=1,
        max_size=3,
    ),
    st.booleans(),
)
leaves = st.one_of(
    st.builds(
        SearchFlag,
        st.sampled_from(
            [
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
            ]
        ),
    ),
    st.builds(
        SearchText, st.sampled_from(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"]), words
    ),
    st.builds(SearchHeader, st.sampled_from(["Subject", "X-A", "from", "Date"]), words),
    st.builds(SearchKeyword, st.sampled_from(["$Junk", "work", "WORK"]), st.booleans()),
    st.builds(
        SearchDate,
        st.sampled_from(
            [
                "BEFORE",
                "ON",
                "SINCE",
                "SENTBEFORE",
                "SENTON",
                "SENTSINCE",
                "SAVEDBEFORE",
                "SAVEDON",
                "SAVEDSINCE",
            ]
        ),
        dates,
    ),
    st.builds(SearchSize, st.sampled_from(["LARGER", "SMALLER"]), st.integers(0, 3000)),
    st.builds(SearchAge, st.sampled_from(["OLDER", "YOUNGER"]), st.integers(1, 10 * DAY)),
    st.builds(SearchSet, seq_sets, st.booleans()),
    st.builds(SearchModSeq, st.integers(1, 20)),
    st.builds(SearchObjectId, st.sampled_from(["EMAILID", "THREADID"]), st.sampled_from("MT")),
)
keys: st.SearchStrategy[SearchKey] = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(SearchNot, inner),
        st.builds(SearchOr, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(SearchAnd, st.lists(inner, min_size=1, max_size=3).map(tuple)),
    ),
    max_leaves=10,
)

header_lines = st.sampled_from(
    [
        b"Subject: foo bar\r\n",
        b"Subject: =?utf-8?q?Stra=C3=9Fe?=\r\n",
        b"Subject: =?bogus?b?!!?= \xc3\xa9\r\n",
        b"From: A <a@x>\r\n",
        b"To: b@x,\r\n x@y\r\n",
        b"Cc: =?iso-8859-1?q?=FC?= <c@x>\r\n",
        b"X-A:\r\n",
        b"Date: Sun, 10 Mar 2024 23:00:00 -0500\r\n",
        b"Date: bogus\r\n",
        b"\xff\xfe garbage\r\n",
    ]
)
bodies = st.sampled_from(
    [
        b"plain a x\r\n",
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\n=FC=DF\r\n--B\r\nContent-Type: image/png\r\n\r\nfoo\r\n--B--\r\n",
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"w6kgU1M=\r\n",
        b"Content-Type: multipart/alternative\r\n\r\nbroken",
        b"",
    ]
)
messages = st.builds(
    lambda head, body: b"".join(head) + (b"" if body.startswith(b"Content-") else b"\r\n") + body,
    st.lists(header_lines, max_size=5),
    bodies,
)


@st.composite
def mailboxes(draw: st.DrawFn) -> tuple[list[Candidate], dict[int, bytes]]:
    count = draw(st.integers(0, 6))
    uids = sorted(draw(st.sets(st.integers(1, 50), min_size=count, max_size=count)))
    cands = []
    for seq, uid in enumerate(uids, 1):
        cands.append(
            Candidate(
                seq=seq,
                uid=uid,
                flags=Flag(draw(st.integers(0, 31))),
                keywords=frozenset(draw(st.sets(st.sampled_from(["$junk", "Work", "x"])))),
                size=draw(st.integers(0, 3000)),
                internaldate=T0 + draw(st.integers(-5 * DAY, 5 * DAY)),
                savedate=draw(st.none() | st.integers(0, 10 * DAY).map(lambda s: T0 + s)),
                modseq=draw(st.integers(1, 20)),
                recent=draw(st.booleans()),
                email_id=draw(st.sampled_from(["", "M", "N"])),
                thread_id=draw(st.sampled_from(["", "T"])),
            )
        )
    contents = {c.uid: draw(messages) for c in cands}
    return cands, contents


def context(cands: list[Candidate], saved: frozenset[int], tz_hours: int) -> SearchContext:
    return SearchContext(
        largest_seq=len(cands),
        largest_uid=max((c.uid for c in cands), default=0),
        saved=saved,
        now=T0 + DAY,
        tz=datetime.timezone(datetime.timedelta(hours=tz_hours)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys, mailboxes(), st.sets(st.integers(1, 50)).map(frozenset), st.integers(-12, 12))
def test_search_agrees_with_matches_and_loads_lazily(
    key: SearchKey,
    box: tuple[list[Candidate], dict[int, bytes]],
    saved: frozenset[int],
    tz_hours: int,
) -> None:
    cands, contents = box
    ctx = context(cands, saved, tz_hours)
    parsed = {uid: MessageContent.parse(data) for uid, data in contents.items()}
    loaded: list[int] = []

    def load(c: Candidate) -> MessageContent:
        loaded.append(c.uid)
        return parsed[c.uid]

    found = search(key, cands, load, ctx)
    expected = [c for c in cands if matches(key, c, parsed[c.uid], ctx)]
    assert found == expected
    assert len(loaded) == len(set(loaded))
    if not needs_content(key):
        assert loaded == []
        assert search(key, cands, None, ctx) == expected
    for c in cands:
        content = parsed[c.uid]
        assert matches(SearchNot(key), c, content, ctx) is not matches(key, c, content, ctx)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(keys, min_size=1, max_size=4), mailboxes())
def test_and_or_are_all_and_any(
    parts: list[SearchKey], box: tuple[list[Candidate], dict[int, bytes]]
) -> None:
    cands, contents = box
    ctx = context(cands, frozenset(), 0)
    for c in cands:
        content = MessageContent.parse(contents[c.uid])
        each = [matches(k, c, content, ctx) for k in parts]
        assert matches(SearchAnd(tuple(parts)), c, content, ctx) is all(each)
        if len(parts) >= 2:
            assert matches(SearchOr(tuple(parts)), c, content, ctx) is any(each)


leaf_texts = st.sampled_from(
    [
        "ALL", "SEEN", "UNSEEN", "NEW", "OLD", "RECENT", "DRAFT", "SAVEDATESUPPORTED", "1:*",
        "$", "*", "2,4:5", "UID 2,4:5", "UID $", "BODY foo", "TEXT a", "SUBJECT strasse",
        'HEADER X-A ""', "FROM x", "CC a", "BCC a", "TO x", "ON 10-Mar-2024",
        "SENTSINCE 1-Mar-2024", "SAVEDBEFORE 12-Mar-2024", "LARGER 10", "SMALLER 100",
        "OLDER 5", "YOUNGER 86400", "MODSEQ 5", 'MODSEQ "/flags/\\\\seen" all 3',
        "KEYWORD $junk", "UNKEYWORD work", "EMAILID M", "THREADID T",
    ]
)  # fmt: skip
program_texts = st.recursive(
    leaf_texts,
    lambda inner: st.one_of(
        inner.map(lambda k: "NOT " + k),
        st.tuples(inner, inner).map(lambda ab: f"OR {ab[0]} {ab[1]}"),
        st.lists(inner, min_size=1, max_size=3).map(lambda ks: "(" + " ".join(ks) + ")"),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(program_texts, min_size=1, max_size=3), mailboxes())
def test_parsed_programs_evaluate(
    texts: list[str], box: tuple[list[Candidate], dict[int, bytes]]
) -> None:
    """Every program the parser builds evaluates, and agrees with its negation."""
    command = parse(("t SEARCH " + " ".join(texts)).encode())
    assert isinstance(command, Search), command
    cands, contents = box
    ctx = context(cands, frozenset({cands[0].uid} if cands else ()), 0)
    parsed = {uid: MessageContent.parse(data) for uid, data in contents.items()}
    found = search(command.key, cands, lambda c: parsed[c.uid], ctx)
    rest = search(SearchNot(command.key), cands, lambda c: parsed[c.uid], ctx)
    assert sorted(found + rest, key=lambda c: c.seq) == cands


def check_content(content: MessageContent) -> None:
    content.header_values("Subject")
    content.raw_header_values("From")
    content.header_text()
    content.sent_date()
    content.sent_time()
    assert isinstance(content.body_text(), str)
    assert isinstance(content.text_contains("a"), bool)
    assert isinstance(content.header_contains("to", ""), bool)
    assert isinstance(content.address_contains("from", "a"), bool)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(0, 700))
def test_content_of_arbitrary_bytes(data: bytes, max_bytes: int) -> None:
    check_content(MessageContent.parse(data, max_bytes=max_bytes))


@st.composite
def mime_trees(draw: st.DrawFn, depth: int = 0) -> bytes:
    ctype = draw(
        st.sampled_from(
            ["text/plain", "text/html", "multipart/mixed", "message/rfc822", "image/gif", "text"]
        )
    )
    charset = draw(st.sampled_from(["", "utf-8", "latin1", "bogus", "utf-16", "base64", '"']))
    cte = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "x-uue", "binary"]))
    head = b"Content-Type: " + ctype.encode()
    if charset:
        head += b"; charset=" + charset.encode()
    boundary = draw(st.sampled_from([b"b", b"b", b"", b"--", b'"b c"']))
    if ctype.startswith("multipart"):
        head += b"; boundary=" + boundary
    head += b"\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n"
    if ctype.startswith("multipart") and depth < 4:
        parts = draw(st.lists(mime_trees(depth + 1), max_size=3))
        marker = b"--" + boundary.strip(b'"')
        body = b"".join(marker + b"\r\n" + p + b"\r\n" for p in parts)
        if draw(st.booleans()):
            body += marker + b"--\r\n"
    elif ctype == "message/rfc822" and depth < 4:
        body = b"Subject: inner\r\n" + draw(mime_trees(depth + 1))
    else:
        body = draw(st.binary(max_size=60))
    return head + b"\r\n" + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mime_trees())
def test_content_of_malformed_mime(data: bytes) -> None:
    check_content(MessageContent.parse(data))


# -- address lists --------------------------------------------------------------------------

address_text = st.one_of(
    st.text(alphabet=st.sampled_from(list('ab@.,:;<>()"\\ \t[]=?\u00e9')), max_size=40),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        max_size=40,
    ),
)


@settings(max_examples=500, deadline=None)
@given(address_text)
def test_address_lists_never_raise(value: str) -> None:
    depth = 0
    for addr in parse_addresses(value):
        if addr.domain is None:  # group start (named) or end (mailbox None), never nested
            depth += 1 if addr.mailbox is not None else -1
            assert depth in (0, 1)
        else:
            assert addr.mailbox is not None
    assert depth == 0
    content = MessageContent.parse(b"From: " + value.encode() + b"\r\n\r\n")
    assert content.address_contains("from", "")


atoms = st.from_regex(r"[a-z0-9!#$%&'*+/^_`{|}~-]{1,8}", fullmatch=True)
names = st.sampled_from(["", "Joe", "Joe Q. Public", '"Doe, J"', "=?utf-8?q?J=C3=B6?="])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, atoms, atoms, st.booleans()), min_size=1, max_size=4))
def test_well_formed_address_lists_parse_and_match(
    spec: list[tuple[str, str, str, bool]],
) -> None:
    written = []
    for name, local, domain, cfws in spec:
        spec_text = f"{local} (c) @ ({local}) {domain}" if cfws else f"{local}@{domain}"
        written.append(f"{name} <{spec_text}>" if name else spec_text)
    value = ",\r\n ".join(written)
    parsed = parse_addresses(value.replace("\r\n", ""))
    assert [(a.mailbox, a.domain) for a in parsed] == [(lo, do) for _, lo, do, _ in spec]
    content = MessageContent.parse(b"To: " + value.encode() + b"\r\n\r\n")
    for name, local, domain, _ in spec:
        assert content.address_contains("to", f"{local}@{domain}")
        if name == "Joe Q. Public":
            assert content.address_contains("to", f"Joe Q. Public <{local}@{domain}>")
