"""Clients that trickle: they send a few octets at a time, each well within the servers' read
timeouts, and record what the server says until it closes the connection.

The tests that use them assert that the server does close (and with what reply and log line),
never how fast: the deadlines they configure are small, the pauses between octets smaller
still, and a trickle long enough that it cannot end before them.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

GRACE = 15.0  # seconds to wait for the server to close once everything was sent


def connect(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to `host:port` from the loopback address `source` (Linux routes all of
    127.0.0.0/8 to the loopback interface, so each address is a distinct client to the
    server's per-IP limits)."""
    sock = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket) -> bytes:
    """One line from the server (octet by octet: nothing is read past it)."""
    line = b""
    while not line.endswith(b"\n"):
        octet = sock.recv(1)
        if not octet:
            raise AssertionError(f"connection closed after {line!r}")
        line += octet
    return line


def trickle(
    sock: socket.socket, data: bytes, interval: float, step: int = 1
) -> tuple[bytes, int]:
    """Send `data` `step` octets at a time, `interval` seconds apart, reading whatever the
    server sends meanwhile, until it closes the connection. Returns what it sent and how many
    octets of `data` went out before it closed. Fails when the server still has the
    connection open `GRACE` seconds after the last octet."""
    received = b""
    sent = 0
    while True:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        wait = interval if sent < len(data) else GRACE
        readable = pending or select.select([sock], [], [], wait)[0]
        if readable:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return received, sent
            if not chunk:
                return received, sent
            received += chunk
            continue
        if sent >= len(data):
            raise AssertionError(
                f"still connected {GRACE} s after all {sent} octets; the server said "
                f"{received!r}"
            )
        try:
            sock.sendall(data[sent : sent + step])
        except (BrokenPipeError, ConnectionResetError):
            continue  # closed: read what it said before
        sent += min(step, len(data) - sent)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


class Tricklers:
    """Connections that each trickle one octet of an endless line every `interval` seconds
    (in a thread of their own) until the server closes them or `stop()` is called."""

    def __init__(self, socks: list[socket.socket], interval: float = 0.1) -> None:
        self.socks = socks
        self.interval = interval
        self.said: dict[int, bytes] = {}  # index -> what the server sent before closing
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(len(socks))
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        sock = self.socks[index]
        received = b""
        while not self._stop.is_set():
            if select.select([sock], [], [], self.interval)[0]:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.said[index] = received
                    return
                received += chunk
                continue
            try:
                sock.sendall(b"x")
            except OSError:
                continue

    def closed(self) -> list[int]:
        """The indexes of the connections the server has closed."""
        return sorted(self.said)

    def wait_closed(self, count: int, timeout: float = 20.0) -> list[int]:
        """Wait until the server has closed `count` of the connections."""
        deadline = time.monotonic() + timeout
        while len(self.said) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the server closed {len(self.said)} of the "
                                     f"{len(self.socks)} trickling connections, not {count}")
            time.sleep(0.05)
        return self.closed()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for sock in self.socks:
            sock.close()
