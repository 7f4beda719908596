"""Hypothesis fuzzing of the MIME structure parser: never raises, offsets nested, limits held;
quoted-printable decoding against a transcription of Dovecot's decoder."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.mime import structure
from postkeep.mime.structure import (
    Part,
    bodystructure,
    decode_quoted_printable,
    decoded_body,
    envelope,
    find_part,
    from_json,
    header_fields,
    parse_structure,
    to_json,
)
from postkeep.mime.summary import summarize
from postkeep.mime.window import Window

FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/digest; boundary="b"\n',
    b"Content-Type: multipart/alternative; boundary*0=b; boundary*1*=%41\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/global\n",
    b"Content-Type: text/plain; charset*=x-unknown''%FF; name*=utf-7''+AGEA-\r\n",
    b"Content-Type: (c (nested) \\) text/html\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82\r\n",
    b"Content-Language: en, (x) fi\r\n",
    b'From: a (c) <@r:b@c>, g: d@e, "q\\" " <x>;, <\r\n',
    b"To: ((((\r\n",
    b"Subject: \xff\x00\r\n",
    b" folded\r\n",
    b"\tfolded\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"--b \t\n",
    b"--bA\n",
    b"--b",
    b"\r\n",
    b"\n",
    b"\r",
    b"text =3D=\r\n",
    b"QUJD\r\n",
    b"\x00\x80\xff",
]


def check(data: bytes, root: Part, max_depth: int, max_parts: int) -> None:
    """Offsets within the data, children inside their parent in order, limits held, and every
    other entry point runs on the result."""
    assert (root.header_start, root.body_end) == (0, len(data))
    count = 0
    stack: list[tuple[Part, int, tuple[int, ...]]] = [(root, 1, ())]
    while stack:
        part, depth, path = stack.pop()
        count += 1
        assert 0 <= part.header_start <= part.body_start <= part.body_end <= len(data)
        assert depth <= max_depth
        if part.type == "multipart":
            assert part.children and part.envelope is None
            previous = part.body_start
            for child in part.children:
                assert previous <= child.header_start and child.body_end <= part.body_end
                previous = child.body_end
        elif part.children:
            assert (part.type, len(part.children)) == ("message", 1)
            inner = part.children[0]
            assert (inner.header_start, inner.body_end) == (part.body_start, part.body_end)
            assert part.envelope == envelope(data, inner)
        header_fields(data, part, ["subject", "content-type"], exclude=depth % 2 == 0)
        with contextlib.suppress(ValueError):  # undecodable base64 / unknown encoding
            decoded_body(data, part)
        stack.extend((c, depth + 1, (*path, i + 1)) for i, c in enumerate(part.children))
    assert count <= max_parts
    bodystructure(root).encode("utf-8", "surrogateescape")
    bodystructure(root, extensible=False).encode("utf-8", "surrogateescape")
    envelope(data).encode("utf-8", "surrogateescape")
    assert from_json(to_json(root)) == root
    for path in [(1,), (1, 1), (2, 1, 1), (1, 2, 3, 1)]:
        find_part(root, path)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    check(data, parse_structure(data), 32, 1000)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=60),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=12),
)
def test_mime_fragments(pieces: list[bytes], max_depth: int, max_parts: int) -> None:
    data = b"".join(pieces)
    limited = parse_structure(data, max_depth=max_depth, max_parts=max_parts)
    check(data, limited, max_depth, max_parts)
    check(data, parse_structure(data), 32, 1000)


CONTENT = st.lists(st.text(alphabet="ab xy.=\t", max_size=12), max_size=4)
TREES = st.recursive(
    st.tuples(st.just("leaf"), CONTENT),
    lambda kids: st.one_of(
        st.tuples(st.just("multipart"), st.lists(kids, min_size=1, max_size=4)),
        st.tuples(st.just("message"), kids),
    ),
    max_leaves=10,
)


def render(node: Any, nl: str, counter: list[int]) -> str:
    kind, value = node
    if kind == "leaf":
        return f"Content-Type: text/plain{nl}{nl}" + nl.join(value)
    if kind == "message":
        return f"Content-Type: message/rfc822{nl}Subject: s{nl}{nl}" + render(value, nl, counter)
    counter[0] += 1
    mark = f"b{counter[0]}"
    parts = "".join(f"--{mark}{nl}{render(kid, nl, counter)}{nl}" for kid in value)
    return f"Content-Type: multipart/mixed; boundary={mark}{nl}{nl}preamble{nl}{parts}--{mark}--"


def same_shape(data: bytes, node: Any, part: Part, nl: str) -> int:
    """Asserts `part` is what `node` rendered to; returns the number of parts."""
    kind, value = node
    if kind == "leaf":
        assert part.type == "text" and not part.children
        assert data[part.body_start : part.body_end] == nl.join(value).encode()
        return 1
    if kind == "message":
        assert (part.type, part.subtype, len(part.children)) == ("message", "rfc822", 1)
        return 1 + same_shape(data, value, part.children[0], nl)
    assert part.type == "multipart" and len(part.children) == len(value)
    kids = zip(value, part.children, strict=True)
    return 1 + sum(same_shape(data, k, c, nl) for k, c in kids)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES, st.sampled_from(["\r\n", "\n"]), st.integers(1, 8), st.integers(1, 20))
def test_built_trees(tree: Any, nl: str, max_depth: int, max_parts: int) -> None:
    data = render(tree, nl, [0]).encode()
    root = parse_structure(data, max_depth=200, max_parts=10_000)
    check(data, root, 200, 10_000)
    same_shape(data, tree, root, nl)
    limited = parse_structure(data, max_depth=max_depth, max_parts=max_parts)
    check(data, limited, max_depth, max_parts)


def dovecot_qp(src: bytes) -> bytes:
    """Dovecot's qp-decoder.c (src/lib-mail) transcribed state for state, going on after
    invalid input with what its qp_decoder_invalid() writes, and keeping the blanks it would
    truncate in runs longer than 77 (only reached with invalid input)."""
    out, blanks = bytearray(), bytearray()
    state, hexchar, i = "text", 0, 0

    def invalid() -> None:
        nonlocal state
        out.extend(
            {
                "equals": b"=",
                "hex2": bytes([0x3D, hexchar]),
                "equals_ws": b"=" + blanks,
                "cr": blanks + b"\r",
                "softcr": b"=" + blanks + b"\r",
            }[state]
        )
        blanks.clear()
        state = "text"

    while i < len(src):
        c = src[i]
        if state == "text":
            if c == 0x3D:
                state = "equals"
            elif c == 0x0D:
                state = "cr"
            elif c == 0x0A:  # LF without CR
                out.extend(b"\r\n")
            elif c in b" \t":
                blanks.append(c)
                state = "ws"
            else:
                out.append(c)
        elif state == "ws":
            if c in b" \t":
                blanks.append(c)
            elif c == 0x0D:
                state = "cr"
            elif c == 0x0A:  # trailing blanks dropped
                out.extend(b"\r\n")
                blanks.clear()
            else:
                out.extend(blanks)
                blanks.clear()
                state = "text"
                continue
        elif state == "equals":
            if c in b"0123456789ABCDEFabcdef":
                hexchar, state = c, "hex2"
            elif c in b" \t":
                blanks.append(c)
                state = "equals_ws"
            elif c == 0x0D:
                state = "softcr"
            elif c == 0x0A:
                state = "text"
            else:
                invalid()
                continue
        elif state == "hex2":
            if c in b"0123456789ABCDEFabcdef":
                out.extend(bytes.fromhex(chr(hexchar) + chr(c)))
                state = "text"
            else:
                invalid()
                continue
        elif state == "equals_ws":
            if c in b" \t":
                blanks.append(c)
            elif c == 0x0D:
                state = "softcr"
            elif c == 0x0A:
                blanks.clear()
                state = "text"
            else:
                invalid()
                continue
        elif c == 0x0A:  # after CR, or after "=" [blanks] CR
            blanks.clear()
            if state == "cr":
                out.extend(b"\r\n")
            state = "text"
        else:
            invalid()
            continue
        i += 1
    if state not in ("text", "ws"):  # qp_decoder_finish()
        invalid()
    return bytes(out)


QP_PIECES = [b"=", b"=3D", b"=e9", b"=Ab", b"=4", b"=G", b"A", b"x", b"\xff", b"\x00", b" ", b"\t"]
QP_PIECES += [b"\r", b"\n", b"\r\n", b"=\r\n", b"=\n", b"= \r\n", b" \r\n", b"\t\n", b"==", b"= "]


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(QP_PIECES), max_size=40).map(b"".join), st.binary()))
def test_quoted_printable_matches_dovecot(encoded: bytes) -> None:
    assert decode_quoted_printable(encoded) == dovecot_qp(encoded)
    data = b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded
    assert decoded_body(data, parse_structure(data)) == dovecot_qp(encoded)


FIELD_NAMES = ["From", "To", "Cc", "Subject", "To-Foo", "X-A"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*FIELD_NAMES, "Received", "tO", "subject ", "X-A\t"]),
            st.text("ab :", max_size=8),
            st.booleans(),
        ),
        max_size=12,
    ),
    st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=4),
)
def test_header_fields_picks_exactly_the_named_fields(
    fields: list[tuple[str, str, bool]], names: list[str]
) -> None:
    """HEADER.FIELDS returns the named fields (any case, blanks before the colon, folded lines
    kept) in message order; HEADER.FIELDS.NOT returns the others."""
    lines = [f"{n}:{v}" + ("\r\n\tmore" if folded else "") + "\r\n" for n, v, folded in fields]
    data = ("".join(lines) + "\r\nbody\r\n").encode()
    root = parse_structure(data)
    wanted = {n.lower() for n in names}
    chosen = [line.encode() for line, (n, _, _) in zip(lines, fields, strict=True)
              if n.strip().lower() in wanted]
    others = [line.encode() for line, (n, _, _) in zip(lines, fields, strict=True)
              if n.strip().lower() not in wanted]
    assert header_fields(data, root, names, exclude=False) == b"".join(chosen) + b"\r\n"
    assert header_fields(data, root, names, exclude=True) == b"".join(others) + b"\r\n"


# -- the parser over a Window (a spooled message read a block at a time) ------------------------


def window(data: bytes, block: int) -> Window:
    return Window(len(data), lambda start, length: data[start : start + length], block)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
              st.binary(max_size=500)),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=6),
)
def test_parse_over_a_window_is_the_parse_of_the_bytes(
    data: bytes, block: int, max_depth: int
) -> None:
    """Blocks of any size, matches across their edges: the same tree, envelope and summary."""
    view = window(data, block)
    assert parse_structure(view) == parse_structure(data)
    assert parse_structure(view, max_depth=max_depth, max_parts=8) == parse_structure(
        data, max_depth=max_depth, max_parts=8)
    assert envelope(view) == envelope(data)
    assert summarize(view) == summarize(data)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=6), st.integers(1, 9), st.data())
def test_window_operations_are_those_of_bytes(
    data: bytes, sub: bytes, block: int, draw: st.DataObject
) -> None:
    view = window(data, block)
    start = draw.draw(st.one_of(st.none(), st.integers(-5, len(data) + 5)))
    end = draw.draw(st.one_of(st.none(), st.integers(-5, len(data) + 5)))
    assert len(view) == len(data)
    assert view[start:end] == data[start:end]
    if data:
        index = draw.draw(st.integers(-len(data), len(data) - 1))
        assert view[index] == data[index]
    if sub:
        assert view.find(sub, start, end) == data.find(sub, start, end)
        assert view.count(sub, start, end) == data.count(sub, start, end)
        assert view.startswith(sub, start, end) == data.startswith(sub, start, end)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.sampled_from([b"\n--b", b"--", b"x", b" ", b"\t", b"\r", b"\n", b"\r\n"]),
             max_size=30).map(b"".join),
    st.integers(0, 5),
    st.integers(0, 5),
)
def test_delimiter_search_is_the_rfc2046_pattern(data: bytes, pos: int, cut: int) -> None:
    """The find-based delimiter search matches what the RFC 2046 §5.1.1 pattern matches."""
    end = max(len(data) - cut, 0)
    m = re.compile(rb"\n--b(--)?[ \t]*(?=\r?\n|\Z)").search(data, pos, end)
    expected = None if m is None else (m.start(), m.end(), m.group(1) is not None)
    assert structure._delimiter(data, b"\n--b", pos, end) == expected


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([b"a", b":", b" ", b"\r", b"\n", b"\r\n"]), max_size=30)
       .map(b"".join))
def test_header_ends_at_the_first_empty_line(data: bytes) -> None:
    """The body starts after the first LF CRLF or LF LF (or a leading empty line)."""
    m = re.compile(rb"\n\r?\n").search(data)
    expected = (1 if data.startswith(b"\n") else 2 if data.startswith(b"\r\n")
                else m.end() if m else len(data))
    assert parse_structure(data).body_start == expected
