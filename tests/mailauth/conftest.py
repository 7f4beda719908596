"""Keys, their records published in a real DNS server (NSD, `dns_server`), and a DNS lookup
for dkimpy over dnspython asking that server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.resolver
import pytest

from postkeep.mailauth.dkim.keys import SigningKey, generate_key, zone_line
from tests.dnsserver import AuthServer

DOMAIN = "example.test"


@dataclass
class Published:
    """Keys whose records `dns_server` serves under DOMAIN: selector -> key."""

    server: AuthServer
    keys: dict[str, SigningKey]

    def dnsfunc(self) -> Callable[..., bytes | None]:
        """dkimpy's `dnsfunc`: the TXT record's strings joined, None when there is none."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.server.address]
        resolver.port = self.server.port
        resolver.cache = None

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            try:
                answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            return b"".join(answer[0].strings)  # type: ignore[attr-defined]

        return lookup


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return generate_key("rsa", bits=2048)


@pytest.fixture(scope="session")
def ed25519_key() -> SigningKey:
    return generate_key("ed25519")


@pytest.fixture
def published(dns_server: AuthServer, rsa_key: SigningKey, ed25519_key: SigningKey
              ) -> Published:
    """Selector "rsa" and "ed" published as zone_line() writes them (the record's value
    split into 255-octet strings)."""
    keys = {"rsa": rsa_key, "ed": ed25519_key}
    lines = [zone_line(selector, DOMAIN, key) for selector, key in keys.items()]
    dns_server.add_zone(DOMAIN, lines)
    return Published(dns_server, keys)
