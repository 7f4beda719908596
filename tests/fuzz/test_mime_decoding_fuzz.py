"""Hypothesis fuzzing of the incremental transfer decoders (`postkeep.mime.decoding`): fed in
pieces of any size, they write what the whole-body decoders of `postkeep.mime.structure` write,
or (base64 with data after its padding only) refuse."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.mime.decoding import MAX_CARRY, Base64Decoder, QuotedPrintableDecoder, decoder
from postkeep.mime.structure import decode_quoted_printable

_cuts = st.lists(st.integers(min_value=0, max_value=12), max_size=40)


def _over(alphabet: bytes, max_size: int) -> st.SearchStrategy[bytes]:
    """Byte strings of the octets in `alphabet`."""
    return st.binary(max_size=max_size).map(lambda b: bytes(alphabet[x % len(alphabet)] for x in b))


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    out, pos = [], 0
    for n in cuts:
        out.append(data[pos : pos + n])
        pos += n
    return [*out, data[pos:]]


def _feed(dec: Base64Decoder | QuotedPrintableDecoder, pieces: list[bytes]) -> bytes:
    return b"".join(dec.feed(p) for p in pieces) + dec.finish()


@settings(max_examples=3000, deadline=None)
@given(_over(b"AQZz09+/=\r\n -!", 60), _cuts)
def test_base64_pieces(data: bytes, cuts: list[int]) -> None:
    try:
        whole: bytes | None = binascii.a2b_base64(data)
    except binascii.Error:
        whole = None
    try:
        got: bytes | None = _feed(Base64Decoder(), _pieces(data, cuts))
    except ValueError as e:
        assert "after the padding" in str(e) or whole is None, (data, whole)
        return
    assert got == whole


@settings(max_examples=3000, deadline=None)
@given(_over(b"a=3dDF \t\r\n\x00g", 80), _cuts)
def test_quoted_printable_pieces(data: bytes, cuts: list[int]) -> None:
    assert _feed(QuotedPrintableDecoder(), _pieces(data, cuts)) == decode_quoted_printable(data)


def test_long_bodies_and_unknown_encodings() -> None:
    body = b"=C3=A9t=C3=A9 " * 50000 + b"end   \r\nnext=\r\nline"
    dec = QuotedPrintableDecoder()
    assert _feed(dec, _pieces(body, [65536] * 20)) == decode_quoted_printable(body)
    encoded = binascii.b2a_base64(bytes(range(256)) * 999)
    assert _feed(Base64Decoder(), _pieces(encoded, [1000] * 400)) == bytes(range(256)) * 999
    assert decoder("8BIT").feed(b"\x00x") == b"\x00x"
    with pytest.raises(ValueError, match="unknown"):
        decoder("X-UUENCODE")
    with pytest.raises(ValueError, match="no place to cut"):  # held, not grown without bound
        _feed(QuotedPrintableDecoder(), _pieces(b"= " * MAX_CARRY, [65536] * 40))
