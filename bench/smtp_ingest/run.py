#!/usr/bin/env python3
"""SMTP ingest benchmark: postkeep against a private Postfix instance, driven by `smtp-source`.

Every scenario runs on every available target, alternating targets, with the same parameters.
For each run we measure the wall time of `smtp-source` (-> msgs/s), the server CPU time
(utime+stime of the server's whole process tree, including reaped children through
cutime+cstime) per message, and we check that the messages really got through. Per target we
also measure memory: idle, and with 200 connected SMTP sessions that read the greeting and sit.

Targets are plain objects with setup/start/stop/port/root_pid/count_delivered, so adding one is
a matter of writing a class. Run as root (Postfix needs it):

    .venv/bin/python bench/smtp_ingest/run.py [--quick] [--targets postfix,postkeep]

See README.md next to this file.
"""

from __future__ import annotations

import abc
import argparse
import atexit
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
from common import (  # noqa: E402
    INIT_AS,
    LOOPBACK,
    Memory,
    TargetUnavailable,
    _cell,
    _fmt,
    _raise_interrupt,
    _tail,
    no_interrupts,
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
SMTP_SOURCE = "/usr/sbin/smtp-source"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_SESSIONS = 200

# -- scenarios ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    size: int  # payload bytes (smtp-source -l), headers not included
    sessions: int  # parallel sessions (smtp-source -s)
    reuse: bool  # several messages per connection (smtp-source -d)
    full: int  # messages in a full run
    quick: int  # messages with --quick

    def count(self, quick: bool) -> int:
        return self.quick if quick else self.full


SCENARIOS = [
    Scenario("a", "5 KB, 50 sessions, 1 msg/connection", 5 * 1024, 50, False, 5000, 500),
    Scenario("b", "5 KB, 50 sessions, connection reuse (-d)", 5 * 1024, 50, True, 6000, 600),
    Scenario("c", "100 KB, 50 sessions, 1 msg/connection", 100 * 1024, 50, False, 3000, 300),
]
WARM_UP = Scenario("w", "warm-up", 1024, 10, False, 200, 50)


# -- /proc helpers --------------------------------------------------------------------------------


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


# -- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    scenario: Scenario
    target: str
    messages: int
    ok: bool
    seconds: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    drain_s: float | None = None  # after smtp-source ended, until the server was done
    counted: int | None = None
    verify: str = ""
    error: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.ok and self.seconds else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.cpu_s / self.messages if self.ok else 0.0


@dataclasses.dataclass
class MemoryResult:
    target: str
    idle: Memory
    busy: Memory | None
    sessions: int


def wait_settled(
    target: Target, mark: object, expected: int, timeout: float
) -> tuple[float | None, bool]:
    """Wait until the target finished the messages of a run and its CPU usage went quiet.

    Returns (seconds until target.drained() held, or None on timeout; whether CPU went quiet).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while not target.drained(mark, expected):
        if time.monotonic() > deadline:
            return None, False
        time.sleep(0.1)
    drained = time.monotonic() - t0
    quiet, last = 0, target.cpu_ticks()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = target.cpu_ticks()
        quiet = quiet + 1 if now - last <= 2 else 0  # <= 2 ticks in 0.5 s: idle
        last = now
    return drained, quiet >= 2


def smtp_source_argv(scn: Scenario, port: int, messages: int) -> list[str]:
    argv = [SMTP_SOURCE, "-c", "-s", str(scn.sessions), "-l", str(scn.size)]
    argv += ["-m", str(messages), "-f", SENDER, "-t", RECIPIENT, "-M", f"client.{DOMAIN}"]
    if scn.reuse:
        argv.append("-d")
    return [*argv, f"{LOOPBACK}:{port}"]


def run_smtp_source(argv: list[str], timeout: float) -> tuple[int, float, float, int, str]:
    """Run smtp-source; returns (returncode, wall s, client CPU s, DATA count, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # timeout, Ctrl-C: never leave it behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = re.findall(rb"(\d+)\r", out)
    data_done = int(counts[-1]) if counts else 0
    return proc.returncode, wall, client, data_done, err.decode("utf-8", "replace").strip()


def run_scenario(target: Target, scn: Scenario, messages: int) -> RunResult:
    res = RunResult(scn, target.name, messages, ok=False)
    if not wait_settled(target, target.mark(), 0, 120)[1]:
        target.notes.append(f"{scn.key}: server was not idle before the run")
    mark = target.mark()
    cpu0 = target.cpu_ticks()
    argv = smtp_source_argv(scn, target.port, messages)
    timeout = max(300.0, messages * 0.5)
    try:
        rc, wall, client, data_done, err = run_smtp_source(argv, timeout)
    except subprocess.TimeoutExpired:
        res.error = f"smtp-source timed out after {timeout:.0f}s"
        return res
    res.seconds, res.client_cpu_s = wall, client
    if rc != 0:
        res.error = f"smtp-source exit {rc} after {data_done} DATA: {_tail(err, 3)}"
        return res
    drained, quiet = wait_settled(target, mark, messages, max(120.0, messages * 0.05))
    res.drain_s = drained
    res.cpu_s = (target.cpu_ticks() - cpu0) / CLK_TCK
    res.counted = target.count_delivered(mark)
    res.ok = True
    verify = [f"smtp-source: {data_done} DATA, all 2xx"]
    if res.counted is not None:
        verify.append(f"server: {res.counted}/{messages}")
        if res.counted != messages:
            res.ok = False
            res.error = f"server accounted for {res.counted} of {messages} messages"
    if isinstance(target, PostfixTarget):
        c = target.log_counts(mark)
        if c["rejected"] or c["bounced"]:
            verify.append(f"rejected {c['rejected']}, bounced/deferred {c['bounced']}")
    if drained is None:
        verify.append("did not drain")
    elif not quiet:
        verify.append("CPU did not go quiet")
    res.verify = "; ".join(verify)
    return res


def safe_run(target: Target, scn: Scenario, messages: int) -> RunResult:
    """run_scenario, turning a broken target (died, /proc gone) into a failed result."""
    try:
        return run_scenario(target, scn, messages)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return RunResult(scn, target.name, messages, ok=False, error=f"{type(e).__name__}: {e}")


def measure_memory(target: Target, sessions: int) -> MemoryResult:
    time.sleep(1)
    idle = target.memory()
    socks: list[socket.socket] = []
    try:
        socks, greeted = open_idle_sessions(target.port, sessions)
        time.sleep(1)
        busy = target.memory() if greeted else None
    finally:
        close_sessions(socks)
    return MemoryResult(target.name, idle, busy, greeted)


# -- reporting ------------------------------------------------------------------------------------


def machine_info(targets: Sequence[Target]) -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    info = [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- host: nproc={os.cpu_count()}, {model}, {mem_kb // 1024} MiB RAM",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- python: {platform.python_version()}",
    ]
    for t in targets:
        status = t.version_str if not t.unavailable else "unavailable"
        info.append(f"- {t.name}: {status}")
    return info


def render(
    mode: str,
    scenarios: Sequence[Scenario],
    targets: Sequence[Target],
    results: dict[tuple[str, str], list[RunResult]],
    memory: list[MemoryResult],
    repeat: int,
    interrupted: bool,
) -> str:
    out = [f"# SMTP ingest benchmark ({mode}{', INTERRUPTED' if interrupted else ''})", ""]
    out += machine_info(targets)
    out += [
        f"- client: `{SMTP_SOURCE}` on the same machine; {repeat} run(s) per cell "
        "(median by msgs/s shown)",
        "",
        "| scenario | target | msgs | seconds | msgs/s | all runs msgs/s | ratio pk/pf "
        "| CPU ms/msg | CPU ratio | client CPU ms/msg | drain s | check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for scn in scenarios:
        medians: dict[str, RunResult] = {}
        for t in targets:
            ok = [r for r in results.get((scn.key, t.name), []) if r.ok]
            if ok:
                medians[t.name] = sorted(ok, key=lambda r: r.rate)[(len(ok) - 1) // 2]
        pf = medians.get("postfix")
        for t in targets:
            runs = results.get((scn.key, t.name), [])
            r = medians.get(t.name)
            row = [f"({scn.key}) {scn.title}", t.name]
            if r is None:
                why = runs[-1].error if runs else "not run"
                why = "unavailable" if t.unavailable else why
                out.append("| " + " | ".join([*row, *["-"] * 9, _cell(why)]) + " |")
                continue
            ratio = cpu_ratio = None
            if pf is not None and t.name != "postfix":
                ratio = r.rate / pf.rate if pf.rate else None
                cpu_ratio = r.cpu_ms_per_msg / pf.cpu_ms_per_msg if pf.cpu_ms_per_msg else None
            row += [
                str(r.messages),
                f"{r.seconds:.2f}",
                f"{r.rate:.0f}",
                " / ".join(f"{x.rate:.0f}" if x.ok else "failed" for x in runs),
                _fmt(ratio, ".2f"),
                f"{r.cpu_ms_per_msg:.2f}",
                _fmt(cpu_ratio, ".2f"),
                f"{1000 * r.client_cpu_s / r.messages:.2f}",
                _fmt(r.drain_s, ".1f"),
                _cell(r.verify),
            ]
            out.append("| " + " | ".join(row) + " |")
    out += [
        "",
        "ratio pk/pf = postkeep msgs/s / Postfix msgs/s (above 1: postkeep faster). "
        "CPU ratio = postkeep CPU/msg / Postfix CPU/msg (above 1: postkeep uses more CPU).",
        "",
        f"## Memory (idle, and with up to {IDLE_SESSIONS} idle SMTP sessions)",
        "",
        "| target | procs idle | RSS idle MiB | PSS idle MiB | sessions | procs busy "
        "| RSS busy MiB | PSS busy MiB | RSS KiB/session | PSS KiB/session |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in memory:
        b = m.busy
        per_rss = (b.rss_kb - m.idle.rss_kb) / m.sessions if b and m.sessions else None
        per_pss = (b.pss_kb - m.idle.pss_kb) / m.sessions if b and m.sessions else None
        out.append(
            f"| {m.target} | {m.idle.processes} | {m.idle.rss_kb / 1024:.1f} "
            f"| {m.idle.pss_kb / 1024:.1f} | {m.sessions} | {b.processes if b else '-'} "
            f"| {_fmt(b.rss_kb / 1024 if b else None, '.1f')} "
            f"| {_fmt(b.pss_kb / 1024 if b else None, '.1f')} "
            f"| {_fmt(per_rss, '.0f')} | {_fmt(per_pss, '.0f')} |"
        )
    notes = [f"- {t.name}: unavailable: {t.unavailable}" for t in targets if t.unavailable]
    notes += [f"- {t.name}: {n}" for t in targets for n in t.notes]
    failed = [r for runs in results.values() for r in runs if not r.ok]
    notes += [f"- failed run ({r.scenario.key}, {r.target}): {r.error}" for r in failed]
    if notes:
        out += ["", "## Notes", "", *notes]
    return "\n".join(out) + "\n"


class PostkeepChecksTarget(PostkeepTarget):
    """postkeep with every inbound check on (`[inbound]`: trusted_networks empty, so the
    load's 127.0.0.1 is judged): iprev, a DNS block list, SPF, DMARC (p=reject, SPF-aligned:
    every message passes), DKIM and ARC (none signed: each message is looked at and found unsigned),
    and a domain list over the links. The records are served by NSD on loopback
    (tests/dnsserver.py), so after the first messages every lookup is a cache hit."""

    name = "postkeep-checks"

    def setup(self) -> None:
        super().setup()
        sys.path.insert(1, str(REPO))
        from tests.dnsserver import start_auth_server  # the project's test DNS server

        nsd_dir = self.workdir / "nsd"
        nsd_dir.mkdir()
        self.nsd = start_auth_server(nsd_dir)
        atexit.register(self.nsd.stop)
        self.nsd.add_zone("test", [
            'bench TXT "v=spf1 ip4:127.0.0.1 -all"',
            '_dmarc.bench TXT "v=DMARC1; p=reject"',
            "client.bench A 127.0.0.1",
        ])
        self.nsd.add_zone("0.0.127.in-addr.arpa", [f"1 PTR client.{DOMAIN}."])
        self.nsd.add_zone("zen.test", ["2.0.0.127 A 127.0.0.2"])  # RFC 5782 §5's test entry
        self.nsd.add_zone("dbl.test", ["listed.example A 127.0.1.2"])
        path = self.instance / "postkeep.toml"
        path.write_text(path.read_text() + (
            f'\n[dns]\nnameservers = ["{self.nsd.nameserver}"]\n'
            "\n[inbound]\ntrusted_networks = []\n"
            '\n[[inbound.dnsbl]]\nzone = "zen.test"\n'
            '\n[[inbound.uribl]]\nzone = "dbl.test"\n'))
        self.notes.append("every inbound check on, records served by NSD on loopback")

    def stop(self) -> None:
        super().stop()
        log = self.serve_log()
        judged = len(re.findall(r'auth="iprev=pass spf=pass dkim=none arc=none dmarc=pass"', log))
        other = len(re.findall(r"message qid=", log)) - judged
        self.notes = [n for n in self.notes if not n.startswith("judged:")]
        self.notes.append(f"judged: {judged} messages with iprev, SPF and DMARC passing "
                          f"(DKIM and ARC none: unsigned), {other} otherwise")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small message counts (smoke test)")
    p.add_argument("--targets", default="postfix,postkeep",
                   help="comma list (postfix,postkeep,postkeep-checks)")
    p.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS), help="e.g. a,c")
    p.add_argument(
        "--repeat", type=int, default=0, help="runs per scenario and target (default 3; 1 quick)"
    )
    p.add_argument("--postkeep", type=Path, default=REPO / ".venv" / "bin" / "postkeep")
    p.add_argument("--output", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --output")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios.split(",")]
    if not Path(SMTP_SOURCE).exists():
        print(f"{SMTP_SOURCE} not found (install the postfix package)", file=sys.stderr)
        return 2
    if not scenarios or any(n not in ("postfix", "postkeep", "postkeep-checks") for n in names):
        print("unknown scenario or target", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * IDLE_SESSIONS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    # explicit, since a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    base = Path(tempfile.mkdtemp(prefix="smtp-ingest-bench-"))
    base.chmod(0o755)  # the Postfix daemons (user postfix) must reach their queue directory
    targets: list[Target] = []
    for n in names:
        if n == "postfix":
            targets.append(PostfixTarget(base / "postfix"))
        elif n == "postkeep-checks":
            targets.append(PostkeepChecksTarget(base / "postkeep-checks", args.postkeep))
        else:
            targets.append(PostkeepTarget(base / "postkeep", args.postkeep))
    results: dict[tuple[str, str], list[RunResult]] = {}
    memory: list[MemoryResult] = []
    interrupted = False
    mode = "quick" if args.quick else "full"
    repeat = args.repeat or (1 if args.quick else 3)
    print(f"work directory {base}; mode {mode}", flush=True)
    try:
        live: list[Target] = []
        for t in targets:
            print(f"[{t.name}] setting up and starting", flush=True)
            try:
                t.setup()
                t.version_str = t.version()
                t.start()
            except (TargetUnavailable, OSError, subprocess.SubprocessError) as e:
                t.unavailable = str(e)
                print(f"[{t.name}] unavailable: {e}", flush=True)
                with no_interrupts():
                    t.stop()
                continue
            print(f"[{t.name}] listening on {LOOPBACK}:{t.port}", flush=True)
            try:
                m = measure_memory(t, IDLE_SESSIONS)
            except (OSError, RuntimeError) as e:
                t.notes.append(f"memory measurement failed: {e}")
            else:
                memory.append(m)
                print(
                    f"[{t.name}] memory idle PSS {m.idle.pss_kb / 1024:.1f} MiB, {m.sessions} "
                    f"sessions PSS {m.busy.pss_kb / 1024 if m.busy else 0:.1f} MiB",
                    flush=True,
                )
            w = safe_run(t, WARM_UP, WARM_UP.count(args.quick))
            if not w.ok:
                t.notes.append(f"warm-up failed: {w.error}")
            live.append(t)
        for scn in scenarios:
            for rep in range(repeat):
                for t in live:
                    n = scn.count(args.quick)
                    if t.root_pid() is None:
                        print(f"[{t.name}] server is gone, skipping ({scn.key})", flush=True)
                        continue
                    print(f"[{t.name}] ({scn.key}) {scn.title}: {n} msgs, run {rep + 1}", end="")
                    r = safe_run(t, scn, n)
                    results.setdefault((scn.key, t.name), []).append(r)
                    if r.ok:
                        print(
                            f" -> {r.seconds:.2f}s, {r.rate:.0f} msgs/s, "
                            f"{r.cpu_ms_per_msg:.2f} CPU ms/msg, {r.verify}",
                            flush=True,
                        )
                    else:
                        print(f" -> FAILED: {r.error}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted, cleaning up", file=sys.stderr)
    finally:
        with no_interrupts():
            for t in targets:
                try:
                    t.stop()
                except Exception as e:  # keep cleaning up the others
                    print(f"[{t.name}] stop failed: {e}", file=sys.stderr)
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    report = render(mode, scenarios, targets, results, memory, repeat, interrupted)
    print()
    print(report, end="")
    if not args.no_write and not interrupted and (results or memory):
        args.output.write_text(report)
        print(f"\nwritten to {args.output}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
