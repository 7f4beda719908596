"""A real clamd (Debian's clamav-daemon) on loopback for the antivirus tests, with a local
signature database made here (nothing can be downloaded): the EICAR string anywhere in a file
(a body signature, .ndb: in a mail's text part too, whose decoded content is more than the
68 octets), and the ClamAV test file that every file of clamav-testfiles
(/usr/share/clamav-testfiles) holds, as an MD5 hash signature (.hdb). clamd reports a local
signature's name with ``.UNOFFICIAL`` added."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

#: The EICAR anti-malware test file (https://www.eicar.org), 68 octets.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature.Local.UNOFFICIAL"
TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = TESTFILES / "clam.exe"
CLAM_NAME = "ClamAV-Test-File.Local.UNOFFICIAL"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hdb(data: bytes, name: str) -> str:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"


class Clamd:
    """clamd in `directory`, on the unix socket `socket_path` and 127.0.0.1:`port`."""

    def __init__(self, directory: Path, stream_max: str = "4M") -> None:
        binary = shutil.which("clamd") or shutil.which("clamd", path="/usr/sbin")
        if binary is None or not CLAM_EXE.exists():
            pytest.fail("clamd or the ClamAV test files are missing: install the Debian "
                        "packages clamav-daemon and clamav-testfiles (scripts/test-deps.sh "
                        "does)", pytrace=False)
        self.binary = binary
        self.directory = directory
        self.socket_path = directory / "clamd.sock"
        self.port = free_port()
        self.address = str(self.socket_path)
        self.tcp_address = f"127.0.0.1:{self.port}"
        db = directory / "db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "local.ndb").write_text(f"Eicar-Test-Signature.Local:0:*:{EICAR.hex()}\n")
        (db / "local.hdb").write_text(_hdb(CLAM_EXE.read_bytes(), "ClamAV-Test-File.Local"))
        self.conf = directory / "clamd.conf"
        self.conf.write_text(
            f"LocalSocket {self.socket_path}\nLocalSocketMode 666\n"
            f"TCPSocket {self.port}\nTCPAddr 127.0.0.1\n"
            f"Foreground true\nDatabaseDirectory {db}\nUser root\n"
            f"LogFile {directory / 'clamd.log'}\nStreamMaxLength {stream_max}\n"
            "SelfCheck 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"clamd exited: {self.log()}")
            if self.socket_path.exists() and self._answers():
                os.chmod(self.socket_path, 0o666)
                return
            time.sleep(0.05)
        raise AssertionError(f"clamd did not start: {self.log()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"zPING\0")
                return s.recv(16) == b"PONG\0"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.directory / "clamd.log"
        return path.read_text(errors="replace") if path.exists() else ""
