"""`[dns]` (postkeep.dns): nameserver forms, bounds, and trust_ad only with resolvers on
loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from postkeep import config
from postkeep.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "postkeep.toml"
    path.write_text(f"[dns]\n{text}\n")
    return config.load(path)


def test_defaults(tmp_path: Path) -> None:
    dns = _load(tmp_path, "").dns
    assert (dns.nameservers, dns.timeout, dns.attempts, dns.cache_size, dns.max_ttl,
            dns.trust_ad) == ([], 5.0, 2, 4096, 86400, False)


@pytest.mark.parametrize(("text", "parsed"), [
    ("192.0.2.53", ("192.0.2.53", 53)),
    ("192.0.2.53:5353", ("192.0.2.53", 5353)),
    ("2001:db8::53", ("2001:db8::53", 53)),
    ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ("[::1]:53", ("::1", 53)),
])
def test_nameserver_forms(text: str, parsed: tuple[str, int]) -> None:
    assert config.parse_nameserver(text) == parsed


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('nameservers = ["dns.example"]', r"nameservers\[0\]", "not an IP address"),
    ('nameservers = ["127.0.0.1:99999"]', r"nameservers\[0\]", "not a port number"),
    ('nameservers = ["[::1]"]', r"nameservers\[0\]", r"not \"\[ipv6\]:port\""),
    ("timeout = 0", "timeout", "greater than 0"),
    ("attempts = 0", "attempts", "1 to 10"),
    ("cache_size = -1", "cache_size", "0 \\(no cache\\)"),
    ("max_ttl = 9999999", "max_ttl", "a week"),
    ("trust_ad = true", "trust_ad", "needs dns.nameservers"),
    ('trust_ad = true\nnameservers = ["127.0.0.1", "192.0.2.53"]', "trust_ad",
     "nameserver 192.0.2.53 is not on loopback"),
    ('trust_ad = true\nnameservers = ["[2001:db8::1]:53"]', "trust_ad", "not on loopback"),
])
def test_refused(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^dns\.{key}: .*{problem}"):
        _load(tmp_path, text)


def test_trust_ad_with_loopback_resolvers(tmp_path: Path) -> None:
    dns = _load(tmp_path, 'trust_ad = true\nnameservers = ["127.0.0.1:5353", "::1"]').dns
    assert dns.trust_ad and dns.nameservers == ["127.0.0.1:5353", "::1"]
