"""Listeners for every protocol: accept, connection limits, TLS handshakes, STARTTLS.

One copy of what the SMTP and IMAP drivers (and the next ones) do before and around a session:

- `Listeners` binds (or adopts, in IMAP worker processes) the listening sockets of one role,
  each plain (STARTTLS offered later) or implicit TLS (RFC 8314 §3.3) with a bounded handshake
  (`TLS_HANDSHAKE_TIMEOUT`); takes a connection slot per client IP class before serving
  (`postkeep.net.slots`): past the limits the client gets the role's refusal line and the log
  `reject ip=... [code=...] reason="too many connections"`; gives the slot back when the
  session ends, whatever way it ends; owns the role's `ReadDeadlines`; and on `stop` cancels
  every session (each says goodbye in its own protocol) and waits for them.
- `start_tls` is the server side of STARTTLS (SMTP RFC 3207, IMAP RFC 9051 §6.2.1): plaintext
  pipelined behind the command is thrown away, never read as if it came over TLS (RFC 3207 §4.2,
  CVE-2011-0411), and logged `discarded ip=... bytes=...`; then the handshake, bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from postkeep import log
from postkeep.config import parse_listen
from postkeep.net.deadlines import ReadDeadlines
from postkeep.net.slots import IpSlots, ip_class

LISTEN_BACKLOG = 1024
TLS_HANDSHAKE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Peer:
    """The client of one connection: its address, the key its slot is counted under, and
    whether the listener it came to speaks TLS from the first octet."""

    ip: str
    port: int
    key: str
    implicit_tls: bool


Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Flush and close a connection, waiting at most 5 s; a peer already gone is no error."""
    try:
        if not writer.is_closing():
            await writer.drain()
            writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
        pass


def bind_listeners(listen: Sequence[str]) -> list[socket.socket]:
    """Listening TCP sockets for "ip:port" entries, for processes that share them."""
    sockets: list[socket.socket] = []
    try:
        for item in listen:
            host, port = parse_listen(item)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listeners:
    """The listening sockets of one role and the sessions they accepted.

    `listen`: ("ip:port", implicit TLS?) pairs. `session(reader, writer, peer)` serves one
    connection once its slot is taken. `busy`: the line sent to a client refused for the
    connection limits (`busy_code`, its status code, goes in the log line when the protocol
    has one). `sockets`: listening sockets bound already, in the order of `listen` (IMAP
    worker processes share the main process's); default: bind them at `start`.
    """

    def __init__(
        self,
        listen: Sequence[tuple[str, bool]],
        session: Session,
        tls_context: ssl.SSLContext | None,
        *,
        slots: IpSlots,
        busy: bytes,
        busy_code: str | None = None,
        role: str,
        logger: logging.Logger,
        read_size: int,
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        self.listen = list(listen)
        self.session = session
        self.tls_context = tls_context
        self.slots = slots
        self.busy = busy
        self.busy_code = busy_code
        self.role = role
        self.logger = logger
        self.read_size = read_size
        self.sockets = sockets
        self.deadlines = ReadDeadlines()
        self.servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for i, (item, implicit) in enumerate(self.listen):
            if self.sockets is not None:
                where: dict[str, object] = {"sock": self.sockets[i]}
            else:
                host, port = parse_listen(item)
                where = {"host": host, "port": port, "reuse_address": True}
            server = await asyncio.start_server(
                lambda r, w, implicit=implicit: self._client(r, w, implicit),
                limit=self.read_size,
                backlog=LISTEN_BACKLOG,
                ssl=self.tls_context if implicit else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if implicit else None,
                **where,  # type: ignore[arg-type]
            )
            self.servers.append(server)
            kind = "implicit TLS" if implicit else "STARTTLS"
            self.logger.info("listening on %s (%s, %s)", item, self.role, kind)
        self.deadlines.start()

    async def stop(self) -> None:
        """Stop accepting, cancel the sessions and wait for them and the servers."""
        self.deadlines.stop()
        for server in self.servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()

    async def _client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, implicit: bool
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        address = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        peer = Peer(str(address[0]), int(address[1]), ip_class(str(address[0])), implicit)
        try:
            if not await self.slots.acquire_ip(peer.key):
                code = f" code={self.busy_code}" if self.busy_code else ""
                self.logger.warning(
                    "reject ip=%s%s reason=%s", peer.ip, code, log.quote("too many connections")
                )
                writer.write(self.busy)
                await close_stream(writer)
                return
            try:
                await self.session(reader, writer, peer)
            finally:
                self.slots.release_ip(peer.key)
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
) -> None:
    """Switch a connection to TLS once the protocol's go-ahead is flushed.

    `buffered`: octets of plaintext the protocol core had read past the command and dropped
    already; what the stream reader still holds is dropped here. Both are logged together.
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
    await writer.start_tls(tls_context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
