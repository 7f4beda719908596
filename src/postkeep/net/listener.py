"""Helpers for asyncio streams shared by the protocol drivers."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

from postkeep.config import parse_listen


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Flush and close a connection, waiting at most 5 s; a peer already gone is no error."""
    try:
        if not writer.is_closing():
            await writer.drain()
            writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
        pass


LISTEN_BACKLOG = 1024


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


ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bool], Awaitable[None]]


async def start_listeners(
    listen: Sequence[tuple[str, bool]],
    handler: ClientHandler,
    tls_context: ssl.SSLContext | None,
    *,
    sockets: Sequence[socket.socket] | None = None,
    read_size: int,
    handshake_timeout: float,
    role: str,
    logger: logging.Logger,
) -> list[asyncio.Server]:
    """One server per ("ip:port", implicit TLS?) pair; `handler(reader, writer, implicit)`.

    With `sockets` (listening sockets bound already, in the order of `listen`), serve those
    instead of binding."""
    servers: list[asyncio.Server] = []
    for i, (item, implicit) in enumerate(listen):
        if sockets is not None:
            where: dict[str, object] = {"sock": sockets[i]}
        else:
            host, port = parse_listen(item)
            where = {"host": host, "port": port, "reuse_address": True}
        server = await asyncio.start_server(
            lambda r, w, implicit=implicit: handler(r, w, implicit),
            limit=read_size,
            backlog=LISTEN_BACKLOG,
            ssl=tls_context if implicit else None,
            ssl_handshake_timeout=handshake_timeout if implicit else None,
            **where,  # type: ignore[arg-type]
        )
        servers.append(server)
        kind = "implicit TLS" if implicit else "STARTTLS"
        logger.info("listening on %s (%s, %s)", item, role, kind)
    return servers


async def stop_listeners(servers: Sequence[asyncio.Server], tasks: set[asyncio.Task[None]]) -> None:
    """Stop accepting, cancel the connections' tasks and wait for them and the servers."""
    for server in servers:
        server.close()
    for task in list(tasks):
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()
