"""check_host() of RFC 7208 §4 for the HELO (§2.3) and MAIL FROM (§2.4) identities.

`check_mailfrom` and `check_helo` pick the identity; `check_host(ip, domain, sender, helo,
resolver)` is the function of §4.1. Each returns an `SpfResult` (§2.6: none, neutral, pass,
fail, softfail, temperror, permerror) with the mechanism that matched, the explanation of a
fail (§6.2), and what a Received-SPF or Authentication-Results header field needs (§9).

- Initial processing (§4.3): a malformed domain (an empty label, one over 63 octets, a single
  label, a domain literal) is "none"; a sender without a local-part gets "postmaster".
- Record lookup and selection (§4.4, §4.5): TXT records only; none that starts "v=spf1" is
  "none", more than one is a permerror; a DNS failure other than NXDOMAIN is a temperror.
- Evaluation (§4.6, §5): mechanisms in order; "redirect" after them (§6.1); the default is
  neutral (§4.7). "include" maps its target's result as §5.2's table says.
- Limits (§4.6.4): at most 10 terms that query DNS (include, a, mx, ptr, exists, redirect),
  at most 2 of them void (NXDOMAIN or no records), both permerror beyond; an mx with more
  than 10 exchanges is a permerror; a ptr validates at most 10 names (the rest ignored). The
  whole check runs within `timeout` seconds (§4.6.4, "at least 20 seconds"), a temperror after.
- IPv4-mapped IPv6 addresses are IPv4 (§5, "::ffff:192.0.2.1" matches ip4, not ip6).
- Macros (§7, `macros`), including p (§7.3's validated name, looked up as §5.5 does) and the
  explanation-only c, r and t.

Target names that are no domain name (an empty or over-long label: RFC 7208 leaves this
undefined, §4.8) do not exist: the mechanism does not match; no query is sent. Names are
looked up as they stand (RFC 2181 §11: any printable ASCII), as macro expansion makes them.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from postkeep.dns.names import InvalidName
from postkeep.dns.results import MX, Answer, NoData, NxDomain, Result, TempFail
from postkeep.mailauth.spf import macros, record

#: RFC 7208 §4.6.4.
MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
#: §4.6.4: "SHOULD allow at least 20 seconds".
DEFAULT_TIMEOUT = 20.0

IP: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class SpfResolver(Protocol):
    """The lookups SPF needs of `postkeep.dns.DnsResolver`. `literal`: the name is taken as
    it stands (printable ASCII labels, RFC 2181 §11), as macro expansion leaves it."""

    async def txt(self, name: str, *, literal: bool = ...) -> Result[bytes]: ...
    async def a(self, name: str, *, literal: bool = ...) -> Result[str]: ...
    async def aaaa(self, name: str, *, literal: bool = ...) -> Result[str]: ...
    async def mx(self, name: str, *, literal: bool = ...) -> Result[MX]: ...
    async def ptr(self, address: str) -> Result[str]: ...


class Spf(enum.StrEnum):
    """The results of RFC 7208 §2.6."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


_QUALIFIER = {"+": Spf.PASS, "-": Spf.FAIL, "~": Spf.SOFTFAIL, "?": Spf.NEUTRAL}


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The outcome of one check. `identity`: "mailfrom" or "helo" (§9.1); `sender`: the
    address checked (postmaster@domain when it had no local-part); `mechanism`: the term that
    matched, "default" when none did, None for none/temperror/permerror; `explanation`: the
    expanded exp= text of a fail (§6.2), None without one; `problem`: why a temperror or
    permerror."""

    result: Spf
    identity: str
    domain: str
    sender: str
    ip: str
    helo: str | None
    mechanism: str | None = None
    explanation: str | None = None
    problem: str | None = None


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


def mapped(ip: IP) -> IP:
    """An IPv4-mapped IPv6 address as the IPv4 address it is (RFC 7208 §5)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def valid_domain(domain: str) -> bool:
    """RFC 7208 §4.3: a multi-label domain name, no label empty or over 63 octets, at most 253
    characters (one trailing dot allowed)."""
    name = domain[:-1] if domain.endswith(".") else domain
    labels = name.split(".")
    return (0 < len(name) <= 253 and len(labels) > 1 and name.isascii()
            and all(0 < len(label) <= 63 for label in labels) and not name.startswith("["))


def _nibbles(ip: IP) -> str:
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    # Upper-case hex, as the OpenSPF test suite expects in explanations; DNS ignores case.
    return ".".join(ip.exploded.replace(":", "").upper())


class _Check:
    """One check_host() run's state: its counters and the p macro's value per domain."""

    def __init__(self, ip: IP, sender: str, helo: str | None, resolver: SpfResolver,
                 receiver: str | None, now: float) -> None:
        self.ip = mapped(ip)
        local, _, domain = sender.rpartition("@")
        self.local = local or "postmaster"
        self.sender_domain = domain
        self.helo = helo
        self.resolver = resolver
        self.receiver = receiver
        self.now = now
        self.terms = 0
        self.voids = 0
        self.p_values: dict[str, str] = {}

    # -- counters (§4.6.4)

    def count_term(self, term: str) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms at {term[:80]!r} "
                             "(RFC 7208 §4.6.4)")

    def void(self, outcome: Result[Any] | None, term: str) -> bool:
        """Whether `outcome` is void; counts it, a permerror beyond the limit."""
        empty = outcome is None or isinstance(outcome, NxDomain | NoData) or (
            isinstance(outcome, Answer) and not outcome.records)
        if empty and outcome is not None:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void lookups at {term[:80]!r} "
                                 "(RFC 7208 §4.6.4)")
        return empty

    # -- lookups

    async def lookup(self, method: Callable[..., Any], name: str) -> Result[Any] | None:
        """The outcome, or None for a name that is none (no query sent)."""
        try:
            return await method(name, literal=True)  # type: ignore[no-any-return]
        except InvalidName:
            return None

    async def addresses(self, name: str, term: str, *, must: bool) -> list[IP] | None:
        """A or AAAA records (as the client's family) of `name`; None when void. A TempFail
        is a temperror when `must`, else void (ptr's validation skips such names, §5.5)."""
        method = self.resolver.a if self.ip.version == 4 else self.resolver.aaaa
        outcome = await self.lookup(method, name)
        if isinstance(outcome, TempFail):
            if must:
                raise _TempError(f"{term[:80]!r}: {outcome.reason}")
            return None
        if not isinstance(outcome, Answer):
            return None
        found = []
        for text in outcome.records:
            try:
                found.append(ipaddress.ip_address(text))
            except ValueError:
                continue
        return found

    async def validated_names(self, term: str, *, counted: bool = True) -> list[str]:
        """§5.5: the PTR names of the client whose own addresses include it (at most
        MAX_PTR_NAMES looked at); a failed PTR lookup gives none. `counted`: a void PTR
        lookup counts (§4.6.4; the p macro's does not, it is no term)."""
        try:
            outcome = await self.resolver.ptr(str(self.ip))
        except InvalidName:
            return []
        if not isinstance(outcome, Answer) or not outcome.records:
            if counted and not isinstance(outcome, TempFail):
                self.void(outcome, term)
            return []
        names = []
        for name in outcome.records[:MAX_PTR_NAMES]:
            found = await self.addresses(name, term, must=False)
            if found and self.ip in found:
                names.append(name.lower())
        return names

    # -- macros

    async def values(self, text: str, domain: str) -> dict[str, str]:
        ip = self.ip
        values = {
            "s": f"{self.local}@{self.sender_domain}", "l": self.local,
            "o": self.sender_domain, "d": domain, "i": _nibbles(ip),
            "v": "in-addr" if ip.version == 4 else "ip6", "h": self.helo or "",
            "c": str(ip), "r": self.receiver or "unknown", "t": str(int(self.now)),
            "p": "unknown",
        }
        if macros.needs(text, "p"):
            if domain not in self.p_values:
                self.p_values[domain] = _preferred(
                    await self.validated_names("%{p}", counted=False), domain)
            values["p"] = self.p_values[domain]
        return values

    async def target(self, spec: str | None, domain: str) -> str:
        if spec is None:
            return domain
        try:
            return macros.domain_name(macros.expand(spec, await self.values(spec, domain)))
        except macros.MacroError as e:
            raise _PermError(f"{spec[:80]!r}: {e}") from None

    # -- evaluation

    async def evaluate(self, domain: str, *, explain: bool = True
                       ) -> tuple[Spf, str | None, str | None]:
        """(result, mechanism, explanation) for `domain`: §4.3 to §4.7. Raises _PermError
        and _TempError. `explain`: look up the exp= of a fail (not for an include's target,
        whose exp= is never used: §6.2)."""
        if not valid_domain(domain):
            return Spf.NONE, None, None
        spf = await self.record(domain)
        if spf is None:
            return Spf.NONE, None, None
        for mechanism in spf.mechanisms:
            if await self.matches(mechanism, domain):
                result = _QUALIFIER[mechanism.qualifier]
                explanation = None
                if result is Spf.FAIL and spf.exp is not None and explain:
                    explanation = await self.explain(spf.exp, domain)
                return result, mechanism.text, explanation
        if spf.redirect is not None:
            self.count_term("redirect=")
            target = await self.target(spf.redirect, domain)
            result, mechanism_text, explanation = await self.evaluate(target, explain=explain)
            if result is Spf.NONE:
                raise _PermError(f"redirect={target[:80]}: no SPF record (RFC 7208 §6.1)")
            return result, mechanism_text, explanation
        return Spf.NEUTRAL, "default", None

    async def record(self, domain: str) -> record.Record | None:
        outcome = await self.lookup(self.resolver.txt, domain)
        if isinstance(outcome, TempFail):
            raise _TempError(f"TXT {domain[:80]}: {outcome.reason}")
        if not isinstance(outcome, Answer):
            return None
        found = [txt for txt in outcome.records if record.is_spf(txt)]
        if len(found) > 1:
            raise _PermError(f"{domain[:80]}: {len(found)} SPF records (RFC 7208 §4.5)")
        if not found:
            return None
        try:
            return record.parse(found[0].decode("ascii"))
        except UnicodeDecodeError:
            raise _PermError(f"{domain[:80]}: non-ASCII octets in the record "
                             "(RFC 7208 §3.1)") from None
        except record.SpfSyntaxError as e:
            raise _PermError(f"{domain[:80]}: {e}") from None

    async def matches(self, mechanism: record.Mechanism, domain: str) -> bool:
        name, ip, term = mechanism.name, self.ip, mechanism.text
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return mechanism.network is not None and ip.version == mechanism.network.version \
                and ip in mechanism.network
        self.count_term(term)
        target = await self.target(mechanism.domain_spec, domain)
        cidr = mechanism.cidr4 if ip.version == 4 else mechanism.cidr6
        if name == "include":
            result, _, _ = await self.evaluate(target, explain=False)
            if result is Spf.NONE:
                raise _PermError(f"{term[:80]!r}: no SPF record at {target[:80]} "
                                 "(RFC 7208 §5.2)")
            return result is Spf.PASS
        if name == "exists":
            outcome = await self.lookup(self.resolver.a, target)
            if isinstance(outcome, TempFail):
                raise _TempError(f"{term[:80]!r}: {outcome.reason}")
            return not self.void(outcome, term)
        if name == "a":
            method = self.resolver.a if ip.version == 4 else self.resolver.aaaa
            outcome = await self.lookup(method, target)
            if isinstance(outcome, TempFail):
                raise _TempError(f"{term[:80]!r}: {outcome.reason}")
            if self.void(outcome, term):
                return False
            assert isinstance(outcome, Answer)
            return _in_any(ip, outcome.records, cidr)
        if name == "mx":
            outcome = await self.lookup(self.resolver.mx, target)
            if isinstance(outcome, TempFail):
                raise _TempError(f"{term[:80]!r}: {outcome.reason}")
            if self.void(outcome, term):
                return False
            assert isinstance(outcome, Answer)
            exchanges = [mx.exchange for mx in sorted(outcome.records,
                                                      key=lambda mx: mx.preference)
                         if mx.exchange not in (".", "")]
            if len(exchanges) > MAX_MX_NAMES:
                raise _PermError(f"{term[:80]!r}: {len(exchanges)} MX names (at most "
                                 f"{MAX_MX_NAMES}, RFC 7208 §4.6.4)")
            for exchange in exchanges:
                found = await self.addresses(exchange, term, must=True)
                if found and any(ip in _network(a, cidr) for a in found):
                    return True
            return False
        # ptr (§5.5)
        suffix = target.lower().rstrip(".")
        return any(n == suffix or n.endswith("." + suffix)
                   for n in await self.validated_names(term))

    async def explain(self, spec: str, domain: str) -> str | None:
        """§6.2: the explanation, or None on any trouble (no DNS limits count)."""
        try:
            name = await self.target(spec, domain)
        except _PermError:
            return None
        outcome = await self.lookup(self.resolver.txt, name)
        if not isinstance(outcome, Answer) or len(outcome.records) != 1:
            return None
        try:
            text = outcome.records[0].decode("ascii")
            macros.check(text, exp=True)
        except (UnicodeDecodeError, macros.MacroError):
            return None
        if len(text) > record.MAX_RECORD or not text.isprintable():
            return None
        try:
            return macros.expand(text, await self.values(text, domain))
        except macros.MacroError:
            return None


def _network(address: IP, cidr: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{address}/{cidr}", strict=False)


def _in_any(ip: IP, records: tuple[str, ...], cidr: int) -> bool:
    for text in records:
        try:
            if ip in _network(ipaddress.ip_address(text), cidr):
                return True
        except ValueError:
            continue
    return False


def _preferred(names: list[str], domain: str) -> str:
    """§7.3's p: the target domain itself if validated, else a subdomain of it, else any."""
    domain = domain.lower().rstrip(".")
    for name in names:
        if name == domain:
            return name
    for name in names:
        if name.endswith("." + domain):
            return name
    return names[0] if names else "unknown"


async def check_host(ip: str | IP, domain: str, sender: str, helo: str | None,
                     resolver: SpfResolver, *, identity: str = "mailfrom",
                     receiver: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                     now: float | None = None) -> SpfResult:
    """RFC 7208 §4.1's check_host(<ip>, <domain>, <sender>): never raises for bad records or
    DNS trouble; those are permerror and temperror results. `receiver`: this host's name
    (the r macro, "unknown" without it); `now`: the t macro's time (default: the clock)."""
    address = mapped(ipaddress.ip_address(ip) if isinstance(ip, str) else ip)
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        sender_domain = sender
    sender = f"{local or 'postmaster'}@{sender_domain}"
    check = _Check(address, sender, helo, resolver, receiver,
                   time.time() if now is None else now)

    def done(result: Spf, **details: str | None) -> SpfResult:
        return SpfResult(result, identity, domain, sender, str(address), helo, **details)

    try:
        async with asyncio.timeout(timeout):
            result, mechanism, explanation = await check.evaluate(domain)
    except _PermError as e:
        return done(Spf.PERMERROR, problem=str(e))
    except _TempError as e:
        return done(Spf.TEMPERROR, problem=str(e))
    except TimeoutError:
        return done(Spf.TEMPERROR, problem=f"no result within {timeout:g} s (RFC 7208 §4.6.4)")
    return done(result, mechanism=mechanism, explanation=explanation)


async def check_mailfrom(ip: str | IP, mailfrom: str, helo: str | None,
                         resolver: SpfResolver, **options: Any) -> SpfResult:
    """The MAIL FROM identity (§2.4): the reverse-path's domain; a null reverse-path ("")
    checks postmaster@<HELO> instead."""
    if not mailfrom:
        if not helo:
            return SpfResult(Spf.NONE, "mailfrom", "", "", str(ip), helo)
        mailfrom = f"postmaster@{helo}"
    domain = mailfrom.rpartition("@")[2]
    return await check_host(ip, domain, mailfrom, helo, resolver, identity="mailfrom",
                            **options)


async def check_helo(ip: str | IP, helo: str, resolver: SpfResolver,
                     **options: Any) -> SpfResult:
    """The HELO identity (§2.3): <domain> is the HELO name, <sender> postmaster@ it. A HELO
    that is no domain name (a literal, one label) gives none (§4.3)."""
    return await check_host(ip, helo, f"postmaster@{helo}", helo, resolver, identity="helo",
                            **options)
