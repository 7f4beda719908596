"""Verdicts on where mail comes from: a client on block lists, a DMARC failure.

Decisions only: the checks' results in (`postkeep.mailauth`), a `Verdict` (or where to put
the message) out; the caller writes the reply and the log line.

- Block lists (RFC 5782): a client whose listings weigh `threshold` or more is refused with
  ``554 5.7.1`` (RFC 3463 §3.8 "delivery not authorized, message refused"), the text naming
  the list and its own explanation, as list operators ask ("client [ip] blocked using zone").
- Domain lists (URIBL/DBL): a message whose linked domains weigh `threshold` or more is
  refused at end of data with ``550 5.7.1``, naming the domain and the list.
- DMARC (RFC 9989 §5.3, §8.3): a failure's disposition (the domain's policy after testing
  mode) is mapped by `[inbound] dmarc_reject` / `dmarc_quarantine` to "reject"
  (``550 5.7.1`` at end of data), "quarantine" (the Junk mailbox) or "tag" (delivered, the
  verdict in Authentication-Results). A temporary failure defers with ``451 4.4.3`` only
  with `[inbound] temperror_defer` (RFC 3463 §3.5: X.4.3 "directory server failure").
- ARC (RFC 8617 §7.2, RFC 7489 §6.7 local policy): a DMARC failure is only tagged, neither
  refused nor quarantined, when the ARC chain passes, the newest ARC-Seal's d= is one of
  `[inbound] arc_trusted_sealers`, and that sealer's ARC-Authentication-Results says
  dmarc=pass for the From domain, or spf=pass / dkim=pass for a domain aligned with it (the
  same name; or, unless the policy asks for strict alignment, the author's Organizational
  Domain or a name below it). The outcome's `override` says so for the log
  (``override=local_policy reason=arc``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from postkeep.errors import Reply
from postkeep.mailauth.arc.verify import ArcResult
from postkeep.mailauth.dmarc import DmarcVerdict, Policy
from postkeep.mailauth.dnsbl import Listing, score
from postkeep.policy.verdict import Verdict

JUNK = "Junk"


def _heaviest(listings: Sequence[Listing], threshold: float) -> tuple[float, list[Listing]]:
    """The listings' score and, when it reaches `threshold`, the listings that weigh (the
    heaviest first); none below it."""
    total = score(listings)
    if total < threshold:
        return total, []
    return total, sorted((x for x in listings if not x.error and x.weight > 0),
                         key=lambda x: -x.weight)


def listed(ip: str, listings: Sequence[Listing], threshold: float) -> Verdict | None:
    """The refusal for a client whose listings weigh at least `threshold`, else None."""
    total, hits = _heaviest(listings, threshold)
    if not hits:
        return None
    first = hits[0]
    why = f": {first.reason}" if first.reason else ""
    text = f"Service unavailable; client [{ip}] blocked using {first.zone}{why}"
    zones = ",".join(f"{x.zone}={'/'.join(x.labels)}" for x in hits)
    return Verdict(Reply(554, "5.7.1", text), f"dnsbl score={total:g} lists={zones}")


def links_listed(listings: Sequence[Listing], threshold: float) -> Verdict | None:
    """The refusal of a message whose linked domains' listings weigh at least `threshold`
    (``550 5.7.1``, RFC 3463 §3.8), else None."""
    total, hits = _heaviest(listings, threshold)
    if not hits:
        return None
    first = hits[0]
    text = f"Message rejected: it links to {first.subject}, listed by {first.zone}"
    found = ",".join(f"{x.subject}@{x.zone}={'/'.join(x.labels)}" for x in hits)
    return Verdict(Reply(550, "5.7.1", text), f"uribl score={total:g} domains={found}")


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    """What becomes of a message after DMARC: `verdict` refuses it (None: deliver), into
    `mailbox` (None: the usual one)."""

    verdict: Verdict | None = None
    mailbox: str | None = None
    override: str = ""  # why the domain's policy was not applied (the log's words)


def _aligned(result: DmarcVerdict, domain: str, strict: bool) -> bool:
    domain = domain.lower().rstrip(".")
    author, org = result.header_from, result.org_domain
    if domain == author:
        return True
    return not strict and bool(org) and (domain == org or domain.endswith("." + org))


def arc_vouches(result: DmarcVerdict, arc: ArcResult | None,
                trusted_sealers: Collection[str]) -> str | None:
    """The trusted sealer that vouches for a message DMARC failed (module docstring), or
    None."""
    if arc is None or arc.result != "pass" or not arc.sealers or arc.newest is None:
        return None
    sealer = arc.sealers[-1]
    if sealer not in {name.lower().rstrip(".") for name in trusted_sealers}:
        return None
    record = result.record
    for r in arc.newest.results:
        if r.result != "pass":
            continue
        if r.method == "dmarc" and r.properties.get("header.from", "").lower().rstrip(
                ".") == result.header_from:
            return sealer
        if r.method == "dkim":
            domain = r.properties.get("header.d", "")
            if domain and _aligned(result, domain, bool(record and record.adkim_strict)):
                return sealer
        if r.method == "spf":
            domain = r.properties.get("smtp.mailfrom", "").rpartition("@")[2] or \
                r.properties.get("smtp.helo", "")
            if domain and _aligned(result, domain, bool(record and record.aspf_strict)):
                return sealer
    return None


def dmarc_outcome(result: DmarcVerdict, on_reject: str, on_quarantine: str,
                  temperror_defer: bool, arc: ArcResult | None = None,
                  trusted_sealers: Collection[str] = ()) -> DmarcOutcome:
    if result.result == "temperror":
        if temperror_defer:
            return DmarcOutcome(Verdict(
                Reply(451, "4.4.3", "Temporary DNS failure evaluating DMARC, try again later"),
                f"dmarc temperror header.from={result.header_from} {result.reason}"))
        return DmarcOutcome()
    if result.result != "fail" or result.disposition in (None, Policy.NONE):
        return DmarcOutcome()
    action = on_reject if result.disposition is Policy.REJECT else on_quarantine
    reason = (f"dmarc fail header.from={result.header_from} p={result.policy} "
              f"dis={result.disposition} domain={result.policy_domain}")
    if action != "tag":
        sealer = arc_vouches(result, arc, trusted_sealers)
        if sealer is not None:
            return DmarcOutcome(override=f"{reason} override=local_policy reason=arc "
                                f"sealer={sealer}")
    if action == "reject":
        text = (f"Message rejected: {result.header_from} does not authenticate it "
                f"and its DMARC policy is {result.disposition}")
        return DmarcOutcome(Verdict(Reply(550, "5.7.1", text), reason))
    if action == "quarantine":
        return DmarcOutcome(mailbox=JUNK)
    return DmarcOutcome()
