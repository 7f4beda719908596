"""postkeep.policy.limits on the real servers: the header-section size limit (552 5.3.4) and
mail-loop detection by Received count (554 5.4.6, RFC 5321 §6.3), on the MX and, with its own
header limit, on submission; then `header_section` directly."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from postkeep.policy.limits import check_headers, header_section
from tests.harness import Harness, queue_id, strip_trace
from tests.inprocess.conftest import ALICE, BOB

MX_HEADER = 2000
SUBMISSION_HEADER = 1500
MAX_RECEIVED = 5
HARNESS_CONFIG = {
    "smtp": {"max_header_size": MX_HEADER, "max_received_headers": MAX_RECEIVED},
    "submission": {"max_header_size": SUBMISSION_HEADER},
}
R_TOO_BIG = (552, b"5.3.4 Message header section too large")
R_LOOP = (554, b"5.4.6 Too many Received headers: mail loop detected (RFC 5321 6.3)")


@pytest.fixture
def mx(harness: Harness) -> Iterator[smtplib.SMTP]:
    client = harness.smtp()
    client.ehlo()
    yield client
    client.close()


def send(client: smtplib.SMTP, data: bytes, sender: str = "someone@remote.test",
         to: str = ALICE) -> tuple[int, bytes]:
    client.rset()
    assert client.mail(sender)[0] == 250
    assert client.rcpt(to)[0] == 250
    return client.data(data)


def header_of(size: int) -> bytes:
    """A header section of exactly `size` octets (its last CRLF included, not the empty line)."""
    lines = [b"Subject: size\r\n"]
    left = size - len(lines[0])
    while left:  # lines of 78 octets, the last one 10 to 87 octets ("X-Pad: p\r\n" at least)
        n = 78 if left >= 88 else left
        lines.append(b"X-Pad: " + b"p" * (n - 9) + b"\r\n")
        left -= n
    header = b"".join(lines)
    assert len(header) == size
    return header


def with_received(n: int, name: bytes = b"Received") -> bytes:
    hops = b"".join(name + b": from hop%d.remote.test by hop%d; Sat, 1 Jan 2000 00:00:00 +0000\r\n"
                    % (i, i + 1) for i in range(n))
    return hops + b"Subject: loop\r\n\r\nbody\r\n"


def test_header_section_at_and_past_the_limit(harness: Harness, mx: smtplib.SMTP) -> None:
    header = header_of(MX_HEADER)
    assert header_section(header + b"\r\nbody\r\n") == header
    code, text = send(mx, header + b"\r\nbody\r\n")
    assert code == 250
    assert strip_trace(harness.message(ALICE, queue_id(text))) == header + b"\r\nbody\r\n"
    assert send(mx, header_of(MX_HEADER + 1) + b"\r\nbody\r\n") == R_TOO_BIG
    assert harness.log_lines(r'cmd=DATA code=552 5\.3\.4 reason="Message header section too')


def test_only_the_header_section_counts(mx: smtplib.SMTP) -> None:
    body = b"Long-Looking: header\r\n" * 200  # in the body: text, not header fields
    assert send(mx, header_of(MX_HEADER) + b"\r\n" + body)[0] == 250
    assert send(mx, b"\r\n" + header_of(MX_HEADER + 500))[0] == 250  # no header section at all


def test_message_without_a_body_is_all_header(mx: smtplib.SMTP) -> None:
    assert send(mx, header_of(MX_HEADER))[0] == 250
    assert send(mx, header_of(MX_HEADER + 1)) == R_TOO_BIG


def test_received_count_loop(harness: Harness, mx: smtplib.SMTP) -> None:
    code, text = send(mx, with_received(MAX_RECEIVED))
    assert code == 250  # as many as allowed (the MX's own Received comes on top, after)
    stored = harness.message(ALICE, queue_id(text))
    assert stored.count(b"\r\nReceived: ") == MAX_RECEIVED + 1
    assert send(mx, with_received(MAX_RECEIVED + 1)) == R_LOOP
    assert send(mx, with_received(MAX_RECEIVED + 1, b"RECEIVED")) == R_LOOP  # any case
    assert harness.log_lines(r"cmd=DATA code=554 5\.4\.6")


def test_received_lookalikes_do_not_count(mx: smtplib.SMTP) -> None:
    assert send(mx, with_received(MAX_RECEIVED + 3, b"X-Received"))[0] == 250
    in_body = b"Subject: quoting a bounce\r\n\r\n" + with_received(MAX_RECEIVED + 3)
    assert send(mx, in_body)[0] == 250
    # a continuation line is part of the field above it, whatever it says
    folded = b"Received: from a.test\r\n\treceived: by b.test; one field\r\n" * MAX_RECEIVED
    assert send(mx, folded + b"Subject: x\r\n\r\nbody\r\n")[0] == 250


def test_the_session_continues_after_a_refusal(mx: smtplib.SMTP) -> None:
    assert send(mx, with_received(MAX_RECEIVED + 1)) == R_LOOP
    assert send(mx, with_received(1))[0] == 250


def test_submission_has_its_own_header_limit(harness: Harness) -> None:
    own = b"From: " + ALICE.encode() + b"\r\n"
    data = own + header_of(SUBMISSION_HEADER + 100 - len(own)) + b"\r\nbody\r\n"
    with harness.submit(ALICE) as client:
        assert send(client, data, sender=ALICE, to=BOB) == R_TOO_BIG
        fits = own + header_of(SUBMISSION_HEADER - len(own)) + b"\r\nbody\r\n"
        assert send(client, fits, sender=ALICE, to=BOB)[0] == 250
    with harness.smtp() as mx:  # the same message is fine for the MX's larger limit
        mx.ehlo()
        assert send(mx, data)[0] == 250


def test_header_section_and_check_headers() -> None:
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nbody") == b"A: 1\r\nB: 2\r\n"
    assert header_section(b"\r\nbody") == b""
    assert header_section(b"A: 1\r\n") == b"A: 1\r\n"
    # bare LF line ends (BDAT BODY=BINARYMIME): the header ends at the first empty line too
    assert header_section(b"A: 1\nB: 2\n\nbody\n\n") == b"A: 1\nB: 2\n"
    assert header_section(b"A: 1\r\n\nbody") == b"A: 1\r\n"
    assert header_section(b"A: 1\n\r\nbody") == b"A: 1\n"
    assert header_section(b"\nbody") == b""
    assert check_headers(b"A: 1\r\n\r\n" + b"x" * 10_000, 10, 0) is None
    loop = check_headers(b"Received: a\r\nreceived: b\r\n\r\n", 1000, 1)
    assert loop is not None and (loop.code, loop.enhanced) == (554, "5.4.6")
    assert check_headers(b"Received: a\r\nreceived: b\r\n\r\n", 1000, 2) is None


def test_binarymime_with_bare_lf_lines_counts_only_its_header(harness: Harness) -> None:
    """A BDAT BODY=BINARYMIME message (RFC 3030 §3) may end its lines in a bare LF: its header
    section still ends at the first empty line, so a long body is not a long header, nor are
    Received lines in the body hops."""
    body = b"".join(b"Received: in the body %d\n" % i for i in range(200))
    data = b"Subject: binary\nX-Test: lf\n\n" + body
    assert len(data) > MX_HEADER
    client = harness.raw()
    client.feed(b"EHLO client.test\r\n", 1)
    reply = client.feed(
        b"MAIL FROM:<someone@remote.test> BODY=BINARYMIME\r\nRCPT TO:<%s>\r\n"
        b"BDAT %d LAST\r\n" % (ALICE.encode(), len(data)) + data, 3)
    assert reply.splitlines()[-1].startswith(b"250 2.0.0 Ok: queued as"), reply
