"""The escalation policy of bans (`postkeep.bans.policy`), sans-IO: the keys an address counts
under, the sliding window, thresholds, levels and `never_ban`; and the `[bans]` checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from postkeep import config as config_mod
from postkeep.bans.keeper import BanList
from postkeep.bans.policy import KINDS, Policy, Windows, ip_keys, is_single, parse_key
from postkeep.config.bans import BansConfig
from postkeep.errors import ConfigError
from postkeep.server import ipc
from postkeep.store.api import Ban


def test_ip_keys_per_family() -> None:
    assert ip_keys("192.0.2.77") == ("192.0.2.77/32", "192.0.2.0/24")
    assert ip_keys("::ffff:192.0.2.77") == ("192.0.2.77/32", "192.0.2.0/24")  # IPv4-mapped
    assert ip_keys("2001:db8:1:2:3:4:5:6") == (
        "2001:db8:1:2:3:4:5:6/128", "2001:db8:1:2::/64", "2001:db8:1::/48")
    assert [is_single(k) for k in ip_keys("2001:db8::1")] == [True, False, False]
    assert parse_key("192.0.2.9") == "192.0.2.9/32"
    assert parse_key("192.0.2.9/24") == "192.0.2.0/24"
    assert parse_key("2001:DB8::1") == "2001:db8::1/128"
    assert parse_key("2001:db8:1:2::/40") == "2001:db8::/40"
    assert parse_key("::ffff:192.0.2.9") == "192.0.2.9/32"  # as `ip_keys` counts it
    assert parse_key("::ffff:192.0.2.0/120") == "192.0.2.0/24"
    with pytest.raises(ValueError):
        parse_key("example.org")


def test_ban_list_covers_networks_of_any_prefix() -> None:
    bans = BanList(Policy(BansConfig(never_ban=["2001:db8:ff::/48"])))
    later = time.time() + 600
    bans.set("2001:db8:1::/48", later)
    assert bans.refused("2001:db8:1:2::9") == ("2001:db8:1::/48", later)
    assert bans.refused("2001:db8:2::9") is None
    bans.set("2001:db8::/32", later)  # by hand, no class's prefix
    bans.set("10.0.0.0/8", later)
    assert bans.others == ((6, 32), (4, 8))
    assert bans.refused("2001:db8:2::9") == ("2001:db8::/32", later)
    assert bans.refused("2001:db8:1:2::9") == ("2001:db8:1::/48", later)  # its own key first
    assert bans.refused("::ffff:10.1.2.3") == ("10.0.0.0/8", later)
    assert bans.refused("2001:db8:ff::1") is None  # never_ban
    assert bans.refused("2001:db9::1") is None
    bans.set("2001:db8::/32", 0.0)
    assert bans.others == ((4, 8),)
    assert bans.refused("2001:db8:2::9") is None


def test_strike_kinds_on_the_channel() -> None:
    assert ipc.STRIKE_KINDS == KINDS  # every kind a worker may send


def test_window_slides_and_is_bounded() -> None:
    w = Windows(window=10, max_tracked=2)
    assert w.add("a", 1, 0) == 1
    assert w.add("a", 0.5, 5) == 1.5
    assert w.add("a", 1, 10.5) == 1.5  # the strike at 0 is past the window
    w.add("b", 1, 11)
    w.add("c", 1, 11)  # "a" was struck least recently: forgotten
    assert w.add("a", 1, 12) == 1
    w.clear("a")
    assert w.add("a", 2, 12) == 2


def test_thresholds_and_escalation() -> None:
    p = Policy(BansConfig(max_strikes=10, max_strikes_network=30,
                          durations=[900, 3600, 21600], forget_after=86400))
    assert p.threshold("192.0.2.1/32") == 10 and p.threshold("192.0.2.0/24") == 30
    first = p.ban("192.0.2.1/32", "auth failures", 10, None, 1000)
    assert (first.level, first.until) == (0, 1900)
    second = p.ban(first.key, "auth failures", 10, first, 2000)
    assert (second.level, second.until) == (1, 5600)
    third = p.ban(first.key, "x", 10, second, 6000)
    fourth = p.ban(first.key, "x", 10, Ban(first.key, third.until, "x", 10, 5, 0), 30000)
    assert (third.level, third.until - 6000) == (2, 21600)
    assert fourth.until - 30000 == 21600  # the last duration repeats
    forgotten = p.ban(first.key, "x", 10, second, second.until + 86400)
    assert forgotten.level == 0


def test_never_ban() -> None:
    p = Policy(BansConfig(never_ban=["192.0.2.0/25", "2001:db8::/32"]))
    assert p.exempt("192.0.2.9/32") and p.exempt("2001:db8:1::/48")
    assert not p.exempt("192.0.2.0/24")  # wider than the exempt network
    assert not p.exempt("192.0.2.200/32") and not p.exempt("198.51.100.1/32")
    assert not Policy(BansConfig()).exempt("127.0.0.1/32")  # loopback is no exception


@pytest.mark.parametrize(("text", "key"), [
    ("[bans]\nmax_strikes = 0\n", "bans.max_strikes"),
    ("[bans]\ndurations = []\n", "bans.durations"),
    ("[bans]\nnever_ban = [\"nope\"]\n", "bans.never_ban[0]"),
    ("[bans]\nauth_failure_weight = -1\n", "bans.auth_failure_weight"),
    ("[bans]\nmax_strikes = 4\ntls_failure_weight = 2.5\n", "bans.tls_failure_weight"),
    ("[cluster]\nredis_url = \"http://x\"\n", "cluster.redis_url"),
])
def test_config_refuses(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(path)
    assert e.value.path == key
