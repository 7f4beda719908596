"""Listeners for every protocol: accept, connection limits, TLS handshakes, STARTTLS.

One copy of what the SMTP and IMAP drivers (and the next ones) do before and around a session:

- `Listeners` binds (or adopts, in IMAP worker processes) the listening sockets of one role,
  each plain (STARTTLS offered later) or implicit TLS (RFC 8314 §3.3); takes a connection slot
  per client IP class at accept, before any TLS (`postkeep.net.slots`): past the limits the
  connection is closed with the log `reject ip=... [code=...] reason="too many connections"`,
  a plain one after the role's refusal line, an implicit-TLS one without a word (its client
  waits for a ServerHello: a plaintext line would only be a TLS protocol error to it, and a
  handshake to carry the line would spend on the refused client what the limit protects);
  on implicit-TLS listeners it accepts raw sockets itself (`sock_accept`: nothing is read
  before TLS, so no ClientHello can be lost to a plaintext reader), takes the slot, then does
  the handshake (`connect_accepted_socket`, bounded by `tls.handshake_timeout`), so a
  connection holds its slot while it handshakes; gives the slot back when the session
  ends, whatever way it ends; owns the role's `ReadDeadlines`; and on `stop` cancels every
  session (each says goodbye in its own protocol) and waits for them.
- A banned client (`refused`, a lookup in the process's copy of the bans, `postkeep.bans`) is
  refused the same way, before its slot, any TLS or greeting: the role's `banned` line on a
  plain listener, a silent close on an implicit-TLS one, and one log line
  `reject ip=... [code=...] reason=banned ban=<address or network> until=<UTC>`.
- `close_stream` flushes what a session wrote last for at most 5 s, then aborts: a client
  that reads nothing cannot keep a closed session's socket open.
- A handshake that fails or times out (implicit TLS or STARTTLS) is logged in one line,
  `tls handshake failed ip=... reason=...` (`reason=timeout` for the deadline), for operators
  and fail2ban; on an implicit-TLS listener `on_handshake_failed(ip)` is told then (the
  protocol servers strike it, `postkeep.bans`; after STARTTLS they see the failure
  themselves).
- `start_tls` is the server side of STARTTLS (SMTP RFC 3207, IMAP RFC 9051 §6.2.1): plaintext
  pipelined behind the command is thrown away, never read as if it came over TLS (RFC 3207 §4.2,
  CVE-2011-0411), and logged `discarded ip=... bytes=...`; then the handshake, bounded in time.

A role's sessions are either coroutines on asyncio streams (`session`: IMAP) or
`asyncio.Protocol`s (`protocol`, a `SessionProtocol` per connection: SMTP), which the event
loop hands the bytes as they come, with no task, stream reader, writer or future per read (see
"The SMTP driver" in docs/architecture.md for why SMTP is one). For those, the same rules hold
through `SessionProtocol`: the slot taken at `connection_made` (or before the implicit-TLS
handshake) and given back at `connection_lost`, the goodbye on `stop`, the bounded flush on
close (`SessionProtocol.close`), STARTTLS with `upgrade_tls`. Sessions start with
`postkeep.eager.eagerly`, at once in a protocol's callback, as far as they go without
waiting: only one that has to wait becomes a task.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from postkeep import log
from postkeep.config import parse_listen
from postkeep.eager import Ran, eagerly
from postkeep.net import proxy
from postkeep.net.deadlines import DeadlineWatch, ReadDeadlines
from postkeep.net.firewall import Firewall, Refusal
from postkeep.net.slots import IpSlots, ip_class

T = TypeVar("T")

LISTEN_BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
ACCEPT_RETRY = 0.1  # seconds between tries of an accept that failed (EMFILE and the like)
ACCEPT_FAILING_EVERY = 60.0  # seconds between log lines while accept keeps failing
CLOSE_FLUSH = 5.0  # seconds a closed session's last replies may take to reach its client
PROXY_RETRY = 0.005  # seconds between looks at a PROXY header that came in part


@dataclass(frozen=True, slots=True)
class Peer:
    """The client of one connection: its address (the one a PROXY header named, behind a
    proxy), the key its slot is counted under, whether the listener it came to speaks TLS
    from the first octet, and whether the firewall counts what it does (not allow-listed)."""

    ip: str
    port: int
    key: str
    implicit_tls: bool
    limited: bool = False


Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]
BanLookup = Callable[[str], "tuple[str, float] | None"]  # ip -> (ban key, until)
HANDSHAKE_ERRORS = (ConnectionError, ssl.SSLError, OSError, TimeoutError)  # a failed handshake


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Flush and close a connection, waiting at most 5 s for each (a peer that reads nothing
    keeps no slot); a peer already gone is no error."""
    try:
        if not writer.is_closing():
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except TimeoutError:
                writer.transport.abort()  # close() would wait for the peer to read it all
            writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
        pass


def _log_handshake_failure(
    logger: logging.Logger, ip: str, error: BaseException, elapsed: float, timeout: float
) -> None:
    reason = _handshake_reason(error, elapsed, timeout)
    logger.warning("tls handshake failed ip=%s reason=%s", ip, log.quote(reason))


def _handshake_reason(error: BaseException, elapsed: float, timeout: float) -> str:
    # asyncio and uvloop both abort a handshake past its deadline with ConnectionAbortedError
    timed_out = isinstance(error, ConnectionAbortedError) and (
        elapsed >= timeout or "taking longer" in str(error)
    )
    if timed_out or isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ssl.SSLError):
        return error.reason or error.__class__.__name__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return error.__class__.__name__


async def handshake(
    writer: asyncio.StreamWriter,
    tls_context: ssl.SSLContext,
    *,
    timeout: float,
    ip: str,
    logger: logging.Logger,
) -> None:
    """The server side of a TLS handshake on `writer`, at most `timeout` seconds; a failure is
    logged `tls handshake failed ip=... reason=...` and raised again."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await writer.start_tls(tls_context, ssl_handshake_timeout=timeout)
    except HANDSHAKE_ERRORS as e:
        _log_handshake_failure(logger, ip, e, loop.time() - started, timeout)
        raise


def _bind(item: str) -> socket.socket:
    host, port = parse_listen(item)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


def bind_listeners(listen: Sequence[str]) -> list[socket.socket]:
    """Listening TCP sockets for "ip:port" entries, for processes that share them."""
    sockets: list[socket.socket] = []
    try:
        for item in listen:
            sockets.append(_bind(item))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SessionProtocol(asyncio.Protocol, metaclass=abc.ABCMeta):
    """A Protocol-based session of a `Listeners` (see the module docstring).

    Subclasses implement `begin` (the connection is admitted: greet), `data_received`, `ended`
    (the connection is gone, whatever way: called once, after `begin`) and `goodbye` (the
    server stops: say so in the protocol, then `close`). `peer` is given when the listener
    admitted the connection before it was made (implicit TLS: the slot is taken before the
    handshake)."""

    __slots__ = ("_admission", "_done", "_lost", "admitted", "listeners", "peer", "transport")

    def __init__(self, listeners: Listeners, peer: Peer | None) -> None:
        self.listeners = listeners
        self.peer = peer
        self.admitted = peer is not None
        self.transport: asyncio.Transport | None = None
        self._admission: asyncio.Task[bool] | None = None
        self._lost = False
        self._done: asyncio.Future[None] | None = None  # made by `wait_closed` only

    @abc.abstractmethod
    def begin(self) -> None:
        """The connection is admitted: greet."""

    @abc.abstractmethod
    def ended(self, exc: BaseException | None) -> None:
        """The connection is gone, whatever way (once, after `begin`)."""

    @abc.abstractmethod
    def goodbye(self) -> None:
        """The server stops: say so in the protocol, then `close`."""

    def shutdown(self) -> None:
        """The server stops (`Listeners.stop`)."""
        if self.admitted:
            self.goodbye()
            return
        if self._admission is not None:
            self._admission.cancel()
        self.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        self.listeners.live.add(self)
        if self.admitted:
            self.begin()
            return
        address = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        peer, refusal = self.listeners.check(str(address[0]), int(address[1]), False)
        self.peer = peer
        if self.listeners.banned_peer(peer):
            transport.write(self.listeners.banned)
            self.close()
            return
        if refusal is not None:
            self.listeners._log_reject(peer, refusal)
            transport.write(self.listeners.refused(refusal.reason))
            self.close()
            return
        ran = eagerly(self.listeners.slots.acquire_ip(peer.key))
        if isinstance(ran, Ran):
            self._admit(ran.value)
            return
        transport.pause_reading()
        self._admission = ran
        ran.add_done_callback(self._admission_done)

    def _admission_done(self, task: asyncio.Task[bool]) -> None:
        self._admission = None
        granted = not task.cancelled() and task.exception() is None and task.result()
        if self._lost:  # gone while it waited
            if granted:
                assert self.peer is not None
                self.listeners.slots.release_ip(self.peer.key)
            return
        if task.cancelled() or task.exception() is not None:
            self.close()
            return
        self._admit(granted)
        if self.admitted and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _admit(self, granted: bool) -> None:
        assert self.peer is not None and self.transport is not None
        if not granted:
            self.listeners._log_reject(self.peer)
            self.transport.write(self.listeners.busy)
            self.close()
            return
        self.admitted = True
        self.begin()

    def close(self) -> None:
        """Close once what was written is flushed, waiting at most `CLOSE_FLUSH` seconds for
        the client to read it (a client that reads nothing keeps no slot)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(CLOSE_FLUSH, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.listeners.live.discard(self)
        if self._admission is not None:
            self._admission.cancel()
        if self.admitted:
            assert self.peer is not None
            self.listeners.slots.release_ip(self.peer.key)
            self.ended(exc)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await self._done


ProtocolFactory = Callable[["Listeners", Peer | None], SessionProtocol]


class Listeners:
    """The listening sockets of one role and the sessions they accepted.

    `listen`: ("ip:port", implicit TLS?) pairs. `session(reader, writer, peer)` serves one
    connection once its slot is taken; or, instead of `session`, `protocol(listeners, peer)`
    makes the `SessionProtocol` of one (`peer` None: not admitted yet). `busy`: the line sent
    to a client refused for the connection limits (`busy_code`, its status code, goes in the
    log line when the protocol has one). `sockets`: listening sockets bound already, in the
    order of `listen` (IMAP worker processes share the main process's); default: bind them at
    `start`.
    `handshake_timeout`: seconds an implicit-TLS client has to finish its handshake.
    `firewall`: the lists and rates checked before the slot (`postkeep.net.firewall`; none:
    no checks), and which listeners expect a PROXY header (within `proxy_timeout` seconds);
    `refused(reason)`: the line sent to a client the firewall refuses.
    `ban_lookup(ip)`: the ban (key, until) that refuses a client, if any; `banned` the line
    sent to a plain listener's banned client (`banned_code`, its status code, for the log).
    `on_handshake_failed(ip)`: told each failed implicit-TLS handshake, once it is logged.
    """

    def __init__(
        self,
        listen: Sequence[tuple[str, bool]],
        session: Session | None,
        tls_context: ssl.SSLContext | None,
        *,
        protocol: ProtocolFactory | None = None,
        slots: IpSlots,
        busy: bytes,
        busy_code: str | None = None,
        role: str,
        logger: logging.Logger,
        read_size: int,
        sockets: Sequence[socket.socket] | None = None,
        handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
        firewall: Firewall | None = None,
        refused: Callable[[str], bytes] | None = None,
        proxy_timeout: float = 5.0,
        ban_lookup: BanLookup | None = None,
        banned: bytes = b"",
        banned_code: str | None = None,
        on_handshake_failed: Callable[[str], None] | None = None,
    ) -> None:
        if (session is None) == (protocol is None):
            raise ValueError("Listeners needs a session or a protocol, not both")
        self.listen = list(listen)
        self.session = session
        self.protocol = protocol
        self.tls_context = tls_context
        self.slots = slots
        self.busy = busy
        self.busy_code = busy_code
        self.role = role
        self.logger = logger
        self.read_size = read_size
        self.sockets = sockets
        self.handshake_timeout = handshake_timeout
        self.firewall = firewall
        self.refused = refused or (lambda _reason: busy)
        self.proxy_timeout = proxy_timeout
        self.ban_lookup = ban_lookup
        self.banned = banned
        self.banned_code = banned_code
        self.on_handshake_failed = on_handshake_failed
        self.deadlines = ReadDeadlines()
        self.watch = DeadlineWatch()  # for protocols
        self.live: set[SessionProtocol] = set()  # protocols' connections, until lost
        self.servers: list[asyncio.Server] = []
        self._sockets: list[socket.socket] = []  # implicit TLS: accepted by `_accept`
        self._acceptors: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for i, (item, implicit) in enumerate(self.listen):
            sock = self.sockets[i] if self.sockets is not None else _bind(item)
            proxied = self.firewall is not None and self.firewall.proxied[implicit]
            if implicit and self.tls_context is None:
                raise ValueError(f"{item}: implicit TLS needs a TLS context")
            if implicit or proxied:
                # accepted here, raw: the slot is taken before any octet is read, then the
                # handshake (`_accepted`); asyncio's ssl= would handshake before the slot
                sock.setblocking(False)
                self._sockets.append(sock)
                self._acceptors.append(asyncio.create_task(self._accept(sock, implicit, proxied)))
            elif self.protocol is not None:
                server = await asyncio.get_running_loop().create_server(
                    self._new_protocol, sock=sock, backlog=LISTEN_BACKLOG
                )
                self.servers.append(server)
            else:
                server = await asyncio.start_server(
                    self._client, limit=self.read_size, backlog=LISTEN_BACKLOG, sock=sock
                )
                self.servers.append(server)
            kind = ("implicit TLS" if implicit else "STARTTLS" if self.tls_context else "plain"
                    ) + (", PROXY" if proxied else "")
            self.logger.info("listening on %s (%s, %s)", item, self.role, kind)
        if self.protocol is not None:
            self.watch.start()
        else:
            self.deadlines.start()

    async def stop(self) -> None:
        """Stop accepting, cancel the sessions and wait for them and the servers."""
        self.deadlines.stop()
        self.watch.stop()
        for server in self.servers:
            server.close()
        for acceptor in self._acceptors:
            acceptor.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        live = list(self.live)
        for connection in live:
            connection.shutdown()
        if live:
            await asyncio.gather(*(c.wait_closed() for c in live), return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()

    async def _accept(self, listening: socket.socket, implicit: bool, proxied: bool) -> None:
        """Accept implicit-TLS connections, and those of listeners behind a proxy. An accept
        that fails (EMFILE, ENFILE, ENOBUFS: the connection waits in the backlog) is retried
        every `ACCEPT_RETRY` seconds; a burst of failures logs one line when it starts, one
        every `ACCEPT_FAILING_EVERY` seconds while it lasts, and one when accept works again,
        instead of ten a second."""
        loop = asyncio.get_running_loop()
        failures, first, last_line = 0, 0.0, 0.0
        while True:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as e:  # EMFILE and the like: log, breathe, go on
                now = loop.time()
                reason = log.quote(e.strerror or e)
                if not failures:
                    first = last_line = now
                    self.logger.warning("accept failed reason=%s", reason)
                elif now - last_line >= ACCEPT_FAILING_EVERY:
                    last_line = now
                    self.logger.warning("accept failing reason=%s failures=%d seconds=%.0f",
                                        reason, failures + 1, now - first)
                failures += 1
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            if failures:
                self.logger.warning("accept resumed failures=%d seconds=%.1f",
                                    failures, loop.time() - first)
                failures = 0
            task = asyncio.create_task(self._accepted(sock, address, implicit, proxied))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def check(self, ip: str, port: int, implicit: bool) -> tuple[Peer, Refusal | None]:
        """The peer of a new connection, and the firewall's refusal of it if any."""
        if self.firewall is None:
            return Peer(ip, port, ip_class(ip), implicit), None
        refusal, limited = self.firewall.check(ip, implicit)
        return Peer(ip, port, ip_class(ip), implicit, limited), refusal

    async def _accepted(
        self, sock: socket.socket, address: tuple[str, int], implicit: bool, proxied: bool
    ) -> None:
        """A connection accepted here: its PROXY header read first behind a proxy, then the
        firewall and the slot, then (implicit TLS) the handshake and the session."""
        ip, port = str(address[0]), int(address[1])
        try:
            if proxied:
                source = await self._proxy_header(sock, ip, port)
                if source is None:
                    sock.close()
                    return
                ip, port = source
            peer, refusal = self.check(ip, port, implicit)
            if self.banned_peer(peer):
                self._refuse_raw(sock, implicit, self.banned)
                return
            if refusal is not None:
                self._log_reject(peer, refusal)
                self._refuse_raw(sock, implicit, self.refused(refusal.reason))
                return
            if not await self.slots.acquire_ip(peer.key):
                self._log_reject(peer)
                self._refuse_raw(sock, implicit, self.busy)
                return
        except BaseException:
            sock.close()
            raise
        tls = self.tls_context if implicit else None
        if self.protocol is not None:
            await self._accepted_protocol(sock, peer, self.protocol, tls)
            return
        try:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=self.read_size)
            protocol = asyncio.StreamReaderProtocol(reader)
            started = loop.time()
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=tls,
                    ssl_handshake_timeout=self.handshake_timeout if tls else None,
                )
            except HANDSHAKE_ERRORS as e:
                self._handshake_failed(peer.ip, e, loop.time() - started)
                return
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self.session(reader, writer, peer)
        finally:
            sock.close()  # a no-op once the transport owns and closed it
            self.slots.release_ip(peer.key)

    @staticmethod
    def _refuse_raw(sock: socket.socket, implicit: bool, line: bytes) -> None:
        """Close a refused connection accepted here: plain, after the refusal line (as much
        of it as the socket takes at once); implicit TLS, without a word (its client waits
        for a ServerHello: see the module docstring)."""
        if not implicit:
            with contextlib.suppress(OSError):
                sock.send(line)
        sock.close()

    async def _proxy_header(self, sock: socket.socket, ip: str, port: int
                            ) -> tuple[str, int] | None:
        """The client a trusted proxy's PROXY header names ((ip, port) of the proxy itself for
        LOCAL and UNKNOWN); None, logged `proxy refused ip=... reason=...`, for a connection
        from elsewhere or without a valid header within `proxy_timeout`. Only the header's
        octets are taken from the socket: what follows (a TLS ClientHello) stays for the
        session."""
        assert self.firewall is not None
        if not self.firewall.trusted_proxy(ip):
            return self._proxy_refused(ip, "not a trusted proxy")
        try:
            async with asyncio.timeout(self.proxy_timeout):
                header = await read_proxy_header(sock)
        except TimeoutError:
            return self._proxy_refused(ip, "timeout")
        except proxy.ProxyError as e:
            return self._proxy_refused(ip, str(e))
        except OSError as e:
            return self._proxy_refused(ip, e.strerror or e.__class__.__name__)
        return header.source or (ip, port)

    def _proxy_refused(self, ip: str, reason: str) -> None:
        self.logger.warning("proxy refused ip=%s reason=%s", ip, log.quote(reason))

    def _new_protocol(self) -> SessionProtocol:
        assert self.protocol is not None
        return self.protocol(self, None)

    async def _accepted_protocol(
        self, sock: socket.socket, peer: Peer, factory: ProtocolFactory,
        tls: ssl.SSLContext | None,
    ) -> None:
        """The handshake (`tls`) of an admitted connection accepted here; the protocol it is
        made for owns the slot from `connection_made` on (given back at `connection_lost`)."""
        loop = asyncio.get_running_loop()
        protocol = factory(self, peer)
        started = loop.time()
        try:
            await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=tls,
                ssl_handshake_timeout=self.handshake_timeout if tls else None,
            )
        except HANDSHAKE_ERRORS as e:
            self._handshake_failed(peer.ip, e, loop.time() - started)
        finally:
            if protocol.transport is None:  # never made: the slot is still this task's
                sock.close()
                self.slots.release_ip(peer.key)

    def _handshake_failed(self, ip: str, error: BaseException, elapsed: float) -> None:
        _log_handshake_failure(self.logger, ip, error, elapsed, self.handshake_timeout)
        if self.on_handshake_failed is not None:
            self.on_handshake_failed(ip)

    def banned_peer(self, peer: Peer) -> bool:
        """Whether a ban refuses the client (logged)."""
        ban = self.ban_lookup(peer.ip) if self.ban_lookup is not None else None
        if ban is None:
            return False
        code = f" code={self.banned_code}" if self.banned_code and not peer.implicit_tls else ""
        self.logger.warning("reject ip=%s%s reason=banned ban=%s until=%s", peer.ip, code,
                            ban[0], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ban[1])))
        return True

    def _log_reject(self, peer: Peer, refusal: Refusal | None = None) -> None:
        code = f" code={self.busy_code}" if self.busy_code else ""
        if refusal is None:
            self.logger.warning(
                "reject ip=%s%s reason=%s", peer.ip, code, log.quote("too many connections")
            )
            return
        self.logger.warning("reject ip=%s%s reason=%s limit=%s", peer.ip, code,
                            log.quote(refusal.reason), log.quote(refusal.limit))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        address = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        peer, refusal = self.check(str(address[0]), int(address[1]), False)
        try:
            if self.banned_peer(peer):
                writer.write(self.banned)
                await close_stream(writer)
                return
            if refusal is not None:
                self._log_reject(peer, refusal)
                writer.write(self.refused(refusal.reason))
                await close_stream(writer)
                return
            if not await self.slots.acquire_ip(peer.key):
                self._log_reject(peer)
                writer.write(self.busy)
                await close_stream(writer)
                return
            try:
                await self.session(reader, writer, peer)
            finally:
                self.slots.release_ip(peer.key)
        except asyncio.CancelledError:
            # `stop`: the session has said goodbye (421, BYE). The task must end normally:
            # asyncio's start_server callback logs a cancelled one as "Exception in callback"
            return
        finally:
            self._tasks.discard(task)


async def start_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls_context: ssl.SSLContext,
    *,
    buffered: int,
    ip: str,
    logger: logging.Logger,
    timeout: float = TLS_HANDSHAKE_TIMEOUT,
) -> None:
    """Switch a connection to TLS once the protocol's go-ahead is flushed.

    `buffered`: octets of plaintext the protocol core had read past the command and dropped
    already; what the stream reader still holds is dropped here. Both are logged together.
    `timeout`: seconds the handshake may take (`tls.handshake_timeout`); a failure is logged
    and raised.
    """
    dropped = buffered
    stale = getattr(reader, "_buffer", None)
    if stale:
        dropped += len(stale)
        stale.clear()
    if dropped:
        logger.warning(
            "discarded ip=%s bytes=%d reason=%s",
            ip, dropped, log.quote("data pipelined after STARTTLS"),
        )
    await handshake(writer, tls_context, timeout=timeout, ip=ip, logger=logger)


async def upgrade_tls(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    tls_context: ssl.SSLContext,
    *,
    dropped: int,
    ip: str,
    logger: logging.Logger,
    timeout: float = TLS_HANDSHAKE_TIMEOUT,
) -> asyncio.Transport:
    """`start_tls` for a Protocol-based session: `dropped`, the octets of plaintext it read
    past the command and threw away (logged); returns the TLS transport. A failed handshake is
    logged and raised."""
    if dropped:
        logger.warning(
            "discarded ip=%s bytes=%d reason=%s",
            ip, dropped, log.quote("data pipelined after STARTTLS"),
        )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        tls = await loop.start_tls(
            transport, protocol, tls_context, server_side=True, ssl_handshake_timeout=timeout
        )
    except HANDSHAKE_ERRORS as e:
        _log_handshake_failure(logger, ip, e, loop.time() - started, timeout)
        raise
    return cast(asyncio.Transport, tls)  # uvloop's transports are no subclasses of it


async def read_proxy_header(sock: socket.socket) -> proxy.ProxyHeader:
    """Read a PROXY header off a non-blocking socket, taking only its octets (it looks with
    MSG_PEEK, then receives the header's length); `proxy.ProxyError` if it is none, or the
    connection ends first. The caller bounds the time."""
    loop = asyncio.get_running_loop()
    while True:
        await _readable(loop, sock)
        data = sock.recv(proxy.MAX_HEADER, socket.MSG_PEEK)
        if not data:
            raise proxy.ProxyError("connection closed before the PROXY header")
        header = proxy.parse(data)
        if header is not None:
            taken = sock.recv(header.length)
            if len(taken) != header.length:  # cannot be: the octets were there
                raise proxy.ProxyError("PROXY header cut short")
            return header
        await asyncio.sleep(PROXY_RETRY)  # a header in parts: it is still readable


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
