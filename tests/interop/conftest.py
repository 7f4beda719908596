"""Fixtures that run a real `postkeep serve` process on free loopback ports."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import postkeep
from postkeep import config as config_mod
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key
from tests.conftest import ROOT_TMP
from tests.interop.open_python import private_ancestors


def _service_prefix() -> list[str]:
    """What runs a postkeep command where its service user can reach this Python: nothing,
    unless the tests run as root on a Python under a private directory (pyenv in /root), where
    the server, once it drops to `server.user`, could not run or import it: then
    `open_python.py`, which shows the user just that Python in a mount namespace of its own."""
    if os.geteuid() != 0:
        return []
    needed = [sys.executable, os.path.dirname(os.__file__), sys.prefix,
              os.path.dirname(postkeep.__file__)]
    if not private_ancestors(needed):
        return []
    return [sys.executable, str(Path(__file__).with_name("open_python.py")), *needed, "--"]


SERVICE_PREFIX = _service_prefix()
PYTHON_POSTKEEP = [sys.executable, "-m", "postkeep"]
POSTKEEP = [*SERVICE_PREFIX, *PYTHON_POSTKEEP]
PASSWORD = "correct horse battery staple"


def reachable(path: Path) -> Path:
    """`path`, with the search permission for others added to it and to its parents up to the
    session's temporary directory (`tests.conftest.pytest_configure`), when the tests run as
    root: pytest makes its directories 0700, and postkeep run by root drops to its service
    user, which must reach the instance in them."""
    if os.geteuid() == 0:
        for directory in (path.resolve(), *path.resolve().parents):
            if ROOT_TMP not in directory.parents:
                break
            directory.chmod(stat.S_IMODE(directory.stat().st_mode) | stat.S_IXOTH)
    return path


def require_tool(name: str, package: str, path: str | None = None) -> str:
    """The path of an external program the suite needs, or a FAILED test (not a skip):
    `make test` installs them all (scripts/test-deps.sh), so a missing one is a broken
    install to fix, not a reason to test less."""
    found = shutil.which(name, path=path)
    if found is None:
        pytest.fail(f"{name} is missing: install the Debian package {package} "
                    "(scripts/test-deps.sh does)", pytrace=False)
    return found


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts. Picked at random below
    the kernel's ephemeral range: a port from inside it (what binding port 0 gives) can be
    taken by one of the tests' own outgoing connections before the server binds it, and was
    ("Address already in use" at start-up, seen in CI). Never the same port twice in a
    process; checked free by binding it."""
    low, high = 10000, _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(low, high) if high > low else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def ipv6_loopback() -> bool:
    """Whether this machine has the IPv6 loopback address ::1."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def dual_stack(inst: Instance) -> None:
    """Make every listener of a stopped instance listen on ::1 too, on the same port as on
    127.0.0.1; skips the test on a machine without ::1 (the only reason to skip)."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback address (::1) on this machine")

    def both(port: int) -> list[str]:
        return [f"127.0.0.1:{port}", f"[::1]:{port}"]

    inst.set_config("smtp", listen=both(inst.smtp_port))
    inst.set_config("submission", listen=both(inst.submission_port),
                    tls_listen=both(inst.submissions_port))
    inst.set_config("imap", listen=both(inst.imap_port), tls_listen=both(inst.imaps_port))


READY = "postkeep.server: ready hostname="  # logged once every listener is up


@dataclass
class Instance:
    """A postkeep instance directory and, while started, its server process."""

    dir: Path
    smtp_port: int
    submission_port: int = 0
    submissions_port: int = 0
    imap_port: int = 0
    imaps_port: int = 0
    https_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.dir / "server.log"

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*POSTKEEP, "--dir", str(self.dir), *args],
            input=input, capture_output=True, text=True, timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"postkeep {args} failed: {result.stdout}{result.stderr}")
        return result

    def set_config(self, section: str, **values: object) -> None:
        """Set keys in a section of postkeep.toml (added, or replacing the key's line)."""
        path = self.dir / "postkeep.toml"
        text = path.read_text()
        lines = "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
        header = f"[{section}]\n"
        if header in text:
            start = text.index(header) + len(header)
            end = text.find("\n[", start)
            end = len(text) if end < 0 else end + 1
            body = "".join(line for line in text[start:end].splitlines(keepends=True)
                           if line.split("=", 1)[0].strip() not in values)
            text = text[:start] + lines + body + text[end:]
        else:
            text += f"\n{header}{lines}"
        path.write_text(text)

    def hand_over(self, *paths: Path) -> None:
        """Give files the tests made as root to the instance's `server.user`, as an operator
        installing a key or a keytab must: the server reads them after its privilege drop.
        No paths: every root-owned file of the instance but postkeep.toml (what a store opened
        in the test process wrote: blobs, their directories)."""
        user = config_mod.load(self.dir / "postkeep.toml").server.user
        if os.geteuid() != 0 or not user:
            return
        account = pwd.getpwnam(user)
        if not paths:
            paths = tuple(p for p in self.dir.rglob("*")
                          if p.lstat().st_uid == 0 and p.name != "postkeep.toml")
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)

    def start(self) -> None:
        """Start the server and wait until it has logged "ready" (every listener is up)."""
        readies = self.log().count(READY) if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*POSTKEEP, "--dir", str(self.dir), "serve"], stdout=log, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()}")
            if self.log().count(READY) > readies:
                return
            time.sleep(0.05)
        raise AssertionError("server did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The pids of the running worker processes, by index (each index's latest "ready")."""
        found = {int(m[1]): int(m[2]) for m in re.finditer(r"worker=(\d+) ready pid=(\d+)",
                                                           self.log())}
        return [found[index] for index in sorted(found)]

    def tree(self) -> list[int]:
        """The server's processes: the main process and its descendants (the fork server, the
        workers)."""
        assert self.proc is not None
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo += map(int, (task / "children").read_text().split())
        return pids

    def kill_all(self) -> None:
        """SIGKILL every process of the server at once (a crash of the whole machine, as far
        as the server can tell), and reap the main process. The workers first: a worker that
        outlived the main process by a moment would see its channel close and stop cleanly."""
        for pid in reversed(self.tree()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()
        self.proc = None

    def worker(self) -> int:
        """The pid of the only worker (`server.processes = 1`): where every session runs."""
        (pid,) = self.workers()
        return pid

    def wait_log(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in log:\n{self.log()[-3000:]}")

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "cert.pem"

    def messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """Read back (decrypting) every message in an account's mailbox, oldest first."""
        return [data for _, data in asyncio.run(self._messages(address, mailbox))]

    def stored(self, address: str, mailbox: str = "INBOX") -> list[tuple[str, bytes]]:
        """(blob id, decrypted message) of every message in the mailbox, oldest first."""
        return asyncio.run(self._messages(address, mailbox))

    def outbound(self) -> list[tuple[list[str], bytes]]:
        """The outbound queue: (recipient addresses, decrypted message) per entry."""
        return asyncio.run(self._outbound())

    async def _outbound(self) -> list[tuple[list[str], bytes]]:
        cfg = config_mod.load(self.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,  # beside a running server:
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)  # its files in blobs/tmp are not stale
        try:
            return [([r.address for r in e.recipients], await store.read_outbound(e.queue_id))
                    for e in await store.list_outbound()]
        finally:
            await store.close()

    async def _messages(self, address: str, mailbox: str) -> list[tuple[str, bytes]]:
        cfg = config_mod.load(self.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,  # beside a running server:
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)  # its files in blobs/tmp are not stale
        try:
            account = await store.get_account(address)
            assert account is not None, address
            box = await store.get_mailbox(account.id, mailbox)
            assert box is not None
            infos = sorted(await store.list_messages(box.id), key=lambda m: m.uid)
            return [(m.blob_id, await store.read_message(account.id, m.id)) for m in infos]
        finally:
            await store.close()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


#: Instances made by `postkeep init` and `user add` (alice, bob), one per (domain, hostname),
#: made once per test process and copied for each `make_instance`: a process start costs
#: about a second (imports, key generation), and some ninety instances are made per run.
_TEMPLATES: dict[tuple[str, str], Path] = {}


def _template(domain: str, hostname: str) -> Path:
    """The instance directory `make_instance` copies for (domain, hostname): made by the real
    commands the first time, in a directory of its own removed when the process exits (under
    /var/tmp when root: the service user must reach it, `reachable`)."""
    key = (domain, hostname)
    if key not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix="postkeep-template-",
                                     dir=ROOT_TMP if os.geteuid() == 0 else None))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        directory = reachable(root) / "instance"
        subprocess.run(
            [*POSTKEEP, "init", str(directory), "--hostname", hostname, "--domain", domain,
             "--base-port", str(free_port() - 25)],
            check=True, capture_output=True, timeout=60,
        )
        template = Instance(directory, 0)
        template.cli("user", "add", f"alice@{domain}", "--password-stdin", input=PASSWORD + "\n")
        template.cli("user", "add", f"bob@{domain}", "--password-stdin", input=PASSWORD + "\n")
        _TEMPLATES[key] = directory
    return _TEMPLATES[key]


def make_instance(root: Path, domain: str = "example.test", hostname: str = "localhost"
                  ) -> Instance:
    """A stopped instance in `root`/instance with users alice and bob of `domain`, on free
    ports: a copy of what `postkeep init` and `user add` made (`_template`), owners and modes
    kept (`cp -a`: run as root, the files are the service user's). Instances of a process with
    the same (domain, hostname) share the master key, the TLS key and the DKIM keys; each has
    its own store and files."""
    root.mkdir(parents=True, exist_ok=True)
    directory = reachable(root) / "instance"
    subprocess.run(["cp", "-a", str(_template(domain, hostname)), str(directory)], check=True)
    port, sub_port, subs_port, imap_port, imaps_port, https, http = (
        free_port() for _ in range(7))
    cfg = directory / "postkeep.toml"
    text = cfg.read_text()
    text = re.sub(r'(\[smtp\]\nlisten = )\[.*?\]', f'\\1["127.0.0.1:{port}"]', text)
    for section, plain, implicit in (("submission", sub_port, subs_port),
                                     ("imap", imap_port, imaps_port)):
        text = re.sub(
            rf'(\[{section}\]\nlisten = )\[.*?\]\ntls_listen = \[.*?\]',
            f'\\1["127.0.0.1:{plain}"]\ntls_listen = ["127.0.0.1:{implicit}"]', text,
        )
    text = re.sub(r'(\[web\]\nlisten = )\[.*?\]\nhttp_listen = \[.*?\]',
                  f'\\1["127.0.0.1:{https}"]\nhttp_listen = ["127.0.0.1:{http}"]', text)
    # caps that fit a 20,000-descriptor hard limit (`serve` refuses to start past it)
    text = text.replace("[smtp]\n", "[smtp]\nmax_connections = 200\n", 1)
    text = text.replace("[imap]\n", "[imap]\nmax_connections = 1000\n", 1)
    # no lookup reaches the machine's resolver: mail queued for other domains stays queued
    # (a nameserver where nothing listens: every lookup fails for now) unless a test sets its
    # own (tests/queue/ point it at NSD)
    text += '\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 1.0\nattempts = 1\n'
    # the tests' own client address is never banned: a module's tests share an instance and
    # fail logins on purpose (tests/interop/test_bans.py bans other loopback addresses)
    text += '\n[bans]\nnever_ban = ["127.0.0.1/32"]\n'
    cfg.write_text(text)
    return Instance(directory, port, sub_port, subs_port, imap_port, imaps_port, https, http)


@dataclass
class RedisServer:
    """A throw-away redis-server on a free loopback port, without persistence."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_tool("redis-server", "redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16) == b"+PONG\r\n"
        except OSError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running `RedisServer` (tests may stop and start it again)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """One shared running instance: example.test with alice, bob, aliases, a quota'd user."""
    inst = make_instance(tmp_path_factory.mktemp("mx"))
    inst.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    inst.cli("domain", "add", "catchall.test")
    inst.cli("user", "add", "carol@catchall.test", "--password-stdin", input=PASSWORD + "\n")
    inst.cli("alias", "add", "@catchall.test", "carol@catchall.test")
    inst.cli("user", "add", "tiny@example.test", "--quota", "3000", "--password-stdin",
             input=PASSWORD + "\n")
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Instance]:
    """A private, not yet started instance (tests adjust its config, then start it)."""
    inst = make_instance(tmp_path)
    yield inst
    inst.stop()
