"""IMAP command framing: lines, literals (RFC 9051 §4.3, §7.5; RFC 7888; RFC 3516) and limits."""

from __future__ import annotations

import pytest

from postkeep.imap.wire.commands import (
    Append,
    AppendMessage,
    Authenticate,
    Enable,
    Fetch,
    Id,
    Idle,
    Login,
    Logout,
    ParseError,
    Select,
    StartTls,
    Store,
)
from postkeep.imap.wire.parser import parse
from postkeep.imap.wire.reader import (
    ID_LIMITS,
    ID_LITERAL_MAX,
    ID_QUOTED_MAX,
    MIB,
    POST_AUTH_LIMITS,
    PRE_AUTH_LIMITS,
    SEARCH_LIMITS,
    AuthLine,
    Bad,
    CommandReceived,
    IdleDone,
    ImapReader,
    NeedContinuation,
    NoRoom,
    ReaderEvent,
    ReaderLimits,
    ReaderMode,
    TooBig,
    literal_header,
)


def run(reader: ImapReader, data: bytes, split: int | None = None) -> list[ReaderEvent]:
    """Feed `data` (in chunks of `split` octets) and collect every event."""
    events: list[ReaderEvent] = []
    step = split or max(1, len(data))
    for i in range(0, len(data), step):
        reader.feed(data[i : i + step])
        while (event := reader.next()) is not None:
            events.append(event)
    return events


def commands(events: list[ReaderEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, CommandReceived)]


# -- RFC 9051 §8 through reader and parser ----------------------------------------------------

SESSION = (
    b"a000 starttls\r\n",
    b"A001 AUTHENTICATE SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\n",
    b"Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpi"
    b"WmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==\r\n",
    b"\r\n",
    b"babc ENABLE IMAP4rev2\r\n",
    b"a002 select inbox\r\n",
    b"a003 fetch 12 full\r\n",
    b"a004 fetch 12 body[header]\r\n",
    b"a005 store 12 +flags \\deleted\r\n",
    b"a006 logout\r\n",
)


class MiniDriver:
    """What the IMAP driver will do with the reader: parse commands, switch modes."""

    def __init__(self) -> None:
        self.reader = ImapReader(PRE_AUTH_LIMITS)
        self.log: list[object] = []
        self._auth_steps = 0

    def feed(self, data: bytes) -> None:
        self.reader.feed(data)
        while (event := self.reader.next()) is not None:
            if isinstance(event, CommandReceived):
                command = parse(event.data, max_depth=self.reader.limits.max_depth)
                self.log.append(command)
                if isinstance(command, Authenticate):
                    self._auth_steps = 2  # SCRAM: two challenges, as in the RFC
                    self.reader.expect_auth_response(command.tag)
                elif isinstance(command, Idle):
                    self.reader.expect_done()
            elif isinstance(event, AuthLine):
                self.log.append(event)
                self._auth_steps -= 1
                if self._auth_steps:
                    self.reader.expect_auth_response("A001")
                else:
                    self.reader.set_limits(POST_AUTH_LIMITS)
            else:
                self.log.append(event)


@pytest.mark.parametrize("split", [None, 1, 7])
def test_rfc9051_section8_session_through_the_reader(split: int | None) -> None:
    d = MiniDriver()
    stream = b"".join(SESSION)
    step = split or len(stream)
    for i in range(0, len(stream), step):
        d.feed(stream[i : i + step])
    kinds = [type(x).__name__ for x in d.log]
    assert kinds == [
        "StartTls",
        "Authenticate",
        "AuthLine",
        "AuthLine",
        "Enable",
        "Select",
        "Fetch",
        "Fetch",
        "Store",
        "Logout",
    ]
    assert d.log[0] == StartTls("a000")
    assert isinstance(d.log[2], AuthLine) and d.log[2].line.startswith(b"Yz1iaXdz")
    assert d.log[3] == AuthLine(b"")
    assert d.log[4] == Enable("babc", ("IMAP4REV2",))
    assert d.log[5] == Select("a002", "INBOX")
    assert isinstance(d.log[6], Fetch) and d.log[6].macro == "FULL"
    assert isinstance(d.log[8], Store)
    assert d.log[9] == Logout("a006")
    assert d.reader.limits is POST_AUTH_LIMITS
    assert d.reader.buffered == 0


# -- literals ---------------------------------------------------------------------------------


def test_synchronizing_literal_asks_for_continuation() -> None:
    r = ImapReader()
    assert run(r, b"a001 LOGIN {4}\r\n") == [NeedContinuation(4)]
    assert r.in_command
    assert run(r, b"fred {6}\r\n") == [NeedContinuation(6)]
    assert run(r, b"secret\r\n") == [CommandReceived(b"a001 LOGIN {4}\r\nfred {6}\r\nsecret")]
    assert parse(b"a001 LOGIN {4}\r\nfred {6}\r\nsecret") == Login("a001", "fred", "secret")
    assert not r.in_command and r.buffered == 0


def test_literal_plus_needs_no_continuation() -> None:
    r = ImapReader()
    events = run(r, b"a001 LOGIN {4+}\r\nfred {6+}\r\nsecret\r\na002 NOOP\r\n")
    assert events == [
        CommandReceived(b"a001 LOGIN {4+}\r\nfred {6+}\r\nsecret"),
        CommandReceived(b"a002 NOOP"),
    ]


def test_literal_content_is_never_framing() -> None:
    """CRLF, literal announcements and commands inside a literal are just data."""
    r = ImapReader(POST_AUTH_LIMITS)
    data = b"x {3}\r\na9 LOGOUT\r\n{5+}\r\n"
    events = run(r, b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\na2 NOOP\r\n")
    assert commands(events) == [b"a APPEND INBOX {%d+}\r\n" % len(data) + data, b"a2 NOOP"]
    result = parse(commands(events)[0])
    assert result == Append("a", "INBOX", (AppendMessage(data),))


def test_literal8_for_append() -> None:
    r = ImapReader(POST_AUTH_LIMITS)
    assert run(r, b"a APPEND INBOX (\\Seen) ~{5}\r\n") == [NeedContinuation(5)]
    (event,) = run(r, b"a\x00b\xffc\r\n")
    assert isinstance(event, CommandReceived)
    assert parse(event.data) == Append(
        "a", "INBOX", (AppendMessage(b"a\x00b\xffc", ("\\Seen",), binary=True),)
    )


def test_multiappend_with_several_literals() -> None:
    r = ImapReader(POST_AUTH_LIMITS)
    events = run(r, b"a APPEND INBOX {3}\r\n")
    events += run(r, b"one {3}\r\n")
    events += run(r, b"two ~{5+}\r\nthree\r\n")
    assert events[:2] == [NeedContinuation(3), NeedContinuation(3)]
    (data,) = commands(events)
    result = parse(data)
    assert isinstance(result, Append)
    assert [m.data for m in result.messages] == [b"one", b"two", b"three"]


def test_split_byte_by_byte_gives_the_same_events() -> None:
    stream = (
        b"a1 LOGIN {4}\r\nfred {6+}\r\nsecret\r\n"
        b"a2 APPEND INBOX ~{3}\r\nx\r\n\r\n"
        b"a3 " + b"x" * 9000 + b"\r\n"
        b"a4 LOGIN {5000}\r\n"
        b"a5 LOGIN {3000+}\r\n" + b"y" * 3000 + b"\r\n"
        b"a6 NOOP\r\n"
    )
    whole = run(ImapReader(), stream)
    assert run(ImapReader(), stream, split=1) == whole
    assert run(ImapReader(), stream, split=5) == whole
    assert commands(whole) == [
        b"a1 LOGIN {4}\r\nfred {6+}\r\nsecret",
        b"a2 APPEND INBOX ~{3}\r\nx\r\n",
        b"a6 NOOP",
    ]


def test_lf_alone_ends_lines_too() -> None:
    r = ImapReader()
    assert commands(run(r, b"a NOOP\nb LOGIN {1}\nx y\n")) == [b"a NOOP", b"b LOGIN {1}\nx y"]
    assert parse(b"b LOGIN {1}\nx y") == Login("b", "x", "y")


# -- refused literals (RFC 9051 §7.5, RFC 7888) ----------------------------------------------


def test_refused_synchronizing_literal_is_not_read() -> None:
    """Before authentication a LOGIN literal over 1024 octets is refused before it is sent:
    no "+" continuation, a tagged NO [TOOBIG], and what follows is the next command."""
    r = ImapReader()
    events = run(r, b"a1 LOGIN {2000}\r\na2 NOOP\r\n")
    assert events == [TooBig("a1", 2000, 1024, False), CommandReceived(b"a2 NOOP")]
    assert events[0].response() == (
        b"a1 NO [TOOBIG] Literal of 2000 octets exceeds the limit of 1024\r\n"
    )
    assert not r.discarding


def test_refused_literal_plus_is_consumed_not_executed() -> None:
    """A LITERAL+ literal is sent anyway: it is read and discarded, with the rest of its
    command, and nothing inside it is taken for a command."""
    r = ImapReader()
    payload = b"a9 LOGOUT\r\n" * 200  # 2200 octets that look like commands
    events = run(r, b"a1 LOGIN {2200+}\r\n" + payload + b" {4+}\r\nmore\r\na2 NOOP\r\n", 64)
    assert events == [TooBig("a1", 2200, 1024, True), CommandReceived(b"a2 NOOP")]
    assert events[0].response().startswith(b"a1 BAD [TOOBIG] ")


def test_discarding_is_visible_to_the_driver() -> None:
    r = ImapReader()
    (event,) = run(r, b"a1 LOGIN {99999999999999999999999999+}\r\nxxxx")
    assert isinstance(event, TooBig) and event.non_synchronizing
    assert r.discarding and r.buffered == 0


def test_literal_minus_limits_non_synchronizing_literals() -> None:
    """RFC 7888 §4: with LITERAL-, {n+} over 4096 octets is a BAD [TOOBIG]."""
    limits = ReaderLimits(max_literal=10000, max_command=30000, literal_minus=True)
    r = ImapReader(limits)
    events = run(r, b"a1 LOGIN {5000+}\r\n" + b"z" * 5000 + b" p\r\na2 NOOP\r\n")
    assert events == [TooBig("a1", 5000, 4096, True), CommandReceived(b"a2 NOOP")]
    assert run(r, b"a3 LOGIN {4096+}\r\n" + b"z" * 4096 + b" p\r\n") == [
        CommandReceived(b"a3 LOGIN {4096+}\r\n" + b"z" * 4096 + b" p")
    ]
    assert run(r, b"a4 LOGIN {5000}\r\n") == [NeedContinuation(5000)]


def test_literal_limits_before_and_after_authentication() -> None:
    r = ImapReader()
    assert run(r, b"a LOGIN {1024}\r\n") == [NeedContinuation(1024)]
    run(r, b"u" * 1024 + b" p\r\n")
    assert run(r, b"b LOGIN {1025}\r\n") == [TooBig("b", 1025, 1024, False)]
    r.set_limits(POST_AUTH_LIMITS)
    assert run(r, b"c APPEND INBOX {1025}\r\n") == [NeedContinuation(1025)]
    run(r, b"m" * 1025 + b"\r\n")
    assert run(r, b"d APPEND INBOX {%d}\r\n" % (50 * MIB)) == [NeedContinuation(50 * MIB)]
    r = ImapReader(POST_AUTH_LIMITS)
    assert run(r, b"e APPEND INBOX {%d}\r\n" % (50 * MIB + 1)) == [
        TooBig("e", 50 * MIB + 1, 50 * MIB, False)
    ]


def test_literal_budget_refuses_what_does_not_fit() -> None:
    """`admit` (the driver's budget) is asked for each literal within the limits: a refused
    synchronizing literal gets NoRoom and no "+"; a refused LITERAL+ one is read and dropped,
    with the rest of its command; literals over the limits are TooBig without asking."""
    asked: list[int] = []

    def admit(octets: int) -> bool:
        asked.append(octets)
        return octets <= 1000

    r = ImapReader()
    r.set_limits(POST_AUTH_LIMITS, admit)
    assert run(r, b"a APPEND INBOX {1001}\r\n") == [NoRoom("a", 1001, False)]
    assert not r.in_command
    assert run(r, b"b APPEND INBOX {1001+}\r\n" + b"m" * 1000) == []  # answered at its end
    assert r.buffered == 0 and r.discarding
    assert run(r, b"m\r\nc NOOP\r\n") == [NoRoom("b", 1001, True), CommandReceived(b"c NOOP")]
    assert r.buffered == 0
    # MULTIAPPEND: the first message fits, the second does not; the command is dropped whole
    events = run(r, b"d APPEND INBOX {10}\r\n" + b"m" * 10 + b" {2000}\r\n")
    assert events == [NeedContinuation(10), NoRoom("d", 2000, False)]
    assert not r.in_command
    assert run(r, b"e APPEND INBOX {%d}\r\n" % (50 * MIB + 1))[0] == TooBig(
        "e", 50 * MIB + 1, 50 * MIB, False
    )
    assert asked == [1001, 1001, 10, 2000]
    assert NoRoom("f", 7, False).response() == (
        b"f NO [LIMIT] No room for a literal of 7 octets now, try again later\r\n"
    )


def test_too_many_literals() -> None:
    r = ImapReader()  # 4 literals before authentication
    head = b"a LOGIN ({1}\r\na {1}\r\nb {1}\r\nc {1}\r\nd "
    events = run(r, head + b"{1}\r\n")
    assert events[:4] == [NeedContinuation(1)] * 4
    assert events[4] == Bad("a", "Too many literals in one command (limit 4)")
    assert not r.in_command
    # the same with LITERAL+: the fifth literal and the rest of the command are discarded
    r = ImapReader()
    events = run(
        r, b"a LOGIN ({1+}\r\na {1+}\r\nb {1+}\r\nc {1+}\r\nd {1+}\r\ne)\r\nb NOOP\r\n"
    )
    assert events == [Bad("a", "Too many literals in one command (limit 4)"), CommandReceived(
        b"b NOOP"
    )]


# -- RFC 2971 ID before login -----------------------------------------------------------------


def id_pairs(n: int = 30, field: int = 30, value: int = 1024) -> list[tuple[bytes, bytes]]:
    return [
        ((b"f%02d" % i).ljust(field, b"x"), (b"v%02d" % i).ljust(value, b"y")) for i in range(n)
    ]


def id_quoted(pairs: list[tuple[bytes, bytes]], tag: bytes = b"a1") -> bytes:
    body = b" ".join(b'"%s" "%s"' % pair for pair in pairs)
    return tag + b" ID (" + body + b")\r\n"


def id_literals(pairs: list[tuple[bytes, bytes]], plus: bool = True) -> bytes:
    mark = b"+" if plus else b""
    parts = [b"{%d%s}\r\n%s {%d%s}\r\n%s" % (len(f), mark, f, len(v), mark, v) for f, v in pairs]
    return b"a2 ID (" + b" ".join(parts) + b")\r\n"


@pytest.mark.parametrize("split", [None, 1000])
def test_rfc_maximal_id_is_framed_before_login(split: int | None) -> None:
    """RFC 2971 §3.3 allows 30 pairs of 30-octet fields and 1024-octet values."""
    pairs = id_pairs()
    line = id_quoted(pairs)
    assert len(line) == 2 + ID_QUOTED_MAX > PRE_AUTH_LIMITS.max_line
    r = ImapReader(PRE_AUTH_LIMITS)
    events = run(r, line + b"a3 NOOP\r\n", split)
    assert commands(events) == [line[:-2], b"a3 NOOP"]
    cmd = parse(commands(events)[0])
    assert isinstance(cmd, Id) and cmd.params is not None and len(cmd.params) == 30
    assert cmd.params[29] == (pairs[29][0].decode(), pairs[29][1].decode())
    # every field and value a LITERAL+ literal: 60 literals
    data = id_literals(pairs)
    assert len(data) == 2 + ID_LITERAL_MAX
    events = run(r, data + b"a3 NOOP\r\n", split)
    assert len(events) == 2 and commands(events)[1] == b"a3 NOOP"
    cmd = parse(commands(events)[0])
    assert isinstance(cmd, Id) and cmd.params == tuple(
        (f.decode(), v.decode()) for f, v in pairs
    )
    # synchronizing literals: a continuation request for each
    events = run(r, id_literals(pairs, plus=False))
    assert events[:60] == [NeedContinuation(30), NeedContinuation(1024)] * 30
    assert isinstance(parse(commands(events)[0]), Id)
    # the ID command's tag is any tag, in any case
    assert len(commands(run(r, id_quoted(pairs, b"X.y-9").replace(b" ID ", b" iD ")))) == 1


def test_id_allowance_is_bounded_and_for_id_only() -> None:
    r = ImapReader(PRE_AUTH_LIMITS)
    bound = ID_LIMITS.max_line
    line = b"a1 ID (" + b'"f" "' + b"v" * (bound - 16) + b'")\r\n'
    assert len(line) == bound
    assert commands(run(r, line)) == [line[:-2]]
    longer = line[:9] + b"v" + line[9:]
    for split in (None, 4096):
        events = run(r, longer + b"a2 NOOP\r\n", split)
        assert events == [Bad("a1", "Line too long"), CommandReceived(b"a2 NOOP")]
    # streaming an endless ID line: memory stays within the allowance
    r.feed(b"a1 ID (")
    for _ in range(20):
        r.feed(b"x" * 4096)
        while r.next() is not None:
            pass
        assert r.buffered <= bound + 4096 + 64
    run(r, b"\r\n")
    # literals: 60 of at most 1024 octets
    assert run(r, b"a3 ID ({1025}\r\n") == [TooBig("a3", 1025, 1024, False)]
    many = b"a4 ID (" + b"{1+}\r\nk " * 60 + b"{1+}\r\nk)\r\na5 NOOP\r\n"
    assert run(r, many) == [
        Bad("a4", "Too many literals in one command (limit 60)"),
        CommandReceived(b"a5 NOOP"),
    ]
    # other commands keep the tight limits, whatever follows on later lines
    assert run(r, b"a6 LOGIN " + b"u" * 9000 + b"\r\n") == [Bad("a6", "Line too long")]
    assert run(r, b"a7 IDX " + b"u" * 9000 + b"\r\n") == [Bad("a7", "Line too long")]
    assert run(r, b"a8 NOOP\r\na9 LOGIN {5+}\r\nu ID (" + b"x" * 9000 + b"\r\n") == [
        CommandReceived(b"a8 NOOP"),
        Bad("a9", "Line too long"),
    ]
    # after login the usual limits apply (they admit the largest ID anyway)
    r.set_limits(POST_AUTH_LIMITS)
    assert commands(run(r, id_quoted(id_pairs()))) != []


def test_search_commands_have_their_own_bounds() -> None:
    """SEARCH, SORT and THREAD (UID forms too, any case): literals of search strings, not of
    messages, 256 KiB in all; APPEND keeps its own."""
    r = ImapReader(POST_AUTH_LIMITS)
    big = SEARCH_LIMITS.max_literal + 1
    for name in (b"SEARCH", b"uid search", b"SORT (DATE) UTF-8", b"UID THREAD REFERENCES UTF-8"):
        assert run(r, b"s " + name + b" SUBJECT {%d}\r\n" % big) == [
            TooBig("s", big, SEARCH_LIMITS.max_literal, False)
        ]
    key = b"SUBJECT {60000+}\r\n" + b"x" * 60000 + b" "
    held = len(b"t SEARCH " + key * 4 + b"SUBJECT {60000+}\r\n")  # when the fifth is announced
    assert run(r, b"t SEARCH " + key * 5 + b"ALL\r\nu NOOP\r\n") == [
        TooBig("t", 60000, SEARCH_LIMITS.max_command - held, True),
        CommandReceived(b"u NOOP"),
    ]
    four = b"v SEARCH " + key * 4 + b"ALL"
    assert commands(run(r, four + b"\r\n")) == [four]
    assert run(r, b"w APPEND INBOX {%d}\r\n" % big) == [NeedContinuation(big)]


# -- line and command limits ------------------------------------------------------------------


def test_line_too_long_before_and_after_authentication() -> None:
    line = b"a1 LOGIN " + b"u" * 9000 + b" p\r\n"
    r = ImapReader()
    events = run(r, line + b"a2 NOOP\r\n")
    assert events == [Bad("a1", "Line too long"), CommandReceived(b"a2 NOOP")]
    assert events[0].response() == b"a1 BAD Line too long\r\n"
    r.set_limits(POST_AUTH_LIMITS)
    assert commands(run(r, line)) == [line[:-2]]
    assert run(r, b"a3 X " + b"y" * 65536 + b"\r\n") == [Bad("a3", "Line too long")]


def test_line_too_long_is_reported_once_and_memory_stays_bounded() -> None:
    r = ImapReader()
    events = run(r, b"tag1 SEARCH TEXT ")
    for _ in range(256):  # 1 MiB without a line end
        events += run(r, b"x" * 4096)
        assert r.buffered <= PRE_AUTH_LIMITS.max_line + 4096 + 64
    events += run(r, b"\r\na2 NOOP\r\n")
    assert events == [Bad("tag1", "Line too long"), CommandReceived(b"a2 NOOP")]


def test_line_too_long_without_a_tag_is_untagged() -> None:
    r = ImapReader()
    (event, after) = run(r, b"+" * 9000 + b"\r\na2 NOOP\r\n")
    assert event == Bad(None, "Line too long")
    assert event.response() == b"* BAD Line too long\r\n"
    assert after == CommandReceived(b"a2 NOOP")


def test_over_long_line_ending_in_literal_plus_skips_the_literal() -> None:
    r = ImapReader()
    events = run(r, b"a1 LOGIN " + b"u" * 9000 + b" {5+}\r\nLOGOU\r\na2 NOOP\r\n", 100)
    assert events == [Bad("a1", "Line too long"), CommandReceived(b"a2 NOOP")]


def test_over_long_continuation_line_keeps_the_tag() -> None:
    r = ImapReader()
    events = run(r, b"a7 LOGIN {1}\r\nx " + b"p" * 9000 + b"\r\na8 NOOP\r\n")
    assert events == [NeedContinuation(1), Bad("a7", "Line too long"), CommandReceived(b"a8 NOOP")]


def test_total_command_size() -> None:
    limits = ReaderLimits(max_line=100, max_literal=100, max_literals=10, max_command=200)
    # a literal that does not fit in what is left of the command budget is refused
    r = ImapReader(limits)
    head = b"a APPEND INBOX {90+}\r\n" + b"m" * 90 + b" {90}\r\n"
    assert run(r, head) == [TooBig("a", 90, 200 - len(head), False)]
    # so is a line that does not fit (each line is short enough on its own)
    r = ImapReader(ReaderLimits(max_line=100, max_literal=100, max_literals=10, max_command=150))
    first = b"b ID (" + b'"k" "v" ' * 6 + b'"k" {1+}\r\n'
    second = b"x " + b'"k" "v" ' * 11 + b")\r\n"  # "x" is the literal
    assert len(first) <= 100 and len(second) <= 100 and len(first) + len(second) > 150
    assert run(r, first + second + b"c NOOP\r\n") == [
        Bad("b", "Command too long"),
        CommandReceived(b"c NOOP"),
    ]
    # and a partial line that would not fit is refused before its end arrives
    r = ImapReader(ReaderLimits(max_line=100, max_command=50))
    assert run(r, b"d " + b"z" * 60) == [Bad("d", "Command too long")]
    assert r.discarding and r.buffered <= 64


def test_nesting_depth_limit_through_the_reader() -> None:
    """Parenthesized lists: 32 levels are fine, 33 get a tagged BAD (enforced by parse)."""
    r = ImapReader()
    for depth, expected in ((32, False), (33, True)):
        (event,) = run(r, b"a SEARCH " + b"(" * depth + b"ALL" + b")" * depth + b"\r\n")
        assert isinstance(event, CommandReceived)
        result = parse(event.data, max_depth=r.limits.max_depth)
        assert isinstance(result, ParseError) == expected
        if expected:
            assert result == ParseError("a", "BAD Parenthesized lists nested deeper than 32")


# -- AUTHENTICATE and IDLE modes ----------------------------------------------------------------


def test_authenticate_lines() -> None:
    r = ImapReader()
    (event,) = run(r, b"A1 AUTHENTICATE PLAIN\r\n")
    assert isinstance(event, CommandReceived)
    r.expect_auth_response("A1")
    assert r.mode is ReaderMode.AUTH
    assert run(r, b"AGZyZWQAc2VjcmV0\r\n") == [AuthLine(b"AGZyZWQAc2VjcmV0")]
    assert r.mode is ReaderMode.COMMAND
    r.expect_auth_response("A2")
    (cancel,) = run(r, b"*\r\n")
    assert isinstance(cancel, AuthLine) and cancel.cancelled
    # an AUTH line is one line only, whatever it contains
    r.expect_auth_response("A3")
    assert run(r, b"{5}\r\n") == [AuthLine(b"{5}")]


def test_authenticate_line_too_long() -> None:
    r = ImapReader()
    r.expect_auth_response("A1")
    events = run(r, b"Q" * 20000 + b"\r\na2 NOOP\r\n", 1000)
    assert events == [
        Bad("A1", "Authentication response line too long"),
        CommandReceived(b"a2 NOOP"),
    ]
    assert r.mode is ReaderMode.COMMAND


def test_idle_done() -> None:
    r = ImapReader()
    r.expect_done()
    assert run(r, b"DONE\r\n") == [IdleDone(True)]
    r.expect_done()
    assert run(r, b"done\r\na NOOP\r\n") == [IdleDone(True), CommandReceived(b"a NOOP")]
    r.expect_done()
    assert run(r, b"a NOOP\r\n") == [IdleDone(False)]
    r.expect_done()
    assert run(r, b"x" * 10000 + b"\r\nb NOOP\r\n") == [
        IdleDone(False),
        CommandReceived(b"b NOOP"),
    ]


def test_take_buffered_after_starttls() -> None:
    """RFC 9051 §6.2.1: input pipelined after STARTTLS is dropped (the driver takes it)."""
    r = ImapReader()
    r.feed(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
    assert r.next() == CommandReceived(b"a STARTTLS")
    assert r.take_buffered() == b"b LOGIN evil injected\r\n"
    assert r.next() is None and r.buffered == 0


# -- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a LOGIN {5}\r\n", (5, False)),
        (b"a LOGIN {5+}\r\n", (5, True)),
        (b"a APPEND x ~{5}\n", (5, False)),
        (b"a LOGIN {}\r\n", None),
        (b"a LOGIN {5-}\r\n", None),
        (b"a LOGIN {5}x\r\n", None),
        (b'a LOGIN "{5}"\r\n', None),
        (b"a LOGIN {5}", None),
        (b"{" + b"9" * 30 + b"+}\r\n", (1 << 64, True)),
    ],
)
def test_literal_header(line: bytes, expected: tuple[int, bool] | None) -> None:
    assert literal_header(line) == expected


def test_limit_presets() -> None:
    assert PRE_AUTH_LIMITS.max_line == 8192 and POST_AUTH_LIMITS.max_line == 65536
    assert PRE_AUTH_LIMITS.max_literal == 1024 and POST_AUTH_LIMITS.max_literal == 50 * MIB
    assert PRE_AUTH_LIMITS.max_literals == 4 and POST_AUTH_LIMITS.max_literals == 1000
    assert PRE_AUTH_LIMITS.max_depth == POST_AUTH_LIMITS.max_depth == 32
    # an unauthenticated client can make the reader hold only a few KB
    assert PRE_AUTH_LIMITS.max_command + PRE_AUTH_LIMITS.max_line <= 24 * 1024
    # ... or 32 KiB for an ID command, enough for the largest RFC 2971 ID with a 600-octet tag
    assert PRE_AUTH_LIMITS.id_limits == ID_LIMITS and POST_AUTH_LIMITS.id_limits is None
    assert POST_AUTH_LIMITS.search_limits == SEARCH_LIMITS and SEARCH_LIMITS.max_command == 1 << 18
    assert ID_LIMITS.max_command == ID_LIMITS.max_line == 32 * 1024
    assert ID_LIMITS.max_literal == 1024 and ID_LIMITS.max_literals == 60
    assert max(ID_QUOTED_MAX, ID_LITERAL_MAX) + 600 <= ID_LIMITS.max_line
