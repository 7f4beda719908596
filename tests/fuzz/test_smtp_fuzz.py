"""Hypothesis fuzzing of the SMTP parser, and of the real SMTP driver over a socket: whatever
arrives, the server sends nothing but replies, keeps its buffers bounded, and stays up."""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.smtp.wire.parser import CommandError, parse_command
from postkeep.smtp.wire.session import MAX_AUTH_LINE
from tests.conftest import HarnessFactory
from tests.harness import Harness, SmtpClient, codes

VERBS = [b"EHLO ", b"HELO ", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT ", b"RSET", b"NOOP",
         b"QUIT", b"VRFY ", b"STARTTLS", b"AUTH ", b"\r\n", b".\r\n", b"\r\n.\r\n", b"<", b">",
         b"@", b" SIZE=", b" BODY=BINARYMIME", b" SMTPUTF8", b"\n", b"\r", b"..", b"1 LAST",
         b"x@y.test"]
# Whole commands, so that examples get into DATA and BDAT (x@y.test exists: RCPT succeeds).
COMMANDS = [b"EHLO c\r\n", b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<x@y.test>\r\n", b"DATA\r\n",
            b"BDAT 10\r\n", b"BDAT 100 LAST\r\n", b"MAIL FROM:<> BODY=BINARYMIME\r\n"]
TRANSACTION = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
# Where an example starts: a new session, or one in a transaction, in DATA, in a BDAT chunk.
PREFIXES = [b"", TRANSACTION, TRANSACTION + b"DATA\r\n", TRANSACTION + b"BDAT 3000\r\n"]
MAX_MESSAGE = 2000
MAX_COMMAND = 512
MAX_TEXT = 2048 + 2  # smtp.max_line_length and the CRLF before the line

# Runs of one octet reach past the command-line limit and the message size limit plus slack.
runs = st.builds(lambda octet, n: octet * n, st.sampled_from([b"a", b".", b"\r\n"]),
                 st.integers(min_value=100, max_value=7000))
chunks = st.lists(
    st.one_of(st.sampled_from(VERBS), st.sampled_from(COMMANDS), st.binary(max_size=40), runs),
    max_size=60,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parser_only_raises_command_error(line: bytes) -> None:
    try:
        parse_command(line)
    except CommandError as e:
        assert 500 <= e.reply.code < 600


@pytest.fixture(scope="module")
def mx(harness_factory: HarnessFactory) -> Harness:
    # The error budget closes noisy sessions (hard limit) after delaying them (soft limit):
    # a short delay keeps that path without making examples slow.
    h = harness_factory(config={"smtp": {
        "max_message_size": MAX_MESSAGE, "max_command_line": MAX_COMMAND, "error_delay": 0.001,
    }})
    h.add_domain("y.test")
    h.add_user("x@y.test")
    return h


def _send_all(client: SmtpClient, stream: bytes, split: int) -> None:
    """Send the stream in `split`-octet pieces (at most about 200 of them), then end our side;
    a server that hung up early (QUIT, error limit, failed STARTTLS) ends the sending."""
    split = max(split, len(stream) // 200)
    try:
        for i in range(0, len(stream), split):
            client.send(stream[i : i + split])
        client.sock.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass


# Each example is one TCP connection (a few milliseconds): 200 examples keep this near the old
# in-memory test's run time while covering the real driver's policy and error budget.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PREFIXES), chunks, st.integers(min_value=1, max_value=64))
def test_session_survives_any_input(mx: Harness, prefix: bytes, parts: list[bytes],
                                    split: int) -> None:
    stream = prefix + b"".join(parts)
    client = mx.raw()
    try:
        _send_all(client, stream, split)
        out = client.read_to_eof()  # the server closes once it has seen our end: no hang
    finally:
        client.close()
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line
    if "421" in codes(out):  # only the error limit (or a shutdown) says 421, and then it closes
        assert codes(out)[-1] == "421"
    # memory stays bounded whatever arrives: what the session held between reads
    stats = mx.smtp_stats(client.port)
    assert stats.peak_buffered <= MAX_AUTH_LINE  # a command line ("AUTH ..." may be longer)
    assert stats.peak_text <= MAX_TEXT  # the current line of DATA (BDAT text is handed on)
    # and at the end (input after a QUIT or past the error limit stays unread in the buffer)
    assert mx.smtp_session(client.port).pending_text <= MAX_TEXT
    # and the server still answers
    with contextlib.closing(mx.raw()) as probe:
        assert probe.greeting.startswith(b"220 ")
