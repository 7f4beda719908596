"""Message text scanned as it arrives (sans-IO core): whatever the read sizes, the pieces handed
on make the text the whole-message rules give (RFC 5321 §4.1.1.4 terminator, §4.5.2
dot-unstuffing, §2.3.8 bare CR/LF, §4.5.3.1.6 line length; RFC 3030 BDAT), and the core holds
a line at most."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.errors import Reply
from postkeep.smtp.wire.session import (
    R_BARE_NEWLINE,
    R_TEXT_LINE_TOO_LONG,
    R_TOO_BIG,
    Capabilities,
    ChunkReceived,
    DataReceived,
    Event,
    MailReceived,
    MessageReceived,
    RcptReceived,
    Say,
    SessionLimits,
    SmtpSession,
    TextReceived,
)

LIMITS = SessionLimits(max_message_size=3000, max_line_length=1000)
PIECES = [b"a", b".", b"..", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"\r", b"\n", b" ", b"x" * 400,
          b"y" * 997, b"\r\n" * 50, b"z" * 999]


def session(body: str = "") -> SmtpSession:
    s = SmtpSession("mx.example.test", LIMITS, Capabilities())
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>%s\r\nRCPT TO:<x@y.test>\r\n" % body.encode())
    for _ in range(3):
        event = s.next_event()
        if isinstance(event, MailReceived):
            s.accept_mail(event.mail)
        elif isinstance(event, RcptReceived):
            s.accept_rcpt(event.rcpt)
        else:
            s.accept_hello(event.hello)  # type: ignore[union-attr]
    return s


def drain(s: SmtpSession, text: list[bytes], out: list[Event]) -> None:
    """Run the core until it needs input, collecting text and the other events."""
    while (event := s.next_event()) is not None:
        if isinstance(event, TextReceived):
            assert event.data
            text.append(event.data)
        elif isinstance(event, ChunkReceived):
            out.append(event)
        else:
            out.append(event)


def problems(text: bytes, binary: bool = False) -> set[Reply]:
    """What the whole-message rules find wrong with `text` (all of them)."""
    found = set()
    if len(text) > LIMITS.max_message_size:
        found.add(R_TOO_BIG)
    if not binary:
        crlf = text.count(b"\r\n")
        if text.count(b"\n") != crlf or text.count(b"\r") != crlf:
            found.add(R_BARE_NEWLINE)
        # lines as CRLF delimits them, once every CR and LF is read as a line end
        lines = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        if text and max(map(len, lines)) + 2 > LIMITS.max_line_length:
            found.add(R_TEXT_LINE_TOO_LONG)
    return found


def check(text: bytes, pieces: list[bytes], end: Event, binary: bool = False) -> None:
    """`end` (the message, or the refused chunk's reply) against the whole-message rules."""
    wrong = problems(text, binary)
    if isinstance(end, MessageReceived) and end.error is None:
        assert not wrong
        assert b"".join(pieces) == text and end.size == len(text)
    else:
        error = end.error if isinstance(end, MessageReceived) else end.reply  # type: ignore[union-attr]
        assert error in wrong  # one of the problems: the first one found


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.lists(st.integers(1, 700), max_size=40))
def test_data_in_any_reads_is_the_whole_text(parts: list[bytes], reads: list[int]) -> None:
    stuffed = b"".join(parts)
    stream = stuffed + (b"" if stuffed.endswith(b"\r\n") or not stuffed else b"\r\n") + b".\r\n"
    raw = b"\r\n" + stream  # the first terminator ends it, what follows is commands
    expected = raw[: raw.find(b"\r\n.\r\n") + 2].replace(b"\r\n.", b"\r\n")[2:]
    s = session()
    s.feed(b"DATA\r\n")
    assert isinstance(s.next_event(), DataReceived)
    s.begin_data()
    pieces: list[bytes] = []
    events: list[Event] = []
    at = 0
    for n in [*reads, len(stream)]:
        s.feed(stream[at : at + n] + (b"NOOP\r\n" if at + n >= len(stream) else b""))
        at += n
        drain(s, pieces, events)
        assert s.pending_text <= LIMITS.max_line_length + 2  # a line, at most
        if at >= len(stream):
            break
    [message] = [e for e in events if isinstance(e, MessageReceived)]
    check(expected, pieces, message)
    assert isinstance(events[-1], Say) and events[-1].reply.code == 250  # the NOOP after it


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.lists(st.integers(0, 900), max_size=6),
       st.booleans(), st.integers(1, 500))
def test_bdat_in_any_chunks_and_reads_is_the_whole_text(
    parts: list[bytes], chunks: list[int], binary: bool, read: int
) -> None:
    text = b"".join(parts)
    s = session(" BODY=BINARYMIME" if binary else "")
    sizes, at = [], 0
    for n in chunks:
        sizes.append(min(n, len(text) - at))
        at += sizes[-1]
    sizes.append(len(text) - at)
    stream, at = b"", 0
    for i, n in enumerate(sizes):
        last = " LAST" if i == len(sizes) - 1 else ""
        stream += b"BDAT %d%s\r\n" % (n, last.encode()) + text[at : at + n]
        at += n
    pieces: list[bytes] = []
    events: list[Event] = []
    for i in range(0, len(stream), read):
        s.feed(stream[i : i + read])
        drain(s, pieces, events)
        assert s.pending_text == 0  # BDAT text is handed on as it comes
    failed = [e for e in events if isinstance(e, Say)]
    [end] = [e for e in events if isinstance(e, MessageReceived)] or failed[:1]
    check(text, pieces, end, binary)
    if not failed:
        assert [e for e in events if isinstance(e, ChunkReceived)] == [
            ChunkReceived(n) for n in sizes[:-1]]


def test_the_stream_number_names_a_text_until_it_ends_or_is_reset() -> None:
    s = session()
    assert s.message_stream is None
    s.feed(b"BDAT 3\r\nabc")
    assert isinstance(s.next_event(), TextReceived)
    first = s.message_stream
    assert first is not None
    assert isinstance(s.next_event(), ChunkReceived) and s.message_stream == first
    s.feed(b"RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert isinstance(s.next_event(), Say) and s.message_stream is None  # reset: dropped
    s.accept_mail(s.next_event().mail)  # type: ignore[union-attr]
    s.accept_rcpt(s.next_event().rcpt)  # type: ignore[union-attr]
    assert isinstance(s.next_event(), DataReceived)
    s.begin_data()
    assert s.message_stream not in (None, first)  # the next message: another number
    s.feed(b"x" * 10 + b"\r\n")
    assert isinstance(s.next_event(), TextReceived)
    s.refuse_message(Reply(451, "4.3.1", "no room"))
    assert s.message_stream is None  # refused: the driver drops what it stored
    s.feed(b"more\r\n.\r\n")
    end = s.next_event()
    assert isinstance(end, MessageReceived) and end.error == Reply(451, "4.3.1", "no room")
