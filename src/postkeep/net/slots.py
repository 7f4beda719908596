"""Connection slots: the limits on simultaneous connections in all, per client IP class and per
logged-in account, shared by every process that serves a protocol.

`LocalSlots` keeps the counts; a listener in the server's main process uses it directly. An
IMAP worker process uses `postkeep.server.imap_workers.RemoteSlots`, which asks the main
process's `LocalSlots` over the worker channel, so the limits stay global however many
processes accept connections.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Protocol


def ip_class(ip: str) -> str:
    """The key connection limits count by: the IPv4 address (an IPv4-mapped IPv6 address
    counts as its IPv4 address), or the IPv6 /64, which one subscriber usually holds whole
    (RFC 6177 §3)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr.ipv4_mapped or addr) if addr.version == 6 else ip


class IpSlots(Protocol):
    """Take a slot before serving; give it back exactly once when the connection ends."""

    async def acquire_ip(self, key: str) -> bool:
        """A connection slot for IP class `key`; False past the total or per-IP limit."""
        ...

    def release_ip(self, key: str) -> None: ...


class ConnectionSlots(IpSlots, Protocol):
    """Connection slots and, after login, account slots."""

    async def acquire_account(self, account_id: int) -> bool:
        """A logged-in slot for the account; False past the per-account limit."""
        ...

    def release_account(self, account_id: int) -> None: ...


class ConnectionLimiter:
    """Counts open connections in all and per IP class (SMTP's listeners use it directly, as
    their `IpSlots`)."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.open: Counter[str] = Counter()
        self.count = 0

    def acquire(self, key: str) -> bool:
        if self.count >= self.total or self.open[key] >= self.per_ip:
            return False
        self.count += 1
        self.open[key] += 1
        return True

    def release(self, key: str) -> None:
        self.count -= 1
        self.open[key] -= 1
        if not self.open[key]:
            del self.open[key]

    async def acquire_ip(self, key: str) -> bool:
        return self.acquire(key)

    def release_ip(self, key: str) -> None:
        self.release(key)


class LocalSlots:
    """The counts themselves (one event-loop thread: no locking)."""

    def __init__(self, total: int, per_ip: int, per_account: int) -> None:
        self.connections = ConnectionLimiter(total, per_ip)
        self.per_account = per_account
        self.accounts: Counter[int] = Counter()

    def take_ip(self, key: str) -> bool:
        return self.connections.acquire(key)

    def release_ip(self, key: str) -> None:
        self.connections.release(key)

    def take_account(self, account_id: int) -> bool:
        if self.accounts[account_id] >= self.per_account:
            return False
        self.accounts[account_id] += 1
        return True

    def release_account(self, account_id: int) -> None:
        self.accounts[account_id] -= 1
        if self.accounts[account_id] <= 0:
            del self.accounts[account_id]

    async def acquire_ip(self, key: str) -> bool:
        return self.take_ip(key)

    async def acquire_account(self, account_id: int) -> bool:
        return self.take_account(account_id)
