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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from postkeep import log
from postkeep.config.inbound import InboundConfig, parse_codes
from postkeep.mailauth.dnsbl import SPAMHAUS_DBL, SPAMHAUS_ZEN, Code, DnsList, Listing, check_ip
from postkeep.mailauth.iprev import IprevResult, check_iprev
from postkeep.policy.trust import listed
from postkeep.policy.verdict import Verdict

if TYPE_CHECKING:
    from postkeep.dns import DnsResolver

logger = log.get("smtp")

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
    """One connection's lookups (see the module docstring); `cancel` when it ends."""

    def __init__(self, checks: InboundChecks, ip: str, *, trusted: bool) -> None:
        self.ip = ip
        self.trusted = trusted
        self._threshold = checks.cfg.dnsbl_threshold
        timeout = checks.cfg.check_timeout
        self._listings: asyncio.Task[list[Listing]] | None = None
        self._iprev: asyncio.Task[IprevResult] | None = None
        if trusted:
            return
        if checks.lists:
            late = [Listing(dl.zone, ip, error=f"no answer within {timeout:g} s")
                    for dl in checks.lists]
            self._listings = asyncio.ensure_future(
                _bounded(check_ip(checks.resolver, ip, checks.lists), timeout, late))
        if checks.cfg.iprev:
            self._iprev = asyncio.ensure_future(_bounded(
                check_iprev(checks.resolver, ip), timeout,
                IprevResult("temperror", ip, reason="timed out")))

    async def refusal(self) -> Verdict | None:
        """The block lists' verdict on this client (None: not refused)."""
        if self._listings is None:
            return None
        listings = await asyncio.shield(self._listings)
        for failed in (x for x in listings if x.error):
            logger.warning("dnsbl: lookup failed ip=%s zone=%s reason=%s", self.ip,
                           failed.zone, log.quote(failed.error))
        return listed(self.ip, listings, self._threshold)

    async def iprev(self) -> IprevResult | None:
        return None if self._iprev is None else await asyncio.shield(self._iprev)

    def cancel(self) -> None:
        for task in (self._listings, self._iprev):
            if task is not None:
                task.cancel()


async def _bounded(coro: Any, timeout: float, fallback: Any) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        return fallback
