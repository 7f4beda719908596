"""How a filter reaches a scanner outside the process (clamd, a milter): at an address that
is a unix socket path or "ip:port" ("[v6]:port"), as `[antivirus] address` and
`[[filters.milter]] address` are written."""

from __future__ import annotations

import asyncio


async def connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to the scanner at `address`."""
    if address.startswith("/"):
        return await asyncio.open_unix_connection(address)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host.strip("[]"), int(port))
