"""The `[bans]` section (brute-force protection, `postkeep.bans`) and `[cluster]` (state
shared by several instances)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class BansConfig:
    """`[bans]`: strikes counted per client address and network, and the temporary bans they
    lead to (docs/architecture.md "Bans")."""

    enabled: bool = setting(
        "Count strikes and ban the addresses that collect too many. Off: nothing is counted "
        "and no address is refused (bans made with `postkeep ban add` are kept for later).",
        default=True,
    )
    window: float = setting(
        "Seconds over which strikes add up (a sliding window; with `cluster.redis_url`, "
        "counted in tenths of it).",
        default=600.0,
    )
    max_strikes: float = setting(
        "Strikes within `window` that ban one address (an IPv4 /32, an IPv6 /128).",
        default=10.0,
    )
    max_strikes_network: float = setting(
        "Strikes within `window` that ban a network, the sum of its addresses' (an IPv4 /24, "
        "an IPv6 /64 or /48).",
        default=30.0,
    )
    durations: list[float] = setting(
        "Seconds of each ban, by escalation level: the first ban of an address or network, "
        "then one that comes within `forget_after` of the end of the one before, and so on "
        "(the last repeats).",
        default_factory=lambda: [900.0, 3600.0, 21600.0, 86400.0],
    )
    forget_after: float = setting(
        "Seconds after the end of a ban after which the next ban starts at the first level "
        "again.",
        default=86400.0,
    )
    auth_failure_weight: float = setting(
        "Strikes for a failed authentication (SMTP AUTH, IMAP LOGIN and AUTHENTICATE).",
        default=1.0,
    )
    web_failure_weight: float = setting(
        "Strikes for a failed login on the web listener (`[web]`: a wrong password or an "
        "unknown account; logged `auth failure ip=... mechanism=web-password`). Counts for "
        "the account too, as a mail login's failure does.",
        default=1.0,
    )
    unknown_recipient_weight: float = setting(
        "Strikes for an RCPT TO refused `550 5.1.1` (no such user: recipient harvesting).",
        default=0.5,
    )
    error_limit_weight: float = setting(
        "Strikes for an SMTP session closed at `smtp.hard_error_limit` (protocol abuse).",
        default=3.0,
    )
    preauth_close_weight: float = setting(
        "Strikes for a connection that ends before it logged in, tried to, or (MX) sent MAIL "
        "(floods of idle connections). 0: not counted.",
        default=0.1,
    )
    tls_failure_weight: float = setting(
        "Strikes for a failed TLS handshake, on an implicit-TLS listener (submissions, IMAPS) "
        "or after STARTTLS: plaintext or garbage where a ClientHello belongs, a handshake "
        "aborted or not finished within `tls.handshake_timeout` (each logged `tls handshake "
        "failed ip=... reason=...`). Counted instead of `preauth_close_weight`, once per "
        "connection. At most half of `max_strikes`: one failure never bans. 0: not counted.",
        default=0.5,
    )
    account_max_failures: int = setting(
        "Failed logins to one account within `window`, from any address, after which the "
        "account is under attack: each further failure from an address that never logged in "
        "to it successfully (within `known_for`) is delayed `account_failure_delay`. The "
        "account is never locked: its owner logs in from any address that is not banned.",
        default=20,
    )
    account_failure_delay: float = setting(
        "Seconds a failure reply is held back for an account under attack (beyond "
        "`auth_failure_delay`).",
        default=3.0,
    )
    known_for: float = setting(
        "Seconds a successful login is remembered as (account, address) in the store (IPv4 "
        "address, IPv6 /64): failures from there are never delayed for an account under attack.",
        default=90 * 86400.0,
    )
    never_ban: list[str] = setting(
        "Networks (CIDR) never counted or banned, e.g. your own relays or office. Empty by "
        "default: loopback is not exempt.",
        default_factory=list,
    )
    sync_interval: float = setting(
        "Seconds between the main process's loads of the bans in force from the store (or "
        "Redis): bans made by `postkeep ban`, or by other instances sharing the store or "
        "Redis, apply within it.",
        default=5.0,
    )
    max_tracked: int = setting(
        "Addresses, networks and accounts whose strikes are counted at once (in memory, main "
        "process); the least recently struck is forgotten past it.",
        default=100_000,
    )


@dataclass(frozen=True)
class ClusterConfig:
    """`[cluster]`: state several processes and nodes share."""

    redis_url: str = setting(
        "Redis URL (`redis://host:6379/0`) where strike counters, bans and the firewall's "
        "rate buckets live, shared by every instance that names it (one Redis server, not "
        "Redis Cluster; while it is unreachable the rates are counted per instance). Empty: "
        "counters in the main process's memory, bans in the store, rates per instance.",
        default="",
    )


def validate_bans(bans: BansConfig, cluster: ClusterConfig) -> None:
    for key in ("window", "max_strikes", "max_strikes_network", "sync_interval"):
        if getattr(bans, key) <= 0:
            raise ConfigError(f"bans.{key}", "must be greater than 0")
    for key in ("forget_after", "auth_failure_weight", "web_failure_weight",
                "unknown_recipient_weight",
                "error_limit_weight", "preauth_close_weight", "account_failure_delay",
                "known_for"):
        if getattr(bans, key) < 0:
            raise ConfigError(f"bans.{key}", "must not be negative")
    if bans.tls_failure_weight < 0 or bans.tls_failure_weight > bans.max_strikes / 2:
        raise ConfigError("bans.tls_failure_weight", "must be 0 to half of bans.max_strikes")
    if not bans.durations or any(d <= 0 for d in bans.durations):
        raise ConfigError("bans.durations", "must list durations greater than 0")
    if bans.account_max_failures < 1 or bans.max_tracked < 100:
        raise ConfigError("bans", "account_max_failures must be at least 1, max_tracked 100")
    for i, item in enumerate(bans.never_ban):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"bans.never_ban[{i}]", f"{item!r} is not a network") from None
    if cluster.redis_url and not cluster.redis_url.startswith(("redis://", "rediss://",
                                                               "unix://")):
        raise ConfigError("cluster.redis_url", "must be a redis://, rediss:// or unix:// URL")
