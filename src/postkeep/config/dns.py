"""The `[dns]` section, and its checks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postkeep.config.fields import parse_listen, setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class DnsConfig:
    """DNS lookups (outbound MX, MTA-STS and DANE, inbound checks) by a stub resolver with a
    cache, as docs/architecture.md ("DNS") tells."""

    nameservers: list[str] = setting(
        'Recursive resolvers to ask, in order: "ip" or "ip:port" ("[ipv6]:port" for a port '
        'on IPv6, e.g. "[::1]:5353"). Empty: the nameservers of /etc/resolv.conf, read at '
        "start.",
        default_factory=list,
    )
    timeout: float = setting(
        "Seconds to wait for one reply from one nameserver before trying the next.",
        default=5.0,
    )
    attempts: int = setting(
        "Rounds over the nameservers when they time out, before the lookup is a temporary "
        "failure (the message is deferred, never bounced). A SERVFAIL or REFUSED is not "
        "retried: the resolver said so.",
        default=2,
    )
    cache_size: int = setting(
        "Lookup outcomes kept per process (least recently used evicted first): answers for "
        "their TTL, NXDOMAIN and NODATA for their negative TTL (RFC 2308 §5); temporary "
        "failures never. An outcome whose records exceed 4 KiB is not kept. 0: no cache.",
        default=4096,
    )
    max_ttl: int = setting(
        "Longest time in seconds an outcome is kept, whatever its TTL (negative ones at most "
        "3 hours, RFC 2308 §5).",
        default=86400,
    )
    trust_ad: bool = setting(
        "Trust the AD (authenticated data) bit of replies: DNSSEC-validated answers are then "
        "marked authenticated (DANE needs this). Only for a validating resolver on this host: "
        "every nameserver must be listed and on loopback (the path to it must be one no one "
        "can tamper with, RFC 4035 §4.9.3).",
        default=False,
    )


def parse_nameserver(value: str) -> tuple[str, int]:
    """Split "ip", "ip:port", "ipv6" or "[ipv6]:port" into (host, port), port 53 by default;
    raises ValueError with a reason."""
    if not value.startswith("[") and value.count(":") != 1:
        value = f"[{value}]:53" if ":" in value else f"{value}:53"
    return parse_listen(value)


def validate_dns(dns: DnsConfig) -> None:
    hosts = []
    for i, item in enumerate(dns.nameservers):
        try:
            hosts.append(parse_nameserver(item)[0])
        except ValueError as e:
            raise ConfigError(f"dns.nameservers[{i}]", str(e)) from None
    if not 0 < dns.timeout <= 60:
        raise ConfigError("dns.timeout", "must be greater than 0 and at most 60")
    if not 1 <= dns.attempts <= 10:
        raise ConfigError("dns.attempts", "must be 1 to 10")
    if not 0 <= dns.cache_size <= 1_000_000:
        raise ConfigError("dns.cache_size", "must be 0 (no cache) to 1000000")
    if not 0 <= dns.max_ttl <= 7 * 86400:
        raise ConfigError("dns.max_ttl", "must be 0 to 604800 (a week)")
    if dns.trust_ad and not hosts:
        raise ConfigError("dns.trust_ad", "needs dns.nameservers to list the validating "
                          "resolver on loopback (not /etc/resolv.conf's)")
    for i, host in enumerate(hosts if dns.trust_ad else []):
        if not ipaddress.ip_address(host).is_loopback:
            raise ConfigError("dns.trust_ad", f"refused: nameserver {dns.nameservers[i]} is "
                              "not on loopback, so its AD bit crosses a network anyone on the "
                              "path can rewrite")

