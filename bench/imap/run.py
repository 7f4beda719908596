#!/usr/bin/env python3
"""IMAP benchmark: postkeep against a private Dovecot instance, same users, same mail.

Three measurements, each on every available target (targets alternate, one server runs at a
time): an `imaptest` stress run (commands/s and server CPU per command), the memory of N
authenticated connections sitting in IDLE over implicit TLS (PSS KiB per connection), and a
large mailbox (APPEND of many small messages, then SELECT and FETCH 1:* (FLAGS UID) times).

Run as root (Dovecot starts as root and drops privileges), stdlib only:

    .venv/bin/python bench/imap/run.py [--quick] [--targets dovecot,postkeep]

See README.md next to this file.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
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
PASSWORD = "some-long-password-123"
USER_TEMPLATE = "user%d@" + DOMAIN  # imaptest's user=; users are 1..--users
BIG_USER = f"big@{DOMAIN}"
BIG_MAILBOX = "big"
DOVECOT = Path("/usr/sbin/dovecot")
IMAPTEST = Path("/work/imaptest/src/imaptest")
IMAPTEST_ENV = {"LD_LIBRARY_PATH": "/usr/lib/dovecot"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_CONCURRENCY = 200  # connections being set up at the same time
MBOX_MESSAGES = 1000
MBOX_SEED = 20240601

# imaptest's short column names (client-state.c) -> command
IMAPTEST_NAMES = {
    "Logi": "LOGIN",
    "List": "LIST",
    "Stat": "STATUS",
    "Sele": "SELECT",
    "Fetc": "FETCH",
    "Fet2": "FETCH2 (bodies)",
    "Stor": "STORE",
    "Dele": "STORE \\Deleted",
    "Expu": "EXPUNGE",
    "Appe": "APPEND",
    "Logo": "LOGOUT",
    "Copy": "COPY",
    "Sear": "SEARCH",
    "Sort": "SORT",
    "Thre": "THREAD",
    "UIDF": "UID FETCH",
    "Noop": "NOOP",
    "Chec": "CHECK",
    "Auth": "AUTHENTICATE",
}


def user_name(i: int) -> str:
    return USER_TEMPLATE % i


# -- /proc helpers (as in bench/smtp_ingest) ------------------------------------------------------


# -- small helpers --------------------------------------------------------------------------------


def tls_client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def imap_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BenchError(Exception):
    """A measurement failed (reported in its table, the run goes on)."""


def wait_for_imap(port: int, timeout: float, alive: Callable[[], bool]) -> str:
    """Wait until 127.0.0.1:port answers an implicit-TLS IMAP greeting; returns it."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    ctx = tls_client_context()
    while time.monotonic() < deadline:
        if not alive():
            raise TargetUnavailable("server process exited during start-up")
        try:
            with (
                socket.create_connection((LOOPBACK, port), timeout=5) as raw,
                ctx.wrap_socket(raw) as s,
            ):
                greeting = s.recv(4096).decode("utf-8", "replace")
                if greeting.startswith("* OK"):
                    s.sendall(b"z LOGOUT\r\n")
                    return greeting.strip()
                last = RuntimeError(f"unexpected greeting {greeting!r}")
        except (OSError, ssl.SSLError) as e:
            last = e
        time.sleep(0.2)
    raise TargetUnavailable(f"port {port}: no TLS IMAP greeting within {timeout:.0f}s: {last}")


# -- test mail ------------------------------------------------------------------------------------

_WORDS_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can out up about into than them some could what its only other new time these may "
    "meeting budget quarterly report attached please review draft proposal deadline schedule "
    "server migration backup invoice customer release notes feedback agenda minutes project "
    "update thanks regards tomorrow friday contract payment shipping order delivery question"
)
_NAMES_TEXT = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Oscar Peggy Trent"
_LAST_TEXT = "Smith Jones Brown Taylor Wilson Evans Thomas Roberts Walker Wright Hall Green"
_WORDS, _FIRST, _LAST = (t.split() for t in (_WORDS_TEXT, _NAMES_TEXT, _LAST_TEXT))
_ORGS = ("example.com", "example.org", "mail.example.net", "corp.example", "lists.example.com")
_ATTACH = (
    ("report.pdf", "application/pdf"),
    ("photo.jpg", "image/jpeg"),
    ("data.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("archive.zip", "application/zip"),
    ("notes.txt", "text/plain"),
)


def _text(rng: random.Random, size: int) -> str:
    """About `size` bytes of wrapped prose (lines <= 76 characters, LF endings)."""
    lines: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(_WORDS, k=rng.randrange(6, 13))
        line = " ".join(words).capitalize() + rng.choice((".", ",", "", "?"))
        if line.startswith("From "):
            line = ">" + line
        lines.append(line)
        total += len(line) + 1
        if rng.random() < 0.12:
            lines.append("")
    return "\n".join(lines) + "\n"


def _b64_lines(data: bytes) -> str:
    import base64

    enc = base64.b64encode(data).decode()
    return "\n".join(enc[i : i + 76] for i in range(0, len(enc), 76)) + "\n"


def make_message(rng: random.Random, i: int, when: dt.datetime, size: int) -> tuple[str, str]:
    """One realistic message (LF line endings) and its envelope sender."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    sender = f"{first.lower()}.{last.lower()}@{rng.choice(_ORGS)}"
    to = f"user{rng.randrange(1, 50)}@{DOMAIN}"
    subject = " ".join(rng.choices(_WORDS, k=rng.randrange(3, 9))).capitalize()
    if rng.random() < 0.3:
        subject = "Re: " + subject
    mid = f"<{i}.{rng.getrandbits(48):012x}@{sender.split('@')[1]}>"
    date = when.strftime("%a, %d %b %Y %H:%M:%S +0000")
    hdr = [
        f"Return-Path: <{sender}>",
        f"Received: from mail.{sender.split('@')[1]} (mail.{sender.split('@')[1]} "
        f"[192.0.2.{rng.randrange(1, 255)}])",
        f"\tby mx.{DOMAIN} with ESMTPS id {rng.getrandbits(40):010x}",
        f"\tfor <{to}>; {date}",
        f"From: {first} {last} <{sender}>",
        f"To: <{to}>",
    ]
    if rng.random() < 0.3:
        hdr.append(f"Cc: {rng.choice(_FIRST)} <{rng.choice(_FIRST).lower()}@{rng.choice(_ORGS)}>")
    hdr += [f"Subject: {subject}", f"Date: {date}", f"Message-ID: {mid}"]
    if subject.startswith("Re: "):
        ref = f"<{rng.getrandbits(48):012x}@{rng.choice(_ORGS)}>"
        hdr += [f"In-Reply-To: {ref}", f"References: {ref}"]
    hdr += ["MIME-Version: 1.0", "X-Mailer: bench-imap-generator 1.0"]
    if rng.random() < 0.35 and size > 4000:  # multipart with an attachment
        boundary = f"=_bench_{rng.getrandbits(64):016x}"
        text_size = rng.randrange(300, max(400, size // 4))
        name, ctype = rng.choice(_ATTACH)
        blob = rng.randbytes(max(100, (size - text_size) * 3 // 4))
        hdr.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (
            "This is a multi-part message in MIME format.\n\n"
            f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n{_text(rng, text_size)}\n"
            f'--{boundary}\nContent-Type: {ctype}; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            f"Content-Transfer-Encoding: base64\n\n{_b64_lines(blob)}\n--{boundary}--\n"
        )
    else:
        hdr += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = _text(rng, max(100, size - sum(len(h) + 2 for h in hdr) - 2))
    return "\n".join(hdr) + "\n\n" + body, sender


def make_mbox(path: Path, count: int = MBOX_MESSAGES, seed: int = MBOX_SEED) -> list[bytes]:
    """Write a deterministic mbox of `count` messages (1-50 KB, log-uniform sizes).

    Returns the messages with CRLF line endings (for APPEND).
    """
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC)
    messages: list[bytes] = []
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in range(count):
            when = start + dt.timedelta(minutes=47 * i + rng.randrange(40))
            size = int(1024 * 50 ** rng.random())
            text, sender = make_message(rng, i, when, size)
            f.write(
                f"From {sender} {when.strftime('%a %b')} {when.day:2d} "
                f"{when.strftime('%H:%M:%S %Y')}\n{text}\n"
            )
            # imaptest APPENDs everything up to the next From line, blank separator included
            messages.append((text + "\n").replace("\n", "\r\n").encode())
    return messages


def small_messages(count: int, seed: int = 7) -> Iterator[bytes]:
    """`count` small (~0.5-1.5 KB) distinct messages for the large-mailbox test, CRLF."""
    rng = random.Random(seed)
    start = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    for i in range(count):
        when = start + dt.timedelta(seconds=97 * i)
        sender = f"{rng.choice(_FIRST).lower()}@{rng.choice(_ORGS)}"
        body = " ".join(rng.choices(_WORDS, k=rng.randrange(20, 160)))
        body = "\r\n".join(body[j : j + 72] for j in range(0, len(body), 72))
        yield (
            f"From: <{sender}>\r\nTo: <{BIG_USER}>\r\n"
            f"Subject: message {i} {' '.join(rng.choices(_WORDS, k=4))}\r\n"
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <big.{i}.{rng.getrandbits(32):08x}@{DOMAIN}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
        ).encode()


# -- targets --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Limits:
    """What the servers must accept: users, simultaneous connections."""

    users: int
    connections: int
    postkeep_processes: int | None = None  # imap.processes (None: the server's default)
    postkeep_store_url: str | None = None  # store.url (None: the embedded SQLite store)


class Target(abc.ABC):
    """A server under test; subclasses create the instance and start/stop it."""

    name = "?"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.plain_port = 0
        self.tls_port = 0
        self.unavailable: str | None = None
        self.notes: list[str] = []
        self.version_str = "?"

    @abc.abstractmethod
    def setup(self, limits: Limits) -> None:
        """Create the instance and users 1..limits.users plus BIG_USER (TargetUnavailable)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def root_pid(self) -> int | None:
        """PID whose process tree is the whole server, None if it is not running."""

    @abc.abstractmethod
    def log_tail(self) -> str: ...

    def version(self) -> str:
        return "?"

    def cpu_ticks(self) -> int:
        pid = self.root_pid()
        if pid is None:
            raise BenchError(f"{self.name}: server is not running")
        return tree_cpu_ticks(pid)

    def memory(self) -> Memory:
        pid = self.root_pid()
        if pid is None:
            raise BenchError(f"{self.name}: server is not running")
        return tree_memory(pid)


class ChildServer(Target):
    """A server run as our child in its own session; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open by the child
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError as e:
            raise TargetUnavailable(f"cannot run {argv[0]}: {e}") from e
        finally:
            log.close()
        try:
            wait_for_imap(self.tls_port, 60, alive=lambda: self.root_pid() is not None)
        except TargetUnavailable as e:
            raise TargetUnavailable(f"{e}; log: {_tail(self.log_tail())}") from e

    def root_pid(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self.proc.wait(10)
        # anything of this instance left in its process group (the session we created)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    problem_re = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
    problem_ignore = re.compile(r"$^")

    def log_problems(self) -> list[str]:
        """Distinct problem lines of the server log, tracebacks summarised by their last frame
        and exception (numbers masked, so repeats of one problem count as one)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        seen: dict[str, int] = {}
        where = ""
        in_tb = False
        for line in lines:
            if line.startswith("Traceback (most recent call last)"):
                in_tb, where = True, ""
                continue
            if in_tb:
                if line.startswith("  File "):
                    where = line.strip()
                    continue
                if not line.strip() or line[:1].isspace() or line.startswith(("During", "The ")):
                    continue
                in_tb = False
                key = f"Traceback: {line.strip()[:150]} ({where})"
            elif self.problem_re.search(line) and not self.problem_ignore.search(line):
                key = re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:200]
            else:
                continue
            seen[key] = seen.get(key, 0) + 1
        return [f"{n}x {k}" for k, n in seen.items()]


DOVECOT_CONF = """\
# private benchmark instance, generated by bench/imap/run.py
protocols = imap
listen = {listen}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
first_valid_gid = {gid}
# enough for {conns} simultaneous connections
default_process_limit = {procs}
default_client_limit = {clients}
default_vsz_limit = 1G
service imap-login {{
  inet_listener imap {{
    address = {listen}
    port = {plain_port}
  }}
  inet_listener imaps {{
    address = {listen}
    port = {tls_port}
    ssl = yes
  }}
{login_mode}
}}
service imap {{
  process_limit = {procs}
}}
protocol imap {{
  mail_max_userip_connections = {procs}
}}
# not used here; small limits keep auth/anvil client_limit checks about imap-login only
service imap-urlauth-login {{
  process_limit = 1
}}
service imap-urlauth {{
  process_limit = 1
}}
service imap-urlauth-worker {{
  process_limit = 1
}}
"""

LOGIN_MODES = {
    # https://doc.dovecot.org/2.3/admin_manual/login_processes/
    "performance": "  service_count = 0\n  process_min_avail = {ncpu}\n"
    "  process_limit = {login_procs}\n  client_limit = {login_clients}\n  vsz_limit = 2G",
    "security": "  service_count = 1\n  process_limit = {procs}\n  client_limit = 1",
}


class DovecotTarget(ChildServer):
    """A private Dovecot: own config, base_dir, state, mail and log in the temp dir."""

    name = "dovecot"
    problem_re = re.compile(r"\b(Warning|Error|Fatal|Panic):")
    # the master's stop; and it cannot raise RLIMIT_NPROC without CAP_SYS_RESOURCE (harmless)
    problem_ignore = re.compile(r"Killed with signal 15|setrlimit\(RLIMIT_NPROC")

    def __init__(self, workdir: Path, login_mode: str) -> None:
        super().__init__(workdir)
        self.conf = workdir / "dovecot.conf"
        self.login_mode = login_mode

    def version(self) -> str:
        try:
            r = run_cmd([str(DOVECOT), "--version"])
        except (OSError, subprocess.SubprocessError):
            return "?"
        return f"Dovecot {r.stdout.strip() or '?'} ({self.login_mode} login mode)"

    def setup(self, limits: Limits) -> None:
        if os.geteuid() != 0:
            raise TargetUnavailable("Dovecot needs root to start")
        if not DOVECOT.exists():
            raise TargetUnavailable(f"{DOVECOT} not found")
        base = self.workdir
        base.mkdir(mode=0o755)
        for sub in ("run", "state"):
            (base / sub).mkdir(mode=0o755)
        # mail belongs to an unprivileged user, like on a real server
        uid, gid = 65534, 65534
        (base / "home").mkdir(mode=0o755)
        os.chown(base / "home", uid, gid)
        r = run_cmd(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(base / "key.pem"),
                "-out",
                str(base / "cert.pem"),
            ]
        )
        if r.returncode != 0:
            raise TargetUnavailable(f"openssl failed: {_tail(r.stderr)}")
        names = [user_name(i) for i in range(1, limits.users + 1)] + [BIG_USER]
        (base / "passwd").write_text("".join(f"{n}:{{PLAIN}}{PASSWORD}::::::\n" for n in names))
        base_port = pick_port((0, 1))
        self.plain_port, self.tls_port = base_port, base_port + 1
        ncpu = os.cpu_count() or 1
        procs = limits.connections + 100
        # every imap process holds a connection to stats (and anvil); each TLS client of a
        # high-performance imap-login process costs it two fds (client + proxy to imap)
        clients = limits.connections + 1000
        per_login = min(clients, 4000)
        fmt = {
            "ncpu": ncpu,
            "procs": procs,
            "login_clients": per_login,
            "login_procs": ncpu + -(-limits.connections // per_login),
        }
        self.conf.write_text(
            DOVECOT_CONF.format(
                listen=LOOPBACK,
                base=base,
                uid=uid,
                gid=gid,
                conns=limits.connections,
                procs=procs,
                clients=clients,
                plain_port=self.plain_port,
                tls_port=self.tls_port,
                login_mode=LOGIN_MODES[self.login_mode].format(**fmt),
            )
        )
        r = run_cmd([str(DOVECOT), "-c", str(self.conf), "-n"])
        if r.returncode != 0:
            raise TargetUnavailable(f"doveconf failed: {_tail(r.stdout + r.stderr)}")
        for line in r.stderr.splitlines():
            if "warning" in line.lower():
                self.notes.append(f"doveconf: {line.strip()}")
        self.log_path = base / "dovecot.log"

    def start(self) -> None:
        self._spawn([str(DOVECOT), "-F", "-c", str(self.conf)])


class PostkeepTarget(ChildServer):
    """postkeep, driven through its CLI (`init`, `user add`, `serve`)."""

    name = "postkeep"
    # listener offsets relative to --base-port that must be free
    PORT_OFFSETS = (25, 80, 110, 143, 443, 465, 587, 993, 995, 4190)

    def __init__(self, workdir: Path, exe: Path) -> None:
        super().__init__(workdir)
        self.exe = exe
        self.instance = workdir / "instance"

    def _cli(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return run_cmd([str(self.exe), *args], input_text=input_text)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetUnavailable(f"{self.exe} {args[0]}: {e}") from e

    def version(self) -> str:
        """git HEAD, uncommitted files in src/ and a hash of src/postkeep/**.py."""
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
        return "postkeep " + ", ".join(parts)

    def setup(self, limits: Limits) -> None:
        if not self.exe.exists():
            raise TargetUnavailable(f"{self.exe} not found")
        self.workdir.mkdir(mode=0o755)
        base = pick_port(self.PORT_OFFSETS)
        r = self._cli(
            "init",
            str(self.instance),
            "--hostname",
            "localhost",
            "--domain",
            DOMAIN,
            "--base-port",
            str(base),
            *INIT_AS,
        )
        if r.returncode != 0:
            raise TargetUnavailable(f"postkeep init failed: {_tail(r.stdout + r.stderr)}")
        self.plain_port, self.tls_port = base + 143, base + 993
        self._tune_config(limits)
        if limits.postkeep_store_url is not None:  # init put the domain in the SQLite store
            r = self._cli("--dir", str(self.instance), "domain", "add", DOMAIN)
            if r.returncode != 0:
                raise TargetUnavailable(f"domain add failed: {_tail(r.stdout + r.stderr)}")
        for name in [user_name(i) for i in range(1, limits.users + 1)] + [BIG_USER]:
            r = self._cli(
                "--dir",
                str(self.instance),
                "user",
                "add",
                name,
                "--password-stdin",
                input_text=PASSWORD + "\n",
            )
            if r.returncode != 0:
                raise TargetUnavailable(f"user add {name} failed: {_tail(r.stdout + r.stderr)}")

    def _tune_config(self, limits: Limits) -> None:
        """Lift the per-IP/per-account limits and the command rate: all load is from one IP."""
        path = self.instance / "postkeep.toml"
        if not path.exists():
            raise TargetUnavailable(f"{path} missing after init")
        n = limits.connections + 1000
        values = {
            "max_connections": str(n),  # each worker needs this many descriptors
            "max_connections_per_ip": str(n),
            "max_connections_per_account": str(n),
            "command_rate": "1000000.0",
        }
        if limits.postkeep_processes is not None:
            values["processes"] = str(limits.postkeep_processes)
        text = set_toml_keys(path.read_text(), "imap", values)
        if limits.postkeep_store_url is not None:
            # a TOML basic string; JSON's escaping is a subset of it
            text = set_toml_keys(text, "store", {"url": json.dumps(limits.postkeep_store_url)})
            self.notes.append(f"postkeep.toml [store]: url={limits.postkeep_store_url}")
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise TargetUnavailable(f"could not tune {path.name}: {e}") from e
        path.write_text(text)
        imap = conf.get("imap", {})
        for key, attr in (("listen", "plain_port"), ("tls_listen", "tls_port")):
            for addr in imap.get(key, []):
                port = str(addr).rpartition(":")[2]
                if port.isdigit():
                    setattr(self, attr, int(port))
                    break
        self.notes.append(
            "postkeep.toml [imap]: " + ", ".join(f"{k}={v}" for k, v in values.items())
        )

    def start(self) -> None:
        self._spawn([str(self.exe), "--dir", str(self.instance), "serve"])


# -- IMAP client helpers (asyncio) ----------------------------------------------------------------


class Imap:
    """A minimal IMAP client over implicit TLS for the harness' own measurements."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.n = 0

    @classmethod
    async def connect(cls, port: int, ctx: ssl.SSLContext, timeout: float = 60) -> Imap:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, port, ssl=ctx, limit=1 << 20), timeout
        )
        self = cls(r, w)
        greeting = await asyncio.wait_for(r.readline(), timeout)
        if not greeting.startswith(b"* OK"):
            w.close()
            raise BenchError(f"bad greeting {greeting[:200]!r}")
        return self

    def tag(self) -> str:
        self.n += 1
        return f"a{self.n}"

    async def response(self, tag: str, timeout: float = 600) -> bytes:
        """Read everything up to and including the tagged completion of `tag` (raises unless OK).

        Reads in large chunks and only looks for the tagged line near the end of the buffer, so
        a 100,000-line FETCH response costs the client little.
        """
        chunks: list[bytes] = []
        pat = re.compile(rb"\r\n" + tag.encode() + rb" (OK|NO|BAD)([^\r\n]*)\r\n")
        tail = b"\r\n"  # as if the response started on a new line
        deadline = time.monotonic() + timeout
        while True:
            data = await asyncio.wait_for(self.reader.read(1 << 20), deadline - time.monotonic())
            if not data:
                raise BenchError(f"connection closed while waiting for {tag}")
            chunks.append(data)
            window = tail + data
            m = pat.search(window)
            if m is not None:
                if m.group(1) != b"OK":
                    raise BenchError(f"{tag} {m.group(1).decode()}{m.group(2).decode()[:200]}")
                return b"".join(chunks)
            tail = window[-300:]

    async def command(self, text: str, timeout: float = 600) -> bytes:
        tag = self.tag()
        self.writer.write(f"{tag} {text}\r\n".encode())
        return await self.response(tag, timeout)

    async def login(self, user: str) -> None:
        await self.command(f"LOGIN {imap_quote(user)} {imap_quote(PASSWORD)}", 120)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"zz LOGOUT\r\n")
            await asyncio.wait_for(self.writer.drain(), 5)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def append_many(
    port: int, user: str, mailbox: str, messages: Iterable[bytes], window: int = 256
) -> int:
    """APPEND `messages` to `mailbox` (created if missing) over one connection, pipelined with
    LITERAL+ (at most `window` commands outstanding). Returns the count; raises on any NO/BAD."""
    imap = await Imap.connect(port, tls_client_context())
    try:
        await imap.login(user)
        if mailbox.upper() != "INBOX":
            with contextlib.suppress(BenchError):  # exists already
                await imap.command(f"CREATE {imap_quote(mailbox)}")
        sent = done = 0
        errors: list[str] = []
        free = asyncio.Semaphore(window)
        finished = asyncio.Event()
        all_sent = False
        tagged = re.compile(rb"^p(\d+) (OK|NO|BAD)(.*)$")
        flags = ("()", "(\\Seen)", "(\\Seen)", "(\\Seen \\Answered)", "(\\Flagged)", "(\\Seen)")

        async def reader() -> None:
            nonlocal done
            try:
                while not (all_sent and done == sent):
                    line = await asyncio.wait_for(imap.reader.readline(), 300)
                    if not line:
                        raise BenchError("connection closed during APPEND")
                    m = tagged.match(line)
                    if m is None:
                        continue
                    done += 1
                    if m.group(2) != b"OK":
                        errors.append(line.decode("utf-8", "replace").strip()[:200])
                    free.release()
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
            finally:  # also unblocks the writer if we stopped early
                finished.set()
                for _ in range(window):
                    free.release()

        task = asyncio.create_task(reader())
        try:
            for i, msg in enumerate(messages):
                await free.acquire()
                if errors or finished.is_set():
                    break
                imap.writer.write(
                    b"p%d APPEND %s %s {%d+}\r\n%s\r\n"
                    % (
                        i,
                        imap_quote(mailbox).encode(),
                        flags[i % len(flags)].encode(),
                        len(msg),
                        msg,
                    )
                )
                sent += 1
                if sent % 64 == 0:
                    await imap.writer.drain()
            await imap.writer.drain()
            all_sent = True
            if done == sent:
                finished.set()
            await asyncio.wait_for(finished.wait(), 600)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if errors:
            raise BenchError(f"APPEND failed ({len(errors)} errors), first: {errors[0]}")
        return sent
    finally:
        await imap.close()


# -- measurements ---------------------------------------------------------------------------------


def wait_quiet(target: Target, timeout: float = 60) -> bool:
    """Wait until the server's CPU is quiet (<= 2 ticks per 0.5 s, twice in a row)."""
    deadline = time.monotonic() + timeout
    quiet, last = 0, target.cpu_ticks()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = target.cpu_ticks()
        quiet = quiet + 1 if now - last <= 2 else 0
        last = now
    return quiet >= 2


@dataclasses.dataclass
class StressResult:
    target: str
    ok: bool
    error: str = ""
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    secs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    errors: int = 0  # "Error:" lines printed by imaptest
    error_sample: list[str] = dataclasses.field(default_factory=list)
    argv: str = ""

    @property
    def ops(self) -> int:
        return sum(self.counts.values())

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.secs if self.secs else 0.0

    @property
    def ops_per_cpu_s(self) -> float | None:
        return self.ops / self.cpu_s if self.cpu_s else None


def parse_imaptest_totals(out: str) -> dict[str, int]:
    """The counts under imaptest's final "Totals:" (column names -> count)."""
    idx = out.rfind("\nTotals:")
    if idx < 0:
        raise BenchError(f"no Totals in imaptest output: {_tail(out, 3)}")
    lines = [ln for ln in out[idx:].splitlines()[2:] if ln.strip()]  # after "Totals:"
    if len(lines) < 2:
        raise BenchError("imaptest Totals truncated")
    names = lines[0].split()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) == len(names) and all(f.isdigit() for f in fields):
            return dict(zip(names, (int(f) for f in fields), strict=True))
    raise BenchError(f"cannot parse imaptest Totals: {lines[:4]}")


def run_imaptest(
    target: Target,
    mbox: Path,
    clients: int,
    secs: int,
    users: int,
    tls: bool,
    no_tracking: bool,
    warmup: int = 0,
) -> StressResult:
    """imaptest against `target`; with `warmup` > 0 a first, uncounted run of that many
    seconds (same users, another seed) fills both servers' caches (postkeep: the argon2id
    verification cache, 0.3 CPU-s per user after a restart; Dovecot's passwd-file is {PLAIN})."""
    port = target.tls_port if tls else target.plain_port
    argv = [
        str(IMAPTEST),
        f"host={LOOPBACK}",
        f"port={port}",
        f"user={USER_TEMPLATE}",
        f"users={users}",
        f"pass={PASSWORD}",
        f"mbox={mbox}",
        f"clients={clients}",
        f"secs={secs}",
        "seed=1",
    ]
    if tls:
        argv.append("ssl=any-cert")
    if no_tracking:
        argv.append("no_tracking")
    res = StressResult(target.name, ok=False, secs=secs, argv=" ".join(argv[1:]))
    if warmup > 0:
        warm = [
            f"secs={warmup}" if a.startswith("secs=") else "seed=2" if a.startswith("seed=") else a
            for a in argv
        ]
        subprocess.run(
            warm,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **IMAPTEST_ENV},
            timeout=warmup + 120,
        )
    wait_quiet(target)
    cpu0 = target.cpu_ticks()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **IMAPTEST_ENV},
        start_new_session=True,
    )
    try:
        out_b, _ = proc.communicate(timeout=secs + 180)
    except BaseException as e:  # timeout, Ctrl-C: never leave imaptest behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        if target.root_pid() is None:
            res.error = "server died during imaptest"
        else:
            res.error = f"imaptest did not finish within {secs + 180}s"
        return res
    res.wall_s = time.perf_counter() - t0
    res.cpu_s = (target.cpu_ticks() - cpu0) / CLK_TCK
    out = out_b.decode("utf-8", "replace").replace("\x1b[1m", "").replace("\x1b[0m", "")
    with contextlib.suppress(OSError):
        (target.workdir / "imaptest.out").write_text(out)
    errs = [ln.strip() for ln in out.splitlines() if "Error:" in ln or "Panic:" in ln]
    res.errors, res.error_sample = len(errs), errs[:5]
    try:
        res.counts = parse_imaptest_totals(out)
    except BenchError as e:
        res.error = f"exit {proc.returncode}: {e}"
        return res
    if proc.returncode != 0:
        res.error = f"imaptest exit {proc.returncode}: {_tail(out, 2)}"
        return res
    if res.counts.get("Logi", 0) == 0:
        res.error = f"no successful LOGIN: {'; '.join(errs[:2]) or _tail(out, 2)}"
        return res
    res.ok = True
    return res


@dataclasses.dataclass
class IdleResult:
    target: str
    n: int
    ok: bool
    error: str = ""
    base: Memory | None = None
    busy: Memory | None = None
    setup_s: float = 0.0

    @property
    def kib_per_conn(self) -> float | None:
        if self.base is None or self.busy is None or not self.n:
            return None
        return (self.busy.pss_kb - self.base.pss_kb) / self.n


async def _open_idle(port: int, n: int, users: int) -> tuple[list[Imap], list[str]]:
    """Open n connections: LOGIN, SELECT INBOX, IDLE (until "+"), 200 being set up at a time."""
    ctx = tls_client_context()
    sem = asyncio.Semaphore(IDLE_CONCURRENCY)
    conns: list[Imap] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            if errors:  # fail fast
                return
            imap: Imap | None = None
            try:
                imap = await Imap.connect(port, ctx)
                await imap.login(user_name(i % users + 1))
                await imap.command("SELECT INBOX", 120)
                imap.writer.write(b"i IDLE\r\n")
                while True:
                    line = await asyncio.wait_for(imap.reader.readline(), 120)
                    if line.startswith(b"+"):
                        break
                    if not line or line.startswith(b"i "):
                        raise BenchError(f"IDLE refused: {line[:200]!r}")
                conns.append(imap)
            except (BenchError, OSError, ssl.SSLError, TimeoutError, EOFError) as e:
                errors.append(f"connection {i}: {type(e).__name__}: {e}")
                if imap is not None:
                    await imap.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns, errors


async def _close_all(conns: list[Imap]) -> None:
    for c in conns:
        with contextlib.suppress(Exception):
            c.writer.write(b"DONE\r\nzz LOGOUT\r\n")
    for i in range(0, len(conns), 1000):
        batch = conns[i : i + 1000]
        for c in batch:
            c.writer.close()
        await asyncio.gather(
            *(asyncio.wait_for(c.writer.wait_closed(), 10) for c in batch), return_exceptions=True
        )


def measure_idle(target: Target, n: int, users: int) -> IdleResult:
    """Fresh server: one LOGIN, baseline PSS, then n IDLE connections, PSS again."""
    res = IdleResult(target.name, n, ok=False)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < n + 500:
        res.error = f"RLIMIT_NOFILE is {soft}, need {n + 500} for {n} connections"
        return res

    async def main() -> None:
        first = await Imap.connect(target.tls_port, tls_client_context())
        await first.login(user_name(1))
        await first.command("SELECT INBOX")
        await first.close()
        await asyncio.sleep(1)
        wait_quiet(target)
        res.base = target.memory()
        t0 = time.perf_counter()
        conns, errors = await _open_idle(target.tls_port, n, users)
        res.setup_s = time.perf_counter() - t0
        try:
            if errors:
                raise BenchError(
                    f"only {len(conns)}/{n} connections reached IDLE; "
                    f"{len(errors)} failed, first: {errors[0]}"
                )
            await asyncio.sleep(2)
            wait_quiet(target, 120)
            res.busy = target.memory()
            res.ok = True
        finally:
            await _close_all(conns)

    try:
        asyncio.run(main())
    except Exception as e:  # reported in the table
        res.error = f"{type(e).__name__}: {e}"
    return res


@dataclasses.dataclass
class BigResult:
    target: str
    count: int
    ok: bool
    error: str = ""
    append_s: float = 0.0
    append_cpu_s: float = 0.0
    select_s: list[float] = dataclasses.field(default_factory=list)
    fetch_s: list[float] = dataclasses.field(default_factory=list)
    exists: int = 0
    fetched: int = 0

    @property
    def select_med(self) -> float | None:
        return statistics.median(self.select_s) if self.select_s else None

    @property
    def fetch_med(self) -> float | None:
        return statistics.median(self.fetch_s) if self.fetch_s else None


def measure_big(target: Target, count: int, reps: int = 3) -> BigResult:
    res = BigResult(target.name, count, ok=False)

    async def main() -> None:
        wait_quiet(target)
        cpu0 = target.cpu_ticks()
        t0 = time.perf_counter()
        await append_many(target.tls_port, BIG_USER, BIG_MAILBOX, small_messages(count))
        res.append_s = time.perf_counter() - t0
        res.append_cpu_s = (target.cpu_ticks() - cpu0) / CLK_TCK
        wait_quiet(target, 300)
        for _ in range(reps):
            imap = await Imap.connect(target.tls_port, tls_client_context())
            try:
                await imap.login(BIG_USER)
                t0 = time.perf_counter()
                out = await imap.command(f"SELECT {BIG_MAILBOX}")
                res.select_s.append(time.perf_counter() - t0)
                m = re.search(rb"\* (\d+) EXISTS", out)
                res.exists = int(m.group(1)) if m else -1
                t0 = time.perf_counter()
                out = await imap.command("FETCH 1:* (FLAGS UID)")
                res.fetch_s.append(time.perf_counter() - t0)
                res.fetched = out.count(b" FETCH (")
            finally:
                await imap.close()
        if res.exists != count or res.fetched != count:
            raise BenchError(
                f"SELECT says {res.exists} EXISTS, FETCH returned {res.fetched}, expected {count}"
            )
        res.ok = True

    try:
        asyncio.run(main())
    except Exception as e:  # reported in the table
        res.error = f"{type(e).__name__}: {e}"
    return res


def preload(target: Target, users: int, messages: list[bytes]) -> None:
    """Put the same messages into every user's INBOX (before any measurement)."""

    async def main() -> None:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await append_many(target.tls_port, user_name(i), "INBOX", messages, window=32)

        await asyncio.gather(*(one(i) for i in range(1, users + 1)))

    asyncio.run(main())


# -- reporting ------------------------------------------------------------------------------------


def _ratio(pk: float | None, dc: float | None) -> str:
    return f"{pk / dc:.2f}" if pk is not None and dc else "-"


def imaptest_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = run_cmd(
            ["git", "-C", str(IMAPTEST.parent.parent), "log", "-1", "--format=%h %cs"], timeout=10
        )
        if r.returncode == 0 and r.stdout.strip():
            return f"imaptest git {r.stdout.strip()}"
    return "imaptest (version unknown)"


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
        f"- kernel: {platform.system()} {platform.release()}; python {platform.python_version()}",
        f"- load generator: {imaptest_version()}; harness client: python asyncio + ssl",
    ]
    for t in targets:
        info.append(f"- {t.name}: {t.version_str if not t.unavailable else 'unavailable'}")
    return info


@dataclasses.dataclass
class Results:
    stress: list[StressResult] = dataclasses.field(default_factory=list)
    idle: list[IdleResult] = dataclasses.field(default_factory=list)
    big: list[BigResult] = dataclasses.field(default_factory=list)


def _status(t: Target, result: object | None) -> str:
    if result is not None:
        return "ok" if getattr(result, "ok", False) else "FAILED"
    return "unavailable" if t.unavailable else "not run"


def render(
    args: argparse.Namespace, targets: Sequence[Target], res: Results, interrupted: bool
) -> str:
    names = [t.name for t in targets]
    two = "dovecot" in names and "postkeep" in names
    out = [f"# IMAP benchmark ({args.mode}{', INTERRUPTED' if interrupted else ''})", ""]
    out += machine_info(targets)
    out += [
        f"- measurements: {', '.join(sorted(args.only_set))}; imaptest clients={args.clients} "
        f"secs={args.secs} users=user1..user{args.users} over "
        f"{'implicit TLS' if args.imaptest_tls else 'plain TCP'}"
        f"{' no_tracking' if args.no_tracking else ''}, mbox of {MBOX_MESSAGES} messages "
        f"(1-50 KB, {args.mbox_mb:.1f} MB); {args.preload} of them preloaded into every INBOX; "
        f"idle N={','.join(map(str, args.idle_list))}; large mailbox {args.big} messages",
        "- ratio = postkeep / Dovecot",
    ]
    if "stress" in args.only_set:
        out += ["", "## imaptest stress", ""]
        stress = {r.target: r for r in res.stress}
        ok = {n: r for n, r in stress.items() if r.ok}
        cols = sorted(
            {k for r in ok.values() for k in r.counts},
            key=lambda k: list(IMAPTEST_NAMES).index(k) if k in IMAPTEST_NAMES else 99,
        )
        out.append("| | " + " | ".join(names) + (" | ratio |" if two else " |"))
        out.append("|---|" + "--:|" * (len(names) + two))
        out.append(
            "| status | "
            + " | ".join(_status(t, stress.get(t.name)) for t in targets)
            + (" | |" if two else " |")
        )

        def row(label: str, get: Callable[[StressResult], float | None], spec: str) -> None:
            values = {n: get(r) for n, r in ok.items()}
            cells = [_fmt(values.get(n), spec) for n in names]
            if two:
                cells.append(_ratio(values.get("postkeep"), values.get("dovecot")))
            out.append(f"| {label} | " + " | ".join(cells) + " |")

        row("commands/s (all commands / secs)", lambda r: r.ops_per_s, ".0f")
        row("server CPU s", lambda r: r.cpu_s, ".1f")
        row("commands per server CPU s", lambda r: r.ops_per_cpu_s, ".0f")
        row("total commands", lambda r: r.ops, ".0f")
        for k in cols:
            row(f"{IMAPTEST_NAMES.get(k, k)} ({k})", lambda r, k=k: r.counts.get(k), ".0f")
        row("imaptest errors (state tracking)", lambda r: r.errors, ".0f")
        row("imaptest wall s", lambda r: r.wall_s, ".1f")
        out += [
            "",
            "Counts are imaptest's final Totals. CPU = utime+stime of the server's process tree "
            "(reaped children included) over the whole imaptest run, final logouts included.",
            f"Before it, each server had {args.warmup} s of the same load, not counted (caches "
            "warm: postkeep verifies each user's argon2id hash once per cache lifetime, 0.3 "
            "CPU-s each here; the benchmark's Dovecot passwd-file is {PLAIN}).",
        ]
    if "idle" in args.only_set:
        out += [
            "",
            "## Idle connections (implicit TLS; LOGIN, SELECT INBOX, IDLE)",
            "",
            "| N | target | status | procs | PSS baseline MiB | PSS at N MiB | KiB/connection "
            "| ratio | setup s |",
            "|--:|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for n in args.idle_list:
            rows = {r.target: r for r in res.idle if r.n == n}
            dc = rows.get("dovecot")
            for t in targets:
                r = rows.get(t.name)
                if r is None or not r.ok or r.base is None or r.busy is None:
                    why = r.error if r is not None else ("see Notes" if t.unavailable else "")
                    base = _fmt(r.base.pss_kb / 1024 if r and r.base else None, ".1f")
                    out.append(
                        f"| {n} | {t.name} | {_status(t, r)} | - | {base} | - | - | - "
                        f"| {_cell(why)} |"
                    )
                    continue
                ratio = "-"
                if t.name == "postkeep" and dc is not None and dc.ok:
                    ratio = _ratio(r.kib_per_conn, dc.kib_per_conn)
                out.append(
                    f"| {n} | {t.name} | ok | {r.busy.processes} | {r.base.pss_kb / 1024:.1f} "
                    f"| {r.busy.pss_kb / 1024:.1f} | {_fmt(r.kib_per_conn, '.1f')} | {ratio} "
                    f"| {r.setup_s:.1f} |"
                )
        out += [
            "",
            "KiB/connection = (PSS at N - PSS baseline) / N. Each N runs on a freshly started "
            "server; the baseline is taken after one LOGIN/SELECT/LOGOUT. PSS = sum of Pss "
            "(smaps_rollup) over the server's process tree. setup s: time to open all N.",
        ]
    if "big" in args.only_set:
        out += [
            "",
            f"## Large mailbox ({args.big} messages APPENDed to one mailbox)",
            "",
            "| target | status | APPEND s | APPEND msgs/s | APPEND server CPU s "
            "| SELECT s (median) | ratio | FETCH 1:* (FLAGS UID) s (median) | ratio "
            "| all SELECT / FETCH s |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        bigs = {r.target: r for r in res.big}
        dcb = bigs.get("dovecot")
        for t in targets:
            b = bigs.get(t.name)
            if b is None or not b.ok or b.select_med is None or b.fetch_med is None:
                why = b.error if b is not None else ("see Notes" if t.unavailable else "")
                out.append(f"| {t.name} | {_status(t, b)} | {_cell(why)} | | | | | | | |")
                continue
            ref = dcb if dcb is not None and dcb.ok and t.name == "postkeep" else None
            out.append(
                f"| {t.name} | ok | {b.append_s:.1f} | {b.count / b.append_s:.0f} "
                f"| {b.append_cpu_s:.1f} | {b.select_med:.3f} "
                f"| {_ratio(b.select_med, ref.select_med) if ref else '-'} | {b.fetch_med:.3f} "
                f"| {_ratio(b.fetch_med, ref.fetch_med) if ref else '-'} "
                f"| {' '.join(f'{x:.3f}' for x in b.select_s)} / "
                f"{' '.join(f'{x:.3f}' for x in b.fetch_s)} |"
            )
        out += [
            "",
            "APPEND: one connection, pipelined `APPEND big (flags) {n+}` (LITERAL+), at most 256 "
            "outstanding. SELECT / FETCH: client wall time until the tagged OK with all responses "
            "read, 3 times, each on a new connection (login not timed); EXISTS and the number "
            "of FETCH responses are checked against the count.",
        ]
    notes = [f"- {t.name}: unavailable: {t.unavailable}" for t in targets if t.unavailable]
    notes += [f"- {t.name}: {n}" for t in targets for n in t.notes]
    for t in targets:
        if isinstance(t, ChildServer) and (problems := t.log_problems()):
            notes.append(f"- {t.name} log: {len(problems)} distinct warning/error line(s):")
            notes += [f"  - {_cell(p)}" for p in problems[:8]]
    for r in res.stress:
        if not r.ok:
            notes.append(f"- imaptest {r.target} FAILED: {_cell(r.error)}")
        notes.append(f"- imaptest {r.target}: `{r.argv}`")
        notes += [f"  - {_cell(e)[:300]}" for e in r.error_sample]
    if notes:
        out += ["", "## Notes", "", *notes]
    return "\n".join(out) + "\n"


# -- main -----------------------------------------------------------------------------------------


def raise_nofile(need: int) -> None:
    """Raise RLIMIT_NOFILE (inherited by the servers) towards `need`: the hard limit too if we
    may (root with CAP_SYS_RESOURCE), else the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard < need:
        with contextlib.suppress(OSError, ValueError):
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, nr_open),) * 2)
            return
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--quick", action="store_true", help="clients=5 secs=5, idle 200, big 2000 (smoke test)"
    )
    p.add_argument("--targets", default="dovecot,postkeep", help="comma list")
    p.add_argument("--only", default="stress,idle,big", help="measurements (stress,idle,big)")
    p.add_argument("--clients", type=int, help="imaptest clients (default 20; quick 5)")
    p.add_argument("--secs", type=int, help="imaptest secs (default 20; quick 5)")
    p.add_argument("--users", type=int, help="users user1..N (default: --clients)")
    p.add_argument("--idle", help="comma list of N (default 1000,10000; quick 200)")
    p.add_argument("--big", type=int, help="large-mailbox messages (default 100000; quick 2000)")
    p.add_argument(
        "--preload", type=int, help="mbox messages put in every INBOX first (default 100; quick 20)"
    )
    p.add_argument(
        "--imaptest-plain",
        dest="imaptest_tls",
        action="store_false",
        help="run imaptest on the plain port (postkeep: LOGINDISABLED there)",
    )
    p.add_argument("--no-tracking", action="store_true", help="imaptest no_tracking")
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="seconds of uncounted imaptest before the measured run (0: none)",
    )
    p.add_argument(
        "--dovecot-login",
        choices=sorted(LOGIN_MODES),
        default="performance",
        help="Dovecot imap-login mode (default performance)",
    )
    p.add_argument(
        "--postkeep-processes",
        type=int,
        help="postkeep imap.processes (default: the server's default, one per core)",
    )
    p.add_argument(
        "--postkeep-store-url",
        help="postkeep store.url, e.g. postgresql+psycopg://root@127.0.0.1:5432/imapbench "
        "(an empty database; default: the embedded SQLite store)",
    )
    p.add_argument("--postkeep", type=Path, default=REPO / ".venv" / "bin" / "postkeep")
    p.add_argument("--out", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --out")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    q = args.quick
    args.mode = "quick" if q else "full"
    args.clients = args.clients or (5 if q else 20)
    args.secs = args.secs or (5 if q else 20)
    args.users = args.users or args.clients
    args.idle_list = _ints(args.idle) if args.idle else ([200] if q else [1000, 10000])
    args.big = args.big if args.big is not None else (2000 if q else 100000)
    args.preload = args.preload if args.preload is not None else (20 if q else 100)
    args.preload = min(args.preload, MBOX_MESSAGES)
    args.only_set = {x.strip() for x in args.only.split(",") if x.strip()}
    args.mbox_mb = 0.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    only = args.only_set
    if any(n not in ("dovecot", "postkeep") for n in names) or not names:
        print("unknown target (dovecot, postkeep)", file=sys.stderr)
        return 2
    if not only or only - {"stress", "idle", "big"}:
        print("--only: choose from stress, idle, big", file=sys.stderr)
        return 2
    if "stress" in only and not IMAPTEST.exists():
        print(f"{IMAPTEST} not found", file=sys.stderr)
        return 2
    max_conn = max(args.idle_list, default=0) if "idle" in only else 0
    limits = Limits(
        users=args.users,
        connections=max(max_conn, args.clients, 100),
        postkeep_processes=args.postkeep_processes,
        postkeep_store_url=args.postkeep_store_url,
    )
    raise_nofile(4 * limits.connections + 10000)
    # explicit, since a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    base = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    base.chmod(0o755)  # Dovecot's unprivileged processes must reach their directories
    targets: list[Target] = []
    for n in names:
        if n == "dovecot":
            targets.append(DovecotTarget(base / "dovecot", args.dovecot_login))
        else:
            targets.append(PostkeepTarget(base / "postkeep", args.postkeep))
    res = Results()
    interrupted = False
    print(f"work directory {base}; mode {args.mode}", flush=True)

    def phase(t: Target, what: str, fn: Callable[[], None]) -> None:
        """Start t, run fn, stop t; a target that breaks is marked unavailable."""
        if t.unavailable:
            return
        try:
            t.start()
        except (TargetUnavailable, OSError, subprocess.SubprocessError) as e:
            t.unavailable = f"start for {what} failed: {e}"
            print(f"[{t.name}] {t.unavailable}", flush=True)
            with no_interrupts():
                t.stop()
            return
        try:
            fn()
        except Exception as e:  # a misbehaving server must not end the whole run
            t.notes.append(f"{what} failed: {type(e).__name__}: {e}")
            print(f"[{t.name}] {what} failed:", file=sys.stderr)
            traceback.print_exc()
        finally:
            with no_interrupts():
                t.stop()

    try:
        print(f"generating {MBOX_MESSAGES}-message mbox", flush=True)
        mbox = base / "test.mbox"
        mails = make_mbox(mbox)
        args.mbox_mb = mbox.stat().st_size / 1e6
        print(f"  {args.mbox_mb:.1f} MB", flush=True)
        for t in targets:
            print(f"[{t.name}] setting up ({args.users} users + {BIG_USER})", flush=True)
            try:
                t.setup(limits)
                t.version_str = t.version()
            except (TargetUnavailable, OSError, subprocess.SubprocessError) as e:
                t.unavailable = str(e)
                print(f"[{t.name}] unavailable: {e}", flush=True)
                continue

            def do_preload(t: Target = t) -> None:
                t0 = time.perf_counter()
                preload(t, args.users, mails[: args.preload])
                print(
                    f"[{t.name}] preloaded {args.preload} msgs x {args.users} users "
                    f"in {time.perf_counter() - t0:.1f}s",
                    flush=True,
                )

            if args.preload:
                phase(t, "preload", do_preload)
        if "idle" in only:
            for n in args.idle_list:
                for t in targets:

                    def do_idle(t: Target = t, n: int = n) -> None:
                        print(f"[{t.name}] idle: {n} connections", flush=True)
                        r = measure_idle(t, n, args.users)
                        res.idle.append(r)
                        print(
                            f"[{t.name}] idle {n}: "
                            + (
                                f"{r.kib_per_conn:.1f} KiB/conn, PSS {r.busy.pss_kb / 1024:.1f}"
                                f" MiB ({r.busy.processes} procs)"
                                if r.ok and r.busy
                                else f"FAILED {r.error}"
                            ),
                            flush=True,
                        )

                    phase(t, f"idle {n}", do_idle)
        for t in targets:
            if not {"stress", "big"} & only:
                break

            def do_stress_big(t: Target = t) -> None:
                if "stress" in only:
                    print(
                        f"[{t.name}] imaptest clients={args.clients} secs={args.secs}", flush=True
                    )
                    r = run_imaptest(
                        t,
                        mbox,
                        args.clients,
                        args.secs,
                        args.users,
                        args.imaptest_tls,
                        args.no_tracking,
                        args.warmup,
                    )
                    res.stress.append(r)
                    print(
                        f"[{t.name}] imaptest: "
                        + (
                            f"{r.ops_per_s:.0f} cmds/s, CPU {r.cpu_s:.1f}s, {r.errors} errors"
                            if r.ok
                            else f"FAILED {r.error}"
                        ),
                        flush=True,
                    )
                if "big" in only:
                    print(f"[{t.name}] large mailbox: APPEND {args.big}", flush=True)
                    b = measure_big(t, args.big)
                    res.big.append(b)
                    print(
                        f"[{t.name}] large mailbox: "
                        + (
                            f"APPEND {b.append_s:.1f}s, SELECT {b.select_med:.3f}s, "
                            f"FETCH {b.fetch_med:.3f}s"
                            if b.ok
                            else f"FAILED {b.error}"
                        ),
                        flush=True,
                    )

            phase(t, "stress/big", do_stress_big)
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
            report = render(args, targets, res, interrupted)  # reads the server logs
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    print()
    print(report, end="")
    if not args.no_write and not interrupted:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"\nwritten to {args.out}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
