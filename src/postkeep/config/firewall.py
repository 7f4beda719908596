"""The `[firewall]` section: allow and deny lists, rate limits per client IP class, and the
PROXY protocol (`postkeep.net.firewall`, `postkeep.net.proxy`; docs/architecture.md
"Firewall and flow control")."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields

from postkeep.config.fields import setting
from postkeep.errors import ConfigError

#: the listener roles lists and the PROXY protocol are set for: "submissions" and "imaps" are
#: the implicit-TLS listeners of submission and IMAP
ROLES = ("mx", "submission", "submissions", "imap", "imaps", "web")
#: the IP classes rate limits count by, as (name, IP version, prefix length)
CLASSES = (("ipv4_32", 4, 32), ("ipv4_24", 4, 24), ("ipv6_128", 6, 128), ("ipv6_64", 6, 64),
           ("ipv6_48", 6, 48))
#: what is counted per IP class, in the order of `ClassLimits`' fields
KINDS = ("connections", "commands", "messages", "recipients", "bytes")


def _limit(what: str, default: int) -> int:
    doc = f"{what} per minute from one address of this class (0: no limit)."
    return field(default=default, metadata={"doc": doc})  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ClassLimits:
    """`[firewall.ipv4_32]` and the other classes: what one address block may do in a minute.

    Counted over every worker process (with `cluster.redis_url`, over every instance naming
    that Redis), per service (MX, submission, IMAP apart), as token
    buckets: a burst of the whole minute's allowance, then the allowance spread over the
    minute. Past `connections`: 421 4.7.0 (SMTP) or BYE (IMAP) before the greeting; past
    `commands`: each command waits `firewall.tarpit_delay` first, and past twice the allowance
    the connection is closed (421 4.7.0, BYE); past `messages` (MAIL FROM), `recipients`
    (accepted RCPT TO) or `bytes` (message text, SMTP): 421 4.7.0 and close.
    """

    connections: int = _limit("New connections", 60)
    commands: int = _limit("Commands (SMTP and IMAP)", 1200)
    messages: int = _limit("Messages begun (SMTP MAIL FROM)", 120)
    recipients: int = _limit("Recipients accepted (SMTP RCPT TO)", 1200)
    bytes: int = _limit("Octets of message text (SMTP DATA and BDAT)", 1 << 30)


def _scaled(factor: int) -> ClassLimits:
    return ClassLimits(60 * factor, 1200 * factor, 120 * factor, 1200 * factor,
                       (1 << 30) * factor)


@dataclass(frozen=True)
class ListenerRules:
    """`[[firewall.listener]]`: lists and the PROXY protocol for one listener role."""

    role: str = setting(f"The listener role: {', '.join(ROLES)}.", default="")
    allow: list[str] = setting(
        "Networks (CIDR) allowed on this role's listeners, on top of `firewall.allow`.",
        default_factory=list,
    )
    deny: list[str] = setting(
        "Networks (CIDR) refused on this role's listeners, on top of `firewall.deny`.",
        default_factory=list,
    )
    proxy_protocol: bool = setting(
        "Every connection to this role's listeners starts with a PROXY protocol header "
        "(v1 or v2, haproxy's spec) from one of `firewall.trusted_proxies`; the address in it "
        "is the client's for every limit, list, log line and Received header.",
        default=False,
    )


@dataclass(frozen=True)
class FirewallConfig:
    """`[firewall]`: who may connect and how fast, decided before the greeting.

    An address matches the list entry with the longest prefix that holds it, over `allow`,
    `deny` and the role's `[[firewall.listener]]` lists (on a tie, deny wins): denied, it is
    refused (421 4.7.0, BYE; implicit TLS: closed without a word); allowed, it skips the rate
    limits (not the concurrent connection caps of `[smtp]` and `[imap]`). Each refusal is one
    log line `reject ip=... [code=...] reason="..." limit=...`.
    """

    enabled: bool = setting("Apply the lists and the rate limits.", default=True)
    allow: list[str] = setting(
        "Networks (CIDR) that skip the rate limits on every listener.",
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
    )
    deny: list[str] = setting("Networks (CIDR) refused on every listener.",
                              default_factory=list)
    listener: list[ListenerRules] = setting(
        "Rules per listener role, as an array of tables `[[firewall.listener]]`, one per role "
        "at most, with keys `role` (mx, submission, submissions, imap, imaps: the last two "
        "are the implicit-TLS listeners), `allow` and `deny` (networks added to the global "
        "lists for that role) and `proxy_protocol` (true: every connection starts with a "
        "PROXY header, v1 or v2, from one of `trusted_proxies`, and the client address in it "
        "counts for every list, limit, log line and Received header).",
        default_factory=list,
    )
    connections_per_minute: int = setting(
        "New connections per minute in all, per service (0: no limit); past it: refused as "
        "past a class's `connections`.",
        default=30000,
    )
    tarpit_delay: float = setting(
        "Seconds each command waits once its class is past `commands` per minute.",
        default=1.0,
    )
    trusted_proxies: list[str] = setting(
        "Networks (CIDR) a PROXY protocol header is accepted from, on listeners with "
        "`proxy_protocol`. A connection from elsewhere, or without a valid header, is closed "
        "and logged `proxy refused ip=... reason=...`.",
        default_factory=list,
    )
    proxy_timeout: float = setting(
        "Seconds a proxy has to send the whole PROXY header.", default=5.0
    )
    ipv4_32: ClassLimits = field(default_factory=ClassLimits, metadata={
        "doc": "Limits per IPv4 address (`[firewall.ipv4_32]`)."})
    ipv4_24: ClassLimits = field(default_factory=lambda: _scaled(5), metadata={
        "doc": "Limits per IPv4 /24 (`[firewall.ipv4_24]`)."})
    ipv6_128: ClassLimits = field(default_factory=ClassLimits, metadata={
        "doc": "Limits per IPv6 address (`[firewall.ipv6_128]`)."})
    ipv6_64: ClassLimits = field(default_factory=lambda: _scaled(2), metadata={
        "doc": "Limits per IPv6 /64, one subscriber's (`[firewall.ipv6_64]`)."})
    ipv6_48: ClassLimits = field(default_factory=lambda: _scaled(5), metadata={
        "doc": "Limits per IPv6 /48, one site's (`[firewall.ipv6_48]`)."})

    def rules(self, role: str) -> ListenerRules:
        """The `[[firewall.listener]]` of `role` (empty ones if none)."""
        for rules in self.listener:
            if rules.role == role:
                return rules
        return ListenerRules(role=role)

    def class_limits(self) -> dict[str, ClassLimits]:
        return {name: getattr(self, name) for name, _, _ in CLASSES}


def _networks(path: str, items: list[str]) -> None:
    for i, item in enumerate(items):
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError as e:
            raise ConfigError(f"{path}[{i}]", f"not a network in CIDR notation: {e}") from None


def validate_firewall(cfg: FirewallConfig) -> None:
    _networks("firewall.allow", cfg.allow)
    _networks("firewall.deny", cfg.deny)
    _networks("firewall.trusted_proxies", cfg.trusted_proxies)
    seen: set[str] = set()
    for i, rules in enumerate(cfg.listener):
        prefix = f"firewall.listener[{i}]"
        if rules.role not in ROLES:
            raise ConfigError(f"{prefix}.role", f"must be one of {', '.join(ROLES)}")
        if rules.role in seen:
            raise ConfigError(f"{prefix}.role", f"{rules.role} has rules already")
        seen.add(rules.role)
        _networks(f"{prefix}.allow", rules.allow)
        _networks(f"{prefix}.deny", rules.deny)
        if rules.proxy_protocol and not cfg.trusted_proxies:
            raise ConfigError(f"{prefix}.proxy_protocol",
                              "needs firewall.trusted_proxies (where the headers come from)")
    if cfg.connections_per_minute < 0:
        raise ConfigError("firewall.connections_per_minute", "must not be negative")
    if not 0 <= cfg.tarpit_delay <= 60:
        raise ConfigError("firewall.tarpit_delay", "must be 0 to 60")
    if not 0 < cfg.proxy_timeout <= 60:
        raise ConfigError("firewall.proxy_timeout", "must be greater than 0 and at most 60")
    for name, limits in cfg.class_limits().items():
        for f in fields(limits):
            if getattr(limits, f.name) < 0:
                raise ConfigError(f"firewall.{name}.{f.name}", "must not be negative")
