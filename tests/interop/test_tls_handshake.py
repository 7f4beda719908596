"""Interop: implicit-TLS connections (RFC 8314 §3.3) hold their per-IP slot from accept on,
handshake included; a handshake that never comes is cut at `tls.handshake_timeout` and logged.

`serve` raises its open-file limit to what the connection caps need, or refuses to start.

A client refused for the limits on an implicit-TLS port is closed without a word (it waits for
a ServerHello; a plaintext refusal line would only be a TLS error to it), and logged `reject`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.interop.conftest import Instance, make_instance

PER_IP = 2
HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("handshake"))
    inst.set_config("smtp", max_connections_per_ip=PER_IP)
    inst.set_config("imap", max_connections_per_ip=PER_IP)
    inst.set_config("tls", handshake_timeout=HANDSHAKE_TIMEOUT)
    inst.start()
    yield inst
    inst.stop()


def _port(inst: Instance, role: str) -> int:
    return inst.submissions_port if role == "submission" else inst.imaps_port


def _tls_greeting(inst: Instance, port: int) -> bytes:
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname="localhost") as tls):
        return tls.recv(200)


@pytest.mark.parametrize("role", ["submission", "imap"])
def test_silent_handshakes_hold_the_per_ip_slots(inst: Instance, role: str) -> None:
    port = _port(inst, role)
    rejects = inst.log().count('reason="too many connections"')
    timeouts = inst.log().count("tls handshake failed ip=127.0.0.1 reason=timeout")
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(PER_IP)]
    try:
        time.sleep(0.5)  # let the server take their slots
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as refused:
            # closed at once without a word: no plaintext refusal line on a TLS port
            assert refused.recv(200) == b""
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT / 2
        deadline = time.monotonic() + 5
        while inst.log().count('reason="too many connections"') <= rejects:
            assert time.monotonic() < deadline, inst.log()[-3000:]
            time.sleep(0.05)
        assert 'reject ip=127.0.0.1' in inst.log()
        # the silent ones are cut at the handshake deadline, and logged
        for sock in silent:
            assert sock.recv(200) == b""
        deadline = time.monotonic() + 5
        while inst.log().count("tls handshake failed ip=127.0.0.1 reason=timeout") < (
            timeouts + PER_IP
        ):
            assert time.monotonic() < deadline, inst.log()[-3000:]
            time.sleep(0.05)
    finally:
        for sock in silent:
            sock.close()
    # their slots are free again: a real TLS client is served
    time.sleep(0.2)
    greeting = _tls_greeting(inst, port)
    assert greeting.startswith(b"220 " if role == "submission" else b"* OK")


def test_a_failed_handshake_is_logged(inst: Instance) -> None:
    with socket.create_connection(("127.0.0.1", inst.submissions_port), timeout=10) as sock:
        sock.sendall(b"EHLO plaintext.example\r\n")
        with contextlib.suppress(ConnectionResetError):
            sock.recv(200)
    inst.wait_log(r"tls handshake failed ip=127\.0\.0\.1 reason=(?!timeout)\S+")

