"""The `[filters]`, `[antivirus]` and `[quarantine]` sections: content filters, the milters
they may ask (`[[filters.milter]]`), the clamd antivirus, and the quarantine of what they
hold (docs/architecture.md, "Content filters", "Quarantine")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from postkeep.config.fields import MiB, parse_listen, setting
from postkeep.errors import ConfigError

FILTER_NAMES = ("antivirus", "junk")  # built in; "milter:NAME" names a `[[filters.milter]]`
MILTER_PREFIX = "milter:"
OVERSIZE = ("truncate", "skip")
INFECTED = ("reject", "quarantine")
_MILTER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_MACRO_NAME = re.compile(r"[A-Za-z_]|\{[A-Za-z0-9_]{1,64}\}")


@dataclass(frozen=True)
class MilterConfig:
    """One milter (`[[filters.milter]]`): a content filter that speaks the Sendmail milter
    protocol (version 6), e.g. OpenDKIM, clamav-milter, rspamd's proxy in milter mode."""

    name: str = setting(
        'Its name in `[filters]` ("milter:NAME"), the log and the results: lower-case '
        "letters, digits, '_', '-', '.'.",
        default="",
    )
    address: str = setting(
        'Where it listens: a unix socket path (the server user must be allowed to connect) '
        'or "ip:port" (OpenDKIM\'s `Socket inet:PORT@127.0.0.1`, clamav-milter\'s '
        "`MilterSocket`, rspamd's proxy worker).",
        default="",
    )
    timeout: float = setting(
        "Seconds one message's conversation may take (connect, every step, the verdict); "
        "past it the fail mode applies.",
        default=30.0,
    )
    fail_open_inbound: bool = setting(
        "On the MX, when the milter does not answer, fails or breaks the protocol: accept "
        "the message unfiltered (logged) if true, else answer 451 4.7.1.",
        default=False,
    )
    fail_open_outbound: bool = setting(
        "The same for submission: true sends the message unfiltered (logged), false "
        "refuses it with 451 4.7.1.",
        default=True,
    )
    macros: list[str] = setting(
        'Macros sent at connect besides postkeep\'s own, each "NAME=VALUE" (e.g. '
        '"{daemon_name}=ORIGINATING"; NAME a letter or a {braced} word); they replace ours '
        "of the same name.",
        default_factory=list,
    )


@dataclass(frozen=True)
class FiltersConfig:
    """`[filters]`: which content filters read each message after its end of data, in order,
    after the cheaper checks (block lists, SPF, DKIM, DMARC). None by default."""

    inbound: list[str] = setting(
        'Filters for mail arriving at the MX, in the order they run: "antivirus" (clamd, '
        '`[antivirus]`), "junk" (the junk filter, `[junk]`), "milter:NAME" (the '
        "`[[filters.milter]]` of that name). A rejection by one ends the run (554 5.7.1, a "
        "milter's own reply, or 451 4.7.1 for a scanner that failed closed); each later "
        "filter reads the message as the earlier ones changed it.",
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
    milter: list[MilterConfig] = setting(
        "Milters the lists may name, as an array of tables `[[filters.milter]]` with "
        "`name`, `address`, `timeout` (default 30), `fail_open_inbound` (default false), "
        "`fail_open_outbound` (default true) and `macros` (\"NAME=VALUE\" strings).",
        default_factory=list,
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


def filter_names(filters: FiltersConfig) -> tuple[str, ...]:
    """Every name the lists may give: the built-in filters and "milter:NAME" for each
    milter configured."""
    return (*FILTER_NAMES, *(MILTER_PREFIX + m.name for m in filters.milter))


def _check_address(path: str, address: str) -> None:
    if not address.startswith("/"):
        try:
            parse_listen(address)
        except ValueError as e:
            raise ConfigError(path, f'expected a socket path or "ip:port": {e}') from None


def parse_macros(items: list[str]) -> dict[str, str]:
    """`[[filters.milter]] macros` by name; ValueError naming the first bad item."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _MACRO_NAME.fullmatch(name) or "\0" in value or len(value) > 1000:
            raise ValueError(f'{item[:60]!r}: expected "NAME=VALUE", NAME a letter or a '
                             "{braced} word")
        found[name] = value
    return found


def _validate_milter(i: int, milter: MilterConfig, seen: set[str]) -> None:
    prefix = f"filters.milter[{i}]"
    if not _MILTER_NAME.fullmatch(milter.name):
        raise ConfigError(f"{prefix}.name", "must be 1 to 32 of a-z, 0-9, '_', '-', '.'")
    if milter.name in seen:
        raise ConfigError(f"{prefix}.name", f"{milter.name!r} is configured twice")
    seen.add(milter.name)
    if not milter.address:
        raise ConfigError(f"{prefix}.address", 'must name a socket path or "ip:port"')
    _check_address(f"{prefix}.address", milter.address)
    if not 0 < milter.timeout <= 600:
        raise ConfigError(f"{prefix}.timeout", "must be greater than 0 and at most 600")
    try:
        parse_macros(milter.macros)
    except ValueError as e:
        raise ConfigError(f"{prefix}.macros", str(e)) from None


def validate_filters(filters: FiltersConfig, antivirus: AntivirusConfig,
                     quarantine: QuarantineConfig) -> None:
    seen: set[str] = set()
    for i, milter in enumerate(filters.milter):
        _validate_milter(i, milter, seen)
    known = filter_names(filters)
    for direction in ("inbound", "outbound"):
        names: list[str] = getattr(filters, direction)
        for i, name in enumerate(names):
            if name not in known:
                raise ConfigError(f"filters.{direction}[{i}]",
                                  f"unknown filter {name!r} (known: {', '.join(known)})")
            if name in names[:i]:
                raise ConfigError(f"filters.{direction}[{i}]", f"{name!r} is listed twice")
    _check_address("antivirus.address", antivirus.address)
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
