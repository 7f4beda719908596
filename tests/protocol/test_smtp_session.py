"""Transcripts replayed over a socket into the real SMTP driver (RFC 5321, 2920, 3030, 3207).

The MX runs in-process (`tests.harness`) with its real policy and delivery: `foo.com` has the
accounts Jones and Brown, `y.test` and `例子.test` deliver everything to a catch-all, and
`refused.test` is local with no one in it (550 5.1.1). Each test's messages are read back from
the store by queue id; what only the server knows (bytes buffered, the session's state) comes
from the driver's own connection state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from postkeep.errors import Reply
from postkeep.smtp.wire.session import Capabilities, SessionLimits, SmtpSession
from tests.conftest import HarnessFactory
from tests.harness import Harness, SmtpClient, codes, queue_id, strip_trace, unique

MSG = b"Subject: hi\r\n\r\nHello\r\n"
SINK = "sink@y.test"
LIMITS = {"max_command_line": 512, "max_message_size": 2000, "max_line_length": 1000}


@pytest.fixture(scope="module")
def h(harness_factory: HarnessFactory) -> Harness:
    h = harness_factory(config={"smtp": LIMITS})
    for domain in ("foo.com", "refused.test", "y.test", "例子.test"):
        h.add_domain(domain)
    h.add_user("jones@foo.com")
    h.add_user("brown@foo.com")
    h.add_user(SINK)
    h.add_alias("@y.test", SINK)
    h.add_alias("@例子.test", SINK)
    return h


@pytest.fixture
def c(h: Harness) -> Iterator[SmtpClient]:
    client = h.raw()
    yield client
    client.close()


def fresh(h: Harness) -> str:
    """A new account of y.test (its own INBOX: what this test delivered and nothing else)."""
    address = f"{unique('r')}@y.test"
    h.add_user(address)
    return address


def test_rfc5321_d1_typical_transaction(h: Harness, c: SmtpClient) -> None:
    """RFC 5321 Appendix D.1, replayed."""
    assert c.greeting.startswith(b"220 mx.example.test ")
    out = c.feed(b"EHLO bar.com\r\n", 1)
    assert out.startswith(b"250-mx.example.test Hello bar.com\r\n")
    assert b"250-PIPELINING\r\n" in out and b"250-8BITMIME\r\n" in out
    assert out.endswith(b"\r\n") and out.count(b"250 ") == 1  # one reply, last line "250 "
    before = len(h.messages("jones@foo.com"))
    assert codes(c.feed(b"MAIL FROM:<Smith@bar.com>\r\n", 1)) == ["250"]
    assert codes(c.feed(b"RCPT TO:<Jones@foo.com>\r\n", 1)) == ["250"]
    assert codes(c.feed(b"RCPT TO:<Green@refused.test>\r\n", 1)) == ["550"]
    assert codes(c.feed(b"RCPT TO:<Brown@foo.com>\r\n", 1)) == ["250"]
    assert codes(c.feed(b"DATA\r\n", 1)) == ["354"]
    out = c.feed(b"Blah blah blah...\r\n...etc. etc. etc.\r\n.\r\n", 1)
    assert codes(out) == ["250"]
    qid = queue_id(out)
    c.quit()
    for rcpt in ("jones@foo.com", "brown@foo.com"):  # both recipients, nobody else
        msg = h.message(rcpt, qid)
        assert strip_trace(msg) == b"Blah blah blah...\r\n..etc. etc. etc.\r\n"  # dot-unstuffed
        assert msg.startswith(b"Return-Path: <Smith@bar.com>\r\n")
    assert len(h.messages("jones@foo.com")) == before + 1


def test_pipelined_group_answered_in_order(h: Harness, c: SmtpClient) -> None:
    """RFC 2920: a pipelined group gets its replies in order."""
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\n", 1)
    out = c.feed(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\nRCPT TO:<z@refused.test>\r\nDATA\r\n"
        % rcpt.encode(), 4
    )
    assert codes(out) == ["250", "250", "550", "354"]
    out = c.feed(
        MSG + b".\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nBDAT 5 LAST\r\nab\ncd" % rcpt.encode(), 4
    )
    # BDAT takes any octets; without BODY=BINARYMIME the bare LF is refused at the end.
    assert codes(out) == ["250", "250", "250", "550"]
    c.quit()
    assert [strip_trace(m) for m in h.messages(rcpt)] == [MSG]


def test_empty_message_and_leading_dot_line(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    out = c.feed(b".\r\n", 1)
    assert codes(out) == ["250"]
    assert strip_trace(h.message(rcpt, queue_id(out))) == b""
    c.feed(b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 3)
    out = c.feed(b"..hidden\r\n.\r\n", 1)
    assert codes(out) == ["250"]
    assert strip_trace(h.message(rcpt, queue_id(out))) == b".hidden\r\n"
    c.quit()


def test_terminator_split_across_reads(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    stream = MSG + b".\r\n"
    for i in range(len(stream)):  # one octet per segment; the pauses let each be read alone
        c.send(stream[i : i + 1])
        time.sleep(0.002)
    out = c.replies(1)
    assert codes(out) == ["250"]
    assert strip_trace(h.message(rcpt, queue_id(out))) == MSG
    c.quit()


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
def test_smuggling_variants_never_end_data(h: Harness, c: SmtpClient, payload: bytes) -> None:
    """Only CRLF.CRLF ends DATA; what follows a fake end is still message text."""
    rcpt, victim = fresh(h), fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<%s>\r\nDATA\r\nevil\r\n" % victim.encode()
    c.send(payload + smuggled)  # still in DATA: nothing answered (the next reply is the 550)
    out = c.feed(b".\r\n", 1)
    assert codes(out) == ["550"]  # and the whole thing is refused for its bare CR/LF
    assert b"5.6.0" in out
    c.quit()
    assert h.messages(rcpt) == [] and h.messages(victim) == []


def test_bare_lf_inside_text_rejected(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    assert codes(c.feed(b"Subject: x\n\r\nbody\r\n.\r\n", 1)) == ["550"]
    # the session is usable afterwards
    assert codes(c.feed(b"MAIL FROM:<>\r\n", 1)) == ["250"]
    c.quit()
    assert h.messages(rcpt) == []


def test_sequence_errors(c: SmtpClient) -> None:
    assert codes(c.feed(b"MAIL FROM:<a@b.test>\r\n", 1)) == ["503"]
    c.feed(b"HELO c\r\n", 1)
    assert codes(c.feed(b"RCPT TO:<x@y.test>\r\n", 1)) == ["503"]
    assert codes(c.feed(b"DATA\r\n", 1)) == ["503"]
    assert codes(c.feed(b"MAIL FROM:<a@b.test>\r\n", 1)) == ["250"]
    assert codes(c.feed(b"MAIL FROM:<a@b.test>\r\n", 1)) == ["503"]
    assert codes(c.feed(b"DATA\r\n", 1)) == ["554"]  # no valid recipients
    assert codes(c.feed(b"RSET\r\nMAIL FROM:<a@b.test> SIZE=10\r\n", 2)) == ["250", "555"]
    c.quit()


def test_helo_reply_has_no_extensions_and_helo_disallows_params(c: SmtpClient) -> None:
    out = c.feed(b"HELO c\r\n", 1)
    assert out == b"250 mx.example.test Hello c\r\n"
    c.quit()


def test_command_line_too_long_is_refused_and_skipped(c: SmtpClient) -> None:
    out = c.feed(b"NOOP " + b"x" * 600, 1)  # smtp.max_command_line = 512
    assert codes(out) == ["500"]
    out = c.feed(b"y" * 600 + b"\r\nNOOP\r\n", 1)
    assert codes(out) == ["250"]  # the rest of the long line was skipped, NOOP answered
    c.quit()


def test_size_declared_too_big(c: SmtpClient) -> None:
    c.feed(b"EHLO c\r\n", 1)
    out = c.feed(b"MAIL FROM:<a@b.test> SIZE=2001\r\n", 1)  # smtp.max_message_size = 2000
    assert codes(out) == ["552"] and b"5.3.4" in out
    c.quit()


def test_message_too_big_is_consumed_and_refused(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    fed = h.smtp_stats(c.port).fed
    line = b"x" * 78 + b"\r\n"
    for _ in range(100):  # 8000 octets: past max_message_size 2000 and the 4136 of slack
        c.send(line)  # nothing answered: the next reply is the 552
    stats = h.wait_fed(c.port, fed + 100 * len(line))
    session = h.smtp_session(c.port)
    assert session.pending_text <= 82 and stats.peak_text <= 82  # a line at most
    out = c.feed(b".\r\nNOOP\r\n", 2)
    assert codes(out) == ["552", "250"]
    c.quit()
    assert h.messages(rcpt) == []


def test_too_many_recipients(c: SmtpClient) -> None:
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\n", 2)
    out = c.feed(b"".join(b"RCPT TO:<u%d@y.test>\r\n" % i for i in range(101)), 101)
    assert codes(out) == ["250"] * 100 + ["452"]
    c.quit()


def test_long_text_line_rejected(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 4)
    assert codes(c.feed(b"a" * 998 + b"\r\n.\r\n", 1)) == ["250"]  # max_line_length = 1000
    c.feed(b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode(), 3)
    assert codes(c.feed(b"a" * 999 + b"\r\n.\r\n", 1)) == ["550"]
    c.quit()
    assert [strip_trace(m) for m in h.messages(rcpt)] == [b"a" * 998 + b"\r\n"]


def test_bdat_chunks(h: Harness, c: SmtpClient) -> None:
    """RFC 3030 §4.2 example shape: chunks, then LAST."""
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<%s>\r\n" % rcpt.encode(), 3)
    out = c.feed(b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 7 LAST\r\nHello\r\n", 2)
    assert codes(out) == ["250", "250"]
    assert b"14 octets" in out
    assert strip_trace(h.message(rcpt, queue_id(out))) == b"Subject: x\r\n\r\nHello\r\n"
    c.quit()


def test_bdat_zero_last_and_binary_allows_bare_lf(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<%s>\r\n"
           % rcpt.encode(), 3)
    out = c.feed(b"BDAT 3\r\na\nb", 1)
    out += c.feed(b"BDAT 0 LAST\r\n", 1)
    assert codes(out) == ["250", "250"]
    assert strip_trace(h.message(rcpt, queue_id(out))) == b"a\nb"
    c.quit()


def test_bdat_refused_chunk_is_still_consumed(c: SmtpClient) -> None:
    c.feed(b"EHLO c\r\n", 1)
    out = c.feed(b"BDAT 12 LAST\r\nRSET\r\nRSET\r\nNOOP\r\n", 2)
    # the 12 octets "RSET\r\nRSET\r\n" are chunk data, not commands
    assert codes(out) == ["503", "250"]
    c.quit()


def test_binarymime_refuses_data(h: Harness, c: SmtpClient) -> None:
    rcpt = fresh(h)
    c.feed(b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<%s>\r\n"
           % rcpt.encode(), 3)
    assert codes(c.feed(b"DATA\r\n", 1)) == ["503"]
    c.quit()


def test_starttls_discards_pipelined_plaintext_and_resets(h: Harness, c: SmtpClient) -> None:
    c.feed(b"EHLO c\r\n", 1)
    out = c.feed(b"STARTTLS\r\nMAIL FROM:<injected@x.test>\r\n", 1)  # in one segment
    assert codes(out) == ["220"]
    c.starttls(h.client_context())  # the handshake completes once the server switched
    session = h.smtp_session(c.port)
    assert session.buffered == 0
    assert session.helo is None  # EHLO needed again
    assert session.tls_active
    assert codes(c.feed(b"MAIL FROM:<a@b.test>\r\n", 1)) == ["503"]  # the injected MAIL is gone
    out = c.feed(b"EHLO c\r\n", 1)
    assert b"STARTTLS" not in out
    assert codes(c.feed(b"STARTTLS\r\n", 1)) == ["503"]
    c.quit()


def test_requiretls_only_over_tls(h: Harness, c: SmtpClient) -> None:
    """RFC 8689 §4: REQUIRETLS is offered once TLS is up, and refused on a plaintext session."""
    assert b"REQUIRETLS" not in c.feed(b"EHLO c\r\n", 1)
    out = c.feed(b"MAIL FROM:<a@b.test> REQUIRETLS\r\n", 1)
    assert out.startswith(b"530 5.7.10 ")
    assert codes(c.feed(b"MAIL FROM:<a@b.test> REQUIRETLS=yes\r\n", 1)) == ["501"]
    assert codes(c.feed(b"STARTTLS\r\n", 1)) == ["220"]
    c.starttls(h.client_context())
    assert b"250 REQUIRETLS\r\n" in c.feed(b"EHLO c\r\n", 1)
    assert codes(c.feed(b"MAIL FROM:<a@b.test> REQUIRETLS\r\n", 1)) == ["250"]
    c.quit()


def test_smtputf8_addresses(c: SmtpClient) -> None:
    c.feed(b"EHLO c\r\n", 1)
    out = c.feed("MAIL FROM:<jöran@bücher.test>\r\n".encode(), 1)
    assert codes(out) == ["553"]
    out = c.feed("MAIL FROM:<jöran@bücher.test> SMTPUTF8\r\n".encode(), 1)
    assert codes(out) == ["250"]
    out = c.feed("RCPT TO:<用户@例子.test>\r\n".encode(), 1)
    assert codes(out) == ["250"]
    c.quit()


def test_error_budget(harness_factory: HarnessFactory) -> None:
    """Past smtp.hard_error_limit errors the driver says 421 and hangs up; past the soft
    limit each error reply is delayed (flushed first)."""
    strict = harness_factory(config={"smtp": {"soft_error_limit": 2, "hard_error_limit": 4,
                                              "error_delay": 0.01}})
    c = strict.raw()
    out = c.feed(b"BOGUS\r\n" * 3, 3)
    assert codes(out) == ["500"] * 3
    c.send(b"BOGUS\r\n")
    rest = c.read_to_eof()
    assert codes(rest) == ["500", "421"] and b"421 4.7.0" in rest
    session = strict.smtp_session(c.port)
    assert session.error_action().value == "close"
    c.close()
    assert strict.log_lines(r"reject ip=127\.0\.0\.1 cmd=- code=421 .*hard error limit")


def test_vrfy_expn_help_noop_quit(c: SmtpClient) -> None:
    c.send(b"VRFY alice\r\nEXPN list\r\nHELP\r\nNOOP\r\nQUIT\r\nNOOP\r\n")
    out = c.read_to_eof()  # the server hangs up after the 221; the last NOOP is unanswered
    assert codes(out) == ["252", "502", "214", "250", "221"]
    c.close()


def test_reply_rendering_multiline() -> None:
    session = SmtpSession("mx.example.test", SessionLimits(), Capabilities())
    assert session.render(Reply(550, "5.1.1", "a\nb")) == b"550-5.1.1 a\r\n550 5.1.1 b\r\n"
