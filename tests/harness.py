"""In-process harness: the real SMTP (MX and submission) and IMAP servers inside the test process.

`Harness` writes a config file (`config.load` validates it, as for `postkeep serve`), a master
key and a self-signed certificate (`create_self_signed`, valid for 127.0.0.1 and ::1) into a
temporary instance directory, opens the store (SQLite there, or a PostgreSQL URL), and starts
`SmtpServer` (role "mx" and role "submission") and `ImapServer` on free loopback ports, on an
asyncio event loop of their own in a background thread. Tests talk to them from the test thread
with ordinary blocking clients (smtplib, imaplib, `SmtpClient` for raw bytes) and reach the store
through `run()`, which runs a coroutine on the servers' loop and waits for it.

    with running_harness(tmp_path, config={"smtp": {"max_message_size": 1000}}) as h:
        h.add_domain("example.test")
        h.add_user("alice@example.test")
        with h.smtp() as client:
            client.sendmail("a@remote.test", ["alice@example.test"], b"Subject: x\\r\\n\\r\\n")
        assert len(h.messages("alice@example.test")) == 1

The MX and submission servers are `RecordingSmtpServer`s: they keep each connection's driver
state by the client's port (`smtp_conn`, `smtp_session`), so tests can check what only the
server knows (bytes buffered, the session's mode) on the real driver. Accounts get cheap argon2
parameters (verification reads them from the hash), so logins cost milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import imaplib
import logging
import re
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher

from postkeep import config as config_mod
from postkeep.auth.passwords import PasswordVerifier
from postkeep.imap.server import ImapServer
from postkeep.net.budget import DataBudget
from postkeep.net.tls import build_tls, create_self_signed
from postkeep.sasl.secrets import derive_secrets
from postkeep.smtp.server import SmtpServer
from postkeep.smtp.wire.session import SmtpSession
from postkeep.store import create_master_key, open_store
from postkeep.store.api import Account, Alias, Domain
from postkeep.store.sql.store import SqlStore

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
HOSTNAME = "mx.example.test"
TIMEOUT = 30.0  # seconds any single client read or harness call may take before failing

_fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def fast_hash(password: str) -> str:
    """An argon2id hash with cheap parameters (test accounts only)."""
    return _fast.hash(password)


def unique(prefix: str = "u") -> str:
    """A fresh local part (or mailbox name): `prefix-` and 10 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may take it: callers retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def codes(output: bytes) -> list[str]:
    """The reply codes of each final reply line ("250", "354", ...)."""
    return [line[:3].decode() for line in output.split(b"\r\n") if line[3:4] == b" "]


# Return-Path only on a locally delivered copy: a queued (relayed) one has our Received alone
_TRACE = re.compile(
    rb"\A(?:Return-Path: <[^>\r\n]*>\r\n)?Received: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n")
_QUEUED = re.compile(rb"queued as ([0-9A-F]+)")


def strip_trace(stored: bytes) -> bytes:
    """A stored or queued message without the Return-Path (local copies) and Received
    headers the server put first."""
    m = _TRACE.match(stored)
    assert m is not None, f"no trace headers at the start of {stored[:300]!r}"
    return stored[m.end():]


def queue_id(reply: bytes | str) -> str:
    """The queue id in a `250 2.0.0 Ok: queued as ...` reply."""
    raw = reply.encode() if isinstance(reply, str) else reply
    m = _QUEUED.search(raw)
    assert m is not None, reply
    return m.group(1).decode()


# -- the servers -------------------------------------------------------------------------------


class ConnStats:
    """What a recorded SMTP connection's session was fed, and its largest buffers between reads.

    The driver feeds the session only once it needs more input, i.e. after it has processed
    everything before; so `peak_text` and `peak_buffered` are what the session kept between
    reads (message text, command bytes)."""

    def __init__(self, session: SmtpSession) -> None:
        self.fed = 0
        self.peak_text = 0
        self.peak_buffered = 0
        self._session = session
        self._feed = session.feed
        session.feed = self.feed  # type: ignore[method-assign]

    def feed(self, data: bytes) -> None:
        self.sample()
        self.fed += len(data)
        self._feed(data)

    def sample(self) -> None:
        s = self._session
        self.peak_text = max(self.peak_text, s.pending_text)
        self.peak_buffered = max(self.peak_buffered, s.buffered)


class RecordingSmtpServer(SmtpServer):
    """The real SmtpServer; it also keeps each connection's state, by the client's port."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: dict[int, Any] = {}  # client port -> its SmtpConnection
        self.stats: dict[int, ConnStats] = {}

    def _session_started(self, conn: Any) -> None:
        self.connections[conn.port] = conn
        self.stats[conn.port] = ConnStats(conn.session)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class Harness:
    """An instance directory, its store and the running MX, submission and IMAP servers.

    `config` maps section names to keys to set in postkeep.toml (on top of the listeners the
    harness sets); `store_url` None means SQLite in the instance directory.
    """

    def __init__(
        self,
        root: Path,
        *,
        config: dict[str, dict[str, Any]] | None = None,
        store_url: str | None = None,
        hostname: str = HOSTNAME,
        ipv6: bool | None = None,
    ) -> None:
        self.root = root
        self.overrides = config or {}
        self.store_url = store_url
        self.hostname = hostname
        self.ipv6 = ipv6_loopback() if ipv6 is None else ipv6
        self.cfg: config_mod.Config | None = None
        self.store: SqlStore | None = None
        self.verifier: PasswordVerifier | None = None
        self.mx: RecordingSmtpServer | None = None
        self.submission: RecordingSmtpServer | None = None
        self.imap: ImapServer | None = None
        self.smtp_port = self.smtp6_port = 0
        self.submission_port = self.submissions_port = 0
        self.imap_port = self.imaps_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._records = _Records()
        self._log_level = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def cert_file(self) -> Path:
        return self.root / "tls" / "cert.pem"

    def start(self) -> Harness:
        self.root.mkdir(parents=True, exist_ok=True)
        create_master_key(self.root / "master.key")
        create_self_signed("localhost", self.cert_file, self.root / "tls" / "key.pem")
        logger = logging.getLogger("postkeep")
        self._log_level = logger.level
        logger.setLevel(logging.INFO)  # the servers' INFO lines (rejects, messages) are tested
        logger.addHandler(self._records)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="harness-loop", daemon=True
        )
        self._thread.start()
        try:
            self._start_servers()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> config_mod.Config:
        self.smtp_port = free_port()
        self.smtp6_port = free_port("::1") if self.ipv6 else 0
        self.submission_port, self.submissions_port = free_port(), free_port()
        self.imap_port, self.imaps_port = free_port(), free_port()
        sections: dict[str, dict[str, Any]] = {
            "server": {"hostname": self.hostname, "data_dir": "."},
            "store": {"url": self.store_url or ""},
            "smtp": {"listen": [f"127.0.0.1:{self.smtp_port}"]
                     + ([f"[::1]:{self.smtp6_port}"] if self.ipv6 else [])},
            "submission": {"listen": [f"127.0.0.1:{self.submission_port}"],
                           "tls_listen": [f"127.0.0.1:{self.submissions_port}"]},
            "imap": {"listen": [f"127.0.0.1:{self.imap_port}"],
                     "tls_listen": [f"127.0.0.1:{self.imaps_port}"]},
        }
        for section, values in self.overrides.items():
            sections.setdefault(section, {}).update(values)
        text = "".join(
            f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()) + "\n"
            for section, values in sections.items()
        )
        path = self.root / "postkeep.toml"
        path.write_text(text)
        return config_mod.load(path)

    def _start_servers(self) -> None:
        for attempt in range(8):
            cfg = self._write_config()
            if self.store is None:
                self.cfg = cfg
                self.store = self.run(open_store(cfg.store_url, cfg.data_dir,
                                                 self.root / "master.key"))
                self.verifier = PasswordVerifier()
            tls_context = build_tls(cfg)
            assert self.store is not None and self.verifier is not None
            budget = DataBudget(cfg.smtp.max_data_in_flight)  # one per process, as `serve`
            self.mx = RecordingSmtpServer(cfg, self.store, tls_context, role="mx", budget=budget)
            self.submission = RecordingSmtpServer(cfg, self.store, tls_context,
                                                  role="submission", verifier=self.verifier,
                                                  budget=budget)
            self.imap = ImapServer(cfg, self.store, tls_context, self.verifier)
            try:
                self.run(self._start_all())
            except OSError as e:  # a port taken since free_port looked: new ports, again
                self.run(self._stop_all())
                if e.errno != errno.EADDRINUSE or attempt == 7:
                    raise
                continue
            self.cfg = cfg
            return

    def _servers(self) -> list[SmtpServer | ImapServer]:
        return [s for s in (self.mx, self.submission, self.imap) if s is not None]

    async def _start_all(self) -> None:
        for server in self._servers():
            await server.start()

    async def _stop_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in self._servers()), return_exceptions=True)

    def stop(self) -> None:
        """Stop the servers (sessions end with 421 / BYE), close the store, end the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            if loop.is_running():
                self.run(self._stop_all())
                if self.store is not None:
                    self.run(self.store.close())
        finally:
            if self.verifier is not None:
                self.verifier.close()
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(TIMEOUT)
            loop.close()
            self._loop = None
            logger = logging.getLogger("postkeep")
            logger.removeHandler(self._records)
            logger.setLevel(self._log_level)

    def __enter__(self) -> Harness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running code on the servers' loop -------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = TIMEOUT) -> T:
        """Run a coroutine on the servers' event loop and return its result."""
        assert self._loop is not None, "harness not started"

        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Call `fn` on the servers' loop, between two of its steps (a consistent view)."""

        async def call() -> T:
            return fn()

        return self.run(call())

    # -- administration through the store API ----------------------------------------------------

    @property
    def db(self) -> SqlStore:
        assert self.store is not None
        return self.store

    def add_domain(self, name: str) -> Domain:
        return self.run(self.db.add_domain(name))

    def add_user(self, address: str, password: str = PASSWORD, quota: int = 0) -> Account:
        """An account with `password` (argon2id with cheap parameters, plus its SASL secrets)."""
        return self.run(self.db.add_account(
            address, fast_hash(password), quota, secrets=derive_secrets(address, password)
        ))

    def new_user(self, domain: str, quota: int = 0, prefix: str = "u") -> str:
        """A new account with a unique address in `domain` (its mailboxes start empty)."""
        address = f"{unique(prefix)}@{domain}"
        self.add_user(address, quota=quota)
        return address

    def add_alias(self, source: str, *targets: str) -> Alias:
        """An alias `local@domain`, or a catch-all `@domain`."""
        return self.run(self.db.add_alias(source, list(targets)))

    def grant_send_as(self, address: str, sender: str) -> None:
        self.run(self.db.grant_send_as(address, sender))

    def set_disabled(self, address: str, disabled: bool = True) -> None:
        self.run(self.db.set_disabled(address, disabled))

    def account(self, address: str) -> Account:
        found = self.run(self.db.get_account(address))
        assert found is not None, address
        return found

    def messages(self, address: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every message in an account's mailbox (decrypted), oldest first."""

        async def read() -> list[bytes]:
            account = await self.db.get_account(address)
            assert account is not None, address
            box = await self.db.get_mailbox(account.id, mailbox)
            assert box is not None, mailbox
            infos = sorted(await self.db.list_messages(box.id), key=lambda m: m.uid)
            return [await self.db.read_message(account.id, m.id) for m in infos]

        return self.run(read())

    def message(self, address: str, qid: str) -> bytes:
        """The message of `address`'s INBOX the server accepted with queue id `qid`."""
        found = [m for m in self.messages(address)
                 if re.search(rb"\bid " + qid.encode() + rb"\b", m[:2000])]
        assert len(found) == 1, (qid, len(found))
        return found[0]

    def outbound(self) -> list[tuple[list[str], bytes]]:
        """The outbound queue: (recipient addresses, decrypted message) per entry."""

        async def read() -> list[tuple[list[str], bytes]]:
            return [([r.address for r in e.recipients], await self.db.read_outbound(e.queue_id))
                    for e in await self.db.list_outbound()]

        return self.run(read())

    def log_lines(self, pattern: str = "") -> list[str]:
        """The servers' log lines so far ("postkeep.smtp: reject ip=..."), those matching."""
        return [line for line in list(self._records.lines) if re.search(pattern, line)]

    # -- recorded SMTP connections ---------------------------------------------------------------

    def _server(self, role: str) -> RecordingSmtpServer:
        server = self.mx if role == "mx" else self.submission
        assert server is not None
        return server

    def smtp_conn(self, client_port: int, role: str = "mx") -> Any:
        """The driver's state (`SmtpConnection`) of the connection from `client_port`."""
        conn = self.on_loop(lambda: self._server(role).connections.get(client_port))
        assert conn is not None, f"no {role} connection from port {client_port}"
        return conn

    def smtp_session(self, client_port: int, role: str = "mx") -> SmtpSession:
        session: SmtpSession = self.smtp_conn(client_port, role).session
        return session

    def smtp_stats(self, client_port: int, role: str = "mx") -> ConnStats:
        stats = self.on_loop(lambda: self._server(role).stats.get(client_port))
        assert stats is not None, f"no {role} connection from port {client_port}"
        return stats

    def wait_fed(self, client_port: int, octets: int, role: str = "mx") -> ConnStats:
        """Wait until the connection's session was fed `octets` (and had processed them)."""
        stats = self.smtp_stats(client_port, role)

        async def wait() -> None:
            while stats.fed < octets:
                await asyncio.sleep(0.005)
            stats.sample()

        self.run(wait())
        return stats

    # -- clients ---------------------------------------------------------------------------------

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that verifies the server's certificate (for 127.0.0.1, ::1)."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def raw(self, role: str = "mx", host: str = "127.0.0.1") -> SmtpClient:
        """A raw SMTP connection (greeting read)."""
        port = {"mx": self.smtp6_port if ":" in host else self.smtp_port,
                "submission": self.submission_port}[role]
        return SmtpClient(port, host)

    def smtp(self, host: str = "127.0.0.1") -> smtplib.SMTP:
        """smtplib connected to the MX (greeting read)."""
        port = self.smtp6_port if ":" in host else self.smtp_port
        return smtplib.SMTP(host, port, local_hostname="client.example.net", timeout=TIMEOUT)

    def submit(self, user: str | None = None, password: str = PASSWORD,
               implicit: bool = False) -> smtplib.SMTP:
        """smtplib on submission: STARTTLS (or implicit TLS) and, with `user`, logged in."""
        context = self.client_context()
        client: smtplib.SMTP
        if implicit:
            client = smtplib.SMTP_SSL("127.0.0.1", self.submissions_port, context=context,
                                      local_hostname="client.example.net", timeout=TIMEOUT)
        else:
            client = smtplib.SMTP("127.0.0.1", self.submission_port,
                                  local_hostname="client.example.net", timeout=TIMEOUT)
            client.starttls(context=context)
        if user is not None:
            client.login(user, password)
        return client

    def imaps(self, user: str | None = None, password: str = PASSWORD) -> imaplib.IMAP4_SSL:
        """imaplib over implicit TLS, logged in as `user` if given."""
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port,
                                   ssl_context=self.client_context(), timeout=TIMEOUT)
        if user is not None:
            client.login(user, password)
        return client

    def imap_plain(self) -> imaplib.IMAP4:
        """imaplib on the STARTTLS port, before STARTTLS."""
        return imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=TIMEOUT)


@contextlib.contextmanager
def running_harness(root: Path, **kwargs: Any) -> Iterator[Harness]:
    """A started `Harness` (see its parameters), stopped on exit."""
    h = Harness(root, **kwargs)
    h.start()
    try:
        yield h
    finally:
        h.stop()


# -- a raw SMTP client ---------------------------------------------------------------------------


class SmtpClient:
    """One SMTP connection that sends bytes as given and reads replies exactly as written.

    `feed(data, n)` sends `data` and returns the raw bytes of the next `n` replies (multi-line
    ones whole). Replies come in order, so a reply the server should not have sent shows up in
    place of an expected one; `quit()` checks that nothing but the 221 is left at the end."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port),
                                                                            timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = int(self.sock.getsockname()[1])
        self._buf = b""
        self.greeting = self.replies(1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; unfinished input {self._buf!r}")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line + b"\r\n"

    def replies(self, n: int) -> bytes:
        """The raw bytes of the next `n` replies."""
        out = []
        for _ in range(n):
            while True:
                line = self._line()
                out.append(line)
                assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line
                if line[3:4] == b" ":
                    break
        return b"".join(out)

    def feed(self, data: bytes, n: int) -> bytes:
        self.send(data)
        return self.replies(n)

    def read_to_eof(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        out, self._buf = self._buf, b""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return out
            if not data:
                return out
            out += data

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> None:
        """Start TLS after the 220 to STARTTLS was read."""
        assert self._buf == b"", self._buf
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def quit(self) -> None:
        """QUIT, and check that its 221 is all the server still had to say before closing."""
        self.send(b"QUIT\r\n")
        rest = self.read_to_eof()
        assert codes(rest) == ["221"], rest
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> SmtpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
