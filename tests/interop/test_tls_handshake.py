"""Interop: implicit-TLS connections (RFC 8314 §3.3) hold their per-IP slot from accept on,
handshake included; a handshake that never comes is cut at `tls.handshake_timeout` and logged.

`serve` raises its open-file limit to what the connection caps need, or refuses to start.

A client refused for the limits on an implicit-TLS port is closed without a word (it waits for
a ServerHello; a plaintext refusal line would only be a TLS error to it), and logged `reject`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkeep.config.web import WebConfig
from postkeep.server.fdlimit import FD_MARGIN, FD_PER_WORKER
from tests.interop.conftest import POSTKEEP, Instance, make_instance

PER_IP = 2
HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("handshake"))
    inst.set_config("smtp", max_connections_per_ip=PER_IP)
    inst.set_config("imap", max_connections_per_ip=PER_IP)
    inst.set_config("tls", handshake_timeout=HANDSHAKE_TIMEOUT)
    inst.set_config("server", processes=1)  # one worker accepts everything (the EMFILE test)
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


# -- the open-file limit ---------------------------------------------------------------------


def _serve_with_nofile(inst: Instance, soft: int, hard: int) -> subprocess.Popen[bytes]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.Popen(
        [*POSTKEEP, "--dir", str(inst.dir), "serve"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, preexec_fn=lower,
    )


def test_serve_refuses_to_start_below_the_need(tmp_path: Path) -> None:
    inst = make_instance(tmp_path)
    proc = _serve_with_nofile(inst, 256, 512)
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text
    assert "config error: smtp.max_connections" in text
    assert "imap.max_connections" in text and "server.processes" in text
    assert "hard limit (RLIMIT_NOFILE) is 512" in text


def test_serve_raises_the_soft_limit_to_the_need(tmp_path: Path) -> None:
    inst = make_instance(tmp_path)
    inst.set_config("server", processes=1)  # max_connections: smtp 200, imap 1000, web its own
    proc = _serve_with_nofile(inst, 128, 4096)
    try:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            if "ready hostname=" in lines[-1]:
                break
        text = "".join(lines)
        need = 200 + 200 + 1000 + WebConfig().max_connections + FD_PER_WORKER + FD_MARGIN
        assert f"open files limit={need} need={need} hard=4096 process=server" in text, text
    finally:
        proc.terminate()
        proc.wait(15)


def _nofile(pid: int) -> tuple[int, int]:
    """The RLIMIT_NOFILE (soft, hard) of process `pid`, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open files limit for {pid}")


def _set_nofile(pid: int, limits: tuple[int, int]) -> None:
    """Set the RLIMIT_NOFILE of process `pid` from outside (prlimit(2)). The server runs as its
    `server.user`, and a root without CAP_SYS_RESOURCE (a container's) may only set the limits
    of processes of its own uid and gid, so the call is made as the server's user."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid, gid = (int(line.split()[1]) for line in status if line.startswith(("Uid:", "Gid:")))
    if (uid, gid) == (os.geteuid(), os.getegid()):
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        return
    subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "prlimit",
                    f"--pid={pid}", f"--nofile={limits[0]}:{limits[1]}"], check=True)


def test_accept_failures_log_one_line_per_burst(inst: Instance) -> None:
    """Out of file descriptors (EMFILE), an implicit-TLS accept is retried ten times a second;
    the burst is logged once when it starts and once when accept works again, with its count,
    not once per try. The server's open-file limit is lowered from outside (prlimit) to the
    lowest free descriptor number, so the next accept fails for real, then raised back."""
    pid = inst.worker()
    before = inst.log()
    limits = _nofile(pid)
    held = {int(p.name) for p in Path(f"/proc/{pid}/fd").iterdir()}
    lowest_free = min(set(range(max(held) + 2)) - held)  # a new descriptor takes this number
    _set_nofile(pid, (lowest_free, limits[1]))
    try:
        sock = socket.create_connection(("127.0.0.1", inst.submissions_port), timeout=10)
        inst.wait_log(r"accept failed reason=")
        time.sleep(1.5)  # some tens of failed tries
    finally:
        _set_nofile(pid, limits)
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    with sock, ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        assert tls.recv(100).startswith(b"220 ")
    m = inst.wait_log(r"accept resumed failures=(\d+) seconds=")
    assert int(m.group(1)) >= 2
    burst = inst.log()[len(before):]
    assert burst.count("accept failed") == 1, burst
