"""The IMAP listeners: an asyncio driver around the sans-IO reader/parser and `imap.session`.

Per connection (accepted, counted per IP class and TLS-wrapped by `net.listener`): greeting,
then framed commands (`imap.wire.reader`) parsed with `imap.wire.parser` and executed by the
session. This module owns what is not a command's business: STARTTLS (RFC 9051 §6.2.1, with
LOGINDISABLED until it is active), LOGIN and AUTHENTICATE with SASL-IR (RFC 4959) through
`auth.exchange`, whose outcomes it renders as IMAP responses (RFC 5530 codes), IDLE (RFC 2177 /
RFC 9051 §6.3.13) woken by the store's event bus, COMPRESS=DEFLATE (RFC 4978), the deadlines,
the per-account connection limit and command-rate flow control. What it keeps per connection
(the response buffer, the session's output, the counters and marks) is `imap.connection`.

Deadlines (`net.deadlines`) on every wait on the client, reads and flushes of responses alike,
none of which octets extend: before login, `login_timeout` from connect; after login,
`command_timeout` for a command from its first octet plus a second per `min_data_rate` octets
of its literals, and `idle_timeout` of silence between commands (IDLE included: the autologout
of RFC 9051 §5.4). A connection that is `slow_after` seconds into its login phase, or that far
behind within a command, turns slow and needs a slow slot (global over the IMAP processes,
`net.slots`). Past a deadline, or refused a slow slot: BYE, one `reject` line, close.

Literals held (APPEND's messages above all) count against a process-wide `DataBudget`
(`imap.max_append_in_flight`): the reader asks `_admit` before it accepts each literal, one that
does not fit is answered `NO [LIMIT]` (RFC 9051 §7.1) with a `reject` line, and a command's
octets are given back after its event and when the connection ends, however it ends.

Failed logins log one line fail2ban can match, as SMTP does:
`auth failure ip=192.0.2.1 user=alice@example.test mechanism=LOGIN reason="..."`.
With a `guard` (`postkeep.bans`), a banned client gets `* BYE [UNAVAILABLE]` at accept
(implicit TLS: a silent close), and failed logins, failed TLS handshakes (implicit TLS or
STARTTLS) and connections that end before any login was tried (without a failed handshake)
are strikes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

from postkeep import log
from postkeep.auth.exchange import AuthExchange, AuthResult, AuthStatus, SaslAuthenticator
from postkeep.auth.passwords import AuthBusy, PasswordVerifier, authenticate_password
from postkeep.bans.keeper import Guard
from postkeep.bans.policy import PREAUTH, TLS
from postkeep.config import Config
from postkeep.filters.junk.training import JunkTrainer
from postkeep.imap.cache import MessageCache
from postkeep.imap.connection import CommandOut, Conn, Out, Stop, tls_version
from postkeep.imap.session import Session, SessionLimits
from postkeep.imap.wire import commands as c
from postkeep.imap.wire.parser import parse
from postkeep.imap.wire.reader import (
    POST_AUTH_LIMITS,
    PRE_AUTH_LIMITS,
    AuthLine,
    Bad,
    CommandReceived,
    IdleDone,
    ImapReader,
    NeedContinuation,
    NoRoom,
    ReaderLimits,
    TooBig,
)
from postkeep.net.budget import DataBudget
from postkeep.net.deadlines import SlowClient
from postkeep.net.firewall import Firewall, LocalRates, Rates
from postkeep.net.listener import HANDSHAKE_ERRORS, Listeners, Peer, close_stream, start_tls
from postkeep.net.slots import ConnectionSlots, LocalSlots, slow_slots
from postkeep.net.tls import EndPointBindings, network_error
from postkeep.store.api import Account

if TYPE_CHECKING:
    from postkeep.store.api import MailStore

logger = log.get("imap")
T = TypeVar("T")

READ_SIZE = 65536
BYE_BANNED = b"* BYE [UNAVAILABLE] Too many failures from your address, try again later\r\n"
_INFLATE_CHUNK = 256 * 1024  # decompressed octets taken per step (no zip bombs)

_BASE_CAPS = ("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE")
_AUTH_CAPS = (
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CHILDREN",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "SEARCHRES",
    "SORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "BINARY",
    "MULTIAPPEND",
    "STATUS=SIZE",
    "SAVEDATE",
    "OBJECTID",
    "WITHIN",
    "UTF8=ACCEPT",
    "COMPRESS=DEFLATE",
)


class ImapServer:
    """The IMAP listeners of an instance (STARTTLS on `imap.listen`, TLS on `imap.tls_listen`)."""

    def __init__(
        self,
        cfg: Config,
        store: MailStore,
        tls_context: ssl.SSLContext | None,
        verifier: PasswordVerifier,
        *,
        slots: ConnectionSlots | None = None,
        sockets: Sequence[socket.socket] | None = None,
        rates: Rates | None = None,
        guard: Guard | None = None,
    ) -> None:
        """`slots`: the connection limits' counts (default: this process's own); `sockets`:
        listening sockets bound already, one per `listen` entry in order (IMAP worker
        processes share the main process's; default: bind them at `start`); `rates`: the
        firewall's counts (default: this process's own); `guard`: the process's brute-force
        protection (`postkeep.bans`; none without it)."""
        self.cfg = cfg
        self.guard = guard
        self.imap = cfg.imap
        self.store = store
        self.tls_context = tls_context
        self.verifier = verifier
        keytab = str(cfg.data_path(cfg.imap.gssapi_keytab)) if cfg.imap.gssapi_keytab else None
        self.auth = SaslAuthenticator(
            store, verifier, cfg.server.hostname, cfg.imap.sasl_mechanisms,
            gssapi_keytab=keytab, scope="imap",
        )
        self.bindings = EndPointBindings(cfg.data_path(cfg.tls.cert_file))
        # Every certificate yields a tls-server-end-point binding, so the default one's stands
        # for all; over TLS 1.3 clients want tls-exporter instead, so no -PLUS there.
        self._mechanisms = tuple(self.auth.advertised(True, self.bindings.default))
        self._mechanisms_tls13 = tuple(
            self.auth.advertised(True, self.bindings.default, "TLSv1.3")
        )
        self.listen = [(a, False) for a in cfg.imap.listen] + [
            (a, True) for a in cfg.imap.tls_listen
        ]
        self.slots: ConnectionSlots = slots or LocalSlots(
            self.imap.max_connections,
            self.imap.max_connections_per_ip,
            self.imap.max_connections_per_account,
            slow_slots(self.imap.max_connections, self.imap.slow_share),
        )
        self.limits = SessionLimits(
            max_append_size=self.imap.max_append_size,
            max_search_work=self.imap.max_search_work,
            max_search_content=self.imap.max_search_content,
        )
        self.reader_limits = ReaderLimits(
            max_line=POST_AUTH_LIMITS.max_line,
            max_literal=self.imap.max_append_size,
            max_literals=POST_AUTH_LIMITS.max_literals,
            max_command=max(POST_AUTH_LIMITS.max_command, self.imap.max_append_size + 65536),
            search_limits=POST_AUTH_LIMITS.search_limits,
        )
        self.firewall = Firewall(cfg.firewall, "imap", rates or LocalRates(cfg.firewall))
        self.listeners = Listeners(
            self.listen,
            self._serve,
            tls_context,
            slots=self.slots,
            busy=b"* BYE [UNAVAILABLE] Too many connections\r\n",
            role="imap",
            logger=logger,
            read_size=READ_SIZE,
            sockets=sockets,
            handshake_timeout=cfg.tls.handshake_timeout,
            firewall=self.firewall,
            refused=lambda reason: f"* BYE [UNAVAILABLE] Refused ({reason})\r\n".encode(),
            proxy_timeout=cfg.firewall.proxy_timeout,
            ban_lookup=guard.refused if guard is not None else None,
            banned=BYE_BANNED,
            on_handshake_failed=(lambda ip: guard.strike(ip, TLS)) if guard is not None else None,
        )
        self.deadlines = self.listeners.deadlines
        self.handshake_timeout = cfg.tls.handshake_timeout
        self.message_cache = MessageCache(self.imap.message_cache_size)
        self.trainer = (JunkTrainer(store, cfg.junk)
                        if "junk" in cfg.filters.inbound and cfg.junk.classifier else None)
        self.literal_budget = DataBudget(self.imap.max_append_in_flight)

    # -- capabilities ------------------------------------------------------------------------------

    def capabilities(self, conn: Conn) -> list[str]:
        caps = list(_BASE_CAPS)
        if conn.session is not None:
            caps += _AUTH_CAPS
            caps.append(f"APPENDLIMIT={self.imap.max_append_size}")
            if conn.inflate is not None:
                caps.remove("COMPRESS=DEFLATE")
            return caps
        if not conn.tls:
            return [*caps, "STARTTLS", "LOGINDISABLED"]
        return caps + [f"AUTH={m}" for m in self._offered(conn)]

    def _offered(self, conn: Conn) -> tuple[str, ...]:
        """The SASL mechanisms of a connection over TLS: without -PLUS over TLS 1.3."""
        return self._mechanisms_tls13 if tls_version(conn) == "TLSv1.3" else self._mechanisms

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.listeners.start()

    async def stop(self) -> None:
        await self.listeners.stop()
        if self.trainer is not None:  # learning queued before the store closes
            await self.trainer.drain()

    # -- connection --------------------------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        ip, implicit = peer.ip, peer.implicit_tls
        started = time.monotonic()
        conn = Conn(ip, reader, writer, Out(writer), ImapReader(PRE_AUTH_LIMITS), implicit)
        conn.limited = peer.limited
        conn.tokens = self.imap.command_rate * 10
        conn.last = started
        conn.started = asyncio.get_running_loop().time()
        reason = "logout"
        try:
            caps = " ".join(self.capabilities(conn))
            conn.out.write(f"* OK [CAPABILITY {caps}] postkeep ready\r\n".encode())
            await conn.out.drain()
            reason = await self._loop(conn)
        except Stop as stop:
            reason = str(stop) or "closed"
        except TimeoutError:  # before OSError, of which it is a subclass
            reason = "timeout"
            conn.out.write(b"* BYE Autologout; idle for too long\r\n")
        except (ConnectionError, ssl.SSLError, OSError) as e:
            reason = network_error(e)
        except Exception:  # a bug: log it and end this connection only
            logger.exception("internal error ip=%s", ip)
            reason = "internal error"
            conn.out.write(b"* BYE Internal server error\r\n")
        except asyncio.CancelledError:
            reason = "server shutdown"
            conn.out.write(b"* BYE Server shutting down\r\n")
            raise
        finally:
            with contextlib.suppress(
                ConnectionError, ssl.SSLError, OSError, TimeoutError, asyncio.CancelledError
            ):
                await asyncio.wait_for(conn.out.drain(), 5)
            if conn.session is not None:
                conn.session.close()
            if conn.account is not None:
                self.slots.release_account(conn.account.id)
            self._not_slow(conn)
            self._give_back(conn)
            if (self.guard is not None and conn.account is None and not conn.failures
                    and not conn.tls_failed and reason != "server shutdown"):
                self.guard.strike(ip, PREAUTH)  # closed before it tried to log in
            logger.info(
                "disconnect ip=%s tls=%s user=%s commands=%d seconds=%.3f reason=%s",
                ip,
                "yes" if conn.tls else "no",
                log.quote(conn.account.address if conn.account else "-"),
                conn.commands,
                time.monotonic() - started,
                log.quote(reason),
            )
            await close_stream(writer)

    # -- deadlines -----------------------------------------------------------------------------

    def _deadline(self, conn: Conn) -> tuple[float, float | None, str | None]:
        """The deadline of the next read, when the connection turns slow, and the reason to
        give past the deadline (None: the autologout of RFC 9051 §5.4)."""
        imap = self.imap
        if conn.session is None:
            return (conn.started + imap.login_timeout, conn.started + imap.slow_after,
                    "login timeout")
        now = asyncio.get_running_loop().time()
        frames = conn.frames
        if frames.buffered or frames.in_command:
            if conn.command_started is None:
                conn.command_started = now
            start = conn.command_started + frames.literal_octets / imap.min_data_rate
            return start + imap.command_timeout, start + imap.slow_after, "command timeout"
        if conn.idle_since is None:
            conn.idle_since = now
        return conn.idle_since + imap.idle_timeout, None, None

    async def _client(self, conn: Conn, start: Callable[[], Awaitable[T]]) -> T:
        """Wait on the client (`start()`: a read, or a drain of the responses) within the
        connection's deadline (see the module docstring)."""
        while True:
            deadline, slow_at, reason = self._deadline(conn)
            if conn.slow:
                slow_at = None
            elif slow_at is not None and slow_at <= asyncio.get_running_loop().time():
                await self._turn_slow(conn)
                slow_at = None
            try:
                return await self.deadlines.wait(start, deadline, slow_at)
            except SlowClient:
                await self._turn_slow(conn)
            except TimeoutError:
                if reason is None:
                    raise
                self._reject(conn, reason, f"* BYE {reason.capitalize()}\r\n".encode())

    async def _turn_slow(self, conn: Conn) -> None:
        if not await self._take_slow(conn):
            self._reject(conn, "too many slow connections",
                         b"* BYE [UNAVAILABLE] Too many slow connections\r\n")

    async def _take_slow(self, conn: Conn) -> bool:
        """Hold a slow slot for `conn` (False: none left). Once per connection: during IDLE
        two waits (the reading task and a drain of pushed responses) can both pass their
        slow marks."""
        if conn.slow:
            return True
        if not await self.slots.acquire_slow():
            return False
        if conn.slow:  # the other wait took one meanwhile
            self.slots.release_slow()
        conn.slow = True
        return True

    async def _respond(self, conn: Conn) -> None:
        """A drain of responses while a command runs (FETCH flushes every 256 KiB): each
        within `command_timeout` of its start and slow past `slow_after`, whatever octets
        the client takes meanwhile. A client that stops reading is cut (its slot, the
        command and the blob it streams from are let go): the reject line, then the
        connection drops (no BYE: the client reads nothing)."""
        now = asyncio.get_running_loop().time()
        deadline, slow_at = now + self.imap.command_timeout, now + self.imap.slow_after
        while True:
            try:
                return await self.deadlines.wait(conn.out.drain, deadline,
                                                 None if conn.slow else slow_at)
            except SlowClient:
                if not await self._take_slow(conn):
                    self._log_reject(conn, "too many slow connections")
                    raise ConnectionAbortedError("too many slow connections") from None
            except TimeoutError:
                self._log_reject(conn, "send timeout")
                raise ConnectionAbortedError("send timeout") from None

    def _reject(self, conn: Conn, reason: str, bye: bytes, limit: str | None = None) -> NoReturn:
        self._log_reject(conn, reason, limit)
        conn.out.write(bye)
        raise Stop(reason)

    @staticmethod
    def _log_reject(conn: Conn, reason: str, limit: str | None = None) -> None:
        logger.warning(
            "reject ip=%s user=%s reason=%s%s",
            conn.ip,
            log.quote(conn.account.address if conn.account else "-"),
            log.quote(reason),
            f" limit={log.quote(limit)}" if limit is not None else "",
        )

    def _command_done(self, conn: Conn) -> None:
        """A command ended (or failed framing): the next one gets deadlines of its own."""
        conn.command_started = None
        conn.idle_since = None
        if conn.session is not None:
            self._not_slow(conn)

    def _admit(self, conn: Conn, octets: int) -> bool:
        """Count a literal's octets against `imap.max_append_in_flight`, if they fit."""
        if not self.literal_budget.take(octets):
            return False
        conn.held += octets
        return True

    def _give_back(self, conn: Conn) -> None:
        """The command's literals are let go (it ended, was refused, or the connection did)."""
        self.literal_budget.give(conn.held)
        conn.held = 0

    def _not_slow(self, conn: Conn) -> None:
        if conn.slow:
            conn.slow = False
            self.slots.release_slow()

    async def _read(self, conn: Conn) -> bytes:
        """The next input octets (decompressed when COMPRESS is active); b"" at EOF."""
        if conn.inflate is not None and conn.inflate.unconsumed_tail:
            return conn.inflate.decompress(conn.inflate.unconsumed_tail, _INFLATE_CHUNK)
        data = await self._client(conn, lambda: conn.reader.read(READ_SIZE))
        if conn.inflate is not None and data:
            try:
                out = conn.inflate.decompress(data, _INFLATE_CHUNK)
            except zlib.error:
                raise Stop("bad DEFLATE stream") from None
            return out if out or conn.inflate.unconsumed_tail else await self._read(conn)
        return data

    async def _loop(self, conn: Conn) -> str:
        while True:
            data = await self._read(conn)
            if not data:
                return "client closed"
            conn.frames.feed(data)
            while (event := conn.frames.next()) is not None:
                await self._event(conn, event)
            if conn.session is not None:  # the responses of a command: its own deadline
                await self._respond(conn)
            else:
                await self._client(conn, conn.out.drain)

    async def _throttle(self, conn: Conn) -> None:
        """Token bucket: `command_rate` per second, burst 10x; over it, wait (flow control).
        Then the firewall's commands per minute (`net.firewall`): a tarpit, then BYE."""
        if conn.limited and (over := self.firewall.take("commands", conn.ip)) is not None:
            if not over.tarpit:
                self._reject(conn, over.refusal.reason, b"* BYE [UNAVAILABLE] Too many "
                             b"commands, try again later\r\n", over.refusal.limit)
            if not conn.tarpitted:
                conn.tarpitted = True
                self.firewall.log_tarpit(logger, conn.ip, over.refusal)
            await self._client(conn, conn.out.drain)
            await asyncio.sleep(self.firewall.tarpit_delay)
        now = time.monotonic()
        rate = self.imap.command_rate
        conn.tokens = min(rate * 10, conn.tokens + (now - conn.last) * rate)
        conn.last = now
        conn.tokens -= 1
        if conn.tokens < 0:
            await self._client(conn, conn.out.drain)
            await asyncio.sleep(-conn.tokens / rate)

    async def _event(self, conn: Conn, event: object) -> None:
        if isinstance(event, NeedContinuation):
            conn.out.write(b"+ Ready for literal data\r\n")
            await self._client(conn, conn.out.drain)
            return
        self._command_done(conn)
        try:
            await self._framed(conn, event)
        finally:
            self._command_done(conn)
            self._give_back(conn)  # no event but "+" leaves literals of a command held

    async def _framed(self, conn: Conn, event: object) -> None:
        out = conn.out
        if isinstance(event, NoRoom):
            logger.warning(
                "reject ip=%s user=%s reason=%s",
                conn.ip,
                log.quote(conn.account.address if conn.account else "-"),
                log.quote("literal octets in flight past imap.max_append_in_flight"),
            )
            out.write(event.response())
        elif isinstance(event, TooBig | Bad):
            out.write(event.response())
            logger.info(
                "bad ip=%s reason=%s",
                conn.ip,
                log.quote(event.response().decode("ascii", "replace").strip()),
            )
        elif isinstance(event, IdleDone | AuthLine):  # cannot happen outside IDLE/AUTHENTICATE
            out.write(b"* BAD Unexpected line\r\n")
        elif isinstance(event, CommandReceived):
            conn.commands += 1
            await self._throttle(conn)
            utf8 = conn.session.utf8 if conn.session is not None else False
            cmd = parse(event.data, utf8=utf8, max_depth=conn.frames.limits.max_depth,
                        max_search_keys=self.imap.max_search_keys)
            if isinstance(cmd, c.ParseError):
                if cmd.limit:
                    logger.warning(
                        "reject ip=%s user=%s reason=%s",
                        conn.ip,
                        log.quote(conn.account.address if conn.account else "-"),
                        log.quote(cmd.text.removeprefix("NO [LIMIT] ")),
                    )
                out.write(cmd.response())
                return
            await self._command(conn, cmd)

    async def _command(self, conn: Conn, cmd: c.Command) -> None:
        out = conn.out
        if isinstance(cmd, c.Logout):
            out.write(b"* BYE Logging out\r\n")
            out.write(f"{cmd.tag} OK LOGOUT completed\r\n".encode())
            raise Stop("logout")
        if isinstance(cmd, c.Capability):
            out.write(("* CAPABILITY " + " ".join(self.capabilities(conn)) + "\r\n").encode())
            out.write(f"{cmd.tag} OK CAPABILITY completed\r\n".encode())
            return
        if conn.session is None:
            await self._not_authenticated(conn, cmd)
            return
        if isinstance(cmd, c.StartTls | c.Login | c.Authenticate):
            out.write(f"{cmd.tag} BAD Already authenticated\r\n".encode())
        elif isinstance(cmd, c.Idle):
            await self._idle(conn, cmd)
        elif isinstance(cmd, c.Compress):
            await self._compress(conn, cmd)
        else:
            await conn.session.execute(cmd)

    # -- not authenticated -------------------------------------------------------------------------

    async def _not_authenticated(self, conn: Conn, cmd: c.Command) -> None:
        out = conn.out
        if isinstance(cmd, c.Noop):
            out.write(f"{cmd.tag} OK NOOP completed\r\n".encode())
        elif isinstance(cmd, c.Id):
            out.write(b'* ID ("name" "postkeep")\r\n')
            out.write(f"{cmd.tag} OK ID completed\r\n".encode())
        elif isinstance(cmd, c.StartTls):
            await self._starttls(conn, cmd)
        elif isinstance(cmd, c.Login):
            await self._login(conn, cmd)
        elif isinstance(cmd, c.Authenticate):
            await self._authenticate(conn, cmd)
        else:
            out.write(f"{cmd.tag} BAD Log in first\r\n".encode())

    async def _starttls(self, conn: Conn, cmd: c.StartTls) -> None:
        if conn.tls or self.tls_context is None:
            conn.out.write(f"{cmd.tag} BAD TLS is already active\r\n".encode())
            return
        conn.out.write(f"{cmd.tag} OK Begin TLS negotiation now\r\n".encode())
        await self._client(conn, conn.out.drain)
        # RFC 9051 §6.2.1: nothing pipelined after STARTTLS may be acted on.
        try:
            await start_tls(conn.reader, conn.writer, self.tls_context,
                            buffered=len(conn.frames.take_buffered()), ip=conn.ip,
                            logger=logger, timeout=self.handshake_timeout)
        except HANDSHAKE_ERRORS:
            conn.tls_failed = True
            if self.guard is not None:
                self.guard.strike(conn.ip, TLS)
            raise
        conn.tls = True

    async def _login(self, conn: Conn, cmd: c.Login) -> None:
        if not conn.tls:
            conn.out.write(
                f"{cmd.tag} NO [PRIVACYREQUIRED] LOGIN needs TLS (use STARTTLS)\r\n".encode()
            )
            return
        try:
            outcome = await authenticate_password(
                self.store, cmd.username, cmd.password, "imap", self.verifier
            )
        except AuthBusy:
            conn.out.write(f"{cmd.tag} NO [UNAVAILABLE] Try again later\r\n".encode())
            return
        if not outcome.ok or outcome.account is None:
            await self._auth_failed(conn, cmd.tag, cmd.username, "LOGIN", outcome.reason)
            return
        await self._logged_in(conn, cmd.tag, outcome.account, "LOGIN")

    async def _authenticate(self, conn: Conn, cmd: c.Authenticate) -> None:
        """AUTHENTICATE (RFC 9051 §6.2.2) with SASL-IR (RFC 4959)."""
        if not conn.tls:
            conn.out.write(f"{cmd.tag} NO [PRIVACYREQUIRED] Authentication needs TLS\r\n".encode())
            return
        mechanism = cmd.mechanism.upper()
        if mechanism not in self._offered(conn):
            conn.out.write(f"{cmd.tag} NO [CANNOT] Unsupported mechanism\r\n".encode())
            return
        local = conn.writer.get_extra_info("sockname") or ("",)
        exchange, result = await self.auth.start(
            mechanism, cmd.initial, self.bindings.of(conn.writer), str(local[0]),
            tls_version(conn),
        )
        while exchange is not None and not result.finished:
            conn.out.write(b"+ " + result.challenge + b"\r\n")
            await self._client(conn, conn.out.drain)
            conn.frames.expect_auth_response(cmd.tag)
            line = await self._auth_line(conn)
            if line is None:
                return
            if line.cancelled:
                conn.out.write(f"{cmd.tag} BAD Authentication cancelled\r\n".encode())
                await self._auth_failed(conn, None, exchange.user, mechanism, "cancelled")
                return
            result = await self.auth.respond(exchange, line.line)
        await self._auth_done(conn, cmd.tag, mechanism, exchange, result)

    async def _auth_line(self, conn: Conn) -> AuthLine | None:
        while True:
            event = conn.frames.next()
            if event is None:
                data = await self._read(conn)
                if not data:
                    raise Stop("client closed during AUTHENTICATE")
                conn.frames.feed(data)
                continue
            if isinstance(event, AuthLine):
                return event
            if isinstance(event, Bad):
                conn.out.write(event.response())
                return None

    async def _auth_done(
        self,
        conn: Conn,
        tag: str,
        mechanism: str,
        exchange: AuthExchange | None,
        result: AuthResult,
    ) -> None:
        """Render the exchange's outcome (RFC 9051 §6.2.2, RFC 5530 response codes)."""
        match result.status:
            case AuthStatus.OK:
                assert result.account is not None
                await self._logged_in(conn, tag, result.account, mechanism)
            case AuthStatus.BUSY:
                conn.out.write(f"{tag} NO [UNAVAILABLE] Try again later\r\n".encode())
            case AuthStatus.MALFORMED | AuthStatus.CANCELLED:
                text = "Authentication aborted" if result.status is AuthStatus.CANCELLED else (
                    "Malformed authentication data (base64 expected)")
                conn.out.write(f"{tag} BAD {text}\r\n".encode())
                user = exchange.user if exchange is not None else "-"
                await self._auth_failed(conn, None, user, mechanism, result.reason)
            case _:
                user = exchange.user if exchange is not None else "-"
                await self._auth_failed(conn, tag, user, mechanism, result.reason)

    async def _auth_failed(
        self, conn: Conn, tag: str | None, user: str, mechanism: str, reason: str
    ) -> None:
        conn.failures += 1
        logger.warning(
            "auth failure ip=%s user=%s mechanism=%s reason=%s",
            conn.ip,
            log.quote(user or "-"),
            mechanism,
            log.quote(reason),
        )
        if self.guard is not None:
            await self.guard.auth_failed(conn.ip, user)
        if conn.failures >= self.imap.auth_close_after:
            if tag is not None:
                conn.out.write(
                    f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n".encode()
                )
            conn.out.write(b"* BYE Too many authentication failures\r\n")
            raise Stop("too many authentication failures")
        if conn.failures >= self.imap.auth_delay_after:
            await asyncio.sleep(self.imap.auth_failure_delay)
        if tag is not None:
            conn.out.write(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n".encode())

    async def _logged_in(self, conn: Conn, tag: str, account: Account, mechanism: str) -> None:
        if not await self.slots.acquire_account(account.id):
            logger.warning(
                "reject ip=%s user=%s reason=%s",
                conn.ip,
                log.quote(account.address),
                log.quote("too many connections for the account"),
            )
            conn.out.write(f"{tag} NO [LIMIT] Too many connections for this account\r\n".encode())
            return
        conn.account = account
        self._not_slow(conn)  # logged in: the login phase's slowness is over
        session = Session(
            self.store,
            CommandOut(conn, self._respond),
            self.limits,
            peer_ip=conn.ip,
            capabilities=(),
            cache=self.message_cache,
        )
        session.login(account)
        if self.trainer is not None:
            session.on_filed = self.trainer.filed
            session.on_marked = self.trainer.marked
        conn.session = session
        session.capabilities = self.capabilities(conn)
        conn.frames.set_limits(self.reader_limits, lambda octets: self._admit(conn, octets))
        logger.info("login ip=%s user=%s", conn.ip, log.quote(account.address))
        if self.guard is not None:
            await self.guard.auth_ok(conn.ip, account.address, account.id, f"imap {mechanism}")
        caps = " ".join(session.capabilities)
        conn.out.write(f"{tag} OK [CAPABILITY {caps}] Logged in\r\n".encode())

    # -- IDLE and COMPRESS -------------------------------------------------------------------------

    async def _idle(self, conn: Conn, cmd: c.Idle) -> None:
        """IDLE (RFC 9051 §6.3.13): changes are pushed as they are committed until DONE."""
        session = conn.session
        assert session is not None
        await session.sync(True, poll=True)
        conn.out.write(b"+ idling\r\n")
        await self._client(conn, conn.out.drain)
        conn.frames.expect_done()
        reading: asyncio.Task[bytes] | None = None
        waiting: asyncio.Task[None] | None = None
        try:
            while True:
                event = conn.frames.next()
                if isinstance(event, IdleDone):
                    status = "OK IDLE terminated" if event.ok else "BAD Expected DONE"
                    conn.out.write(f"{cmd.tag} {status}\r\n".encode())
                    return
                if event is not None:  # a framing error of the DONE line
                    conn.out.write(f"{cmd.tag} BAD Expected DONE\r\n".encode())
                    return
                if reading is None:
                    reading = asyncio.ensure_future(self._read(conn))
                if waiting is None:
                    waiting = asyncio.ensure_future(session.wait_event())
                done, _ = await asyncio.wait(
                    {reading, waiting}, return_when=asyncio.FIRST_COMPLETED
                )
                if waiting in done:
                    waiting.result()
                    waiting = None
                    await session.sync(True)
                    await self._client(conn, conn.out.drain)
                if reading in done:
                    data = reading.result()
                    reading = None
                    if not data:
                        raise Stop("client closed during IDLE")
                    conn.frames.feed(data)
        finally:
            for task in (reading, waiting):
                if task is not None and not task.done():
                    task.cancel()

    async def _compress(self, conn: Conn, cmd: c.Compress) -> None:
        """COMPRESS DEFLATE (RFC 4978 §3): raw DEFLATE both ways from the next octet on."""
        if cmd.mechanism.upper() != "DEFLATE":
            conn.out.write(f"{cmd.tag} NO Unknown compression mechanism\r\n".encode())
            return
        if conn.inflate is not None:
            conn.out.write(f"{cmd.tag} NO [COMPRESSIONACTIVE] Already compressing\r\n".encode())
            return
        conn.out.write(f"{cmd.tag} OK DEFLATE active\r\n".encode())
        await self._client(conn, conn.out.drain)
        conn.out.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        conn.inflate = zlib.decompressobj(-15)
        pending = conn.frames.take_buffered()
        if pending:
            try:
                conn.frames.feed(conn.inflate.decompress(pending, _INFLATE_CHUNK))
            except zlib.error:
                raise Stop("bad DEFLATE stream") from None
        if conn.session is not None:
            conn.session.capabilities = self.capabilities(conn)
