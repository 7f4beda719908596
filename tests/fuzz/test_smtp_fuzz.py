"""Hypothesis fuzzing of the SMTP parser and session: never anything but replies."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.smtp.wire.parser import CommandError, parse_command
from tests.protocol.smtp_driver import make_driver

VERBS = [b"EHLO ", b"HELO ", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT ", b"RSET", b"NOOP",
         b"QUIT", b"VRFY ", b"STARTTLS", b"AUTH ", b"\r\n", b".\r\n", b"\r\n.\r\n", b"<", b">",
         b"@", b" SIZE=", b" BODY=BINARYMIME", b" SMTPUTF8", b"\n", b"\r", b"..", b"1 LAST"]

chunks = st.lists(st.one_of(st.sampled_from(VERBS), st.binary(max_size=40)), max_size=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parser_only_raises_command_error(line: bytes) -> None:
    try:
        parse_command(line)
    except CommandError as e:
        assert 500 <= e.reply.code < 600


@settings(max_examples=300, deadline=None)
@given(chunks, st.integers(min_value=1, max_value=64))
def test_session_survives_any_input(parts: list[bytes], split: int) -> None:
    d = make_driver(max_message_size=2000, max_command_line=512)
    stream = b"".join(parts)
    for i in range(0, len(stream), split):
        out = d.feed(stream[i : i + split])
        for line in out.split(b"\r\n")[:-1]:
            assert line[:3].isdigit() and line[3:4] in (b" ", b"-")
        if d.closed:
            break
    # memory stays bounded whatever arrives
    assert d.session.buffered <= 4096 + len(stream)
    assert len(d.session._raw) <= 2000 + 2000 // 50 + 4096 + split + 8
