"""The servers the SMTP ingest benchmark (`run.py`) measures: the `Target` interface,
a private Postfix instance and postkeep driven through its CLI, with the network helpers they
share. The variants with inbound checks and content filters are in `filtered.py`."""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
from common import (  # noqa: E402
    INIT_AS,
    LOOPBACK,
    Memory,
    TargetUnavailable,
    _tail,
    pick_port,
    run_cmd,
    set_toml_keys,
    tree_cpu_ticks,
    tree_memory,
)

DOMAIN = "bench.test"
SENDER = f"from@{DOMAIN}"
RECIPIENT = f"user@{DOMAIN}"
PASSWORD = "some-long-password-123"
IDLE_SESSIONS = 200


# -- networking helpers ---------------------------------------------------------------------------


def read_reply(sock: socket.socket) -> str:
    """Read one (possibly multi-line) SMTP reply; returns it, raises on EOF."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed (got {buf!r})")
        buf += chunk
        lines = buf.split(b"\r\n")
        # a complete reply ends with a line "NNN text" followed by CRLF
        for line in lines[:-1]:
            if len(line) >= 3 and line[:3].isdigit() and line[3:4] in (b" ", b""):
                return buf.decode("ascii", "replace")


def wait_for_smtp(port: int, timeout: float, alive: Callable[[], bool] | None = None) -> str:
    """Wait until 127.0.0.1:port answers with a 220 greeting; returns the greeting."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise TargetUnavailable("server process exited during start-up")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as s:
                greeting = read_reply(s)
                if greeting.startswith("220"):
                    s.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        read_reply(s)
                    return greeting.strip()
                last = RuntimeError(f"unexpected greeting {greeting!r}")
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise TargetUnavailable(f"port {port} did not answer with 220 within {timeout:.0f}s: {last}")


def open_idle_sessions(port: int, n: int) -> tuple[list[socket.socket], int]:
    """Open n connections, read the greeting on each; returns (sockets, number greeted with 220)."""
    socks: list[socket.socket] = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((LOOPBACK, port), timeout=30))
        except OSError as e:
            print(f"    idle session {len(socks) + 1}: connect failed: {e}", file=sys.stderr)
            break
    greeted = 0
    for s in socks:
        try:
            if read_reply(s).startswith("220"):
                greeted += 1
        except OSError as e:
            print(f"    idle session: no greeting: {e}", file=sys.stderr)
    return socks, greeted


def close_sessions(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.sendall(b"QUIT\r\n")
    for s in socks:
        with contextlib.suppress(OSError):
            s.settimeout(2)
            read_reply(s)
        s.close()


# -- targets --------------------------------------------------------------------------------------


class Target(abc.ABC):
    """A server under test. Subclasses implement setup/start/stop and report their processes."""

    name = "?"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.unavailable: str | None = None
        self.notes: list[str] = []
        self.version_str = "?"

    @abc.abstractmethod
    def setup(self) -> None:
        """Create the instance (raise TargetUnavailable if that is impossible)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def root_pid(self) -> int | None:
        """PID whose process tree is the whole server."""

    def version(self) -> str:
        return "?"

    def mark(self) -> object:
        """Opaque position taken before a run; passed back to count_delivered."""
        return None

    def count_delivered(self, mark: object) -> int | None:
        """Messages the server durably accepted since `mark`, or None if it cannot tell."""
        return None

    def drained(self, mark: object, expected: int) -> bool:
        """True once the server finished all work for the messages of a run."""
        return True

    def cpu_ticks(self) -> int:
        pid = self.root_pid()
        if pid is None:
            raise RuntimeError(f"{self.name}: server is not running")
        return tree_cpu_ticks(pid)

    def memory(self) -> Memory:
        pid = self.root_pid()
        if pid is None:
            raise RuntimeError(f"{self.name}: server is not running")
        return tree_memory(pid)


POSTFIX_MASTER_CF = """\
# private benchmark instance: no chroot, smtpd on loopback only
{listen} inet n - n - {smtpd_limit} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN_CF = """\
# private benchmark instance, generated by bench/smtp_ingest/run.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{domain}
mydomain = {domain}
myorigin = $mydomain
mynetworks = 127.0.0.0/8
# mail for the bench domain is "local": validated against a recipient map, then handed to the
# discard(8) transport. cleanup(8) has fsync'd the queue file before smtpd answers 250.
mydestination = {domain}
local_recipient_maps = inline:{{ {{{recipient} = ok}} }}
local_transport = discard:local
default_transport = discard:default
relay_transport = discard:relay
alias_maps =
alias_database =
# an MX: only the bench domain, no relaying (not even for mynetworks)
smtpd_relay_restrictions = reject_unauth_destination
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
biff = no
append_dot_mydomain = no
# 50 parallel sessions plus 200 idle ones must not be throttled
default_process_limit = 200
smtpd_client_connection_count_limit = 1000
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
# logging into a private file through postlogd(8)
maillog_file = {maillog}
maillog_file_prefixes = {base}
"""

QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")


class PostfixTarget(Target):
    """A private Postfix instance: own config, queue and data directories, loopback only."""

    name = "postfix"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.config_dir = workdir / "etc"
        self.queue_dir = workdir / "spool"
        self.data_dir = workdir / "data"
        self.maillog = workdir / "maillog"
        self.started = False

    def _postfix(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cmd(["postfix", "-c", str(self.config_dir), *args], timeout=timeout)

    def version(self) -> str:
        try:
            r = run_cmd(["postconf", "-d", "-h", "mail_version"])
        except (OSError, subprocess.SubprocessError):
            return "?"
        return f"Postfix {r.stdout.strip() or '?'}"

    def setup(self) -> None:
        if os.geteuid() != 0:
            raise TargetUnavailable("Postfix needs root to start")
        if not shutil.which("postfix"):
            raise TargetUnavailable("postfix is not installed")
        self.port = pick_port()
        self.workdir.mkdir(mode=0o755)
        for d in (self.config_dir, self.queue_dir):
            d.mkdir(mode=0o755)
        # The daemons run as `postfix` and chdir into the queue directory, so every parent
        # directory must be searchable by it; `post-install create-missing` (run by
        # `postfix start`) creates the queue subdirectories and data_directory with the right
        # owners and modes.
        (self.config_dir / "main.cf").write_text(
            POSTFIX_MAIN_CF.format(
                queue=self.queue_dir,
                data=self.data_dir,
                domain=DOMAIN,
                recipient=RECIPIENT,
                maillog=self.maillog,
                base=self.workdir,
            )
        )
        (self.config_dir / "master.cf").write_text(
            POSTFIX_MASTER_CF.format(
                listen=f"{LOOPBACK}:{self.port}", smtpd_limit=IDLE_SESSIONS + 50
            )
        )
        r = self._postfix("check")
        if r.returncode != 0:
            raise TargetUnavailable(f"postfix check failed: {(r.stdout + r.stderr).strip()}")

    def start(self) -> None:
        self.started = True  # from here on stop() must run, even if start fails half-way
        r = self._postfix("start")
        if r.returncode != 0:
            raise TargetUnavailable(f"postfix start failed: {(r.stdout + r.stderr).strip()}")
        wait_for_smtp(self.port, 30)

    def root_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def stop(self) -> None:
        if not self.started:
            return
        pid = self.root_pid()
        r = self._postfix("stop", timeout=60)
        if r.returncode != 0:
            print(f"  postfix stop: {(r.stdout + r.stderr).strip()}", file=sys.stderr)
        # `postfix stop` already escalates to SIGKILL of the master's process group; make
        # sure nothing of this instance survives.
        if pid is not None:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.started = False

    def mark(self) -> object:
        try:
            return self.maillog.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, mark: object) -> str:
        assert isinstance(mark, int)
        try:
            with open(self.maillog, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_counts(self, mark: object) -> dict[str, int]:
        """Counts of interesting maillog events since `mark`."""
        text = self._log_since(mark)
        return {
            "queued": len(re.findall(r"postfix/cleanup\[\d+\]: \w+: message-id=", text)),
            "sent": len(re.findall(r" status=sent ", text)),
            "removed": len(re.findall(r"postfix/qmgr\[\d+\]: \w+: removed", text)),
            "rejected": len(re.findall(r"NOQUEUE: reject:", text)),
            "bounced": len(re.findall(r" status=(?:bounced|deferred) ", text)),
        }

    def queue_empty(self) -> bool:
        for sub in QUEUE_SUBDIRS:
            d = self.queue_dir / sub
            if d.exists() and any(p.is_file() for p in d.rglob("*")):
                return False
        return True

    def count_delivered(self, mark: object) -> int | None:
        # a message counts once cleanup queued it AND the discard transport consumed it
        c = self.log_counts(mark)
        return min(c["queued"], c["sent"], c["removed"])

    def drained(self, mark: object, expected: int) -> bool:
        return self.queue_empty() and (self.count_delivered(mark) or 0) >= expected


class PostkeepTarget(Target):
    """postkeep, driven through its CLI (`init`, `user add`, `serve`)."""

    name = "postkeep"
    # listener offsets relative to --base-port that must be free (SMTP MX is +25)
    PORT_OFFSETS = (25, 80, 110, 143, 443, 465, 587, 993, 995, 4190)

    def __init__(self, workdir: Path, exe: Path) -> None:
        super().__init__(workdir)
        self.exe = exe
        self.instance = workdir / "instance"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "serve.log"

    def _cli(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return run_cmd([str(self.exe), *args], input_text=input_text, cwd=self.workdir)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetUnavailable(f"{self.exe} {args[0]}: {e}") from e

    def version(self) -> str:
        """Which code runs: git HEAD, uncommitted changes and a hash of src/postkeep/**.py.

        Taken right before `serve` starts (the tree may be edited while the bench runs).
        """
        src = REPO / "src" / "postkeep"
        digest = hashlib.sha256()
        for path in sorted(src.rglob("*.py")):
            digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
        parts = []
        try:
            head = run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=10)
            dirty = run_cmd(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            parts.append(f"git {head.stdout.strip() or 'none'}")
            if n := len(dirty.stdout.splitlines()):
                parts.append(f"{n} uncommitted file(s) in src/")
        parts.append(f"src/postkeep sha256 {digest.hexdigest()[:12]}")
        return ", ".join(parts)

    def setup(self) -> None:
        if not self.exe.exists():
            raise TargetUnavailable(f"{self.exe} not found")
        self.workdir.mkdir(mode=0o755)
        base = pick_port(self.PORT_OFFSETS, 10000, 32000 - max(self.PORT_OFFSETS))
        r = self._cli(
            "init", str(self.instance), "--hostname", DOMAIN, "--domain", DOMAIN,
            "--base-port", str(base), *INIT_AS,
        )  # fmt: skip
        if r.returncode != 0:
            raise TargetUnavailable(f"postkeep init failed: {_tail(r.stdout + r.stderr)}")
        self.port = base + 25
        self._tune_config()
        r = self._cli(
            "--dir", str(self.instance), "user", "add", RECIPIENT, "--password-stdin",
            input_text=PASSWORD + "\n",
        )  # fmt: skip
        if r.returncode != 0:
            raise TargetUnavailable(f"postkeep user add failed: {_tail(r.stdout + r.stderr)}")

    def _tune_config(self) -> None:
        """Lift per-client limits (like for Postfix): all load comes from 127.0.0.1."""
        path = self.instance / "postkeep.toml"
        if not path.exists():
            found = sorted(self.instance.glob("*.toml"))
            if not found:
                self.notes.append("no *.toml in the instance: per-IP connection limit not raised")
                return
            path = found[0]
        original = path.read_text()
        text = set_toml_keys(
            original,
            "smtp",
            {"max_connections": str(IDLE_SESSIONS * 5), "max_connections_per_ip": "1000"},
        )
        # the memory measure's idle sessions end before MAIL: pre-auth strikes for [bans]
        text = set_toml_keys(text, "bans", {"never_ban": '["127.0.0.1/32"]'})
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.notes.append(f"could not raise connection limits in {path.name}: {e}")
            return
        path.write_text(text)
        for addr in conf.get("smtp", {}).get("listen", []):
            host, _, port = str(addr).rpartition(":")
            if host in (LOOPBACK, "localhost", "0.0.0.0") and port.isdigit():
                self.port = int(port)
                break
        self.notes.append(
            f"{path.name}: smtp.max_connections_per_ip=1000, "
            f"smtp.max_connections={IDLE_SESSIONS * 5}, bans.never_ban=127.0.0.1/32"
        )

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open by the child
        try:
            self.proc = subprocess.Popen(
                [str(self.exe), "--dir", str(self.instance), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it ourselves
            )
        except OSError as e:
            raise TargetUnavailable(f"cannot run postkeep serve: {e}") from e
        finally:
            log.close()
        try:
            wait_for_smtp(self.port, 60, alive=lambda: self.root_pid() is not None)
        except TargetUnavailable as e:
            raise TargetUnavailable(f"{e}; serve log: {_tail(self.serve_log())}") from e

    def serve_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def root_pid(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # children left in the session (if any)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def mark(self) -> object:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def count_delivered(self, mark: object) -> int | None:
        """Messages that `serve` logged as accepted since `mark`, None if it logs none at all.

        Relies on the log line `postkeep.smtp: message qid=... result="250 ..."` (one per
        message with one recipient). A query of the store would be the stronger check.
        """
        assert isinstance(mark, int)
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        lines = re.findall(r"postkeep\.smtp: message .*", text)
        if not lines:
            return None  # log format unknown (or changed): cannot tell
        return sum(1 for line in lines if 'result="250' in line)

    def drained(self, mark: object, expected: int) -> bool:
        n = self.count_delivered(mark)
        return n is None or n >= expected
