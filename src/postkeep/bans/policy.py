"""The escalation policy of bans, sans-IO: what a strike counts under, how many ban, for how
long.

- `ip_keys`: the keys one client address collects strikes under: an IPv4 address counts as
  itself (/32) and its /24, an IPv6 address as itself (/128), its /64 (what one subscriber
  usually holds, RFC 6177 §3) and its /48 (one site); an IPv4-mapped IPv6 address
  (RFC 4291 §2.5.5.2) as its IPv4 address. Keys are CIDR strings (``192.0.2.0/24``); a ban
  made by hand may name a network of any other prefix length too (`parse_key`, `network_key`).
- `Windows`: strikes per key over a sliding window, in memory, bounded (`max_tracked` keys,
  least recently struck forgotten first; a key's strikes are kept only as long as the window).
- `Policy.threshold`: strikes that ban a key (one address: `max_strikes`; a network:
  `max_strikes_network`); `Policy.duration`: a ban's length by escalation level, and
  `Policy.level`: the level of a new ban given the one before (the next one up if the last
  ended less than `forget_after` ago, else the first).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from functools import lru_cache

from postkeep.config.bans import BansConfig
from postkeep.store.api import Ban

# what a strike is for: the names in log lines and their config weights
AUTH = "auth"
HARVEST = "harvest"
ERRORS = "errors"
PREAUTH = "preauth"
TLS = "tls"
WEB = "web"  # a failed web login: counts for the account too, as AUTH does
KINDS = (AUTH, HARVEST, ERRORS, PREAUTH, TLS, WEB)
LOGIN_KINDS = (AUTH, WEB)
_PREFIXES = {4: (32, 24), 6: (128, 64, 48)}


@lru_cache(maxsize=4096)
def ip_keys(ip: str) -> tuple[str, ...]:
    """The keys an address's strikes count under, the address first (see the module
    docstring)."""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return tuple(str(ipaddress.ip_network((addr, p), strict=False))
                 for p in _PREFIXES[addr.version])


def is_single(key: str) -> bool:
    """Whether a key names one address (/32 or /128), not a network."""
    return key.endswith(("/32", "/128"))


def parse_key(text: str) -> str:
    """A key from an operator's address or CIDR network (`postkeep ban add`), IPv4 or IPv6 of
    any prefix length (an IPv4-mapped IPv6 one as its IPv4 network); ValueError if it is
    neither."""
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and (
            mapped := network.network_address.ipv4_mapped) is not None:
        return str(ipaddress.ip_network((mapped, max(0, network.prefixlen - 96)), strict=False))
    return str(network)


def key_prefix(key: str) -> tuple[int, int]:
    """(IP version, prefix length) of a key."""
    address, _, prefix = key.partition("/")
    return (6 if ":" in address else 4), int(prefix)


def is_class_key(key: str) -> bool:
    """Whether a key's prefix length is one `ip_keys` makes (a ban by hand of another, say an
    IPv6 /32, is looked up by `network_key`)."""
    version, prefix = key_prefix(key)
    return prefix in _PREFIXES[version]


@lru_cache(maxsize=4096)
def network_key(ip: str, version: int, prefix: int) -> str | None:
    """The key of the network of `prefix` bits holding `ip` (None: another IP version)."""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version != version:
        return None
    return str(ipaddress.ip_network((addr, prefix), strict=False))


class Windows:
    """Strikes per key within the last `window` seconds (see the module docstring)."""

    def __init__(self, window: float, max_tracked: int) -> None:
        self.window = window
        self.max_tracked = max_tracked
        self._keys: OrderedDict[str, deque[tuple[float, float]]] = OrderedDict()

    def add(self, key: str, weight: float, now: float) -> float:
        """Count `weight` strikes for `key` at `now`; the sum within the window."""
        strikes = self._keys.pop(key, None)
        if strikes is None:
            strikes = deque()
            while len(self._keys) >= self.max_tracked:
                self._keys.popitem(last=False)
        self._keys[key] = strikes
        strikes.append((now, weight))
        horizon = now - self.window
        while strikes and strikes[0][0] <= horizon:
            strikes.popleft()
        return sum(w for _, w in strikes)

    def clear(self, key: str) -> None:
        self._keys.pop(key, None)


class Policy:
    """Thresholds, weights and escalation from `[bans]`."""

    def __init__(self, cfg: BansConfig) -> None:
        self.cfg = cfg
        self.weights = {
            AUTH: cfg.auth_failure_weight,
            HARVEST: cfg.unknown_recipient_weight,
            ERRORS: cfg.error_limit_weight,
            PREAUTH: cfg.preauth_close_weight,
            TLS: cfg.tls_failure_weight,
            WEB: cfg.web_failure_weight,
        }
        self._never = [ipaddress.ip_network(n, strict=False) for n in cfg.never_ban]

    def exempt(self, key: str) -> bool:
        """Whether a key lies within `never_ban` (never counted, never banned)."""
        if not self._never:
            return False
        network = ipaddress.ip_network(key, strict=False)
        return any(network.version == n.version and network.subnet_of(n)  # type: ignore[arg-type]
                   for n in self._never)

    def threshold(self, key: str) -> float:
        return self.cfg.max_strikes if is_single(key) else self.cfg.max_strikes_network

    def level(self, last: Ban | None, now: float) -> int:
        """The level of a new ban of a key whose last ban was `last`."""
        if last is None or now - last.until >= self.cfg.forget_after:
            return 0
        return last.level + 1

    def duration(self, level: int) -> float:
        durations = self.cfg.durations
        return durations[min(level, len(durations) - 1)]

    def ban(self, key: str, reason: str, strikes: float, last: Ban | None, now: float) -> Ban:
        level = self.level(last, now)
        return Ban(key, now + self.duration(level), reason, strikes, level, now)
