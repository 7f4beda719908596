"""Real milters from Debian for the milter tests, each run in the foreground in a directory
of its own, on loopback (or a unix socket there), stopped by its PID (its process group:
rspamd forks workers):

- `OpenDkim`: opendkim signing (``Mode s``, a key made here, ``InternalHosts`` an address
  no test uses: it signs what an authenticated client submits) or verifying (``Mode v``,
  its libunbound pointed at the tests' NSD through ``ResolverConfiguration``);
- `ClamavMilter`: clamav-milter in front of a real clamd (`tests.clamd`), rejecting what
  clamd finds;
- `Rspamd`: rspamd's proxy worker in milter mode (``milter = yes``, ``self_scan``), with a
  private LOCAL_CONFDIR, its resolver pointed at a port where nothing answers, fuzzy_check
  off; a cold start takes about 25 s (its DBDIR is kept for the module).

Each is ready once it answers a milter negotiation (a raw ``O`` packet, not the code under
test)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.clamd import Clamd, free_port

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _which(name: str, package: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} "
                    "(scripts/test-deps.sh does)", pytrace=False)
    return found


def negotiates(address: str) -> bool:
    """Whether a milter at `address` answers a version 6 negotiation."""
    try:
        if address.startswith("/"):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            s.connect(address)
        else:
            host, _, port = address.rpartition(":")
            s = socket.create_connection((host, int(port)), timeout=2)
        with s:
            s.sendall(struct.pack(">IcIII", 13, b"O", 6, 0x1FF, 0x1FFFFF))
            reply = s.recv(64)
            return reply[4:5] == b"O"
    except OSError:
        return False


class Daemon:
    """A milter process: `argv` run in `directory`, ready when `address` negotiates."""

    name = "milter"

    def __init__(self, directory: Path, address: str) -> None:
        self.directory = directory
        self.address = address
        self.command: list[str] = []  # set by each kind
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = directory / f"{self.name}.out"

    def start(self, wait: float = 30) -> None:
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.directory, start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log()}")
            if negotiates(self.address):
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.name} did not answer within {wait}s: {self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


class OpenDkim(Daemon):
    """opendkim signing for example.test with `key_file` (selector `selector`), or
    verifying with DNS from `dns` ("address@port" of NSD); on a unix socket when `unix`."""

    name = "opendkim"

    def __init__(self, directory: Path, *, sign: bool, key_file: Path | None = None,
                 selector: str = "odk", dns: str = "", unix: bool = False,
                 internal: str = "192.0.2.1") -> None:
        address = str(directory / "opendkim.sock") if unix else f"127.0.0.1:{free_port()}"
        super().__init__(directory, address)
        socket_spec = f"local:{address}" if unix else f"inet:{address.rpartition(':')[2]}@127.0.0.1"
        lines = [f"Socket {socket_spec}", "Syslog no", "Background no", "UMask 000",
                 "Canonicalization relaxed/relaxed", "RequireSafeKeys no", "LogWhy yes",
                 f"PidFile {directory / 'opendkim.pid'}", f"InternalHosts {internal}",
                 f"TemporaryDirectory {directory}"]
        if sign:
            assert key_file is not None
            lines += ["Mode s", "Domain example.test", f"Selector {selector}",
                      f"KeyFile {key_file}"]
        else:
            unbound = directory / "unbound.conf"
            unbound.write_text(f"""server:
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
forward-zone:
    name: "."
    forward-addr: {dns}
""")
            lines += ["Mode v", "AlwaysAddARHeader yes", "AuthservID verifier.test",
                      f"ResolverConfiguration {unbound}"]
        self.conf = directory / "opendkim.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.command = [_which("opendkim", "opendkim"), "-f", "-x", str(self.conf)]


class ClamavMilter(Daemon):
    """clamav-milter asking `clamd` over TCP, rejecting infected mail."""

    name = "clamav-milter"

    def __init__(self, directory: Path, clamd: Clamd) -> None:
        port = free_port()
        super().__init__(directory, f"127.0.0.1:{port}")
        self.conf = directory / "clamav-milter.conf"
        self.conf.write_text(
            f"MilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:{clamd.tcp_address}\n"
            "Foreground yes\nOnClean Accept\nOnInfected Reject\nOnFail Defer\n"
            "AddHeader Replace\nLogVerbose yes\nLogInfected Basic\n"
            f"LogFile {directory / 'clamav-milter.log'}\nTemporaryDirectory {directory}\n"
            f"PidFile {directory / 'clamav-milter.pid'}\n")
        self.command = [_which("clamav-milter", "clamav-milter"), "-c", str(self.conf)]


class Rspamd(Daemon):
    """rspamd with its proxy worker in milter mode, scanning itself."""

    name = "rspamd"

    def __init__(self, directory: Path) -> None:
        port = free_port()
        super().__init__(directory, f"127.0.0.1:{port}")
        local = directory / "local.d"
        for sub in ("local.d", "db", "run", "log"):
            (directory / sub).mkdir(exist_ok=True)
        (local / "worker-proxy.inc").write_text(
            f'bind_socket = "127.0.0.1:{port}";\nmilter = yes;\ntimeout = 120s;\ncount = 1;\n'
            'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n')
        (local / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{free_port()}";\ncount = 1;\n')
        (local / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{free_port()}";\ncount = 1;\n')
        # a resolver where nothing answers: no lookup leaves the machine
        (local / "options.inc").write_text(
            f'dns {{\n  nameserver = ["127.0.0.1:{free_port()}"];\n  timeout = 1s;\n'
            '  retransmits = 1;\n}\n')
        (local / "fuzzy_check.conf").write_text("enabled = false;\n")
        (local / "logging.inc").write_text(
            f'type = "file";\nfilename = "{directory / "log" / "rspamd.log"}";\n'
            'level = "info";\n')
        d = directory
        self.command = [_which("rspamd", "rspamd"), "-f", "-i", "-u", "root", "-g", "root",
                        f"--var=LOCAL_CONFDIR={d}", f"--var=DBDIR={d / 'db'}",
                        f"--var=RUNDIR={d / 'run'}", f"--var=LOGDIR={d / 'log'}",
                        "-c", "/etc/rspamd/rspamd.conf"]


class ScriptedMilter:
    """A milter of the test's own, on loopback, for what no Debian milter does on request
    (adding and removing recipients, replacing the body, quarantine, discard): it answers
    the negotiation asking for every step and every reply, ``c`` to each command, and at
    the end of body sends `script`'s packets (code, data), in order. Written here from the
    protocol (sendmail's mfdef.h), with no code of the client's."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.commands: list[tuple[bytes, bytes]] = []  # what it received, in order
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    @staticmethod
    def _packet(code: bytes, data: bytes = b"") -> bytes:
        return struct.pack(">I", len(data) + 1) + code + data

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                length = struct.unpack(">I", buf[:4])[0]
                code, data, buf = buf[4:5], buf[5 : 4 + length], buf[4 + length :]
                self.commands.append((code, data))
                if code == b"O":
                    conn.sendall(self._packet(b"O", struct.pack(">III", 6, 0x1FF, 0)))
                elif code == b"E":
                    conn.sendall(b"".join(self._packet(c, d) for c, d in self.script))
                elif code not in (b"D", b"A", b"Q"):
                    conn.sendall(self._packet(b"c"))

    def close(self) -> None:
        self.sock.close()
