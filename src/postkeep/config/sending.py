"""The `[sending]` section: how much authenticated submission may send (the fair-use policy)."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class SendingConfig:
    """`[sending]`: sending quotas of authenticated submission, per account and per domain of
    the account (0: no limit). A message past one is refused with `451 4.7.1` and the reason;
    what was refused does not count. Per-account and per-domain exceptions are set with
    `postkeep user limits` and `postkeep domain limits`."""

    account_messages_per_hour: int = setting(
        "Messages one account may send per hour (a hijacked account is stopped here).",
        default=100,
    )
    account_messages_per_day: int = setting("Messages one account may send per day.",
                                            default=500)
    account_recipients_per_hour: int = setting(
        "Recipients (all messages together) one account may send to per hour.", default=500
    )
    account_recipients_per_day: int = setting(
        "Recipients one account may send to per day.", default=2000
    )
    domain_messages_per_hour: int = setting(
        "Messages all accounts of one domain together may send per hour.", default=0
    )
    domain_messages_per_day: int = setting("Messages per domain per day.", default=0)
    domain_recipients_per_hour: int = setting("Recipients per domain per hour.", default=0)
    domain_recipients_per_day: int = setting("Recipients per domain per day.", default=0)


def validate_sending(sending: SendingConfig) -> None:
    for key, value in vars(sending).items():
        if value < 0:
            raise ConfigError(f"sending.{key}", "must be 0 (no limit) or more")
