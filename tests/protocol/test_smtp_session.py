"""Transcripts replayed into the sans-IO SMTP session (RFC 5321, 2920, 3030, 3207)."""

from __future__ import annotations

import pytest

from tests.protocol.smtp_driver import codes, make_driver

MSG = b"Subject: hi\r\n\r\nHello\r\n"


def test_rfc5321_d1_typical_transaction() -> None:
    """RFC 5321 Appendix D.1, replayed."""
    d = make_driver()
    out = d.feed(b"EHLO bar.com\r\n")
    assert out.startswith(b"250-mx.example.test Hello bar.com\r\n")
    assert b"250-PIPELINING\r\n" in out and b"250-8BITMIME\r\n" in out
    assert out.endswith(b"\r\n") and out.count(b"250 ") == 1  # one reply, last line "250 "
    assert codes(d.feed(b"MAIL FROM:<Smith@bar.com>\r\n")) == ["250"]
    assert codes(d.feed(b"RCPT TO:<Jones@foo.com>\r\n")) == ["250"]
    assert codes(d.feed(b"RCPT TO:<Green@refused.test>\r\n")) == ["550"]
    assert codes(d.feed(b"RCPT TO:<Brown@foo.com>\r\n")) == ["250"]
    assert codes(d.feed(b"DATA\r\n")) == ["354"]
    assert codes(d.feed(b"Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\n")) == ["250"]
    assert codes(d.feed(b"QUIT\r\n")) == ["221"]
    assert d.closed
    (msg,) = d.messages
    assert msg.data == b"Blah blah blah...\r\n..etc. etc. etc.\r\n"  # dot-unstuffed
    assert [r.path.address for r in msg.rcpts] == ["Jones@foo.com", "Brown@foo.com"]


def test_pipelined_group_answered_in_order_in_one_output() -> None:
    """RFC 2920: a pipelined group gets its replies in order."""
    d = make_driver()
    d.feed(b"EHLO c\r\n")
    out = d.feed(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@refused.test>\r\nDATA\r\n"
    )
    assert codes(out) == ["250", "250", "550", "354"]
    out = d.feed(MSG + b".\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nBDAT 5 LAST\r\nab\ncd")
    # BDAT takes any octets; without BODY=BINARYMIME the bare LF is refused at the end.
    assert codes(out) == ["250", "250", "250", "550"]


def test_empty_message_and_leading_dot_line() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert codes(d.feed(b".\r\n")) == ["250"]
    assert d.messages[-1].data == b""
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert codes(d.feed(b"..hidden\r\n.\r\n")) == ["250"]
    assert d.messages[-1].data == b".hidden\r\n"


def test_terminator_split_across_reads() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    stream = MSG + b".\r\n"
    out = b"".join(d.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert codes(out) == ["250"]
    assert d.messages[-1].data == MSG


@pytest.mark.parametrize(
    "payload",
    [
        b"a\r\n\n.\n",  # LF.LF
        b"a\r\n\n.\r\n",  # LF.CRLF
        b"a\r\n\r.\r\n",  # CR.CRLF
        b"a\n.\r\n",  # bare LF before the dot
        b"a\r\n.\n",  # CRLF.LF
    ],
)
def test_smuggling_variants_never_end_data(payload: bytes) -> None:
    """Only CRLF.CRLF ends DATA; what follows a fake end is still message text."""
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nevil\r\n"
    out = d.feed(payload + smuggled)
    assert out == b""  # still in DATA: nothing answered
    out = d.feed(b".\r\n")
    assert codes(out) == ["550"]  # and the whole thing is refused for its bare CR/LF
    assert b"5.6.0" in out
    assert d.messages == []


def test_bare_lf_inside_text_rejected() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert codes(d.feed(b"Subject: x\n\r\nbody\r\n.\r\n")) == ["550"]
    # the session is usable afterwards
    assert codes(d.feed(b"MAIL FROM:<>\r\n")) == ["250"]


def test_sequence_errors() -> None:
    d = make_driver()
    assert codes(d.feed(b"MAIL FROM:<a@b.test>\r\n")) == ["503"]
    d.feed(b"HELO c\r\n")
    assert codes(d.feed(b"RCPT TO:<x@y.test>\r\n")) == ["503"]
    assert codes(d.feed(b"DATA\r\n")) == ["503"]
    assert codes(d.feed(b"MAIL FROM:<a@b.test>\r\n")) == ["250"]
    assert codes(d.feed(b"MAIL FROM:<a@b.test>\r\n")) == ["503"]
    assert codes(d.feed(b"DATA\r\n")) == ["554"]  # no valid recipients
    assert codes(d.feed(b"RSET\r\nMAIL FROM:<a@b.test> SIZE=10\r\n")) == ["250", "555"]


def test_helo_reply_has_no_extensions_and_helo_disallows_params() -> None:
    d = make_driver()
    out = d.feed(b"HELO c\r\n")
    assert out == b"250 mx.example.test Hello c\r\n"


def test_command_line_too_long_is_refused_and_skipped() -> None:
    d = make_driver(max_command_line=512)
    out = d.feed(b"NOOP " + b"x" * 600)
    assert codes(out) == ["500"]
    out = d.feed(b"y" * 600 + b"\r\nNOOP\r\n")
    assert codes(out) == ["250"]  # the rest of the long line was skipped, NOOP answered


def test_size_declared_too_big() -> None:
    d = make_driver(max_message_size=1000)
    d.feed(b"EHLO c\r\n")
    out = d.feed(b"MAIL FROM:<a@b.test> SIZE=1001\r\n")
    assert codes(out) == ["552"] and b"5.3.4" in out


def test_message_too_big_is_consumed_and_refused() -> None:
    d = make_driver(max_message_size=1000)
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    out = b""
    for _ in range(100):
        out += d.feed(b"x" * 78 + b"\r\n")
    assert out == b""
    assert len(d.session._raw) < 8000  # bounded: discarded past the limit
    out = d.feed(b".\r\nNOOP\r\n")
    assert codes(out) == ["552", "250"]


def test_too_many_recipients() -> None:
    d = make_driver(max_recipients=100)
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\n")
    out = d.feed(b"".join(b"RCPT TO:<u%d@y.test>\r\n" % i for i in range(101)))
    assert codes(out) == ["250"] * 100 + ["452"]


def test_long_text_line_rejected() -> None:
    d = make_driver(max_line_length=1000)
    d.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert codes(d.feed(b"a" * 998 + b"\r\n.\r\n")) == ["250"]
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert codes(d.feed(b"a" * 999 + b"\r\n.\r\n")) == ["550"]


def test_bdat_chunks() -> None:
    """RFC 3030 §4.2 example shape: chunks, then LAST."""
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n")
    out = d.feed(b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 7 LAST\r\nHello\r\n")
    assert codes(out) == ["250", "250"]
    assert b"14 octets" in out
    assert d.messages[-1].data == b"Subject: x\r\n\r\nHello\r\n"


def test_bdat_zero_last_and_binary_allows_bare_lf() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<x@y.test>\r\n")
    out = d.feed(b"BDAT 3\r\na\nb")
    out += d.feed(b"BDAT 0 LAST\r\n")
    assert codes(out) == ["250", "250"]
    assert d.messages[-1].data == b"a\nb"


def test_bdat_refused_chunk_is_still_consumed() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\n")
    out = d.feed(b"BDAT 12 LAST\r\nRSET\r\nRSET\r\nNOOP\r\n")
    # the 12 octets "RSET\r\nRSET\r\n" are chunk data, not commands
    assert codes(out) == ["503", "250"]


def test_binarymime_refuses_data() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<x@y.test>\r\n")
    assert codes(d.feed(b"DATA\r\n")) == ["503"]


def test_starttls_discards_pipelined_plaintext_and_resets() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\n")
    out = d.feed(b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n")
    assert codes(out) == ["220"]
    assert d.session.buffered == 0
    assert d.session.helo is None  # EHLO needed again
    assert codes(d.feed(b"MAIL FROM:<a@b.test>\r\n")) == ["503"]
    out = d.feed(b"EHLO c\r\n")
    assert b"STARTTLS" not in out
    assert codes(d.feed(b"STARTTLS\r\n")) == ["503"]


def test_smtputf8_addresses() -> None:
    d = make_driver()
    d.feed(b"EHLO c\r\n")
    out = d.feed("MAIL FROM:<jöran@bücher.test>\r\n".encode())
    assert codes(out) == ["553"]
    out = d.feed("MAIL FROM:<jöran@bücher.test> SMTPUTF8\r\n".encode())
    assert codes(out) == ["250"]
    out = d.feed("RCPT TO:<用户@例子.test>\r\n".encode())
    assert codes(out) == ["250"]


def test_error_budget() -> None:
    d = make_driver(soft_error_limit=2, hard_error_limit=4)
    for _ in range(4):
        d.feed(b"BOGUS\r\n")
    assert d.session.error_action().value == "close"


def test_vrfy_expn_help_noop_quit() -> None:
    d = make_driver()
    out = d.feed(b"VRFY alice\r\nEXPN list\r\nHELP\r\nNOOP\r\nQUIT\r\nNOOP\r\n")
    assert codes(out) == ["252", "502", "214", "250", "221"]


def test_reply_rendering_multiline() -> None:
    from postkeep.errors import Reply

    d = make_driver()
    assert d.session.render(Reply(550, "5.1.1", "a\nb")) == b"550-5.1.1 a\r\n550 5.1.1 b\r\n"
