"""The `[delivery]` section: the outbound queue's workers and how they reach other servers."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class SmartHost:
    """`[[delivery.smart_hosts]]`: a server that relays mail for us (a provider's relay), with
    TLS always (RFC 8314) and a login if it wants one."""

    host: str = setting("Its host name (the name its certificate is verified for) or address.",
                        default="")
    port: int = setting("Its port: 587 (STARTTLS) or 465 (implicit TLS).", default=587)
    tls: str = setting('"starttls" or "implicit" (no plain-text option).', default="starttls")
    domains: list[str] = setting(
        "Recipient domains relayed through it; empty: every domain not listed by another "
        "smart host (then no MX delivery at all).",
        default_factory=list,
    )
    credentials_file: str = setting(
        "File (mode 0600 or 0400, owned by `server.user`) of two lines: user name, password; "
        "sent with AUTH PLAIN or LOGIN over TLS only. Empty: no login.",
        default="",
    )
    client_cert_file: str = setting("PEM client certificate to present, if it wants one.",
                                    default="")
    client_key_file: str = setting("PEM key of `client_cert_file` (mode 0600).", default="")
    verify: bool = setting(
        "Verify its certificate for `host` (against `delivery.tls_ca_file` or the system's "
        "CAs). Turning this off makes the login readable to anyone in the path who can "
        "intercept TLS: only for a relay on a network you trust.",
        default=True,
    )


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
    max_data_in_flight: int = setting(
        "Octets of queued messages a worker process holds in memory for their deliveries at "
        "once; an attempt waits for room (one larger than this runs alone).",
        default=256 * 1024 * 1024,
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
    mta_sts: bool = setting(
        "Apply the recipient domains' MTA-STS policies (RFC 8461): with `enforce`, only MX "
        "hosts the policy names, over TLS whose certificate verifies, else the mail waits.",
        default=True,
    )
    mta_sts_port: int = setting(
        "HTTPS port of the `mta-sts.DOMAIN` policy hosts (443; tests point it at a test "
        "server). Their certificates are verified with `tls_ca_file`, or the system's CAs.",
        default=443,
    )
    tls_reports: bool = setting(
        "Count the TLS results of deliveries to MX hosts and send each recipient domain that "
        "publishes a TLSRPT record (`_smtp._tls`, RFC 8460) a daily report to its `mailto:` "
        "addresses.",
        default=True,
    )
    smart_hosts: list[SmartHost] = setting(
        "Relays for all mail or for some domains, instead of their MX hosts, as an array of "
        "tables `[[delivery.smart_hosts]]` with keys `host`, `port`, `tls`, `domains`, "
        "`credentials_file`, `client_cert_file`, `client_key_file`, `verify` (see "
        "docs/architecture.md, \"Smart hosts\").",
        default_factory=list,
    )
    max_bounce_size: int = setting(
        "Octets of the original message returned in a bounce (RET=FULL); past that, only its "
        "header section, with a note.",
        default=256 * 1024,
    )


def validate_delivery(delivery: DeliveryConfig) -> None:
    for key in ("remote_port", "mta_sts_port"):
        if not 0 < getattr(delivery, key) < 65536:
            raise ConfigError(f"delivery.{key}", "must be a port number")
    for key in ("max_in_flight", "max_data_in_flight", "max_per_destination",
                "max_messages_per_connection", "lifetime", "poll_interval", "connect_timeout",
                "greeting_timeout", "data_timeout", "max_bounce_size"):
        if getattr(delivery, key) <= 0:
            raise ConfigError(f"delivery.{key}", "must be greater than 0")
    if not delivery.retry_schedule or any(s <= 0 for s in delivery.retry_schedule):
        raise ConfigError("delivery.retry_schedule", "must list delays greater than 0")
    catch_all = 0
    seen: set[str] = set()
    for i, relay in enumerate(delivery.smart_hosts):
        where = f"delivery.smart_hosts[{i}]"
        if not relay.host:
            raise ConfigError(f"{where}.host", "must name the relay")
        if not 0 < relay.port < 65536:
            raise ConfigError(f"{where}.port", "must be a port number")
        if relay.tls not in ("starttls", "implicit"):
            raise ConfigError(f"{where}.tls", 'must be "starttls" or "implicit"')
        if bool(relay.client_cert_file) != bool(relay.client_key_file):
            raise ConfigError(f"{where}.client_key_file",
                              "client_cert_file and client_key_file go together")
        catch_all += not relay.domains
        for j, domain in enumerate(relay.domains):
            if domain.lower() in seen:
                raise ConfigError(f"{where}.domains[{j}]", f"{domain} has a smart host already")
            seen.add(domain.lower())
    if catch_all > 1:
        raise ConfigError("delivery.smart_hosts", "at most one may relay every other domain "
                          "(an empty `domains`)")
    if delivery.delay_notice_after < 0 or delivery.delay_notice_after >= delivery.lifetime:
        raise ConfigError("delivery.delay_notice_after",
                          "must be 0 (never) or less than delivery.lifetime")
