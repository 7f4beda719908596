"""The asynchronous stub resolver mail uses: typed outcomes, a TTL-honouring cache, coalescing.

Built on dnspython's `dns.asyncresolver` (the queries, UDP with TCP fallback on truncation,
RFC 7766 §5, CNAME chain following per RFC 1034 §3.6.2 within one reply), it adds:

- Typed outcomes (`postkeep.dns.results`): an `Answer`, `NxDomain`, `NoData`, or a `TempFail`
  that callers defer on. NXDOMAIN and NODATA are told apart as RFC 2308 §2 defines them.
- A cache (`postkeep.dns.cache`): answers for the least TTL along their CNAME chain, negative
  outcomes for the negative TTL of RFC 2308 §5 (the lesser of the SOA record's TTL and its
  MINIMUM field, from the authority section; without an SOA, not cached: §5 says "SHOULD NOT
  be cached"), both capped (`[dns] max_ttl`; negative ones at 3 hours, §5's "one to three
  hours"). Temporary failures are not cached: the recursive resolver behind us already keeps
  its failures for a while (RFC 9520), and a lookup after one must ask again, or a
  deferred message would be deferred again on a stale failure.
- Coalescing: concurrent lookups of one (name, type) share one query.
- Timeouts: each nameserver gets `[dns] timeout` seconds per try, the list is tried
  `[dns] attempts` times when all time out; SERVFAIL, REFUSED or an unusable reply from every
  nameserver is a temporary failure at once.
- DNSSEC: with `[dns] trust_ad` (a validating resolver on loopback, RFC 4035 §4.9.3) queries
  carry AD (RFC 6840 §5.7) and DO (RFC 3225 §3: some resolvers set AD only for DO queries), and
  an outcome is `authenticated` when the reply's AD bit is set. Without it, the bit is ignored:
  nothing between us and a remote resolver stops anyone forging it.
- EDNS(0) (RFC 6891) with a 1232-octet UDP payload, the size that avoids IP fragmentation
  (DNS flag day 2020); larger replies come truncated and are asked again over TCP.

Names are checked first (`postkeep.dns.names`): `InvalidName` for one that is not a domain
name; with `literal=True` (SPF's expanded macros) any printable ASCII label is asked as it
stands (`names.literal_name`). Each temporary failure is logged on one line (`dns: lookup
failed name=... type=... reason=...`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from postkeep.config import DnsConfig, parse_nameserver
from postkeep.dns.cache import DnsCache
from postkeep.dns.names import InvalidName, literal_name, query_name
from postkeep.dns.results import MX, SRV, TLSA, Answer, NoData, NxDomain, Result, TempFail
from postkeep.errors import ConfigError

log = logging.getLogger("postkeep.dns")

#: EDNS(0) UDP payload size: no fragmentation on common paths (DNS flag day 2020).
EDNS_PAYLOAD = 1232
#: Negative outcomes are kept at most this long (RFC 2308 §5: one to three hours).
MAX_NEGATIVE_TTL = 3 * 3600


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _mx(rd: Any) -> MX:
    return MX(int(rd.preference), _text(rd.exchange))


def _txt(rd: Any) -> bytes:
    # One TXT record's character-strings are one text, concatenated (RFC 7208 §3.3, RFC 6376
    # §3.6.2.2); the records of an RRset stay apart.
    return b"".join(rd.strings)


def _tlsa(rd: Any) -> TLSA:
    return TLSA(int(rd.usage), int(rd.selector), int(rd.mtype), bytes(rd.cert))


#: The record types looked up, and each one's conversion from dnspython's rdata.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "A": lambda rd: str(rd.address),
    "AAAA": lambda rd: str(rd.address),
    "MX": _mx,
    "TXT": _txt,
    "TLSA": _tlsa,
    "PTR": lambda rd: _text(rd.target),
    "SRV": lambda rd: SRV(int(rd.priority), int(rd.weight), int(rd.port),
                          _text(rd.target) or "."),
}


def negative_ttl(response: dns.message.Message, name: dns.name.Name,
                 cnames: list[dns.rrset.RRset]) -> int | None:
    """RFC 2308 §5: how long a negative reply for `name` (the end of the CNAME chain) may be
    kept: the least of the SOA record's TTL, its MINIMUM and the chain's CNAME TTLs; None when
    the authority section has no SOA of a zone holding `name` (then it is not kept)."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name) and rrset:
            return min([rrset.ttl, int(rrset[0].minimum), *(c.ttl for c in cnames)])
    return None


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _describe(errors: list[Any]) -> str:
    """dnspython's per-nameserver errors (nameserver, tcp, port, error, response), in short:
    "127.0.0.1:53 SERVFAIL; [::1]:53/tcp ConnectionRefusedError: ..." """
    parts = []
    for server, tcp, port, error, _response in errors[:4]:
        # dnspython names a nameserver "Do53:address@port"
        address = str(server).removeprefix("Do53:").rpartition("@")[0] or str(server)
        where = _where(address, port)
        what = error if isinstance(error, str) else type(error).__name__
        detail = str(error) if not isinstance(error, str) and str(error) else ""
        parts.append(f"{where}{'/tcp' if tcp else ''} {what}{': ' + detail if detail else ''}")
    more = f" (+{len(errors) - 4} more)" if len(errors) > 4 else ""
    return "; ".join(parts) + more if parts else "no nameserver answered"


class DnsResolver:
    """Lookups of MX, A, AAAA, TXT, TLSA and PTR records for one process and event loop (see
    the module docstring). `clock` (seconds, monotonic) drives the cache's expiry."""

    def __init__(self, config: DnsConfig, *, clock: Callable[[], float] = time.monotonic,
                 resolv_conf: str = "/etc/resolv.conf") -> None:
        self.config = config
        stub = dns.asyncresolver.Resolver(configure=False)
        if config.nameservers:
            stub.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port
                                in map(parse_nameserver, config.nameservers)]
        else:
            try:
                stub.read_resolv_conf(resolv_conf)
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError("dns.nameservers",
                                  f"empty, and {resolv_conf} names no nameserver") from None
        stub.cache = None  # ours below: an injected clock, negative TTLs, no TempFail
        stub.retry_servfail = False
        stub.timeout = config.timeout
        stub.use_edns(0, dns.flags.DO if config.trust_ad else 0, EDNS_PAYLOAD)
        stub.flags = dns.flags.RD | (dns.flags.AD if config.trust_ad else 0)
        self._stub = stub
        self._trust_ad = config.trust_ad
        self.cache = DnsCache(config.cache_size, clock)
        self._inflight: dict[tuple[str, str], asyncio.Task[Result[Any]]] = {}

    @property
    def nameservers(self) -> list[str]:
        """The nameservers asked, as "address:port" ("[address]:port" for IPv6)."""
        return [_where(ns.address, ns.port) if isinstance(ns, dns.nameserver.Do53Nameserver)
                else _where(str(ns), self._stub.port) for ns in self._stub.nameservers]

    async def mx(self, name: str, *, literal: bool = False) -> Result[MX]:
        return await self.lookup(name, "MX", literal=literal)

    async def a(self, name: str, *, literal: bool = False) -> Result[str]:
        return await self.lookup(name, "A", literal=literal)

    async def aaaa(self, name: str, *, literal: bool = False) -> Result[str]:
        return await self.lookup(name, "AAAA", literal=literal)

    async def txt(self, name: str, *, literal: bool = False) -> Result[bytes]:
        """Each TXT record as one byte string (its character-strings concatenated)."""
        return await self.lookup(name, "TXT", literal=literal)

    async def tlsa(self, name: str) -> Result[TLSA]:
        return await self.lookup(name, "TLSA")

    async def ptr(self, address: str) -> Result[str]:
        """The PTR records of an IPv4 or IPv6 address (RFC 1035 §3.5, RFC 3596 §2.5)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidName(f"{address!r} is not an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:192.0.2.1 is asked under in-addr.arpa
        return await self.lookup(ip.reverse_pointer, "PTR")

    async def lookup(self, name: str, rdtype: str, *, literal: bool = False) -> Result[Any]:
        """The outcome for (`name`, `rdtype`): from the cache, from a lookup already under way
        for the same, or from a new one. Raises InvalidName for a name that is none
        (`literal`: checked by `literal_name`, else by `query_name`)."""
        if rdtype not in _CONVERT:
            raise ValueError(f"record type {rdtype!r} is not one of {', '.join(_CONVERT)}")
        key = ((literal_name if literal else query_name)(name), rdtype)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._resolve(*key))
            self._inflight[key] = task

            def done(finished: asyncio.Task[Result[Any]], key: tuple[str, str] = key) -> None:
                if self._inflight.get(key) is finished:
                    del self._inflight[key]

            task.add_done_callback(done)
        # A caller cancelled (its session ended) must not cancel the others' lookup.
        return await asyncio.shield(task)

    async def _resolve(self, qname: str, rdtype: str) -> Result[Any]:
        # From the labels, not from text: in a literal name "\\", "@" or "(" are octets.
        absolute = dns.name.Name([*(label.encode("ascii") for label in qname.split(".")), b""])
        per_attempt = self.config.timeout * max(1, len(self._stub.nameservers))
        for _ in range(self.config.attempts):
            try:
                answer = await self._stub.resolve(absolute, rdtype, search=False,
                                                  raise_on_no_answer=False,
                                                  lifetime=per_attempt)
            except dns.resolver.NXDOMAIN as e:
                return self._nxdomain(qname, rdtype, e.response(absolute))
            except dns.resolver.LifetimeTimeout:
                continue
            except dns.resolver.NoNameservers as e:
                return self._failed(qname, rdtype, _describe(e.kwargs.get("errors", [])))
            except (dns.exception.DNSException, OSError, EOFError) as e:
                return self._failed(qname, rdtype, f"{type(e).__name__}: {e}")
            return self._answer(qname, rdtype, answer)
        return self._failed(qname, rdtype,
                            f"timeout ({self.config.attempts} x {self.config.timeout:g} s "
                            f"for each of {', '.join(self.nameservers)})")

    def _failed(self, qname: str, rdtype: str, reason: str) -> TempFail:
        log.info("lookup failed name=%s type=%s reason=%s", qname, rdtype, reason)
        return TempFail(qname, rdtype, reason)

    def _authenticated(self, response: dns.message.Message) -> bool:
        return self._trust_ad and bool(response.flags & dns.flags.AD)

    def _negative_ttl(self, response: dns.message.Message, end: dns.name.Name,
                      cnames: list[dns.rrset.RRset]) -> int:
        ttl = negative_ttl(response, end, cnames)
        return 0 if ttl is None else min(ttl, self.config.max_ttl, MAX_NEGATIVE_TTL)

    def _nxdomain(self, qname: str, rdtype: str, response: dns.message.Message) -> NxDomain:
        chain = response.resolve_chaining()
        outcome = NxDomain(qname, rdtype,
                           self._negative_ttl(response, chain.canonical_name, chain.cnames),
                           self._authenticated(response))
        self.cache.put((qname, rdtype), outcome, 0)
        return outcome

    def _answer(self, qname: str, rdtype: str, answer: dns.resolver.Answer
                ) -> Answer[Any] | NoData:
        response = answer.response
        chain = answer.chaining_result
        canonical = _text(chain.canonical_name)
        if answer.rrset is None:
            nodata = NoData(qname, rdtype,
                            self._negative_ttl(response, chain.canonical_name, chain.cnames),
                            self._authenticated(response), canonical)
            self.cache.put((qname, rdtype), nodata, 0)
            return nodata
        convert = _CONVERT[rdtype]
        outcome: Answer[Any] = Answer(
            qname, rdtype, tuple(convert(rd) for rd in answer.rrset),
            min(chain.minimum_ttl, self.config.max_ttl), self._authenticated(response),
            canonical)
        size = sum(len(rd.to_wire()) for rd in answer.rrset)
        self.cache.put((qname, rdtype), outcome, size)
        return outcome
