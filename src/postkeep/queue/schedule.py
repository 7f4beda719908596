"""When an entry is tried again, when its sender is warned, and when it is given up.

RFC 5321 §4.5.4.1: retry at intervals of at least 30 minutes after the first failures (the
default schedule starts sooner, as large MTAs do, then backs off), and give up after 4-5 days
(`delivery.lifetime`). One delay notice (RFC 3464 action "delayed") after
`delivery.delay_notice_after`, for recipients who asked (NOTIFY=DELAY, or no NOTIFY: RFC 3461
§4.1 leaves the default to the server, and warning is the common one).
"""

from __future__ import annotations

from postkeep.config import DeliveryConfig
from postkeep.store.api import QueueEntry, QueueRecipient


def retry_at(cfg: DeliveryConfig, entry: QueueEntry, now: float) -> float:
    """When to try again after this failed attempt (the entry's `attempts` before it)."""
    schedule = cfg.retry_schedule
    delay = schedule[min(entry.attempts, len(schedule) - 1)]
    return min(now + delay, max(expires_at(cfg, entry), now + 1))


def expires_at(cfg: DeliveryConfig, entry: QueueEntry) -> float:
    return entry.created + cfg.lifetime


def expired(cfg: DeliveryConfig, entry: QueueEntry, now: float) -> bool:
    return now >= expires_at(cfg, entry)


def wants(recipient: QueueRecipient, kind: str) -> bool:
    """Whether a notice of `kind` (FAILURE, DELAY, SUCCESS) goes to the sender about them."""
    if recipient.notify is None:
        return kind in ("FAILURE", "DELAY")
    return kind in recipient.notify.upper().split(",")


def delay_notice_due(cfg: DeliveryConfig, entry: QueueEntry, now: float) -> bool:
    return (
        cfg.delay_notice_after > 0
        and not entry.delay_notified
        and entry.mail_from != ""
        and now >= entry.created + cfg.delay_notice_after
    )
