"""DKIM canonicalisation (RFC 6376 §3.4): the RFC's example, the empty-body hashes, the body
hasher's independence from chunk boundaries, and agreement with dkimpy's canonicaliser."""

from __future__ import annotations

import base64
import hashlib

import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given
from hypothesis import strategies as st

from postkeep.mailauth.dkim.canon import (
    BodyHasher,
    Canon,
    HeaderField,
    body_hash,
    canon_header,
    parse_header_fields,
    split_message,
)

# RFC 6376 §3.4.5, written out: the header fields and body of the example message.
EXAMPLE = (b"A: X\r\n"
           b"B : Y\t\r\n"
           b"\tZ  \r\n"
           b"\r\n"
           b" C \r\n"
           b"D \t E\r\n"
           b"\r\n"
           b"\r\n")


def canonical_headers(message: bytes, canon: Canon) -> bytes:
    header_block, _ = split_message(message)
    return b"".join(canon_header(f.raw, canon) for f in parse_header_fields(header_block))


def test_rfc6376_example_relaxed() -> None:
    assert canonical_headers(EXAMPLE, "relaxed") == b"a:X\r\nb:Y Z\r\n"
    _, body = split_message(EXAMPLE)
    assert body_hash(body, "relaxed") == hashlib.sha256(b" C\r\nD E\r\n").digest()


def test_rfc6376_example_simple() -> None:
    assert canonical_headers(EXAMPLE, "simple") == b"A: X\r\nB : Y\t\r\n\tZ  \r\n"
    _, body = split_message(EXAMPLE)
    assert body_hash(body, "simple") == hashlib.sha256(b" C \r\nD \t E\r\n").digest()


@pytest.mark.parametrize(("canon", "expected"), [
    # The well-known bh= of an empty body: SHA-256 of CRLF (simple), of nothing (relaxed).
    ("simple", "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="),
    ("relaxed", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
])
@pytest.mark.parametrize("body", [b"", b"\r\n", b"\r\n\r\n\r\n"])
def test_empty_body_hash(canon: Canon, expected: str, body: bytes) -> None:
    assert base64.b64encode(body_hash(body, canon)).decode() == expected


def test_relaxed_whitespace_only_lines_are_empty() -> None:
    assert body_hash(b"  \r\n\t\r\n", "relaxed") == body_hash(b"", "relaxed")
    assert body_hash(b"x\r\n \r\n\t \r\n", "relaxed") == hashlib.sha256(b"x\r\n").digest()
    assert body_hash(b" \r\nx\r\n", "relaxed") == hashlib.sha256(b"\r\nx\r\n").digest()


def test_missing_final_crlf_is_added() -> None:
    for canon in CANONS:
        assert body_hash(b"abc", canon) == hashlib.sha256(b"abc\r\n").digest()
    # Relaxed, an unfinished last line keeps its trailing WSP as one SP, as dkimpy does.
    assert body_hash(b"abc \t", "relaxed") == hashlib.sha256(b"abc \r\n").digest()
    assert body_hash(b"abc\r\n\r\nd", "simple") == hashlib.sha256(b"abc\r\n\r\nd\r\n").digest()


def test_bare_cr_and_lf_are_content() -> None:
    assert body_hash(b"a\nb\r\n\r", "simple") == hashlib.sha256(b"a\nb\r\n\r\r\n").digest()
    assert body_hash(b"a\r\r\n\r\n", "simple") == hashlib.sha256(b"a\r\r\n").digest()
    assert body_hash(b"a \r\r\n", "relaxed") == hashlib.sha256(b"a \r\r\n").digest()


def test_header_parsing() -> None:
    block = b"From: a@b\r\nSubject: one\r\n two\r\nX-Odd :v\r\nno colon here\r\n"
    assert parse_header_fields(block) == (
        HeaderField("from", b"From: a@b\r\n"),
        HeaderField("subject", b"Subject: one\r\n two\r\n"),
        HeaderField("x-odd", b"X-Odd :v\r\n"),
        HeaderField("", b"no colon here\r\n"),
    )
    assert canon_header(b"Subject:\r\n\tone \t two \r\n", "relaxed") == b"subject:one two\r\n"
    assert canon_header(b"X: a\x0cb  c\r\n", "relaxed") == b"x:a\x0cb c\r\n"


def test_split_message() -> None:
    assert split_message(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n", b"body\r\n")
    assert split_message(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert split_message(b"\r\nbody") == (b"", b"body")


def test_update_after_digest_is_refused() -> None:
    hasher = BodyHasher("relaxed")
    hasher.digest()
    with pytest.raises(RuntimeError):
        hasher.update(b"x")


CANONS: tuple[Canon, ...] = ("simple", "relaxed")

# Bodies made of the characters that matter: WSP, CR, LF (CRLF mostly), and others.
bodies = st.lists(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b" ", b"\t", b"a", b"b\xc3\xa9",
                                   b"  ", b"\r", b"\n"]), max_size=60).map(b"".join)


@given(body=bodies, cuts=st.lists(st.integers(0, 200), max_size=8), canon=st.sampled_from(CANONS))
def test_chunk_boundaries_do_not_matter(body: bytes, cuts: list[int], canon: Canon) -> None:
    hasher = BodyHasher(canon)
    points = sorted({min(c, len(body)) for c in cuts})
    for start, end in zip([0, *points], [*points, len(body)], strict=True):
        hasher.update(body[start:end])
    assert hasher.digest() == body_hash(body, canon)


@given(body=bodies, canon=st.sampled_from(CANONS))
def test_byte_at_a_time(body: bytes, canon: Canon) -> None:
    hasher = BodyHasher(canon)
    for index in range(len(body)):
        hasher.update(memoryview(body)[index:index + 1])
    assert hasher.digest() == body_hash(body, canon)


@given(body=bodies, canon=st.sampled_from(CANONS))
def test_agrees_with_dkimpy(body: bytes, canon: Canon) -> None:
    reference = (Simple if canon == "simple" else Relaxed).canonicalize_body(body)
    assert body_hash(body, canon) == hashlib.sha256(reference).digest()


@given(name=st.sampled_from([b"Subject", b"X-Y", b"to"]),
       value=st.lists(st.sampled_from([b" ", b"\t", b"\r\n ", b"\r\n\t", b"v", b"\xc3\xa9"]),
                      max_size=20).map(b"".join))
def test_header_agrees_with_dkimpy(name: bytes, value: bytes) -> None:
    raw = name + b":" + value + b"\r\n"
    [(ref_name, ref_value)] = Relaxed.canonicalize_headers([(name, value + b"\r\n")])
    assert canon_header(raw, "relaxed") == ref_name + b":" + ref_value
