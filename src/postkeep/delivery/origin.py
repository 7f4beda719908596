"""What the MX learns about a client at connect: its listings on DNS block lists (RFC 5782)
and its forward-confirmed reverse DNS (iprev, RFC 8601 §3).

Both lookups start as the connection is accepted and run while the client greets and says
EHLO, so they rarely cost it any wait: the session asks `ClientChecks.refusal` before it
answers MAIL FROM (a listed client is refused there, RFC 5321 §3.3 allows any transaction to
be refused), and the inbound pipeline takes `ClientChecks.iprev` for Authentication-Results.
Clients in `[inbound] trusted_networks` are not looked up. Each lookup has `[inbound]
check_timeout`; past it, or on a DNS failure, a list counts for nothing (logged) and iprev is
a temperror: a slow list never stalls mail.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from postkeep import log
from postkeep.config.inbound import InboundConfig, parse_codes
from postkeep.eager import Ran, eagerly
from postkeep.mailauth.dnsbl import SPAMHAUS_DBL, SPAMHAUS_ZEN, Code, DnsList, Listing, check_ip
from postkeep.mailauth.iprev import IprevResult, check_iprev
from postkeep.policy.trust import listed
from postkeep.policy.verdict import Verdict

if TYPE_CHECKING:
    from postkeep.dns import DnsResolver

logger = log.get("smtp")
T = TypeVar("T")

_KNOWN_CODES = {"zen.spamhaus.org": SPAMHAUS_ZEN, "dbl.spamhaus.org": SPAMHAUS_DBL}


def dns_lists(configs: Sequence[Any], path: str) -> list[DnsList]:
    """`[[inbound.dnsbl]]` tables as `DnsList`s (known codes for the Spamhaus zones)."""
    out = []
    for i, c in enumerate(configs):
        codes = {k: Code(label, c.weight if w is None else w)
                 for k, (label, w) in parse_codes(f"{path}[{i}].codes", c.codes).items()}
        zone = c.zone.lower().strip(".")
        out.append(DnsList(zone, c.weight, codes or _KNOWN_CODES.get(zone, {})))
    return out


class InboundChecks:
    """The checks of one MX server (one process): its config, resolver and lists."""

    def __init__(self, cfg: InboundConfig, resolver: DnsResolver) -> None:
        self.cfg = cfg
        self.resolver = resolver
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_networks]
        self.lists = dns_lists(cfg.dnsbl, "inbound.dnsbl")
        self.domain_lists = dns_lists(cfg.uribl, "inbound.uribl")

    def is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.trusted)

    def start(self, ip: str) -> ClientChecks:
        """Start the lookups for a new connection from `ip` (none for a trusted one)."""
        return ClientChecks(self, ip, trusted=self.is_trusted(ip))


class ClientChecks:
    """One connection's lookups (see the module docstring); `cancel` when it ends.

    Each lookup runs at once, in the caller (`net.listener.eagerly`): with every answer in the
    DNS cache (a client that comes back) it is done before the constructor returns, with no
    task, timer or timeout scope; one that has to wait goes on as a task, cancelled by a timer
    after `[inbound] check_timeout` (then the fallback counts)."""

    def __init__(self, checks: InboundChecks, ip: str, *, trusted: bool) -> None:
        self.ip = ip
        self.trusted = trusted
        self._threshold = checks.cfg.dnsbl_threshold
        timeout = checks.cfg.check_timeout
        self._listings: _Lookup[list[Listing]] | None = None
        self._iprev: _Lookup[IprevResult] | None = None
        if trusted:
            return
        if checks.lists:
            late = [Listing(dl.zone, ip, error=f"no answer within {timeout:g} s")
                    for dl in checks.lists]
            self._listings = _Lookup(check_ip(checks.resolver, ip, checks.lists), timeout, late)
        if checks.cfg.iprev:
            self._iprev = _Lookup(check_iprev(checks.resolver, ip), timeout,
                                  IprevResult("temperror", ip, reason="timed out"))

    async def refusal(self) -> Verdict | None:
        """The block lists' verdict on this client (None: not refused)."""
        if self._listings is None:
            return None
        listings = await self._listings.result()
        for failed in (x for x in listings if x.error):
            logger.warning("dnsbl: lookup failed ip=%s zone=%s reason=%s", self.ip,
                           failed.zone, log.quote(failed.error))
        return listed(self.ip, listings, self._threshold)

    async def iprev(self) -> IprevResult | None:
        return None if self._iprev is None else await self._iprev.result()

    def cancel(self) -> None:
        for lookup in (self._listings, self._iprev):
            if lookup is not None:
                lookup.cancel()


class _Lookup(Generic[T]):
    """One lookup started at once: its value, or the task going on with it and the timer that
    ends it (then `fallback` is its value)."""

    __slots__ = ("_fallback", "_late", "_task", "_timer", "_value")

    def __init__(self, coro: Coroutine[Any, Any, T], timeout: float, fallback: T) -> None:
        self._fallback = fallback
        self._late = False
        self._task: asyncio.Task[T] | None = None
        self._timer: asyncio.TimerHandle | None = None
        started = eagerly(coro)
        if isinstance(started, Ran):
            self._value = started.value
            return
        self._task = started
        self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        started.add_done_callback(self._done)

    def _expire(self) -> None:
        self._late = True
        if self._task is not None:
            self._task.cancel()

    def _done(self, task: asyncio.Task[T]) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def result(self) -> T:
        task = self._task
        if task is None:
            return self._value
        try:
            # shielded: a session cancelled while it waits must not cancel the lookup
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._late and task.cancelled():
                return self._fallback
            raise

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
