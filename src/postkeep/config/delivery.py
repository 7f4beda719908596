"""The `[delivery]` section: the outbound queue's workers and how they reach other servers."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class DeliveryConfig:
    """`[delivery]`: the outbound queue (mail submitted for other domains), delivered to the
    recipients' MX hosts (RFC 5321 §5.1) by every worker process, as docs/architecture.md
    ("Outbound delivery") tells."""

    remote_port: int = setting(
        "Port of the remote MX hosts (25; tests point it at a test server).", default=25
    )
    max_in_flight: int = setting(
        "Deliveries (SMTP transactions) a worker process runs at once.", default=32
    )
    max_per_destination: int = setting(
        "Connections a worker process opens at once to one destination domain.", default=4
    )
    max_messages_per_connection: int = setting(
        "Messages sent over one connection to a host before it is closed.", default=50
    )
    retry_schedule: list[int] = setting(
        "Seconds to wait after each failed attempt, in turn; the last one repeats.",
        default_factory=lambda: [60, 300, 900, 1800, 3600, 7200, 14400],
    )
    lifetime: int = setting(
        "Seconds a message is retried before it bounces (RFC 5321 §4.5.4.1: 4-5 days).",
        default=5 * 86400,
    )
    delay_notice_after: int = setting(
        "Seconds after which the sender gets one delay notice (RFC 3464 action "
        '"delayed") for recipients still pending, if they asked (NOTIFY=DELAY, the default). '
        "0: never.",
        default=4 * 3600,
    )
    poll_interval: float = setting(
        "Seconds between looks at the queue for entries that became due (a new message is "
        "delivered at once by the process that accepted it).",
        default=10.0,
    )
    connect_timeout: float = setting(
        "Seconds to wait for a TCP connection to a remote host.", default=30.0
    )
    greeting_timeout: float = setting(
        "Seconds to wait for the 220 greeting, and for MAIL and RCPT replies (RFC 5321 "
        "§4.5.3.2.1-3: 5 minutes).",
        default=300.0,
    )
    data_timeout: float = setting(
        "Seconds to wait for the reply to the end of data (RFC 5321 §4.5.3.2.6: 10 minutes); "
        "DATA initiation 2 and each data block 3 minutes, as the RFC says.",
        default=600.0,
    )
    tls_ca_file: str = setting(
        "PEM file of the certificate authorities remote servers' certificates are verified "
        "against (relative to the data directory); empty: the system's.",
        default="",
    )
    max_bounce_size: int = setting(
        "Octets of the original message returned in a bounce (RET=FULL); past that, only its "
        "header section, with a note.",
        default=256 * 1024,
    )


def validate_delivery(delivery: DeliveryConfig) -> None:
    if not 0 < delivery.remote_port < 65536:
        raise ConfigError("delivery.remote_port", "must be a port number")
    for key in ("max_in_flight", "max_per_destination", "max_messages_per_connection",
                "lifetime", "poll_interval", "connect_timeout", "greeting_timeout",
                "data_timeout", "max_bounce_size"):
        if getattr(delivery, key) <= 0:
            raise ConfigError(f"delivery.{key}", "must be greater than 0")
    if not delivery.retry_schedule or any(s <= 0 for s in delivery.retry_schedule):
        raise ConfigError("delivery.retry_schedule", "must list delays greater than 0")
    if delivery.delay_notice_after < 0 or delivery.delay_notice_after >= delivery.lifetime:
        raise ConfigError("delivery.delay_notice_after",
                          "must be 0 (never) or less than delivery.lifetime")
