"""Sending quotas (the fair-use policy of authenticated submission): which limits apply to a
login and its domain, and what a client hears when one is reached.

The limits of `[sending]` apply unless the account or its domain has an exception
(`postkeep user limits`, `postkeep domain limits`): an exception replaces the configured
limits of its scope, all four at once (0 there: no limit). A reached limit is a temporary
refusal, ``451 4.7.1`` (RFC 3463 §3.8: "delivery not authorized"; temporary, since it passes),
with a text that tells the user what happened and when it clears. An account paused after
an outbound content filter hit (`delivery.quarantine`) hears the same code, saying so.
"""

from __future__ import annotations

from postkeep.config import SendingConfig
from postkeep.policy.verdict import Verdict, reject
from postkeep.store.api import SendingLimits


def account_limits(cfg: SendingConfig) -> SendingLimits:
    """The configured limits for every account; a scope's own exception replaces them."""
    return SendingLimits(cfg.account_messages_per_hour, cfg.account_messages_per_day,
                         cfg.account_recipients_per_hour, cfg.account_recipients_per_day)


def domain_limits(cfg: SendingConfig) -> SendingLimits:
    """The configured limits for every domain; a scope's own exception replaces them."""
    return SendingLimits(cfg.domain_messages_per_hour, cfg.domain_messages_per_day,
                         cfg.domain_recipients_per_hour, cfg.domain_recipients_per_day)


def over_limit(scope: str, limit: str, limits: SendingLimits, login: str) -> Verdict:
    """The refusal for `limit` ("messages_per_hour"..., or "paused") of `scope` ("a:ID" or
    "d:DOMAIN")."""
    if limit == "paused":
        return reject(451, "4.7.1", "Sending paused: a message of this account was held by "
                      "a content filter; try again later, or ask your administrator",
                      f"sending paused {scope} login={login}")
    what, _, per = limit.partition("_per_")
    count = getattr(limits, limit)
    who = "this account" if scope.startswith("a:") else f"the domain {scope[2:]}"
    when = "within the hour" if per == "hour" else "tomorrow (UTC)"
    text = (f"Sending limit reached: {who} may send {count} {what} per {per}; "
            f"try again {when}, or ask your administrator")
    return reject(451, "4.7.1", text, f"sending quota {scope} {limit}={count} login={login}")
