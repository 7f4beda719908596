"""Helpers for asyncio streams shared by the protocol drivers."""

from __future__ import annotations

import asyncio
import logging
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


ClientHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bool], Awaitable[None]]


async def start_listeners(
    listen: Sequence[tuple[str, bool]],
    handler: ClientHandler,
    tls_context: ssl.SSLContext | None,
    *,
    read_size: int,
    handshake_timeout: float,
    role: str,
    logger: logging.Logger,
) -> list[asyncio.Server]:
    """One server per ("ip:port", implicit TLS?) pair; `handler(reader, writer, implicit)`."""
    servers: list[asyncio.Server] = []
    for item, implicit in listen:
        host, port = parse_listen(item)
        server = await asyncio.start_server(
            lambda r, w, implicit=implicit: handler(r, w, implicit),
            host,
            port,
            limit=read_size,
            backlog=1024,
            reuse_address=True,
            ssl=tls_context if implicit else None,
            ssl_handshake_timeout=handshake_timeout if implicit else None,
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
