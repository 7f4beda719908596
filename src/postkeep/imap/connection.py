"""The state of one IMAP connection, apart from the driver that serves it
(`postkeep.imap.server`): the response buffer with COMPRESS=DEFLATE (RFC 4978 §4), the output a
logged-in session writes to, and what the driver tracks per connection (the session, the
failed logins, the command-rate tokens, the deadlines' marks, the slow slot, the literal
octets held)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from postkeep.imap.session import Session
from postkeep.imap.wire.reader import ImapReader
from postkeep.store.api import Account


class Stop(Exception):
    """End the connection after what has been written."""


@dataclass(slots=True, eq=False)
class Out:
    """Response buffer; with COMPRESS active, output goes through raw DEFLATE (RFC 4978 §4)."""

    writer: asyncio.StreamWriter
    chunks: list[bytes] = field(default_factory=list)
    deflate: zlib._Compress | None = None
    buffered: int = 0  # octets in `chunks`: FETCH drains past a bound (imap.streaming)

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)

    async def drain(self) -> None:
        if not self.chunks:
            return
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        await self.writer.drain()


@dataclass(slots=True, eq=False)
class CommandOut:
    """The `Output` of a logged-in session: `conn.out`, whose drains during a command go
    through the server's deadlines (`respond`: `ImapServer._respond`)."""

    conn: Conn
    respond: Callable[[Conn], Awaitable[None]]

    @property
    def buffered(self) -> int:
        return self.conn.out.buffered

    def write(self, data: bytes) -> None:
        self.conn.out.write(data)

    async def drain(self) -> None:
        await self.respond(self.conn)


@dataclass(slots=True, eq=False)
class Conn:
    ip: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    out: Out
    frames: ImapReader
    tls: bool
    session: Session | None = None
    account: Account | None = None
    failures: int = 0
    commands: int = 0
    inflate: zlib._Decompress | None = None
    tokens: float = 0.0
    last: float = 0.0
    started: float = 0.0  # loop time of connect (the login phase's deadline counts from it)
    command_started: float | None = None  # loop time of the first octet of the command
    idle_since: float | None = None  # loop time the wait for the next command began
    slow: bool = False  # holds one of the slow slots
    limited: bool = False  # the firewall counts its commands (`Peer.limited`)
    tarpitted: bool = False  # its commands were slowed by the firewall (logged once)
    tls_failed: bool = False  # its STARTTLS handshake failed (a strike of its own)
    held: int = 0  # literal octets of the command being read, counted in the literal budget


def tls_version(conn: Conn) -> str | None:
    """The connection's TLS version ("TLSv1.3", ...), None without TLS."""
    ssl_object = conn.writer.get_extra_info("ssl_object")
    return ssl_object.version() if ssl_object is not None else None
