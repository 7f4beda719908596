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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postkeep.errors import Reply
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


def dmarc_outcome(result: DmarcVerdict, on_reject: str, on_quarantine: str,
                  temperror_defer: bool) -> DmarcOutcome:
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
    if action == "reject":
        text = (f"Message rejected: {result.header_from} does not authenticate it "
                f"and its DMARC policy is {result.disposition}")
        return DmarcOutcome(Verdict(Reply(550, "5.7.1", text), reason))
    if action == "quarantine":
        return DmarcOutcome(mailbox=JUNK)
    return DmarcOutcome()
