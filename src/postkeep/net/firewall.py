"""The application firewall: allow and deny lists, and rate limits per client IP class, decided
before the greeting (lists, new connections) and at each command, message, recipient and
piece of message text (docs/architecture.md "Firewall and flow control"; `[firewall]`).

- `Networks`: a set of CIDR networks, precompiled to one set of integers per prefix length,
  so a lookup is a shift and a set membership per prefix length listed (longest first).
- `Firewall`: one listener role's lists and rates. `check(ip, implicit)` at accept: a
  `Refusal` (denied, or past a connection rate), or None, with whether the client's other
  actions are counted (not when allow-listed: `Peer.limited`); `take(kind, ip, n)` later.
- `Buckets`: the token buckets, one per (service, kind, IP class block): each holds a whole
  minute's allowance and refills it over the minute, so a client may burst its minute and
  then keep to the rate. A refused attempt takes nothing. Commands may go into debt down to
  minus the allowance: in debt, each is slowed by `tarpit_delay` (`Over.tarpit`); past it,
  cut off. Buckets back at full are forgotten (a sweep once the map doubles), so memory
  follows the clients of the last minute.
- `Rates`: where a `Firewall` counts. In-process servers (tests) count in their own `Buckets`
  (`LocalRates`). A worker process counts in `postkeep.server.worker.SharedRates`: its own
  buckets, exact for its own connections, plus what the main process says is over the limit
  for all workers together: the worker reports what it let through in one message every
  `REPORT_EVERY` seconds at most (`ipc.RateUsage`), the main process adds it to the global
  buckets and tells every worker the blocks whose bucket went empty (`ipc.RateBlocked`) and
  for how long, so a decision is a few dict lookups and never a round trip; the global count
  can overshoot by what the other workers let through while a block is on its way
  (`REPORT_EVERY` and a pass of each loop). A report per pass of the loop cost the main
  process (decoding it) several times what the decision costs a worker.

IP classes (`config.firewall.CLASSES`): an IPv4 address and its /24; an IPv6 address, its
/64 and its /48 (an IPv4-mapped IPv6 address counts as its IPv4 address).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from postkeep import log
from postkeep.config.firewall import CLASSES, KINDS, FirewallConfig

REPORT_EVERY = 0.01  # seconds a worker's usage waits to be reported with the rest
GLOBAL = -1  # the class index of the server-wide bucket (its network: "")
_SWEEP_AT = 4096  # buckets before the first sweep of the full ones

#: a bucket's name: (service, kind, class index or GLOBAL, network)
BucketKey = tuple[str, str, int, str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client is refused: `reason` for the log line and the client, and `limit`, the
    setting or list entry that refused it."""

    reason: str
    limit: str


@dataclass(frozen=True, slots=True)
class Over:
    """A bucket past its limit: the refusal, and whether the action is only slowed down."""

    refusal: Refusal
    tarpit: bool


@lru_cache(maxsize=8192)
def blocks(ip: str) -> tuple[tuple[int, str], ...]:
    """The (class index, network) pairs a client address is counted under."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    number, bits = int(addr), addr.max_prefixlen
    make = ipaddress.IPv4Address if addr.version == 4 else ipaddress.IPv6Address
    out = []
    for index, (_name, version, prefix) in enumerate(CLASSES):
        if version == addr.version:
            masked = number >> (bits - prefix) << (bits - prefix)
            out.append((index, f"{make(masked)}/{prefix}"))
    return tuple(out)


@lru_cache(maxsize=8192)
def _number(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


class Networks:
    """CIDR networks, for the longest prefix holding an address (see the module)."""

    def __init__(self, items: Iterable[str]) -> None:
        self.prefixes: dict[int, list[tuple[int, set[int]]]] = {4: [], 6: []}
        table: dict[tuple[int, int], set[int]] = {}
        self.names: dict[tuple[int, int, int], str] = {}
        for item in items:
            net = ipaddress.ip_network(item, strict=False)
            if net.version == 6 and net.network_address.ipv4_mapped is not None:
                net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/"
                                           f"{max(0, net.prefixlen - 96)}")
            shift = net.max_prefixlen - net.prefixlen
            value = int(net.network_address) >> shift
            table.setdefault((net.version, net.prefixlen), set()).add(value)
            self.names[(net.version, net.prefixlen, value)] = str(net)
        for (version, prefix), values in sorted(table.items(), key=lambda kv: -kv[0][1]):
            bits = 32 if version == 4 else 128
            self.prefixes[version].append((bits - prefix, values))

    def longest(self, version: int, number: int) -> tuple[int, str]:
        """The longest prefix length that holds the address and that network's name;
        (-1, "") if none does."""
        bits = 32 if version == 4 else 128
        for shift, values in self.prefixes[version]:
            value = number >> shift
            if value in values:
                return bits - shift, self.names[(version, bits - shift, value)]
        return -1, ""


class Rates(Protocol):
    """Where a `Firewall` counts: `take` `n` of `kind` for the blocks (None when within the
    limits; then they are counted), over the service's buckets and `GLOBAL` where it has
    one."""

    def take(self, service: str, kind: str, keys: tuple[tuple[int, str], ...], n: int
             ) -> Over | None: ...


class Buckets:
    """The token buckets (see the module docstring); time is `time.monotonic()`."""

    def __init__(self, cfg: FirewallConfig) -> None:
        limits = cfg.class_limits()
        # per kind, the limit of each class index; GLOBAL: connections only
        self.limits: dict[str, list[int]] = {
            kind: [getattr(limits[name], kind) for name, _, _ in CLASSES] for kind in KINDS
        }
        self.global_connections = cfg.connections_per_minute
        self.state: dict[BucketKey, list[float]] = {}  # [tokens, last update, capacity]
        self._sweep_at = _SWEEP_AT

    def limit(self, kind: str, index: int) -> int:
        return self.global_connections if index == GLOBAL else self.limits[kind][index]

    def tokens(self, key: BucketKey, capacity: int, now: float) -> list[float]:
        entry = self.state.get(key)
        if entry is None:
            if len(self.state) >= self._sweep_at:
                self.sweep(now)
            entry = self.state[key] = [float(capacity), now, float(capacity)]
        else:
            entry[0] = min(capacity, entry[0] + (now - entry[1]) * capacity / 60.0)
            entry[1] = now
        return entry

    def sweep(self, now: float) -> None:
        """Forget the buckets that are full again."""
        self.state = {
            key: entry for key, entry in self.state.items()
            if entry[0] + (now - entry[1]) * entry[2] / 60.0 < entry[2]
        }
        self._sweep_at = max(_SWEEP_AT, 2 * len(self.state))

    def take(self, service: str, kind: str, keys: tuple[tuple[int, str], ...], n: int,
             now: float | None = None) -> Over | None:
        """Take `n` from every bucket of `keys` (and the global one for connections) if each
        has them (commands: down to minus the allowance); else take nothing."""
        now = time.monotonic() if now is None else now
        floor_share = 1.0 if kind == "commands" else 0.0
        limits, state = self.limits[kind], self.state
        entries = []
        debt: Over | None = None
        for index, net in ((GLOBAL, ""), *keys) if kind == "connections" else keys:
            capacity = self.global_connections if index < 0 else limits[index]
            if not capacity:
                continue
            entry = state.get((service, kind, index, net))
            if entry is None:
                entry = self.tokens((service, kind, index, net), capacity, now)
            else:
                entry[0] = min(capacity, entry[0] + (now - entry[1]) * capacity / 60.0)
                entry[1] = now
            left = entry[0] - n
            if left < -capacity * floor_share:
                return Over(refusal(kind, index, capacity), False)
            if left < 0 and debt is None:
                debt = Over(refusal(kind, index, capacity), True)
            entries.append(entry)
        for entry in entries:
            entry[0] -= n
        return debt

    def add(self, key: BucketKey, n: int, now: float) -> float:
        """Count `n` already let through (a worker's report): the seconds until the bucket
        holds a token again, 0 if it does."""
        _service, kind, index, _net = key
        capacity = self.limit(kind, index)
        if not capacity:
            return 0.0
        entry = self.tokens(key, capacity, now)
        entry[0] -= n
        floor = -capacity if kind == "commands" else 0.0
        return 0.0 if entry[0] >= floor else (floor - entry[0]) * 60.0 / capacity


_REASONS = {
    "connections": "connection rate",
    "commands": "command rate",
    "messages": "message rate",
    "recipients": "recipient rate",
    "bytes": "data rate",
}


def refusal(kind: str, index: int, capacity: int) -> Refusal:
    """The refusal of a bucket past its limit, naming the setting."""
    if index == GLOBAL:
        return Refusal("server connection rate",
                       f"firewall.connections_per_minute={capacity}")
    return Refusal(_REASONS[kind], f"firewall.{CLASSES[index][0]}.{kind}={capacity}")


class LocalRates:
    """`Rates` counted in this process only (in-process servers, tests)."""

    def __init__(self, cfg: FirewallConfig) -> None:
        self.buckets = Buckets(cfg)

    def take(self, service: str, kind: str, keys: tuple[tuple[int, str], ...], n: int
             ) -> Over | None:
        return self.buckets.take(service, kind, keys, n)


def rule_role(role: str, implicit: bool) -> str:
    """The `[[firewall.listener]]` role of a listener: submissions and imaps are the
    implicit-TLS ones."""
    return f"{role}s" if implicit and role in ("submission", "imap") else role


class Firewall:
    """One service's lists and rates (`service`: mx, submission or imap; see the module)."""

    def __init__(self, cfg: FirewallConfig, service: str, rates: Rates) -> None:
        self.enabled = cfg.enabled
        self.service = service
        self.rates = rates
        self.tarpit_delay = cfg.tarpit_delay
        self.lists: dict[bool, tuple[Networks, Networks]] = {}
        for implicit in (False, True):
            rules = cfg.rules(rule_role(service, implicit))
            self.lists[implicit] = (Networks([*cfg.allow, *rules.allow]),
                                    Networks([*cfg.deny, *rules.deny]))
        self.proxied = {implicit: cfg.rules(rule_role(service, implicit)).proxy_protocol
                        for implicit in (False, True)}
        self.trusted = Networks(cfg.trusted_proxies)

    def check(self, ip: str, implicit: bool) -> tuple[Refusal | None, bool]:
        """At accept: (a refusal or None, whether the client's actions are counted)."""
        if not self.enabled:
            return None, False
        allow, deny = self.lists[implicit]
        version, number = _number(ip)
        allowed, _ = allow.longest(version, number)
        denied, network = deny.longest(version, number)
        if denied >= 0 and denied >= allowed:
            return Refusal("denied", f"deny={network}"), False
        if allowed >= 0:
            return None, False
        over = self.rates.take(self.service, "connections", blocks(ip), 1)
        return (over.refusal if over is not None else None), True

    def take(self, kind: str, ip: str, n: int = 1) -> Over | None:
        """Count `n` of `kind` for a counted client (`check` said so)."""
        return self.rates.take(self.service, kind, blocks(ip), n)

    def log_tarpit(self, logger: logging.Logger, ip: str, refusal: Refusal,
                   cmd: str | None = None) -> None:
        """The one line of a connection whose commands are slowed down."""
        logger.warning("tarpit ip=%s%s reason=%s limit=%s delay=%.1f", ip,
                       f" cmd={cmd}" if cmd is not None else "", log.quote(refusal.reason),
                       log.quote(refusal.limit), self.tarpit_delay)

    def trusted_proxy(self, ip: str) -> bool:
        version, number = _number(ip)
        return self.trusted.longest(version, number)[0] >= 0
