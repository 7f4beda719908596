"""DMARC evaluation of one message: identifier alignment and the verdict (RFC 9989 §4.4, §4.5,
§5.3; RFC 7489 §3.1, §6.6).

The inputs are what the other checks concluded, not their internals: the RFC 5322.From domain,
the SPF result with the domain it was for (the MAIL FROM domain, or the HELO name for a null
reverse-path: RFC 7489 §3.1.2 / RFC 9989 §4.4.2), and the domain (``d=``) of every DKIM
signature with its result. DMARC passes when one passing identifier is aligned with the author
domain: the same name under strict alignment, the same Organizational Domain under relaxed
(the default). The verdict names the policy that applies (``p``; ``sp`` for a subdomain's mail
found at its Organizational Domain or a PSD; ``np`` for an author domain that does not exist,
RFC 9989 §4.7) and the disposition after testing mode (``t=y``, one step milder).

`author_domain` reads the From header field as RFC 7489 §6.6.1 / RFC 9989 §4.4.1 require: exactly
one From field with exactly one address; anything else has no author domain, which the
caller treats as a failure (RFC 9989 §4.4.1 leaves the action to the receiver; postkeep's
default is to reject at end of data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry
from functools import lru_cache

from postkeep.mailauth.dmarc.discover import (
    OrgDomainMethod,
    Seen,
    TempError,
    TxtResolver,
    find_policy,
    labels,
    nonexistent,
    org_domain,
)
from postkeep.mailauth.dmarc.record import DmarcRecord, Policy

#: Longest From field read (octets).
MAX_FROM = 2048
_REGISTRY = HeaderRegistry()


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """The DMARC result for one message.

    `result`: "pass", "fail", "none" (no policy), "temperror" or "permerror" (no usable author
    domain). `policy`: the policy requested for this message (None without a record);
    `disposition`: what the receiver is asked to do after testing mode. `policy_domain`: where
    the record was found; `org_domain`: the author domain's Organizational Domain.
    """

    result: str
    header_from: str
    policy: Policy | None = None
    disposition: Policy | None = None
    record: DmarcRecord | None = None
    policy_domain: str = ""
    org_domain: str = ""
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""

    def auth_result(self) -> str:
        """The ``dmarc=`` resinfo of an Authentication-Results field (RFC 8601 §2.7; RFC 7489
        §11.2 registers ``header.from``), the policy in a comment as large receivers write it."""
        comment = ""
        if self.policy is not None and self.disposition is not None:
            comment = f" (p={self.policy.value} dis={self.disposition.value})"
        elif self.reason:
            comment = f" ({self.reason})"
        from_ = f" header.from={self.header_from}" if self.header_from else ""
        return f"dmarc={self.result}{comment}{from_}"


def author_domain(from_fields: Sequence[str]) -> str | None:
    """The RFC 5322.From domain (lower case), or None unless there is exactly one From field
    holding exactly one address with a domain."""
    if len(from_fields) != 1 or len(from_fields[0]) > MAX_FROM:
        return None
    return _author_domain(from_fields[0])


@lru_cache(maxsize=1024)
def _author_domain(value: str) -> str | None:
    """One From field's author domain (a pure function of the field: kept for the senders
    that recur, the stdlib's address parser being slow)."""
    try:
        header = _REGISTRY("from", value)
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception:  # the stdlib parser's errors are not one type: unparsable, no domain
        return None
    if len(addresses) != 1:
        return None
    domain = addresses[0].domain.strip().lower().rstrip(".")
    return domain if domain and "." in domain else None


async def _aligned(resolver: TxtResolver, author: str, org: str, other: str, strict: bool,
                   method: OrgDomainMethod, seen: Seen) -> bool:
    """Whether identifier domain `other` is aligned with `author` (whose Organizational Domain
    is `org`). An Organizational Domain is always `other` or one of its parents, so when
    `org` is neither, the two cannot share one and nothing is looked up (a signer's or a
    bounce domain's walk is only made for names that could align)."""
    if other == author:
        return True
    if strict or not (other == org or other.endswith("." + org)):
        return False
    return await org_domain(resolver, other, method, seen) == org


async def evaluate(
    resolver: TxtResolver,
    from_domain: str | None,
    spf: tuple[str, str] | None,
    dkim: Sequence[tuple[str, str]],
    *,
    method: OrgDomainMethod = OrgDomainMethod.TREE_WALK,
    timeout: float = 10.0,
) -> DmarcVerdict:
    """The DMARC verdict for a message from `from_domain` (`author_domain`'s result).

    `spf`: (result, domain) of the SPF check whose domain DMARC uses; `dkim`: (result,
    ``d=``) for each signature. Every lookup together has `timeout` seconds; past it, or on a
    temporary DNS failure, the result is temperror."""
    if from_domain is None:
        return DmarcVerdict("permerror", "", reason="no single author address in From")
    author = ".".join(labels(from_domain))
    try:
        async with asyncio.timeout(timeout):
            return await _evaluate(resolver, author, spf, dkim, method)
    except TempError as exc:
        return DmarcVerdict("temperror", author, reason=str(exc))
    except TimeoutError:
        return DmarcVerdict("temperror", author, reason="DNS lookups timed out")


async def _evaluate(
    resolver: TxtResolver,
    author: str,
    spf: tuple[str, str] | None,
    dkim: Sequence[tuple[str, str]],
    method: OrgDomainMethod,
) -> DmarcVerdict:
    seen: Seen = {}
    found = await find_policy(resolver, author, method, seen)
    if found is None:
        return DmarcVerdict("none", author, reason="no policy")
    record = found.record
    org = await org_domain(resolver, author, method, seen)
    spf_ok = False
    if spf is not None and spf[0] == "pass" and spf[1]:
        spf_ok = await _aligned(resolver, author, org, ".".join(labels(spf[1])),
                                record.aspf_strict, method, seen)
    dkim_ok = False
    for result, domain in dkim:
        if result == "pass" and domain and await _aligned(
                resolver, author, org, ".".join(labels(domain)), record.adkim_strict, method,
                seen):
            dkim_ok = True
            break
    if found.domain == author:
        policy = record.p
    elif record.np is not None and await nonexistent(resolver, author):
        policy = record.np
    else:
        policy = record.sp or record.p
    ok = spf_ok or dkim_ok
    disposition = Policy.NONE if ok else (policy.relaxed() if record.testing else policy)
    return DmarcVerdict(
        "pass" if ok else "fail", author, policy, disposition, record, found.domain, org,
        spf_ok, dkim_ok,
    )
