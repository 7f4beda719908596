"""Smart hosts: relays that take mail for all domains or for some, instead of their MX hosts
(`[[delivery.smart_hosts]]`, RFC 6409 submission to a provider's relay).

TLS is always required: STARTTLS (RFC 3207) or implicit TLS (RFC 8314 §3), the certificate
verified for the relay's host name unless `verify = false`. A login is sent only over that
TLS (AUTH PLAIN or LOGIN, RFC 4954), read from a file that only the server's user can read
(mode 0600 or 0400, owned by it): the config file itself never holds a password. A client
certificate (`client_cert_file`, `client_key_file`) is presented when configured.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from postkeep.addresses import canonical_domain
from postkeep.config import Config
from postkeep.config.delivery import SmartHost
from postkeep.errors import ConfigError
from postkeep.smtp.client.protocol import Credentials


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    implicit_tls: bool
    verify: bool
    context: ssl.SSLContext
    credentials: Credentials | None
    domains: frozenset[str]  # empty: every domain no other relay lists


def read_credentials(path: Path, key: str) -> Credentials:
    """User name and password from `path` (two lines); ConfigError naming `key` if the file
    is missing, readable by others or not the server user's."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(key, f"{path} is readable by others (mode "
                          f"{stat.S_IMODE(info.st_mode):o}): chmod 600 it")
    if info.st_uid != os.geteuid():
        raise ConfigError(key, f"{path} is not owned by the user the server runs as")
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0] or not lines[1]:
        raise ConfigError(key, f"{path} must hold two lines: the user name, the password")
    return Credentials(lines[0], lines[1])


def _context(cfg: Config, relay: SmartHost, key: str) -> ssl.SSLContext:
    if relay.verify:
        ca = cfg.data_path(cfg.delivery.tls_ca_file) if cfg.delivery.tls_ca_file else None
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if relay.client_cert_file:
        try:
            ctx.load_cert_chain(cfg.data_path(relay.client_cert_file),
                                cfg.data_path(relay.client_key_file))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{key}.client_cert_file", f"cannot load it: {e}") from None
    return ctx


def load_relays(cfg: Config) -> list[Relay]:
    """The configured smart hosts, their files read and checked (ConfigError if one is bad)."""
    relays = []
    for i, relay in enumerate(cfg.delivery.smart_hosts):
        key = f"delivery.smart_hosts[{i}]"
        credentials = (read_credentials(cfg.data_path(relay.credentials_file),
                                        f"{key}.credentials_file")
                       if relay.credentials_file else None)
        relays.append(Relay(
            relay.host, relay.port, relay.tls == "implicit", relay.verify,
            _context(cfg, relay, key), credentials,
            frozenset(canonical_domain(d) for d in relay.domains)))
    return relays


def relay_for(relays: list[Relay], domain: str) -> Relay | None:
    """The relay for recipients at `domain`: the one listing it, else the one for every
    other domain, else None (MX delivery)."""
    domain = canonical_domain(domain)
    listed = [r for r in relays if domain in r.domains]
    if listed:
        return listed[0]
    return next((r for r in relays if not r.domains), None)
