"""Hypothesis on clamd's reply parser and reply reader (`filters.clamd_protocol`): whatever a
clamd (or something else on its socket) sends, they return one of the reply forms or raise
ProtocolError, within their bounds; and the INSTREAM framing carries any text exactly, cut
at its limit."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.filters.clamd_protocol import (
    MAX_NAME,
    ProtocolError,
    ReplyReader,
    StreamFramer,
    Verdict,
    parse_reply,
)

PIECES = st.sampled_from([b"stream: ", b"OK", b" FOUND", b" ERROR", b"Eicar.Test", b"\0",
                          b" ", b":", b"\n", b"stream", b"\xff", b"INSTREAM size limit"])
REPLIES = st.one_of(st.binary(max_size=300),
                    st.lists(PIECES, max_size=12).map(b"".join))


@settings(max_examples=500, deadline=None)
@given(REPLIES)
def test_reply_parser(reply: bytes) -> None:
    try:
        parsed = parse_reply(reply)
    except ProtocolError:
        return
    text = reply.decode("ascii")
    if parsed.verdict is Verdict.CLEAN:
        assert text == "stream: OK"
    elif parsed.verdict is Verdict.FOUND:
        assert 0 < len(parsed.detail) <= MAX_NAME and " " not in parsed.detail
        assert text == f"stream: {parsed.detail} FOUND"
    else:
        assert text.endswith(" ERROR") and parsed.detail


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8), st.integers(16, 4096))
def test_reply_reader_is_bounded(pieces: list[bytes], limit: int) -> None:
    reader = ReplyReader(limit)
    for piece in pieces:
        try:
            reply = reader.feed(piece)
        except ProtocolError:
            return
        if reply is not None:
            assert len(reply) <= limit and b"\0" not in reply
            return
    assert sum(map(len, pieces)) <= limit  # no reply yet: what is buffered is in bounds


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=500), max_size=10), st.integers(0, 3000),
       st.integers(1, 700))
def test_framing_carries_the_text_cut_at_the_limit(pieces: list[bytes], limit: int,
                                                   size: int) -> None:
    framer = StreamFramer(limit, size)
    body = b"".join(b"".join(framer.frames(p)) for p in pieces)
    sent, pos = b"", 0
    while pos < len(body):
        (n,) = struct.unpack(">I", body[pos : pos + 4])
        assert 0 < n <= size
        sent += body[pos + 4 : pos + 4 + n]
        pos += 4 + n
    text = b"".join(pieces)
    assert sent == text[:limit]
    assert framer.truncated == (len(text) > limit)
