"""Where mail for a domain goes: its MX hosts in order, and their addresses (RFC 5321 §5.1).

- MX records sorted by preference, equal preferences shuffled (RFC 5321 §5.1: "randomized to
  spread the load"); no MX record (NODATA) is an implicit MX of preference 0, the domain itself
  (RFC 5321 §5.1); a domain that does not exist (NXDOMAIN) fails permanently (5.1.2).
- A null MX (RFC 7505 §3: one MX record, exchange "."): the domain accepts no mail, a
  permanent failure 5.1.10, at once and without retries (RFC 7505 §4.1).
- If this server (`server.hostname`) is one of the MX hosts, it and every host of the same or
  a worse preference are dropped (RFC 5321 §5.1: the last paragraph, against mail loops); none
  left is a permanent failure 5.4.6 (a routing loop).
- A host's addresses: AAAA, then A (IPv6 first, every address tried in turn by the caller).
- A DNS failure that may pass (timeout, SERVFAIL) is temporary (4.4.3), never a bounce.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from postkeep.dns.names import InvalidName
from postkeep.dns.resolver import DnsResolver
from postkeep.dns.results import MX, Answer, NoData, NxDomain, TempFail
from postkeep.queue.outcome import Outcome, permanent, temporary


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # lower-case A-label, no trailing dot
    preference: int
    implicit: bool = False  # the domain itself, for want of MX records
    secure: bool = False  # the MX answer (or the NODATA) was DNSSEC-authenticated


async def mx_hosts(
    resolver: DnsResolver, domain: str, local_hostname: str, *, rng: random.Random | None = None
) -> list[MxHost] | Outcome:
    """The hosts to try for `domain`, best first; or why there are none (an `Outcome`)."""
    try:
        result = await resolver.mx(domain)
    except InvalidName as e:
        return permanent("5.1.2", f"Bad destination domain {domain!r}: {e}")
    match result:
        case TempFail(reason=reason):
            return temporary("4.4.3", f"DNS lookup of MX {domain} failed: {reason}")
        case NxDomain():
            return permanent("5.1.2", f"Domain {domain} does not exist (NXDOMAIN)")
        case NoData(authenticated=secure):
            return [MxHost(domain, 0, implicit=True, secure=secure)]
        case Answer(records=records, authenticated=secure):
            return _ordered(domain, records, local_hostname.lower().rstrip("."), rng, secure)
    raise AssertionError(result)  # every Result is matched above


def _ordered(
    domain: str, records: tuple[MX, ...], me: str, rng: random.Random | None, secure: bool
) -> list[MxHost] | Outcome:
    if any(r.exchange == "." for r in records):
        if len(records) == 1:
            return permanent("5.1.10", f"Domain {domain} accepts no mail (null MX, RFC 7505)")
        records = tuple(r for r in records if r.exchange != ".")  # a broken mix: use the rest
    shuffled = list(records)
    (rng or random).shuffle(shuffled)
    shuffled.sort(key=lambda r: r.preference)  # stable: equal preferences stay shuffled
    mine = [r.preference for r in shuffled if r.exchange == me]
    if mine:
        shuffled = [r for r in shuffled if r.preference < min(mine)]
        if not shuffled:
            return permanent("5.4.6", f"Mail for {domain} loops back to this server ({me}), "
                             "the best MX host")
    return [MxHost(r.exchange, r.preference, secure=secure) for r in shuffled]


async def host_addresses(resolver: DnsResolver, host: str) -> list[str] | Outcome:
    """The addresses of `host`: IPv6 first, then IPv4; or why there are none."""
    try:
        six, four = await resolver.aaaa(host), await resolver.a(host)
    except InvalidName as e:
        return permanent("5.1.2", f"Bad MX host name {host!r}: {e}")
    addresses = [*_records(six), *_records(four)]
    if addresses:
        return addresses
    failed = [r for r in (six, four) if isinstance(r, TempFail)]
    if failed:
        return temporary("4.4.3", f"DNS lookup of {host} failed: {failed[0].reason}")
    return permanent("5.1.2", f"Host {host} has no address (no AAAA, no A record)")


def _records(result: object) -> list[str]:
    return [str(r) for r in result.records] if isinstance(result, Answer) else []
