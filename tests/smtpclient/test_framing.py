"""The client's framing (sans-IO): replies read from any split of the peer's bytes within their
bounds (RFC 5321 §4.2, RFC 3463 codes), and DATA text dot-stuffed chunk by chunk (§4.5.2)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkeep.smtp.client.framing import DotStuffer, Reply, ReplyError, ReplyReader


def read_all(data: bytes, *, enhanced: bool = False, max_line: int = 2048,
             max_lines: int = 128, step: int = 0) -> list[Reply]:
    reader = ReplyReader(max_line, max_lines)
    reader.enhanced_codes = enhanced
    out = []
    pieces = [data[i:i + step] for i in range(0, len(data), step)] if step else [data]
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.next_reply()) is not None:
            out.append(reply)
    assert reader.buffered == 0
    return out


def test_single_and_multi_line_replies_in_any_split() -> None:
    data = b"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
    for step in (0, 1, 2, 7):
        assert read_all(data, step=step) == [
            Reply(220, "", ("mx.test ESMTP",)),
            Reply(250, "", ("mx.test", "PIPELINING", "SIZE 100")),
        ]


def test_nothing_until_the_last_line_is_in() -> None:
    reader = ReplyReader()
    reader.feed(b"250-one\r\n250 tw")
    assert reader.next_reply() is None
    reader.feed(b"o\r\n")
    assert reader.next_reply() == Reply(250, "", ("one", "two"))


def test_code_alone_and_bare_lf() -> None:
    assert read_all(b"250\r\n354 go\n") == [Reply(250, "", ("",)), Reply(354, "", ("go",))]


def test_enhanced_codes_only_once_advertised() -> None:
    data = b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n"
    assert read_all(data) == [Reply(550, "", ("5.1.1 no such user", "5.1.1 really"))]
    (reply,) = read_all(data, enhanced=True)
    assert reply == Reply(550, "5.1.1", ("no such user", "really"))
    assert str(reply) == "550 5.1.1 no such user really" and reply.status == "5.1.1"


def test_enhanced_code_of_another_class_is_text() -> None:
    (reply,) = read_all(b"450 5.1.1 odd\r\n", enhanced=True)
    assert reply.enhanced == "" and reply.text == "5.1.1 odd" and reply.status == "4.0.0"
    (reply,) = read_all(b"250 2.0.0\r\n", enhanced=True)
    assert reply.enhanced == "2.0.0" and reply.text == ""
    (reply,) = read_all(b"250 2.0.0123 x\r\n", enhanced=True)  # no space after the code
    assert reply.enhanced == ""


def test_controls_in_text_are_shown_as_question_marks() -> None:
    (reply,) = read_all(b"250 a\x1b[2Jb\x00c\rd\tok\r\n")
    assert reply.text == "a?[2Jb?c?d\tok"


@pytest.mark.parametrize("data", [
    b"hello\r\n", b"25\r\n", b"2500 x\r\n", b"250x\r\n", b"600 no\r\n", b"199 no\r\n",
    b"260 no\r\n", b"250-a\r\n251 b\r\n", b"\r\n",
])
def test_garbage_is_a_reply_error(data: bytes) -> None:
    with pytest.raises(ReplyError):
        read_all(data)


def test_overlong_line_is_an_error_before_its_end_arrives() -> None:
    reader = ReplyReader(max_line=64)
    reader.feed(b"250 " + b"x" * 59)  # 63 octets, no LF: may still end
    assert reader.next_reply() is None
    reader.feed(b"x")
    with pytest.raises(ReplyError, match="longer than 64"):
        reader.next_reply()
    with pytest.raises(ReplyError):
        read_all(b"250 " + b"x" * 70 + b"\r\n", max_line=64)
    assert read_all(b"250 " + b"x" * 59 + b"\n", max_line=64)[0].code == 250


def test_too_many_lines_is_an_error() -> None:
    assert len(read_all(b"250-x\r\n" * 9 + b"250 x\r\n", max_lines=10)[0].lines) == 10
    with pytest.raises(ReplyError, match="longer than 10 lines"):
        read_all(b"250-x\r\n" * 10 + b"250 x\r\n", max_lines=10)


# -- dot-stuffing ----------------------------------------------------------------------------------

PIECES = [b"a", b".", b"..", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"\r", b"\n", b" ", b"\n.", b"\r."]


def reference(text: bytes) -> bytes:
    """The whole text stuffed at once: CRLF line ends, a final CRLF, "." doubled at line start."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", text)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text.split(b"\r\n")[:-1] if text else []
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def stuffed(chunks: list[bytes]) -> bytes:
    s = DotStuffer()
    return b"".join(s.feed(c) for c in chunks) + s.finish()


@given(st.lists(st.sampled_from(PIECES), max_size=30), st.data())
def test_stuffing_in_chunks_is_stuffing_the_whole(parts: list[bytes], data: st.DataObject) -> None:
    text = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    out = stuffed(chunks)
    assert out == reference(text)
    # on the wire: only the last line is ".", and no CR or LF outside a CRLF
    assert out.find(b"\r\n.\r\n") in (-1, len(out) - 5) and not out[:-3].endswith(b"\r\n.")
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")


def test_stuffing_examples() -> None:
    assert stuffed([]) == b".\r\n"
    assert stuffed([b"a\r\n", b".b\r\n"]) == b"a\r\n..b\r\n.\r\n"
    assert stuffed([b"a\r", b"\n.", b"\r\n"]) == b"a\r\n..\r\n.\r\n"
    assert stuffed([b".", b"x"]) == b"..x\r\n.\r\n"
    assert stuffed([b"no end"]) == b"no end\r\n.\r\n"
    assert stuffed([b"bare\nlf\r"]) == b"bare\r\nlf\r\n.\r\n"
