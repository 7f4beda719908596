"""The `[web]` section: the HTTPS listener (account pages; webmail and admin later) and the
plain-HTTP listener that only redirects to it."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import KiB, MiB, parse_listen, setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class WebConfig:
    """`[web]`: the web listener (HTTPS, RFC 9110; the TLS policy and certificates of `[tls]`)."""

    listen: list[str] = setting(
        'HTTPS addresses (port 443), as "ip:port": TLS from the first octet, the certificates '
        "and policy of `[tls]` (TLS 1.2+, forward secrecy, AEAD only).",
        default_factory=list,
    )
    http_listen: list[str] = setting(
        "Plain HTTP addresses (port 80). They answer every request with 308 to the same path "
        "on HTTPS, for a host in `hostnames` only (any other Host: 421, no redirect).",
        default_factory=list,
    )
    hostnames: list[str] = setting(
        "Host names the web listeners answer to (the Host header; the HTTP listener redirects "
        "only to these). Empty: `server.hostname` and the names of `tls.certificates`.",
        default_factory=list,
    )
    https_port: int = setting(
        "Port the HTTP listener's redirects name (0: the port of the first `listen` address; "
        "443 is left out of the URL). Set it when a proxy or NAT maps the HTTPS port.",
        default=0,
    )
    session_lifetime: float = setting(
        "Seconds a web session lasts from its login at most, however active.",
        default=12 * 3600.0,
    )
    session_idle: float = setting(
        "Seconds without a request after which a web session ends.", default=3600.0
    )
    max_sessions_per_account: int = setting(
        "Web sessions one account may hold; a login past it ends the oldest.", default=20
    )
    login_history_days: int = setting(
        "Days the login history (web, IMAP, SMTP) is kept for each account.", default=90
    )
    max_body_size: int = setting(
        "Largest request body, in bytes (forms); a larger one is answered 413.", default=64 * KiB
    )
    max_compose_size: int = setting(
        "Largest webmail compose form (POST /mail/compose/send and /draft: the fields and the "
        "attachments as uploaded), in bytes, read into memory; a larger one is answered 413. "
        "The message it makes is held to `[submission]` max_message_size too.",
        default=20 * MiB,
    )
    max_connections: int = setting(
        "Web connections at once, across all worker processes.", default=1000
    )
    max_connections_per_ip: int = setting(
        "Web connections at once from one IPv4 address or IPv6 /64.", default=30
    )
    keepalive_timeout: float = setting(
        "Seconds an idle keep-alive connection stays open between requests.", default=30.0
    )
    request_timeout: float = setting(
        "Seconds a client has to send a request's header and body, once it began; and the "
        "longest a response may wait on a client that stopped reading it (then the "
        "connection is closed).",
        default=30.0,
    )
    max_event_streams: int = setting(
        "Webmail event streams (`/mail/events`, new mail pushed to open pages) one account "
        "may hold open at once, across all worker processes; one more is answered 429.",
        default=8,
    )
    event_heartbeat: float = setting(
        "Seconds between the comment lines an idle event stream sends (proxies keep it "
        "open); the session behind the stream is checked as often, and the stream ends "
        "with it (logout, expiry).",
        default=25.0,
    )


def validate_web(web: WebConfig) -> None:
    for key in ("listen", "http_listen"):
        for i, item in enumerate(getattr(web, key)):
            try:
                parse_listen(item)
            except ValueError as e:
                raise ConfigError(f"web.{key}[{i}]", str(e)) from None
    if web.http_listen and not web.listen and not web.https_port:
        raise ConfigError("web.http_listen", "redirects to HTTPS: set web.listen or https_port")
    if not 0 <= web.https_port < 65536:
        raise ConfigError("web.https_port", "must be 0 to 65535")
    for key in ("session_lifetime", "session_idle", "max_sessions_per_account",
                "login_history_days", "max_body_size", "max_compose_size", "max_connections",
                "max_connections_per_ip", "keepalive_timeout", "request_timeout",
                "max_event_streams", "event_heartbeat"):
        if getattr(web, key) <= 0:
            raise ConfigError(f"web.{key}", "must be greater than 0")
    if web.event_heartbeat > 300:
        raise ConfigError("web.event_heartbeat", "must be at most 300 seconds")
    if web.session_idle > web.session_lifetime:
        raise ConfigError("web.session_idle", "must be at most web.session_lifetime")
    if web.max_body_size > 16 * 1024 * KiB:
        raise ConfigError("web.max_body_size", "must be at most 16 MiB")
    if web.max_compose_size > 256 * MiB:
        raise ConfigError("web.max_compose_size", "must be at most 256 MiB")
    for i, name in enumerate(web.hostnames):
        if not name or any(c.isspace() or c in "/:@" for c in name):
            raise ConfigError(f"web.hostnames[{i}]", f"{name!r} is not a host name")
