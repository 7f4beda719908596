"""Hypothesis on the milter protocol's decoders (`filters.milter.wire`, `session`): whatever
a milter (or something else on its socket) sends, the packet reader stays within its bound
and the reply decoder, the negotiation and the reply-code parser return their forms or
raise ProtocolError, nothing else."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.filters.milter import wire
from postkeep.filters.milter.session import parse_reply_code

CODES = st.sampled_from([*b"+-24abcdefhimOpqrsty", 0, 90, 255]).map(lambda c: bytes([c]))
PIECES = st.sampled_from([b"\0", b"<a@b.test>", b"X-H", b" v", b"550", b" 5.7.1 ", b"\r\n",
                          b"\xff", struct.pack(">I", 1), b"-"])
DATA = st.one_of(st.binary(max_size=200), st.lists(PIECES, max_size=10).map(b"".join))


@settings(max_examples=500, deadline=None)
@given(CODES, DATA)
def test_reply_decoder(code: bytes, data: bytes) -> None:
    try:
        reply = wire.decode_reply(code, data)
    except wire.ProtocolError:
        return
    if isinstance(reply, wire.AddRecipient | wire.DeleteRecipient):
        assert reply.address and len(reply.address) <= 998


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10), st.integers(1, 512))
def test_packet_reader_is_bounded(pieces: list[bytes], limit: int) -> None:
    reader = wire.PacketReader(limit)
    for piece in pieces:
        try:
            packets = reader.feed(piece)
        except wire.ProtocolError:
            return
        assert all(1 + len(data) <= limit and len(code) == 1 for code, data in packets)
        assert reader.pending < 4 + limit


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10), st.integers(0, 1 << 32 - 1), st.integers(0, 1 << 32 - 1), DATA)
def test_negotiation(version: int, actions: int, protocol: int, rest: bytes) -> None:
    try:
        got = wire.negotiate(b"O", struct.pack(">III", version, actions, protocol) + rest)
    except wire.ProtocolError:
        return
    assert 2 <= got.version <= 6
    assert not got.actions & ~wire.OFFERED_ACTIONS
    assert not got.protocol & ~wire.OFFERED_PROTOCOL


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_reply_codes(text: str) -> None:
    try:
        reply = parse_reply_code(text)
    except wire.ProtocolError:
        return
    assert 400 <= reply.code < 600
    assert reply.text.isprintable() and reply.text.isascii() and len(reply.text) <= 200
    assert not reply.enhanced or reply.enhanced[0] == str(reply.code)[0]
