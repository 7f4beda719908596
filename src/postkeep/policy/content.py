"""Content filters' outcome as a verdict (`filters.base.ScanOutcome`): the reply to the end
of data (RFC 5321 §4.2.5; enhanced codes RFC 3463 §3.8: 5.7.1 / 4.7.1, delivery not
authorized, permanently or for now).

A reject is ``554 5.7.1``: on the MX in words that say nothing of what was found (the
signature's name goes to the log only), on submission naming the filter ("clamav": the
antivirus), so that the user, who logged in, knows what to look at. A tempfail (a scanner
that failed closed) is ``451 4.7.1``. A filter that gave a reply of its own (a milter's
``y``, sanitised by `filters.milter.session`) has it sent as given, on the MX too: it is the
milter operator's chosen text.
"""

from __future__ import annotations

from postkeep.errors import Reply
from postkeep.filters.base import Action, ScanOutcome
from postkeep.policy.verdict import Verdict

R_REJECTED = Reply(554, "5.7.1", "Message content rejected")
R_NOT_SCANNED = Reply(451, "4.7.1", "Message could not be scanned, try again later")
R_NO_RECIPIENTS = Reply(554, "5.7.1", "Message refused by content filter: no recipients left")


def content_verdict(outcome: ScanOutcome, queue_id: str, *, submission: bool) -> Verdict | None:
    """The verdict for a reject or tempfail, None for a message that goes on."""
    if outcome.action in (Action.REJECT, Action.TEMPFAIL) and outcome.reply is not None:
        reply = outcome.reply
    elif outcome.action is Action.REJECT:
        reply = (Reply(554, "5.7.1", f"Message refused by content filter {outcome.decided_by}")
                 if submission else R_REJECTED)
    elif outcome.action is Action.TEMPFAIL:
        reply = R_NOT_SCANNED
    else:
        return None
    return Verdict(reply, f"{outcome.decided_by}: {outcome.reason} qid={queue_id}")
