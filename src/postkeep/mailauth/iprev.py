"""iprev: the client's forward-confirmed reverse DNS (RFC 8601 §3).

The client IP's PTR names (RFC 1035 §3.5, RFC 3596 §2.5) are each resolved forward (A for an
IPv4 client, AAAA for IPv6); the check passes when one of them leads back to the IP, and the
first such name is the client's confirmed name (``policy.iprev`` and the Received field's
"from" part). Results as RFC 8601 §2.7.3 names them: ``pass``; ``fail`` when no PTR name leads
back; ``permerror`` when the IP has no PTR record at all; ``temperror`` when a lookup failed
temporarily (a forward lookup failing on one name still lets another confirm).

At most `MAX_NAMES` PTR names are tried (RFC 7208 §5.5 applies the same limit of 10 to SPF's
ptr mechanism, for the same reason: an attacker controls its reverse zone).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

from postkeep import eager
from postkeep.dns.names import InvalidName
from postkeep.dns.results import Answer, TempFail

MAX_NAMES = 10


class PtrResolver(Protocol):
    async def ptr(self, address: str) -> Any: ...

    async def lookup(self, name: str, rdtype: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class IprevResult:
    result: str  # pass, fail, permerror, temperror
    ip: str
    name: str = ""  # the confirmed name (pass only)
    reason: str = ""

    def auth_result(self) -> str:
        """The ``iprev=`` resinfo of Authentication-Results (RFC 8601 §2.7.3)."""
        comment = f" ({self.name})" if self.name else (f" ({self.reason})" if self.reason else "")
        return f"iprev={self.result}{comment} policy.iprev={self.ip}"


async def check_iprev(resolver: PtrResolver, ip: str) -> IprevResult:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return IprevResult("permerror", ip, reason="not an IP address")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    ip = str(address)
    outcome = await resolver.ptr(ip)
    if isinstance(outcome, TempFail):
        return IprevResult("temperror", ip, reason=f"PTR lookup failed: {outcome.reason}")
    if not isinstance(outcome, Answer) or not outcome.records:
        return IprevResult("permerror", ip, reason="no PTR record")
    rdtype = "A" if address.version == 4 else "AAAA"
    names = [str(n) for n in outcome.records[:MAX_NAMES]]

    async def forward(name: str) -> Any:
        try:
            return await resolver.lookup(name, rdtype)
        except InvalidName:
            return None

    answers = await eager.gather(*(forward(n) for n in names))
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, Answer) and any(
                ipaddress.ip_address(a) == address for a in answer.records):
            return IprevResult("pass", ip, name)
    if any(isinstance(a, TempFail) for a in answers):
        return IprevResult("temperror", ip, reason="forward lookup failed")
    return IprevResult("fail", ip, reason=f"no PTR name resolves back ({names[0]})")
