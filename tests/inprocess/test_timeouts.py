"""Deadlines that octets do not extend, over the wire (issue 12, "Timeouts restart on every
byte"): a client that trickles an octet every tenth of a second, each well within the old
per-read timeouts, is still cut off once its command, its message text (below
`smtp.min_data_rate`), its login phase or its IMAP command is past its deadline; a slow but
steady client is not; a client that reads none of the replies is cut off at the same
deadlines, and its slot given back; and while trickling connections fill the connection cap, a
client from a fresh address still gets in (`slow_share`).

Every deadline here is configured small; the tests assert the replies, the closes and the log
lines, never how quickly the server acted.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from postkeep.net.slots import LocalSlots
from tests.harness import PASSWORD, Harness
from tests.inprocess.conftest import ALICE, populate
from tests.trickle import Tricklers, connect, read_line, read_to_eof, trickle

TICK = 0.1  # seconds between the octets of a trickle


def _harness(harness_factory: Any, **config: dict[str, Any]) -> Harness:
    h: Harness = harness_factory(config=config)
    populate(h)
    return h


def _smtp(h: Harness, source: str = "127.0.0.1") -> socket.socket:
    sock = connect(h.smtp_port, source)
    assert read_line(sock).startswith(b"220 "), "no greeting"
    return sock


def _replies(sock: socket.socket, n: int) -> list[bytes]:
    """The next `n` final reply lines (continuation lines skipped)."""
    out: list[bytes] = []
    while len(out) < n:
        line = read_line(sock)
        if line[3:4] == b" ":
            out.append(line)
    return out


def _in_data(sock: socket.socket, command: bytes) -> None:
    """Start a transaction to alice and send `command` (DATA; BDAT waits for its chunk)."""
    sock.sendall(b"EHLO client.example.net\r\nMAIL FROM:<a@remote.test>\r\n"
                 b"RCPT TO:<" + ALICE.encode() + b">\r\n")
    assert [r[:3] for r in _replies(sock, 3)] == [b"250"] * 3
    sock.sendall(command)
    if command.startswith(b"DATA"):
        assert _replies(sock, 1)[0].startswith(b"354 ")


# -- SMTP ---------------------------------------------------------------------------------------


def test_smtp_command_trickled_past_its_deadline_gets_421(harness_factory: Any) -> None:
    h = _harness(harness_factory, smtp={"command_timeout": 1.0})
    with _smtp(h) as sock:
        line = b"EHLO " + b"x" * 300 + b"\r\n"  # 30 s of trickle: it cannot end first
        said, sent = trickle(sock, line, TICK)
    assert said.startswith(b"421 4.4.2 "), said
    assert sent < len(line)
    assert h.log_lines(r'postkeep\.smtp: reject ip=127\.0\.0\.1 cmd=- code=421 4\.4\.2 '
                       r'reason="command timeout"')


@pytest.mark.parametrize("command", [b"DATA\r\n", b"BDAT 100000 LAST\r\n"])
def test_smtp_message_text_below_the_minimum_rate_gets_421(
    harness_factory: Any, command: bytes
) -> None:
    """data_timeout 1 s, min_data_rate 500 octets/s (the default): an octet per tick is cut
    once the 1 s of grace is spent, while a client sending 20 KB/s for 3 s (longer than every
    deadline configured) delivers its message."""
    h = _harness(harness_factory, smtp={"command_timeout": 1.0, "data_timeout": 1.0})
    before = len(h.messages(ALICE))
    body = b"Subject: slow but steady\r\n\r\n" + b"y" * 58 + b"\r\n" + (b"z" * 1998 + b"\r\n") * 29
    with _smtp(h) as sock:
        if command.startswith(b"BDAT"):
            _in_data(sock, b"BDAT %d LAST\r\n" % len(body))
            text = body
        else:
            _in_data(sock, command)
            text = body + b".\r\n"
        for i in range(0, len(text), 2000):
            sock.sendall(text[i : i + 2000])
            time.sleep(TICK)
        assert _replies(sock, 1)[0].startswith(b"250 2.0.0 "), "the steady client failed"
    assert len(h.messages(ALICE)) == before + 1

    trickled = b"Subject: trickle\r\n" * 20  # 36 s of it
    with _smtp(h) as sock:
        _in_data(sock, command)
        said, sent = trickle(sock, trickled, TICK)
    assert said.startswith(b"421 4.4.2 "), said
    assert sent < len(trickled)
    assert h.log_lines(r'postkeep\.smtp: reject ip=127\.0\.0\.1 cmd=- code=421 4\.4\.2 '
                       r'reason="data rate below min_data_rate"')
    assert len(h.messages(ALICE)) == before + 1


def test_smtp_fresh_address_gets_in_while_trickling_connections_fill_the_cap(
    harness_factory: Any,
) -> None:
    """6 connections in all, 3 per address: two addresses trickling take all 6 slots. Slow
    connections may hold half of them: past `slow_after`, 3 are refused a slow slot (421
    4.4.2) while the other 3 go on trickling, and a third address delivers a message."""
    h = _harness(harness_factory, smtp={"max_connections": 6, "max_connections_per_ip": 3,
                                        "slow_after": 1.0, "slow_share": 0.5})
    socks = [_smtp(h, f"127.0.0.{2 + i // 3}") for i in range(6)]
    tricklers = Tricklers(socks, TICK)
    try:
        closed = tricklers.wait_closed(3)
        assert len(closed) == 3
        for i in closed:
            assert tricklers.said[i].startswith(b"421 4.4.2 "), tricklers.said[i]
        rejects = h.log_lines(r'reject ip=127\.0\.0\.[23] cmd=- code=421 4\.4\.2 '
                              r'reason="too many slow connections"')
        assert len(rejects) == 3
        before = len(h.messages(ALICE))
        with smtplib.SMTP("127.0.0.1", h.smtp_port, local_hostname="fresh.example.net",
                          timeout=30, source_address=("127.0.0.4", 0)) as client:
            client.sendmail("a@remote.test", [ALICE], b"Subject: fresh\r\n\r\nin\r\n")
        assert len(h.messages(ALICE)) == before + 1
        assert tricklers.closed() == closed  # the other three still hold their slots
    finally:
        tricklers.stop()


def test_smtp_client_that_reads_no_replies_is_cut_at_the_command_deadline(
    harness_factory: Any,
) -> None:
    """Replies are part of the command's deadline (as Postfix's per-request deadline): a
    client that pipelines HELP after HELP and never reads the replies cannot keep the server
    waiting to write them (and so its slot) past `command_timeout`."""
    h = _harness(harness_factory, smtp={"command_timeout": 1.0})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", h.smtp_port))
    try:
        assert read_line(sock).startswith(b"220 ")
        with contextlib.suppress(TimeoutError, OSError):  # the server stops reading
            sock.sendall(b"HELP\r\n" * 100_000)  # 600 KB for 9 MB of replies
        _wait_log(h, r'reject ip=127\.0\.0\.1 cmd=- code=421 4\.4\.2 reason="command timeout"')
        _wait_log(h, r"disconnect ip=127\.0\.0\.1 .*reason=timeout")
        mx = h.mx
        assert mx is not None
        _wait_until(lambda: h.on_loop(lambda: mx.slots.count) == 0, "its slot is still held")
        assert read_to_eof(sock).startswith(b"214 2.0.0 ")  # what it had left unread
    finally:
        sock.close()


def _wait_log(h: Harness, pattern: str) -> None:
    _wait_until(lambda: bool(h.log_lines(pattern)), f"no log line {pattern!r}")


def _wait_until(check: Callable[[], bool], failure: str = "", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, failure or "the server did not"
        time.sleep(0.05)


# -- IMAP ---------------------------------------------------------------------------------------


def _imap(h: Harness, source: str = "127.0.0.1") -> socket.socket:
    sock = connect(h.imap_port, source)
    assert read_line(sock).startswith(b"* OK "), "no greeting"
    return sock


def _imaps_logged_in(h: Harness) -> ssl.SSLSocket:
    raw = connect(h.imaps_port)
    sock = h.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
    assert read_line(sock).startswith(b"* OK ")
    sock.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
    while not (line := read_line(sock)).startswith(b"a1 "):
        pass
    assert line.startswith(b"a1 OK "), line
    return sock


@pytest.mark.parametrize("how", ["one line", "whole commands"])
def test_imap_login_phase_has_one_deadline(harness_factory: Any, how: str) -> None:
    """login_timeout is the time from connect to logged in: neither the octets of a trickled
    line nor whole commands (NOOP, every tick) extend it."""
    h = _harness(harness_factory, imap={"login_timeout": 1.0})
    trickled = b"a1 LOGIN " + b"x" * 300 + b"\r\n" if how == "one line" else b"a NOOP\r\n" * 300
    with _imap(h) as sock:
        said, sent = trickle(sock, trickled, TICK, step=1 if how == "one line" else 8)
    assert said.endswith(b"* BYE Login timeout\r\n"), said
    assert sent < len(trickled)
    assert h.log_lines(r'postkeep\.imap: reject ip=127\.0\.0\.1 user=- reason="login timeout"')


def test_imap_command_trickled_past_its_deadline_gets_bye(harness_factory: Any) -> None:
    h = _harness(harness_factory, imap={"command_timeout": 1.0})
    trickled = b"a2 SELECT " + b"x" * 300 + b"\r\n"
    with _imaps_logged_in(h) as sock:
        said, sent = trickle(sock, trickled, TICK)
    assert said == b"* BYE Command timeout\r\n", said
    assert sent < len(trickled)
    assert h.log_lines(r'postkeep\.imap: reject ip=127\.0\.0\.1 user=alice@example\.test '
                       r'reason="command timeout"')


def test_imap_literal_below_the_minimum_rate_gets_bye(harness_factory: Any) -> None:
    """command_timeout 1 s plus 1 s per 500 octets of literal (min_data_rate's default): a
    60 KB APPEND sent at 20 KB/s for 3 s gets in; a 1000-octet literal trickled does not."""
    h = _harness(harness_factory, imap={"command_timeout": 1.0})
    message = b"Subject: steady\r\n\r\n" + (b"z" * 1998 + b"\r\n") * 30
    before = len(h.messages(ALICE))
    with _imaps_logged_in(h) as sock:
        sock.sendall(b"a2 APPEND INBOX {%d}\r\n" % len(message))
        assert read_line(sock).startswith(b"+ ")
        for i in range(0, len(message), 2000):
            sock.sendall(message[i : i + 2000])
            time.sleep(TICK)
        sock.sendall(b"\r\n")
        assert read_line(sock).startswith(b"a2 OK "), "the steady APPEND failed"
        sock.sendall(b"a3 APPEND INBOX {1000}\r\n")
        assert read_line(sock).startswith(b"+ ")
        said, sent = trickle(sock, b"Subject: trickle\r\n" * 60, TICK)
    assert said == b"* BYE Command timeout\r\n", said
    assert sent < 1000
    assert len(h.messages(ALICE)) == before + 1


def test_imap_fresh_address_gets_in_while_trickling_connections_fill_the_cap(
    harness_factory: Any,
) -> None:
    h = _harness(harness_factory, imap={"max_connections": 6, "max_connections_per_ip": 3,
                                        "slow_after": 1.0, "slow_share": 0.5})
    socks = [_imap(h, f"127.0.0.{2 + i // 3}") for i in range(6)]
    tricklers = Tricklers(socks, TICK)
    try:
        closed = tricklers.wait_closed(3)
        for i in closed:
            assert tricklers.said[i] == b"* BYE [UNAVAILABLE] Too many slow connections\r\n"
        rejects = h.log_lines(r'postkeep\.imap: reject ip=127\.0\.0\.[23] user=- '
                              r'reason="too many slow connections"')
        assert len(rejects) == 3
        with _imap(h, "127.0.0.4") as sock:
            sock.sendall(b"a1 NOOP\r\n")
            assert read_line(sock) == b"a1 OK NOOP completed\r\n"
        assert tricklers.closed() == closed
    finally:
        tricklers.stop()


def test_imap_client_that_reads_no_responses_is_cut_at_the_login_deadline(
    harness_factory: Any,
) -> None:
    """Writing the responses is part of the deadlines: a client that pipelines CAPABILITY
    after CAPABILITY and never reads cannot keep the server waiting to write them (and so
    its slot) past `login_timeout`."""
    h = _harness(harness_factory, imap={"login_timeout": 1.0, "command_rate": 1e6})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", h.imap_port))
    try:
        assert read_line(sock).startswith(b"* OK ")
        with contextlib.suppress(TimeoutError, OSError):  # the server stops reading
            sock.sendall(b"a CAPABILITY\r\n" * 100_000)  # 1.4 MB for 12 MB of responses
        _wait_log(h, r'postkeep\.imap: reject ip=127\.0\.0\.1 user=- reason="login timeout"')
        _wait_log(h, r'postkeep\.imap: disconnect ip=127\.0\.0\.1 .*reason="login timeout"')
        slots = h.imap.slots if h.imap is not None else None
        assert isinstance(slots, LocalSlots)
        _wait_until(lambda: h.on_loop(lambda: slots.connections.count) == 0,
                    "its slot is still held")
        assert read_to_eof(sock).startswith(b"* CAPABILITY ")  # what it had left unread
    finally:
        sock.close()



def test_imap_client_that_stops_reading_a_fetch_is_cut_at_the_command_deadline(
    harness_factory: Any,
) -> None:
    """A FETCH streams its responses in 256 KiB steps, each a wait on the client: a client
    that stops reading is cut `command_timeout` into a wait (before: it held its slot, its
    command and the blob it streamed from for as long as it liked)."""
    h = _harness(harness_factory, imap={"command_timeout": 1.0})
    client = h.imaps(ALICE)
    body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2000  # 2 MB
    for _ in range(5):
        assert client.append("INBOX", None, None, body)[0] == "OK"
    client.logout()
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", h.imaps_port))
    sock = h.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        assert read_line(sock).startswith(b"* OK ")
        sock.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\na2 SELECT INBOX\r\n'.encode())
        while not read_line(sock).startswith(b"a2 OK"):
            pass
        sock.sendall(b"a3 FETCH 1:* BODY[]\r\n")  # 10 MB of responses, never read
        _wait_log(h, r'postkeep\.imap: reject ip=127\.0\.0\.1 user=alice@example\.test '
                     r'reason="send timeout"')
        _wait_log(h, r'postkeep\.imap: disconnect ip=127\.0\.0\.1 .*reason=')
        slots = h.imap.slots if h.imap is not None else None
        assert isinstance(slots, LocalSlots)
        _wait_until(lambda: h.on_loop(lambda: slots.connections.count) == 0,
                    "its slot is still held")
    finally:
        sock.close()


def test_imap_announced_literal_earns_no_time_before_its_octets_come(
    harness_factory: Any,
) -> None:
    """The command deadline grows with the literal octets received, not announced: an APPEND
    of `{10000000}` followed by silence is cut at `command_timeout` (before: 1 s plus 20,000 s
    for the octets it had only announced)."""
    h = _harness(harness_factory, imap={"command_timeout": 1.0})
    with _imaps_logged_in(h) as sock:
        sock.sendall(b"a2 APPEND INBOX {10000000}\r\n")
        assert read_line(sock).startswith(b"+ ")
        assert read_line(sock) == b"* BYE Command timeout\r\n"
    assert h.log_lines(r'postkeep\.imap: reject ip=127\.0\.0\.1 user=alice@example\.test '
                       r'reason="command timeout"')
