"""Connection slots: the limits on simultaneous connections in all, per client IP class, per
logged-in account, and on the connections that are slow, shared by every process that serves a
protocol.

Slow connections: a driver asks for a slow slot when a connection turns slow (it has kept the
server waiting past the protocol's `slow_after`: SMTP, for commands in all since it connected
or last delivered a message, or that far behind `min_data_rate` in message text; IMAP, before
login, or within a command) and gives it back when the connection stops being slow (SMTP: a
message accepted; IMAP: logged in, or the command complete) or ends. At most `max_slow` of the
`total` may be slow at once; a connection refused a slow slot is closed (421 4.4.2, BYE). So
clients that trickle octets, idle or keep a command open hold `max_slow` slots at most,
however many addresses they come from, and the rest stays for clients that keep up.

`LocalSlots` keeps the counts: the server's main process holds one per service
(`postkeep.server.pool`), and in-process servers (tests) their own. A worker process uses
`postkeep.server.worker.RemoteSlots`, which asks the main process's `LocalSlots` over the
worker channel, so the limits stay global however many processes accept connections.
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

    async def acquire_slow(self) -> bool:
        """A slot among the slow connections; False when `max_slow` are slow already."""
        ...

    def release_slow(self) -> None: ...


class ConnectionSlots(IpSlots, Protocol):
    """Connection slots and, after login, account slots."""

    async def acquire_account(self, account_id: int) -> bool:
        """A logged-in slot for the account; False past the per-account limit."""
        ...

    def release_account(self, account_id: int) -> None: ...


class ConnectionLimiter:
    """Counts open connections in all, per IP class and slow ones (SMTP's listeners and
    drivers use it directly, as their `IpSlots`). `max_slow`: default `total`."""

    def __init__(self, total: int, per_ip: int, max_slow: int | None = None) -> None:
        self.total = total
        self.per_ip = per_ip
        self.max_slow = total if max_slow is None else max_slow
        self.open: Counter[str] = Counter()
        self.count = 0
        self.slow = 0

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

    def take_slow(self) -> bool:
        if self.slow >= self.max_slow:
            return False
        self.slow += 1
        return True

    def release_slow(self) -> None:
        self.slow -= 1

    async def acquire_ip(self, key: str) -> bool:
        return self.acquire(key)

    def release_ip(self, key: str) -> None:
        self.release(key)

    async def acquire_slow(self) -> bool:
        return self.take_slow()


class LocalSlots:
    """The counts themselves (one event-loop thread: no locking)."""

    def __init__(
        self, total: int, per_ip: int, per_account: int, max_slow: int | None = None
    ) -> None:
        self.connections = ConnectionLimiter(total, per_ip, max_slow)
        self.per_account = per_account
        self.accounts: Counter[int] = Counter()

    def take_ip(self, key: str) -> bool:
        return self.connections.acquire(key)

    def release_ip(self, key: str) -> None:
        self.connections.release(key)

    def take_slow(self) -> bool:
        return self.connections.take_slow()

    def release_slow(self) -> None:
        self.connections.release_slow()

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

    async def acquire_slow(self) -> bool:
        return self.take_slow()

    async def acquire_account(self, account_id: int) -> bool:
        return self.take_account(account_id)


def slow_slots(total: int, share: float) -> int:
    """How many of `total` connections may be slow at once: the `slow_share` of it, at least
    one."""
    return max(1, int(total * share))
