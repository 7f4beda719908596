"""The `[filters]`, `[antivirus]` and `[quarantine]` sections: content filters, the clamd
antivirus, and the quarantine of what they hold (docs/architecture.md, "Content filters",
"Quarantine")."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import MiB, parse_listen, setting
from postkeep.errors import ConfigError

FILTER_NAMES = ("antivirus", "junk")
OVERSIZE = ("truncate", "skip")
INFECTED = ("reject", "quarantine")


@dataclass(frozen=True)
class FiltersConfig:
    """`[filters]`: which content filters read each message after its end of data, in order,
    after the cheaper checks (block lists, SPF, DKIM, DMARC). None by default."""

    inbound: list[str] = setting(
        'Filters for mail arriving at the MX, in the order they run: "antivirus" (clamd, '
        '`[antivirus]`), "junk" (the junk filter, `[junk]`). A rejection by one ends the run '
        "(554 5.7.1, or 451 4.7.1 for a scanner that failed closed).",
        default_factory=list,
    )
    outbound: list[str] = setting(
        "Filters for mail submitted by logged-in users (submission), as `inbound`: a "
        "message refused is not sent.",
        default_factory=list,
    )
    outbound_hit_pause: float = setting(
        "Seconds an account may not send after one of its messages was refused or "
        "quarantined by an outbound filter (a hijacked account sending malware is stopped "
        "while the operator looks): its submissions are answered 451 4.7.1 meanwhile, the "
        "message is held in the quarantine for `postkeep quarantine release`. 0: no pause.",
        default=3600.0,
    )


@dataclass(frozen=True)
class AntivirusConfig:
    """`[antivirus]`: the clamd daemon that scans messages (`filters` lists "antivirus")."""

    address: str = setting(
        "Where clamd listens: a unix socket path (its `LocalSocket`; Debian's is "
        '"/run/clamav/clamd.ctl"; the server user must be allowed to connect) or "ip:port" '
        "(its `TCPSocket` and `TCPAddr`).",
        default="/run/clamav/clamd.ctl",
    )
    timeout: float = setting(
        "Seconds a scan may take (connect, send, verdict); past it the fail mode applies.",
        default=30.0,
    )
    fail_open_inbound: bool = setting(
        "On the MX, when clamd does not answer or fails: accept the message (logged, "
        "`X-Virus-Scanned` says it was not scanned) if true, else answer 451 4.7.1 so the "
        "sending server tries again later.",
        default=False,
    )
    fail_open_outbound: bool = setting(
        "The same for submission: true sends the message unscanned (logged, and said in "
        "its `X-Virus-Scanned` field), false refuses it with 451 4.7.1.",
        default=True,
    )
    max_size: int = setting(
        "Octets of a message sent to clamd at most; it must not pass clamd's "
        "`StreamMaxLength` (Debian's clamd.conf: 25M), or clamd refuses the stream and the "
        "fail mode applies.",
        default=25 * MiB,
    )
    oversize: str = setting(
        'What a message larger than `max_size` gets: "truncate" (its first `max_size` '
        "octets are scanned; `X-Virus-Scanned` says so) or \"skip\" (not scanned, accepted, "
        "`X-Virus-Scanned` says so).",
        default="truncate",
    )
    infected_inbound: str = setting(
        'What an infected message at the MX gets: "reject" (554 5.7.1 at the end of its '
        'text) or "quarantine" (accepted, 250, and kept encrypted in each local recipient\'s '
        "Quarantine folder instead of their INBOX, `[quarantine]`).",
        default="reject",
    )
    infected_outbound: str = setting(
        'What an infected submitted message gets: "reject" (554 5.7.1) or "quarantine" '
        '(250, "held for review"). Either way a copy is held in the quarantine (the sender\'s '
        "Quarantine folder; only `postkeep quarantine release` sends it) and the account "
        "is paused for `filters.outbound_hit_pause`.",
        default="reject",
    )


@dataclass(frozen=True)
class QuarantineConfig:
    """`[quarantine]`: messages the content filters held (an inbound quarantine, an outbound
    message refused or quarantined), kept encrypted as mail is, in the account's
    "Quarantine" folder, and listed by `postkeep quarantine`."""

    days: int = setting(
        "Days a quarantined message is kept before it is deleted (by the delivery workers, "
        "which look once an hour, or `postkeep quarantine expire`).",
        default=30,
    )


def validate_filters(filters: FiltersConfig, antivirus: AntivirusConfig,
                     quarantine: QuarantineConfig) -> None:
    for direction in ("inbound", "outbound"):
        names: list[str] = getattr(filters, direction)
        for i, name in enumerate(names):
            if name not in FILTER_NAMES:
                raise ConfigError(f"filters.{direction}[{i}]",
                                  f"unknown filter {name!r} (known: {', '.join(FILTER_NAMES)})")
            if name in names[:i]:
                raise ConfigError(f"filters.{direction}[{i}]", f"{name!r} is listed twice")
    if not antivirus.address.startswith("/"):
        try:
            parse_listen(antivirus.address)
        except ValueError as e:
            raise ConfigError("antivirus.address",
                              f'expected a socket path or "ip:port": {e}') from None
    if not 0 < antivirus.timeout <= 600:
        raise ConfigError("antivirus.timeout", "must be greater than 0 and at most 600")
    if not 0 < antivirus.max_size < 1 << 32:
        raise ConfigError("antivirus.max_size", "must be greater than 0 and under 4 GiB")
    if antivirus.oversize not in OVERSIZE:
        raise ConfigError("antivirus.oversize", 'must be "truncate" or "skip"')
    for key in ("infected_inbound", "infected_outbound"):
        if getattr(antivirus, key) not in INFECTED:
            raise ConfigError(f"antivirus.{key}", 'must be "reject" or "quarantine"')
    if not 0 <= filters.outbound_hit_pause <= 366 * 86400:
        raise ConfigError("filters.outbound_hit_pause", "must be 0 to a year, in seconds")
    if not 1 <= quarantine.days <= 3660:
        raise ConfigError("quarantine.days", "must be 1 to 3660")
