#!/usr/bin/env python3
"""Memory footprint benchmark: postkeep's process tree idle and with idle sessions.

One `postkeep serve` with default settings (only the ports moved to free loopback ports, and
the connection caps raised so that N sessions from 127.0.0.1 fit) is measured: PSS, USS and RSS
of every process of its tree (`/proc/PID/smaps_rollup`) right after start, after a warm-up,
with N idle SMTP sessions (greeting and EHLO read) and then also N idle IMAP sessions (implicit
TLS, LOGIN, SELECT INBOX, IDLE). Per-session cost = the PSS delta of the tree / N. Postfix and
Dovecot, where installed, are measured idle (and with a few sessions) in the same run, and the
memory each of postkeep's dependencies costs at import is measured in fresh interpreters.

Run as root (Postfix and Dovecot start as root), stdlib only:

    .venv/bin/python bench/footprint/run.py [--quick] [--targets postkeep,postfix,dovecot]

See README.md next to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py, and the other benchmarks' targets
from common import (  # noqa: E402
    INIT_AS,
    LOOPBACK,
    TargetUnavailable,
    _cell,
    _fmt,
    _raise_interrupt,
    _tail,
    no_interrupts,
    pick_port,
    process_tree,
    run_cmd,
    set_toml_keys,
    tree_cpu_ticks,
)

DOMAIN = "bench.test"
PASSWORD = "some-long-password-123"  # as bench/imap (postkeep's policy wants a strong one)
CONCURRENCY = 100  # sessions being set up at the same time
KiB = 1024


def user_name(i: int) -> str:
    return f"user{i}@{DOMAIN}"


class BenchError(Exception):
    """A measurement failed (reported, the run goes on)."""


class Deadline:
    """The whole run's time bound (--max-seconds)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise BenchError("the run's time bound (--max-seconds) is used up")
        return left if cap is None else min(left, cap)


# -- /proc ----------------------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """`root` and its live descendants, from /proc/PID/task/*/children (recursively); the ppid
    table of /proc when the kernel has no `children` files."""
    try:
        tasks = os.listdir(f"/proc/{root}/task")
    except OSError:
        return []
    if not Path(f"/proc/{root}/task/{tasks[0]}/children").exists():
        return process_tree(root)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{pid}/task/{tid}/children").read_text()
                    todo += [int(x) for x in children.split()]
    return pids


@dataclasses.dataclass
class Proc:
    pid: int
    name: str
    threads: int
    rss: int  # KiB
    pss: int
    uss: int  # Private_Clean + Private_Dirty
    pss_anon: int


def proc_name(pid: int) -> str:
    """A short role name: postkeep's `serve`, `fork server`, `worker N` (the titles its
    processes set), else the command's name (Dovecot's and Postfix's processes name
    themselves)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    title = " ".join(args)
    if title.startswith("postkeep: "):  # "postkeep: worker 1 (/dir)", "postkeep: fork server (...)"
        return title.removeprefix("postkeep: ").split(" (", 1)[0]
    if "postkeep" in " ".join(args[:3]):
        for cmd in ("serve", "init", "user"):
            if cmd in args:
                return cmd
    if comm.startswith("python") and args:
        return Path(args[0]).name
    return Path(args[0]).name if args and "/" in args[0] and not comm else comm


def read_proc(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:  # exited meanwhile
        return None
    v: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            v[key] = int(rest.split()[0])
    return Proc(
        pid,
        proc_name(pid),
        threads,
        v.get("Rss", 0),
        v.get("Pss", 0),
        v.get("Private_Clean", 0) + v.get("Private_Dirty", 0),
        v.get("Pss_Anon", 0),
    )


@dataclasses.dataclass
class Stage:
    """The tree's processes at one point of the run."""

    label: str
    procs: list[Proc]
    sessions: int = 0  # sessions opened for this stage (0: none)
    note: str = ""

    def total(self, attr: str) -> int:
        return sum(getattr(p, attr) for p in self.procs)


def snapshot(root: int, label: str) -> Stage:
    procs = [p for pid in tree_pids(root) if (p := read_proc(pid)) is not None]
    if not procs:
        raise BenchError(f"{label}: the server's process tree is gone")
    return Stage(label, procs)


async def settle(root: int, seconds: float, deadline: Deadline) -> bool:
    """Sleep `seconds`, then wait (at most 60 s) until the tree's CPU is quiet: at most 2 ticks
    in 0.5 s, twice in a row. Returns whether it went quiet."""
    await asyncio.sleep(seconds)
    end = time.monotonic() + deadline.left(60)
    quiet, last = 0, tree_cpu_ticks(root)
    while quiet < 2 and time.monotonic() < end:
        await asyncio.sleep(0.5)
        now = tree_cpu_ticks(root)
        quiet = quiet + 1 if now - last <= 2 else 0
        last = now
    return quiet >= 2


# -- idle sessions (client side, asyncio) ---------------------------------------------------------


@dataclasses.dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    watcher: asyncio.Task[None] | None = None
    dropped: str = ""  # what the server said or did while the session was meant to be idle


async def _smtp_reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) SMTP reply."""
    text = b""
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError(f"connection closed (got {text[:200]!r})")
        text += line
        if len(line) < 4 or line[3:4] != b"-":
            return text


async def _imap_until(reader: asyncio.StreamReader, done: Callable[[bytes], bool]) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError("connection closed")
        if done(line):
            return line


async def open_smtp(port: int) -> Session:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    greeting = await _smtp_reply(reader)
    if not greeting.startswith(b"220"):
        writer.close()
        raise BenchError(f"greeting {greeting[:200]!r}")
    writer.write(b"EHLO client." + DOMAIN.encode() + b"\r\n")
    reply = await _smtp_reply(reader)
    if not reply.startswith(b"250"):
        writer.close()
        raise BenchError(f"EHLO: {reply[:200]!r}")
    return Session(reader, writer)


def tls_client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_imap(port: int, user: str, ctx: ssl.SSLContext, idle: bool = True) -> Session:
    """Implicit TLS, LOGIN, SELECT INBOX and (`idle`) IDLE until the continuation."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=ctx)
    s = Session(reader, writer)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise BenchError(f"greeting {greeting[:200]!r}")
        for tag, cmd in ((b"a1", f'LOGIN "{user}" "{PASSWORD}"'), (b"a2", "SELECT INBOX")):
            writer.write(tag + b" " + cmd.encode() + b"\r\n")
            line = await _imap_until(reader, lambda ln, t=tag: ln.startswith(t + b" "))
            if not line.startswith(tag + b" OK"):
                raise BenchError(f"{cmd.split()[0]}: {line[:200]!r}")
        if idle:
            writer.write(b"a3 IDLE\r\n")
            line = await _imap_until(reader, lambda ln: ln.startswith((b"+", b"a3 ")))
            if not line.startswith(b"+"):
                raise BenchError(f"IDLE: {line[:200]!r}")
    except BaseException:
        writer.close()
        raise
    return s


async def _watch(s: Session, unsolicited_ok: bool) -> None:
    """Notes a session the server ends (or, for SMTP, talks on) while it should sit idle."""
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        while True:
            data = await s.reader.read(4096)
            if not data:
                s.dropped = s.dropped or "closed by the server"
                return
            if not unsolicited_ok or data.startswith(b"* BYE"):
                s.dropped = data[:120].decode(errors="replace").strip()


async def open_many(
    n: int, opener: Callable[[int], Awaitable[Session]], deadline: Deadline, unsolicited_ok: bool
) -> tuple[list[Session], float]:
    """`n` sessions, CONCURRENCY being set up at a time; all must succeed within the deadline.
    Returns them (each with a watcher task) and the seconds it took."""
    sem = asyncio.Semaphore(CONCURRENCY)
    sessions: list[Session] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            if errors:
                return
            try:
                s = await opener(i)
            except (BenchError, OSError, ssl.SSLError, EOFError) as e:
                errors.append(f"session {i}: {type(e).__name__}: {e}")
                return
            s.watcher = asyncio.create_task(_watch(s, unsolicited_ok))
            sessions.append(s)

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), deadline.left())
    except TimeoutError:
        errors.append(f"only {len(sessions)}/{n} sessions open when the time bound ran out")
    if errors:
        await close_all(sessions)
        raise BenchError(f"{len(sessions)}/{n} sessions opened; first error: {errors[0]}")
    return sessions, time.perf_counter() - t0


async def close_all(sessions: list[Session], bye: bytes = b"") -> None:
    for s in sessions:
        if s.watcher is not None:
            s.watcher.cancel()
        with contextlib.suppress(Exception):
            if bye:
                s.writer.write(bye)
            s.writer.close()
    await asyncio.gather(
        *(asyncio.wait_for(s.writer.wait_closed(), 10) for s in sessions), return_exceptions=True
    )


def dropped(sessions: list[Session]) -> str:
    gone = [s.dropped for s in sessions if s.dropped]
    return f"{len(gone)} dropped by the server (first: {gone[0]})" if gone else ""


# -- postkeep -------------------------------------------------------------------------------------


def code_version() -> str:
    """git HEAD, uncommitted files in src/ and a hash of src/postkeep/**.py (as the other
    benchmarks report it)."""
    src = REPO / "src" / "postkeep"
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    parts = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=10)
        dirty = run_cmd(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], timeout=10)
        parts.append(f"git {head.stdout.strip() or 'none'}")
        if n := len(dirty.stdout.splitlines()):
            parts.append(f"{n} uncommitted file(s) in src/")
    parts.append(f"src/postkeep sha256 {digest.hexdigest()[:12]}")
    return "postkeep " + ", ".join(parts)


def postkeep_env(extra: dict[str, str]) -> dict[str, str]:
    """This checkout's src/ first on the path (the IMAP workers inherit it), plus --env."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    return env


class Postkeep:
    """`postkeep init`, the connection caps, `user add`, `serve` (own session, stopped by PID)."""

    def __init__(self, workdir: Path, python: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.instance = workdir / "instance"
        self.python = python
        self.env = postkeep_env(env)
        self.log_path = workdir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.smtp_port = self.imaps_port = 0
        self.changed: dict[str, str] = {}

    def _cli(self, *args: str, stdin: str | None = None) -> None:
        argv = [str(self.python), "-m", "postkeep", *args]
        r = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            check=False,
        )
        if r.returncode != 0:
            raise TargetUnavailable(f"postkeep {args[0]} ... failed: {_tail(r.stdout + r.stderr)}")

    def setup(self, users: int, smtp_n: int, imap_n: int) -> None:
        self.workdir.mkdir(mode=0o755)
        base = pick_port((25, 65, 87, 143, 993), 10000, 31000)
        self._cli(
            "init",
            str(self.instance),
            "--hostname",
            DOMAIN,
            "--domain",
            DOMAIN,
            "--base-port",
            str(base),
            *INIT_AS,
        )
        path = self.instance / "postkeep.toml"
        text = path.read_text()
        # Idle SMTP sessions turn slow after smtp.slow_after; slow ones may hold only
        # smtp.slow_share (0.5) of smtp.max_connections, so the cap is twice the sessions.
        smtp = {
            "max_connections": max(1000, 2 * smtp_n + 100),
            "max_connections_per_ip": max(20, smtp_n + 100),
        }
        per_account = -(-imap_n // users) + 10
        imap = {
            "max_connections": max(10000, imap_n + 100),
            "max_connections_per_ip": max(100, imap_n + 100),
            "max_connections_per_account": max(50, per_account),
        }
        text = set_toml_keys(text, "smtp", {k: str(v) for k, v in smtp.items()})
        text = set_toml_keys(text, "imap", {k: str(v) for k, v in imap.items()})
        conf = tomllib.loads(text)
        path.write_text(text)
        self.changed = {f"smtp.{k}": str(v) for k, v in smtp.items()}
        self.changed |= {f"imap.{k}": str(v) for k, v in imap.items()}
        self.smtp_port = int(conf["smtp"]["listen"][0].rpartition(":")[2])
        self.imaps_port = int(conf["imap"]["tls_listen"][0].rpartition(":")[2])
        for i in range(1, users + 1):
            self._cli(
                "--dir",
                str(self.instance),
                "user",
                "add",
                user_name(i),
                "--password-stdin",
                stdin=PASSWORD + "\n",
            )

    def start(self, timeout: float) -> None:
        """Start `serve` and wait for its "ready" log line: no connection before the first
        measurement."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "postkeep", "--dir", str(self.instance), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise TargetUnavailable(f"serve exited: {_tail(self.log())}")
            if any(" ready " in line for line in self.log().splitlines()):
                return
            time.sleep(0.2)
        raise TargetUnavailable(f"no 'ready' in the serve log within {timeout:.0f}s")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def root_pid(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError("postkeep serve is not running")
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
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # anything of this instance left in its session
        self.proc = None


def deliver(port: int, users: int, per_user: int) -> None:
    """`per_user` small messages into every INBOX over the MX port, one SMTP connection."""
    body = "".join(
        f"Line {i} of a small test message for the footprint benchmark.\r\n" for i in range(30)
    )
    with smtplib.SMTP(LOOPBACK, port, timeout=60) as smtp:
        smtp.ehlo(f"client.{DOMAIN}")
        for u in range(1, users + 1):
            for i in range(per_user):
                msg = (
                    f"From: <sender@{DOMAIN}>\r\nTo: <{user_name(u)}>\r\n"
                    f"Subject: message {i}\r\nMessage-ID: <fp.{u}.{i}@{DOMAIN}>\r\n"
                    f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n{body}"
                )
                smtp.sendmail(f"sender@{DOMAIN}", [user_name(u)], msg.encode())


@dataclasses.dataclass
class PostkeepResult:
    stages: list[Stage] = dataclasses.field(default_factory=list)
    error: str = ""
    config: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


async def measure_postkeep(
    pk: Postkeep, args: argparse.Namespace, deadline: Deadline, res: PostkeepResult
) -> None:
    root = pk.root_pid()
    await settle(root, args.settle, deadline)
    res.stages.append(snapshot(root, "idle, fresh"))
    # warm-up: some mail in every INBOX, one SMTP session, one IMAP login per user (the
    # lazily imported modules, the password cache, the store's pools): not per-session cost
    await asyncio.to_thread(deliver, pk.smtp_port, args.users, args.messages)
    ctx = tls_client_context()
    for i in range(1, args.users + 1):
        s = await asyncio.wait_for(
            open_imap(pk.imaps_port, user_name(i), ctx, idle=False), deadline.left(120)
        )
        await close_all([s], b"z LOGOUT\r\n")
    await settle(root, args.settle, deadline)
    res.stages.append(snapshot(root, "idle, after warm-up"))
    res.stages[-1].note = f"{args.messages} msgs delivered per INBOX, 1 IMAP login per user"

    smtp, secs = await open_many(args.smtp, lambda _i: open_smtp(pk.smtp_port), deadline, False)
    imap: list[Session] = []
    try:
        await settle(root, args.settle, deadline)
        stage = snapshot(root, f"+{args.smtp} idle SMTP")
        stage.sessions, stage.note = args.smtp, f"opened in {secs:.1f}s"
        res.stages.append(stage)
        imap, secs = await open_many(
            args.imap,
            lambda i: open_imap(pk.imaps_port, user_name(i % args.users + 1), ctx),
            deadline,
            True,
        )
        await settle(root, args.settle, deadline)
        stage = snapshot(root, f"+{args.imap} idle IMAP (SMTP still open)")
        stage.sessions, stage.note = args.imap, f"opened in {secs:.1f}s"
        res.stages.append(stage)
        for what, sessions in (("SMTP", smtp), ("IMAP", imap)):
            if problem := dropped(sessions):
                res.notes.append(f"{what} sessions: {problem}; the per-session cost is suspect")
    finally:
        await close_all(imap, b"DONE\r\nz LOGOUT\r\n")
        await close_all(smtp, b"QUIT\r\n")


def run_postkeep(base: Path, args: argparse.Namespace, deadline: Deadline) -> PostkeepResult:
    res = PostkeepResult()
    pk = Postkeep(base / "postkeep", args.python, args.env)
    try:
        print(f"[postkeep] init, {args.users} users", flush=True)
        pk.setup(args.users, args.smtp, args.imap)
        res.config = pk.changed
        pk.start(deadline.left(120))
        print(f"[postkeep] ready; SMTP {pk.smtp_port}, IMAPS {pk.imaps_port}", flush=True)
        asyncio.run(measure_postkeep(pk, args, deadline, res))
    except (TargetUnavailable, BenchError, OSError, subprocess.SubprocessError) as e:
        res.error = f"{type(e).__name__}: {e}"
        print(f"[postkeep] FAILED: {res.error}", flush=True)
    finally:
        with no_interrupts():
            pk.stop()
    problems = [ln for ln in pk.log().splitlines() if " ERROR " in ln or " CRITICAL " in ln]
    if problems:
        res.notes.append(f"serve log: {len(problems)} ERROR line(s), first: {problems[0][:200]}")
    return res


# -- references: Postfix and Dovecot, with the other benchmarks' targets --------------------------


@dataclasses.dataclass
class RefResult:
    target: str
    version: str = "?"
    idle: Stage | None = None
    busy: Stage | None = None
    error: str = ""


async def _ref_sessions(
    root: int,
    n: int,
    opener: Callable[[int], Awaitable[Session]],
    deadline: Deadline,
    ref: RefResult,
    settle_s: float,
) -> None:
    await settle(root, settle_s, deadline)
    ref.idle = snapshot(root, "idle")
    if n <= 0:
        return
    sessions, _secs = await open_many(n, opener, deadline, ref.target == "dovecot")
    try:
        await settle(root, settle_s, deadline)
        ref.busy = snapshot(root, f"+{n} sessions")
        ref.busy.sessions = n
    finally:
        await close_all(sessions)


def run_postfix(base: Path, args: argparse.Namespace, deadline: Deadline) -> RefResult:
    """A private Postfix (bench/smtp_ingest's PostfixTarget): master, qmgr, pickup, ...;
    idle, then `--ref-sessions` idle SMTP sessions (an smtpd process each)."""
    ref = RefResult("postfix")
    target = None
    try:
        from smtp_ingest import run as smtp_bench

        target = smtp_bench.PostfixTarget(base / "postfix")
        target.setup()
        ref.version = target.version()
        target.start()
        root = target.root_pid()
        if root is None:
            raise TargetUnavailable("the Postfix master is not running")
        n = min(args.ref_sessions, smtp_bench.IDLE_SESSIONS)  # its master.cf's smtpd limit
        port = target.port
        asyncio.run(_ref_sessions(root, n, lambda _i: open_smtp(port), deadline, ref, args.settle))
    except Exception as e:  # a reference that breaks must not end the run
        ref.error = f"{type(e).__name__}: {e}"
    finally:
        if target is not None:
            with no_interrupts():
                target.stop()
    return ref


def run_dovecot(base: Path, args: argparse.Namespace, deadline: Deadline) -> RefResult:
    """A private Dovecot (bench/imap's DovecotTarget, its default "performance" login mode);
    idle, then `--ref-sessions` idle IMAP sessions as for postkeep (an imap process each)."""
    ref = RefResult("dovecot")
    target = None
    try:
        from imap import run as imap_bench

        target = imap_bench.DovecotTarget(base / "dovecot", "performance")
        users = args.users
        target.setup(imap_bench.Limits(users=users, connections=max(args.ref_sessions, 100)))
        ref.version = target.version()
        target.start()
        root = target.root_pid()
        if root is None:
            raise TargetUnavailable("dovecot is not running")
        ctx, port = tls_client_context(), target.tls_port
        asyncio.run(
            _ref_sessions(
                root,
                args.ref_sessions,
                lambda i: open_imap(port, user_name(i % users + 1), ctx),
                deadline,
                ref,
                args.settle,
            )
        )
    except Exception as e:  # a reference that breaks must not end the run
        ref.error = f"{type(e).__name__}: {e}"
    finally:
        if target is not None:
            with no_interrupts():
                target.stop()
    return ref


# -- import costs ---------------------------------------------------------------------------------

SERVE_IMPORTS = "import postkeep.cli, postkeep.server.main, uvloop"
STDLIB = "import asyncio, ssl, email.parser, email.policy, email.utils, logging, sqlite3"
CRYPTOGRAPHY = (
    "import cryptography.x509, cryptography.hazmat.primitives.ciphers.aead, "
    "cryptography.hazmat.primitives.asymmetric.ec, cryptography.hazmat.primitives.serialization"
)
SQLALCHEMY = "import sqlalchemy, sqlalchemy.dialects.sqlite"
THIRD_PARTY = (
    f"import uvloop, argon2, icu, zxcvbn, idna, sqlalchemy.dialects.postgresql; "
    f"{CRYPTOGRAPHY}; {SQLALCHEMY}"
)

# (label, module that tells whether serve loads it, imported first (not counted), measured)
IMPORTS = [
    ("stdlib: asyncio, ssl, email, logging, sqlite3", "asyncio", "", STDLIB),
    ("uvloop", "uvloop", "", "import uvloop"),
    ("cryptography (x509, AEAD, EC)", "cryptography", "", CRYPTOGRAPHY),
    ("argon2-cffi", "argon2", "", "import argon2"),
    ("SQLAlchemy (core, SQLite dialect)", "sqlalchemy", "", SQLALCHEMY),
    ("+ its PostgreSQL dialect (over the row above)", "sqlalchemy.dialects.postgresql",
     SQLALCHEMY, "import sqlalchemy.dialects.postgresql"),
    ("psycopg", "psycopg", "", "import psycopg"),
    ("PyICU", "icu", "", "import icu"),
    ("zxcvbn", "zxcvbn", "", "import zxcvbn"),
    ("idna", "idna", "", "import idna"),
    ("gssapi", "gssapi", "", "import gssapi, gssapi.exceptions"),
    ("scramp", "scramp", "", "import scramp"),
    ("postkeep's own modules (over stdlib and all the packages above that serve loads)",
     "postkeep", f"{STDLIB}; {THIRD_PARTY}", SERVE_IMPORTS),
    ("all that `postkeep serve` imports before it starts", "postkeep", "", SERVE_IMPORTS),
]  # fmt: skip

_IMPORT_CHILD = r"""
import gc, json, sys
def roll():
    v = {}
    for line in open("/proc/self/smaps_rollup"):
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            v[key] = int(rest.split()[0])
    return {"rss": v["Rss"], "pss": v["Pss"], "anon": v.get("Anonymous", 0),
            "uss": v["Private_Clean"] + v["Private_Dirty"]}
mode, pre, code = sys.argv[1:4]
exec(pre)
if mode == "modules":
    exec(code)
    print(json.dumps({"modules": sorted(sys.modules)}))
elif mode == "trace":
    import tracemalloc
    tracemalloc.start()
    exec(code)
    print(json.dumps({"traced": tracemalloc.get_traced_memory()[0] // 1024}))
else:
    gc.collect(); before, modules = roll(), len(sys.modules)
    exec(code)
    gc.collect(); after = roll()
    print(json.dumps({k: after[k] - before[k] for k in after}
                     | {"modules": len(sys.modules) - modules, "base": before}))
"""


@dataclasses.dataclass
class ImportCost:
    label: str
    values: dict[str, int] = dataclasses.field(default_factory=dict)
    in_serve: bool | None = None
    error: str = ""


def _import_child(python: Path, env: dict[str, str], mode: str, pre: str, code: str) -> dict:
    r = subprocess.run(
        [str(python), "-c", _IMPORT_CHILD, mode, pre, code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if r.returncode != 0:
        raise BenchError(_tail(r.stderr, 1))
    return json.loads(r.stdout)


def measure_imports(python: Path, env: dict[str, str]) -> list[ImportCost]:
    """Each IMPORTS entry in a fresh interpreter: smaps_rollup before and after (RSS, PSS, USS,
    anonymous), and in another one tracemalloc's count of the Python allocations it made; and
    whether `postkeep serve` loads the module at all before it starts."""
    env = postkeep_env(env)
    try:
        loaded = set(_import_child(python, env, "modules", "", SERVE_IMPORTS)["modules"])
    except (BenchError, OSError, subprocess.SubprocessError, ValueError):
        loaded = None
    out: list[ImportCost] = []
    for label, module, pre, code in IMPORTS:
        cost = ImportCost(label, in_serve=None if loaded is None else module in loaded)
        try:
            for mode in ("smaps", "trace"):
                cost.values |= _import_child(python, env, mode, pre, code)
        except (BenchError, OSError, subprocess.SubprocessError, ValueError) as e:
            cost.error = str(e)
        out.append(cost)
    return out


# -- report ---------------------------------------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / KiB:.1f}"


def render_postkeep(res: PostkeepResult) -> list[str]:
    out = ["## postkeep", ""]
    if res.error:
        out += [f"FAILED: {_cell(res.error)}", ""]
    if not res.stages:
        return out
    out += [
        "| stage | processes | threads | RSS MiB | PSS MiB | USS MiB | PSS anon MiB "
        "| sessions | PSS delta MiB | PSS KiB/session | PSS anon KiB/session | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    prev: Stage | None = None
    for st in res.stages:
        delta = per = per_anon = "-"
        if prev is not None and st.sessions:
            d = st.total("pss") - prev.total("pss")
            delta, per = mib(d), f"{d / st.sessions:.1f}"
            per_anon = f"{(st.total('pss_anon') - prev.total('pss_anon')) / st.sessions:.1f}"
        out.append(
            f"| {st.label} | {len(st.procs)} | {st.total('threads')} | {mib(st.total('rss'))} "
            f"| **{mib(st.total('pss'))}** | {mib(st.total('uss'))} "
            f"| {mib(st.total('pss_anon'))} | {st.sessions or '-'} | {delta} | {per} "
            f"| **{per_anon}** | {_cell(st.note)} |"
        )
        prev = st
    out += ["", "Per process (PSS / USS / RSS MiB, threads):", ""]
    names = [p.name for p in res.stages[0].procs]
    for st in res.stages[1:]:
        names += [p.name for p in st.procs if p.name not in names]
    out += [
        "| process | " + " | ".join(st.label for st in res.stages) + " |",
        "|---|" + "--:|" * len(res.stages),
    ]
    for name in names:
        cells = []
        for st in res.stages:
            ps = [p for p in st.procs if p.name == name]
            cells.append(
                " + ".join(f"{mib(p.pss)} / {mib(p.uss)} / {mib(p.rss)}, {p.threads}t" for p in ps)
                or "-"
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "KiB/session = (tree PSS, or its anonymous part, at the stage - at the stage before) / "
        "sessions. USS = Private_Clean + Private_Dirty. The PSS of library pages is split with "
        "every process on the machine that maps them (other Python processes of the same venv "
        "too), so PSS moves by a few MiB with what else runs; PSS anon (a session's memory is "
        "anonymous) does not, and also splits pages a fork shares: the per-session figure to "
        "trust on a shared machine. "
        "Config changed from the defaults besides the ports: "
        + ", ".join(f"`{k} = {v}`" for k, v in res.config.items())
        + ".",
    ]
    return out


def render_refs(refs: list[RefResult], pk: PostkeepResult) -> list[str]:
    out = [
        "## References (same run)",
        "",
        "| server | processes idle | PSS idle MiB | USS idle MiB | RSS idle MiB | sessions "
        "| processes | PSS MiB | PSS KiB/session |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    if pk.stages:
        st = pk.stages[0]
        out.append(
            f"| postkeep (idle, fresh) | {len(st.procs)} | {mib(st.total('pss'))} "
            f"| {mib(st.total('uss'))} | {mib(st.total('rss'))} | | | | |"
        )
    for r in refs:
        if r.idle is None:
            out.append(f"| {r.target} | unavailable: {_cell(r.error)} | | | | | | | |")
            continue
        i, b = r.idle, r.busy
        per = (b.total("pss") - i.total("pss")) / b.sessions if b and b.sessions else None
        out.append(
            f"| {r.version} | {len(i.procs)} ({', '.join(sorted({p.name for p in i.procs}))}) "
            f"| {mib(i.total('pss'))} | {mib(i.total('uss'))} | {mib(i.total('rss'))} "
            f"| {b.sessions if b else '-'} | {len(b.procs) if b else '-'} "
            f"| {mib(b.total('pss')) if b else '-'} | {_fmt(per, '.1f')} |"
        )
        if r.error:
            out.append(f"| {r.target} (sessions) | FAILED: {_cell(r.error)} | | | | | | | |")
    out += [
        "",
        "Postfix: bench/smtp_ingest's private instance (SMTP sessions: greeting and EHLO, an "
        'smtpd process each). Dovecot: bench/imap\'s private instance, "performance" login '
        "mode (IMAP sessions as for postkeep: implicit TLS, LOGIN, SELECT INBOX, IDLE; an "
        "imap process each, the TLS proxied by imap-login).",
    ]
    return out


def render_imports(costs: list[ImportCost]) -> list[str]:
    base = next((c.values.get("base") for c in costs if c.values.get("base")), None)
    out = [
        "## What the imports cost (each in a fresh interpreter)",
        "",
        "| import | loaded by serve | modules | RSS KiB | PSS KiB | USS KiB | anon KiB "
        "| tracemalloc KiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for c in costs:
        if c.error:
            out.append(f"| {c.label} | | not importable: {_cell(c.error)} | | | | | |")
            continue
        v = c.values
        out.append(
            f"| {c.label} | {({True: 'yes', False: 'no'}).get(c.in_serve, '?')} "
            f"| {v['modules']} | {v['rss']} | {v['pss']} | {v['uss']} "
            f"| {v['anon']} | {v['traced']} |"
        )
    if isinstance(base, dict):
        out += [
            "",
            f"A bare interpreter (before the import): RSS {base['rss']} KiB, PSS {base['pss']} "
            f"KiB, USS {base['uss']} KiB. Each row includes what the package itself imports, so "
            "rows overlap (cryptography and argon2 share cffi; the last row holds them all), "
            'except the rows marked "over", which count only what their import adds to what '
            "was imported first. Anonymous memory (the modules' objects) is private to each "
            "process that imports them; file-backed pages (the libraries) are shared, their PSS "
            'split with whatever else maps them. "loaded by serve": in '
            "`sys.modules` after the last row's import (lazy imports at run time not seen).",
        ]
    return out


def render(
    args: argparse.Namespace,
    pk: PostkeepResult | None,
    refs: list[RefResult],
    imports: list[ImportCost],
    interrupted: bool,
) -> str:
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    out = [
        f"# Memory footprint benchmark{' (INTERRUPTED)' if interrupted else ''}",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- host: nproc={os.cpu_count()}, {mem_kb // 1024} MiB RAM, "
        f"{platform.system()} {platform.release()}, python {platform.python_version()}",
        f"- {code_version()}, run with `{args.python} -m postkeep`"
        + (f", env {' '.join(f'{k}={v}' for k, v in args.env.items())}" if args.env else ""),
        f"- {args.smtp} SMTP and {args.imap} IMAP sessions over {args.users} accounts, "
        f"settle {args.settle:g} s before each measurement",
        "",
    ]
    if pk is not None:
        out += [*render_postkeep(pk), ""]
    if refs:
        out += [*render_refs(refs, pk or PostkeepResult()), ""]
    if imports:
        out += [*render_imports(imports), ""]
    notes = (pk.notes if pk else []) + [f"{r.target}: {r.error}" for r in refs if r.error]
    if notes:
        out += ["## Notes", "", *[f"- {_cell(n)}" for n in notes], ""]
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="100 sessions each, settle 2 s (smoke)")
    p.add_argument("--targets", default="postkeep,postfix,dovecot", help="comma list")
    p.add_argument("--only", default="footprint,imports", help="footprint, imports or both")
    p.add_argument("--smtp", type=int, help="idle SMTP sessions (default 1000; quick 100)")
    p.add_argument("--imap", type=int, help="idle IMAP sessions (default 1000; quick 100)")
    p.add_argument("--users", type=int, default=20, help="accounts the IMAP sessions share")
    p.add_argument("--messages", type=int, default=20, help="messages put in every INBOX")
    p.add_argument(
        "--ref-sessions",
        type=int,
        default=100,
        help="sessions for Postfix and Dovecot (a process each; 0: idle only)",
    )
    p.add_argument("--settle", type=float, help="seconds before each measurement (default 5)")
    p.add_argument("--max-seconds", type=float, default=900, help="bound of the whole run")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of postkeep's processes, e.g. MALLOC_ARENA_MAX=2",
    )
    default_python = REPO / ".venv" / "bin" / "python"
    p.add_argument(
        "--python",
        type=Path,
        default=default_python if default_python.exists() else Path(sys.executable),
        help="interpreter that runs `-m postkeep` (this checkout's src/ first)",
    )
    p.add_argument("--out", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --out")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    args.smtp = args.smtp if args.smtp is not None else (100 if args.quick else 1000)
    args.imap = args.imap if args.imap is not None else (100 if args.quick else 1000)
    args.settle = args.settle if args.settle is not None else (2.0 if args.quick else 5.0)
    if args.quick:
        args.ref_sessions = min(args.ref_sessions, 20)
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--env {item!r}: KEY=VALUE")
        env[key] = value
    args.env = env
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    if set(args.targets) - {"postkeep", "postfix", "dovecot"} or not args.targets:
        p.error("--targets: postkeep, postfix, dovecot")
    if not args.only or args.only - {"footprint", "imports"}:
        p.error("--only: footprint, imports")
    if args.users < 1:
        p.error("--users must be at least 1")
    return args


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard >= 0 else need, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(args.smtp + args.imap + 2000)  # inherited by the servers too
    # explicit, since a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    deadline = Deadline(args.max_seconds)
    base = Path(tempfile.mkdtemp(prefix="footprint-bench-"))
    base.chmod(0o755)  # Postfix's and Dovecot's unprivileged processes reach their directories
    print(f"work directory {base}", flush=True)
    pk: PostkeepResult | None = None
    refs: list[RefResult] = []
    imports: list[ImportCost] = []
    interrupted = False
    try:
        if "footprint" in args.only:
            if "postkeep" in args.targets:
                pk = run_postkeep(base, args, deadline)
            for name, fn in (("postfix", run_postfix), ("dovecot", run_dovecot)):
                if name in args.targets:
                    print(f"[{name}] idle and {args.ref_sessions} sessions", flush=True)
                    refs.append(fn(base, args, deadline))
                    if refs[-1].error:
                        print(f"[{name}] {refs[-1].error}", flush=True)
        if "imports" in args.only:
            print("import costs", flush=True)
            imports = measure_imports(args.python, args.env)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted, cleaning up", file=sys.stderr)
    except Exception:
        traceback.print_exc()
        interrupted = True
    finally:
        with no_interrupts():
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    report = render(args, pk, refs, imports, interrupted)
    print()
    print(report, end="")
    if not args.no_write and not interrupted:
        args.out.write_text(report)
        print(f"\nwritten to {args.out}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
