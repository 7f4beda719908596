"""Helpers for asyncio streams shared by the protocol drivers."""

from __future__ import annotations

import asyncio
import ssl


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Flush and close a connection, waiting at most 5 s; a peer already gone is no error."""
    try:
        if not writer.is_closing():
            await writer.drain()
            writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
        pass
