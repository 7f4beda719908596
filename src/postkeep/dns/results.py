"""The typed outcome of one lookup: an answer, NXDOMAIN, NODATA, or a temporary failure.

RFC 2308 §1 names the two negative answers: NXDOMAIN (the name does not exist: RCODE 3) and
NODATA (the name exists, but has no record of the type asked for: NOERROR, empty answer).
Both are permanent facts about the DNS and are cached for their negative TTL. Anything else
that prevents an answer (a timeout, SERVFAIL, REFUSED, a network error, a truncated answer
whose TCP retry failed, a malformed reply) is a `TempFail`: a caller must defer (4xx, retry
later), never bounce on it (RFC 5321 §5.1: "temporary failure of the DNS lookup").

`authenticated` is the AD bit of the reply (RFC 4035 §3.2.3, RFC 6840 §5.8) when the resolver
is configured to trust it (`[dns] trust_ad`, a validating resolver on loopback), else False.
Names are lower-case A-labels without the trailing dot; the root (a null MX's exchange,
RFC 7505) is ".".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MX:
    """One MX record (RFC 5321 §5.1); `exchange` "." is a null MX (RFC 7505)."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class TLSA:
    """One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, data."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SRV:
    """One SRV record (RFC 2782); `target` "." means the service is not offered."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    """Records of the type asked for. `ttl`: seconds they stay valid from now (the least TTL
    along the CNAME chain, capped by `[dns] max_ttl`); `canonical_name`: the name the records
    belong to, after following CNAMEs (RFC 1034 §3.6.2)."""

    name: str
    rdtype: str
    records: tuple[T, ...]
    ttl: int
    authenticated: bool
    canonical_name: str


@dataclass(frozen=True, slots=True)
class NxDomain:
    """The name does not exist (RFC 2308 §2.1). `ttl`: its negative TTL (RFC 2308 §5)."""

    name: str
    rdtype: str
    ttl: int
    authenticated: bool


@dataclass(frozen=True, slots=True)
class NoData:
    """The name exists but has no record of this type (RFC 2308 §2.2)."""

    name: str
    rdtype: str
    ttl: int
    authenticated: bool
    canonical_name: str


@dataclass(frozen=True, slots=True)
class TempFail:
    """No answer could be had now (`reason` says why): defer, never bounce. Not cached."""

    name: str
    rdtype: str
    reason: str


#: What a lookup returns: `Result[MX]`, `Result[str]` (A, AAAA, PTR), `Result[bytes]` (TXT).
Result: TypeAlias = Answer[T] | NxDomain | NoData | TempFail

#: The outcomes the cache keeps (a TempFail never is).
Cacheable: TypeAlias = Answer[T] | NxDomain | NoData
