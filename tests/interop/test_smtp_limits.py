"""Connection limits, timeouts and the error budget, on a private instance with small limits."""

from __future__ import annotations

import socket
import time

from tests.interop.conftest import Instance


def connect(inst: Instance) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=10)
    return sock, sock.recv(1024)


def connect_ok(inst: Instance) -> socket.socket:
    """Connect once the server has noticed earlier connections closing (it counts them)."""
    for _ in range(100):
        sock, greeting = connect(inst)
        if greeting.startswith(b"220 "):
            return sock
        sock.close()
        time.sleep(0.05)
    raise AssertionError("no free connection slot")


def test_limits(fresh: Instance) -> None:
    fresh.set_config(
        "smtp",
        max_connections_per_ip=3,
        command_timeout=1.5,
        soft_error_limit=1,
        hard_error_limit=4,
        error_delay=0.2,
    )
    fresh.start()

    # per-IP connection limit: the 4th concurrent connection is refused with 421 4.7.0
    socks = [connect(fresh) for _ in range(3)]
    assert all(g.startswith(b"220 ") for _, g in socks)
    extra, greeting = connect(fresh)
    assert greeting.startswith(b"421 4.7.0")
    extra.close()
    for s, _ in socks:
        s.close()
    fresh.wait_log(r"reject ip=127\.0\.0\.1 code=421 4\.7\.0 reason=\"too many connections\"")

    # command timeout: silence gets 421 4.4.2 and the connection is closed
    sock = connect_ok(fresh)
    started = time.monotonic()
    data = sock.recv(1024)
    assert data.startswith(b"421 4.4.2")
    assert sock.recv(1024) == b""
    assert time.monotonic() - started >= 1.0
    sock.close()

    # error budget: past the hard limit the server says 421 and hangs up
    sock = connect_ok(fresh)
    sock.sendall(b"BOGUS\r\n" * 6)
    got = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    lines = got.split(b"\r\n")
    assert lines[:4] == [b"500 5.5.1 Command unrecognized"] * 4
    assert lines[4].startswith(b"421 4.7.0")
    sock.close()


def test_slow_data_bounded_by_data_timeout(fresh: Instance) -> None:
    fresh.set_config("smtp", data_timeout=1.0)
    fresh.start()
    sock, _ = connect(fresh)
    sock.sendall(b"EHLO slow.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    got = b""
    while got.count(b"\r\n") < 10:  # EHLO lines + 3 replies
        got += sock.recv(4096)
        if b"354 " in got:
            break
    sock.sendall(b"Subject: slow\r\n")
    assert sock.recv(1024).startswith(b"421 4.4.2")
    sock.close()
    assert fresh.messages("alice@example.test") == []


def test_graceful_stop_says_421(fresh: Instance) -> None:
    fresh.start()
    sock, _ = connect(fresh)
    fresh.stop()
    assert sock.recv(1024).startswith(b"421 4.3.2")
    sock.close()
