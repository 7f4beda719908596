"""Finding a domain's DMARC policy record and its Organizational Domain.

Two ways, chosen by `OrgDomainMethod`:

- ``TREE_WALK`` (the default): RFC 9989 §4.10, the DNS Tree Walk. From a name, query
  ``_dmarc.<name>`` TXT, then drop labels towards the root (a name of eight labels or more
  jumps to its last seven first, so no walk takes more than eight queries). Policy discovery
  (§4.10.1) takes the first record found; the Organizational Domain (§4.10.2) is where a record
  says ``psd=n``, one label below where one says ``psd=y``, else the shortest name with a
  record, else the name itself.
- ``PSL``: RFC 7489 §3.2 and §6.6.3, the Organizational Domain from the Public Suffix List
  (the `publicsuffixlist` package, which ships the list in its wheel: no download at run
  time): the public suffix plus one label. The policy is the author domain's record, else the
  Organizational Domain's.

Each query's outcome counts as RFC 9989 §4.10 and §11.8 say: a record set with more than one
DMARC record is no record; NXDOMAIN or no data is no record; a temporary failure stops the walk
with `TempError`, which the caller reports as ``dmarc=temperror`` (and may answer 451).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Protocol

from publicsuffixlist import PublicSuffixList

from postkeep.dns.names import InvalidName
from postkeep.dns.results import Answer, NxDomain, Result, TempFail
from postkeep.mailauth.dmarc.record import DmarcRecord, is_dmarc_text, parse_record

#: RFC 9989 §4.10 step 5: names longer than this are shortened to this many labels at once.
MAX_WALK_LABELS = 7


class OrgDomainMethod(StrEnum):
    TREE_WALK = "tree-walk"
    PSL = "psl"


class TxtResolver(Protocol):
    """The lookups this module needs (`postkeep.dns.DnsResolver` is one)."""

    async def txt(self, name: str) -> Result[bytes]: ...

    async def lookup(self, name: str, rdtype: str) -> Result[Any]: ...


class TempError(Exception):
    """A lookup failed temporarily: the result is ``temperror`` (RFC 9989 §4.10, §11.8)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A policy record and the domain it was found at."""

    domain: str
    record: DmarcRecord


def labels(name: str) -> list[str]:
    return [label for label in name.lower().rstrip(".").split(".") if label]


def walk_targets(name: str) -> list[str]:
    """The names RFC 9989 §4.10 queries for `name`, in order (at most eight)."""
    parts = labels(name)
    out = [".".join(parts)] if parts else []
    if len(parts) > MAX_WALK_LABELS + 1:
        parts = parts[-MAX_WALK_LABELS:]
        out.append(".".join(parts))
    else:
        parts = parts[1:]
        if parts:
            out.append(".".join(parts))
    while len(parts) > 1:
        parts = parts[1:]
        out.append(".".join(parts))
    return out


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # parses the list shipped with the package once per process


def psl_org_domain(name: str) -> str:
    """RFC 7489 §3.2: the public suffix of `name` plus one label (`name` itself when it is a
    public suffix or has no known suffix)."""
    name = ".".join(labels(name))
    return _psl().privatesuffix(name) or name


#: What one evaluation found at each ``_dmarc.<domain>``: the policy walk and the
#: Organizational Domain walks of one message go over the same names.
Seen = dict[str, "DmarcRecord | None"]


async def record_at(resolver: TxtResolver, domain: str, seen: Seen | None = None
                    ) -> DmarcRecord | None:
    """The one DMARC record at ``_dmarc.<domain>``, or None (none, several, or unusable);
    taken from `seen` when there, kept there when found."""
    if seen is not None and domain in seen:
        return seen[domain]
    record = await _record_at(resolver, domain)
    if seen is not None:
        seen[domain] = record
    return record


async def _record_at(resolver: TxtResolver, domain: str) -> DmarcRecord | None:
    try:
        outcome = await resolver.txt(f"_dmarc.{domain}")
    except InvalidName:
        return None  # not a name the DNS can hold: no record there
    if isinstance(outcome, TempFail):
        raise TempError(f"_dmarc.{domain} TXT: {outcome.reason}")
    if not isinstance(outcome, Answer):
        return None
    candidates = [t for t in outcome.records if is_dmarc_text(t)]
    if len(candidates) != 1:
        return None  # RFC 9989 §4.10 step 2: several records are discarded, all of them
    return parse_record(candidates[0])


async def find_policy(
    resolver: TxtResolver, author_domain: str, method: OrgDomainMethod, seen: Seen | None = None
) -> Found | None:
    """The policy record that applies to mail from `author_domain` (RFC 9989 §4.10.1;
    RFC 7489 §6.6.3 with the PSL), or None; TempError if a lookup failed."""
    author = ".".join(labels(author_domain))
    if method is OrgDomainMethod.PSL:
        targets = [author]
        org = psl_org_domain(author)
        if org != author:
            targets.append(org)
    else:
        targets = walk_targets(author)
    for domain in targets:
        record = await record_at(resolver, domain, seen)
        if record is not None:
            return Found(domain, record)
    return None


async def org_domain(resolver: TxtResolver, name: str, method: OrgDomainMethod,
                     seen: Seen | None = None) -> str:
    """The Organizational Domain of `name` (RFC 9989 §4.10.2; RFC 7489 §3.2 with the PSL);
    TempError if a lookup failed."""
    name = ".".join(labels(name))
    if method is OrgDomainMethod.PSL:
        return psl_org_domain(name)
    targets = walk_targets(name)
    shortest: str | None = None
    for i, domain in enumerate(targets):
        record = await record_at(resolver, domain, seen)
        if record is None:
            continue
        if record.psd == "n":
            return domain
        if record.psd == "y":
            # one label below the public suffix domain, on the way from `name`
            return _one_below(name, domain) if i else domain
        shortest = domain
    return shortest or name


def _one_below(name: str, suffix: str) -> str:
    parts = labels(name)
    return ".".join(parts[-(len(labels(suffix)) + 1):])


async def nonexistent(resolver: TxtResolver, domain: str) -> bool:
    """RFC 9989 §3.2.12 ("Non-existent Domains"): NXDOMAIN for A, AAAA and MX alike; the
    three asked at once. TempError if any failed temporarily."""
    outcomes: Sequence[Result[Any]] = await asyncio.gather(
        *(resolver.lookup(domain, t) for t in ("A", "AAAA", "MX"))
    )
    if any(isinstance(o, TempFail) for o in outcomes):
        raise TempError(f"{domain}: existence check failed")
    return all(isinstance(o, NxDomain) for o in outcomes)
