"""DNS block and allow lists: client IPs (DNSBL/DNSWL, RFC 5782 §2) and domains (URIBL/DBL,
RFC 5782 §3), with weights and the meaning of each return code.

A list is a DNS zone: an IPv4 address is looked up as its octets reversed under the zone
(``2.0.0.127.zen.example``), an IPv6 address as its 32 nibbles reversed (RFC 5782 §2.4), a
domain as itself under the zone (§3). An A record means listed; its value, an address in
127.0.0.0/8 (§2.3), says why, and the optional TXT record at the same name says it in words.

What an answer means is the list's own business, so each `DnsList` says it:

- `codes` maps return codes (an address, or a CIDR such as "127.0.0.4/30") to a label and a
  weight; without `codes` any 127.0.0.0/8 answer is a listing of the list's `weight`.
- Answers outside 127.0.0.0/8 are not listings but a broken or hijacked list (RFC 5782 §6:
  some resolvers answer NXDOMAIN with an advertising address) and count as errors.
- ``127.255.255.0/24`` is a refusal (Spamhaus: 252 a typo in the query, 254 a public or
  open resolver, 255 too many queries) and counts as an error, not a listing, and so does
  Spamhaus DBL's 127.0.1.255 (IP queries are not allowed): `ERROR_CODES`.
- A negative weight is an allow list (DNSWL): it lowers the score.

`check_ip` and `check_domains` ask every list at once and return one `Listing` per list that
listed (or failed); `score` sums the weights of the listings. Each lookup has the resolver's
own timeout; a failure is an error with its reason, never a listing and never a pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from postkeep import eager
from postkeep.dns.names import InvalidName
from postkeep.dns.results import Answer, TempFail

#: Return codes that are a list refusing to answer, never a listing.
ERROR_CODES = (ipaddress.ip_network("127.255.255.0/24"), ipaddress.ip_network("127.0.1.255/32"))
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
#: Most domains of one message looked up (the rest are not).
MAX_DOMAINS = 20
#: Longest explanation kept from a list's TXT record.
MAX_REASON = 200


class ListResolver(Protocol):
    async def lookup(self, name: str, rdtype: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Code:
    """What a return code means: a label for logs and headers, and its weight."""

    label: str
    weight: float


@dataclass(frozen=True)
class DnsList:
    """One list. `zone`: its DNS zone; `weight`: a listing's weight when `codes` does not
    name the answer; `codes`: return code (address or CIDR) -> `Code`."""

    zone: str
    weight: float = 1.0
    codes: Mapping[str, Code] = field(default_factory=dict)
    _networks: tuple[tuple[Any, Code], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # ValueError for a code that is no address or CIDR
        networks = tuple((ipaddress.ip_network(k), v) for k, v in self.codes.items())
        object.__setattr__(self, "_networks", networks)

    def meaning(self, code: str) -> Code | None:
        """The `Code` of an answer, None if the list does not count it as a listing."""
        try:
            address = ipaddress.ip_address(code)
        except ValueError:
            return None
        for network, meant in self._networks:
            if address in network:
                return meant
        return None if self.codes else Code("listed", self.weight)


@dataclass(frozen=True, slots=True)
class Listing:
    """A list's answer for one IP or domain: `codes` returned, the `labels` and the `weight`
    they mean, the list's `reason` (its TXT record), or `error` when the lookup failed or the
    list refused (then `weight` is 0)."""

    zone: str
    subject: str
    codes: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    weight: float = 0.0
    reason: str = ""
    error: str = ""


def ip_query_name(ip: str, zone: str) -> str:
    """RFC 5782 §2.1 (IPv4) and §2.4 (IPv6) query names; an IPv4-mapped IPv6 address is
    looked up as the IPv4 address it is."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = str(address).split(".")
    else:
        labels = list(address.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone.strip(".")


async def _ask(resolver: ListResolver, dnslist: DnsList, subject: str, name: str
               ) -> Listing | None:
    try:
        outcome = await resolver.lookup(name, "A")
    except InvalidName as exc:
        return Listing(dnslist.zone, subject, error=f"not a name: {exc}")
    if isinstance(outcome, TempFail):
        return Listing(dnslist.zone, subject, error=f"lookup failed: {outcome.reason}")
    if not isinstance(outcome, Answer):
        return None  # NXDOMAIN or no A record: not listed
    codes = tuple(sorted(str(c) for c in outcome.records))
    refused = [c for c in codes if _is_error(c)]
    if refused:
        return Listing(dnslist.zone, subject, codes, error=f"list refused the query ({refused[0]})")
    meant = [m for c in codes if (m := dnslist.meaning(c)) is not None]
    if not meant:
        if any(ipaddress.ip_address(c) not in _LOOPBACK for c in codes):
            return Listing(dnslist.zone, subject, codes, error="answer outside 127.0.0.0/8")
        return None  # codes the list's `codes` do not count
    reason = await _reason(resolver, name)
    return Listing(dnslist.zone, subject, codes, tuple(m.label for m in meant),
                   max(meant, key=lambda m: abs(m.weight)).weight, reason)


def _is_error(code: str) -> bool:
    try:
        address = ipaddress.ip_address(code)
    except ValueError:
        return True
    return any(address in n for n in ERROR_CODES)


async def _reason(resolver: ListResolver, name: str) -> str:
    outcome = await resolver.lookup(name, "TXT")
    if not isinstance(outcome, Answer) or not outcome.records:
        return ""
    text = bytes(outcome.records[0]).decode("ascii", "replace")
    return "".join(c if c.isprintable() else " " for c in text)[:MAX_REASON]


async def check_ip(resolver: ListResolver, ip: str, lists: Sequence[DnsList]
                   ) -> list[Listing]:
    """Ask every list about `ip` at once: the lists that listed it or failed."""
    try:
        names = [ip_query_name(ip, dl.zone) for dl in lists]
    except ValueError:
        return []
    asks = (_ask(resolver, dl, ip, n) for dl, n in zip(lists, names, strict=True))
    found = await eager.gather(*asks)  # cached answers (a returning client) need no task
    return [f for f in found if f is not None]


async def check_domains(resolver: ListResolver, domains: Sequence[str],
                        lists: Sequence[DnsList]) -> list[Listing]:
    """Ask every domain list about the first `MAX_DOMAINS` of `domains` at once."""
    wanted = list(dict.fromkeys(d.lower().strip(".") for d in domains if d))[:MAX_DOMAINS]
    jobs = [_ask(resolver, dl, d, f"{d}.{dl.zone.strip('.')}") for d in wanted for dl in lists]
    return [f for f in await eager.gather(*jobs) if f is not None]


def score(listings: Sequence[Listing]) -> float:
    """The sum of the listings' weights (errors weigh nothing)."""
    return sum(listing.weight for listing in listings if not listing.error)


#: Spamhaus ZEN's return codes (https://www.spamhaus.org/faq/section/DNSBL%20Usage), as an
#: example of `codes` and the default for a zone named zen.spamhaus.org.
SPAMHAUS_ZEN = {
    "127.0.0.2/32": Code("SBL", 1.0),
    "127.0.0.3/32": Code("CSS", 1.0),
    "127.0.0.4/30": Code("XBL", 1.0),
    "127.0.0.9/32": Code("DROP", 1.0),
    "127.0.0.10/31": Code("PBL", 1.0),
}
#: Spamhaus DBL's return codes for domains.
SPAMHAUS_DBL = {
    "127.0.1.2/32": Code("spam domain", 1.0),
    "127.0.1.4/32": Code("phish domain", 1.0),
    "127.0.1.5/32": Code("malware domain", 1.0),
    "127.0.1.6/32": Code("botnet C&C domain", 1.0),
    "127.0.1.102/32": Code("abused legit spam", 0.5),
    "127.0.1.103/32": Code("abused spammed redirector", 0.5),
    "127.0.1.104/32": Code("abused legit phish", 0.5),
    "127.0.1.105/32": Code("abused legit malware", 0.5),
    "127.0.1.106/32": Code("abused legit botnet C&C", 0.5),
}
