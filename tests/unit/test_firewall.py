"""The firewall's lists, IP classes and token buckets (`postkeep.net.firewall`), the blocks
nodes share through Redis (`postkeep.net.redis_rates`, its parser: the script runs in
tests/interop/test_firewall.py against a real redis-server), and the `[firewall]` section's
validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from postkeep.config import load
from postkeep.config.firewall import ClassLimits, FirewallConfig, ListenerRules
from postkeep.errors import ConfigError
from postkeep.net.firewall import Buckets, Firewall, LocalRates, blocks
from postkeep.net.redis_rates import MAX_BLOCK, MAX_MESSAGE, parse_blocks, redis_key
from postkeep.server import ipc


def firewall(**kw: object) -> Firewall:
    cfg = dataclasses.replace(FirewallConfig(), **kw)  # type: ignore[arg-type]
    return Firewall(cfg, "mx", LocalRates(cfg))


def test_longest_prefix_wins_and_deny_wins_a_tie() -> None:
    fw = firewall(allow=["10.1.0.0/16", "192.0.2.0/24"], deny=["10.0.0.0/8", "192.0.2.0/24"],
                  listener=[ListenerRules(role="mx", deny=["10.1.2.0/24"])])
    assert fw.check("10.1.1.1", False) == (None, False)  # allowed: not counted
    assert fw.check("10.2.1.1", False)[0] is not None
    assert fw.check("10.1.2.3", False)[0] is not None  # the listener's list, longer
    assert fw.check("192.0.2.9", False)[0] is not None  # a tie: denied
    assert fw.check("::ffff:10.2.0.1", False)[0] is not None  # IPv4-mapped: as IPv4
    assert fw.check("198.51.100.1", False) == (None, True)


def test_lists_per_role() -> None:
    cfg = FirewallConfig(allow=[], listener=[ListenerRules(role="submissions",
                                                            deny=["0.0.0.0/0", "::/0"])])
    fw = Firewall(cfg, "submission", LocalRates(cfg))
    assert fw.check("192.0.2.1", True)[0] is not None  # port 465: refused
    assert fw.check("192.0.2.1", False)[0] is None  # port 587: no


def test_classes() -> None:
    assert blocks("192.0.2.77") == ((0, "192.0.2.77/32"), (1, "192.0.2.0/24"))
    assert blocks("2001:db8:1:2:3::4") == ((2, "2001:db8:1:2:3::4/128"),
                                           (3, "2001:db8:1:2::/64"), (4, "2001:db8:1::/48"))


def test_buckets_refill_and_refused_attempts_take_nothing() -> None:
    buckets = Buckets(FirewallConfig(ipv4_32=ClassLimits(connections=2),
                                     ipv4_24=ClassLimits(connections=3)))
    a, b = blocks("192.0.2.1"), blocks("192.0.2.2")
    assert buckets.take("mx", "connections", a, 1, now=0.0) is None
    assert buckets.take("mx", "connections", a, 1, now=0.0) is None
    over = buckets.take("mx", "connections", a, 1, now=0.0)
    assert over is not None and over.refusal.limit == "firewall.ipv4_32.connections=2"
    assert buckets.take("mx", "connections", b, 1, now=0.0) is None  # the /24's third
    over = buckets.take("mx", "connections", b, 1, now=0.0)
    assert over is not None and over.refusal.limit == "firewall.ipv4_24.connections=3"
    assert buckets.take("imap", "connections", a, 1, now=0.0) is None  # services apart
    assert buckets.take("mx", "connections", a, 1, now=30.0) is None  # half a minute: one


def test_commands_go_into_debt_then_are_cut() -> None:
    buckets = Buckets(FirewallConfig(ipv4_32=ClassLimits(commands=3)))
    a = blocks("192.0.2.1")
    verdicts = [buckets.take("mx", "commands", a, 1, now=0.0) for _ in range(7)]
    assert verdicts[:3] == [None] * 3
    assert [v is not None and v.tarpit for v in verdicts[3:6]] == [True] * 3
    assert verdicts[6] is not None and not verdicts[6].tarpit


def test_full_buckets_are_forgotten() -> None:
    buckets = Buckets(FirewallConfig())
    for i in range(5000):
        buckets.take("mx", "connections", blocks(f"10.{i >> 8}.{i & 255}.1"), 1, now=0.0)
    assert len(buckets.state) > 4096
    buckets.sweep(120.0)  # what a new bucket does once the map has doubled
    assert len(buckets.state) == 0
    for i in range(20000):  # a flood of new addresses a minute apart: never all kept
        buckets.take("mx", "connections", blocks(f"10.{i >> 8}.{i & 255}.2"), 1,
                     now=200.0 + i * 0.01)
    assert len(buckets.state) < 20000


def test_global_blocks_from_reports() -> None:
    buckets = Buckets(FirewallConfig(ipv4_32=ClassLimits(connections=60)))
    key = ("mx", "connections", 0, "192.0.2.1/32")
    assert buckets.add(key, 60, now=0.0) == 0.0
    assert buckets.add(key, 1, now=0.0) == pytest.approx(1.0)  # a token a second


@pytest.mark.parametrize(("text", "path"), [
    ('allow = ["10.0.0.0/33"]', "firewall.allow[0]"),
    ('deny = ["10.0.0.1/8"]', "firewall.deny[0]"),  # host bits set
    ('trusted_proxies = ["proxy"]', "firewall.trusted_proxies[0]"),
    ('[[firewall.listener]]\nrole = "pop3"', "firewall.listener[0].role"),
    ('[[firewall.listener]]\nrole = "mx"\nproxy_protocol = true',
     "firewall.listener[0].proxy_protocol"),
    ('[firewall.ipv6_64]\nconnections = -1', "firewall.ipv6_64.connections"),
    ('[firewall.ipv4_32]\nconection = 1', "firewall.ipv4_32.conection"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, path: str) -> None:
    (tmp_path / "postkeep.toml").write_text(f"[firewall]\n{text}\n")
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "postkeep.toml")
    assert str(e.value).startswith(path), str(e.value)


def test_rate_messages_round_trip_and_are_strict() -> None:
    usage = ipc.RateUsage((("mx", "connections", -1, "", 3), ("imap", "commands", 3,
                                                                "2001:db8::/64", 1)))
    blocked = ipc.RateBlocked((("submission", "bytes", 0, "192.0.2.1/32", 1.5),))
    for message in (usage, blocked):
        assert ipc.decode(ipc.encode(message)[ipc.HEADER_SIZE:]) == message
    for body in (
        b'{"t":"ru","e":[["pop3","connections",0,"x",1]]}',  # no such service
        b'{"t":"ru","e":[["mx","logins",0,"x",1]]}',  # no such kind
        b'{"t":"ru","e":[["mx","commands",5,"x",1]]}',  # no such class
        b'{"t":"ru","e":[["mx","commands",0,"x",-1]]}',  # negative
        b'{"t":"ru","e":[["mx","commands",0,"x",1.5]]}',  # a count is an integer
        b'{"t":"rb","e":[["mx","commands",0,"x",true]]}',
        b'{"t":"rb","e":[["mx","commands",0,"' + b"x" * 65 + b'",1]]}',  # too long
    ):
        with pytest.raises(ipc.ChannelError):
            ipc.decode(body)


def test_blocks_from_the_cluster_channel_are_parsed_strictly() -> None:
    good = [["mx", "connections", 0, "192.0.2.7/32"], 12.5]
    assert parse_blocks(json.dumps([good])) == [(("mx", "connections", 0, "192.0.2.7/32"),
                                                  12.5)]
    bad = [
        [["pop3", "connections", 0, "192.0.2.7/32"], 1],  # no such service
        [["mx", "logins", 0, "192.0.2.7/32"], 1],  # no such kind
        [["mx", "connections", 9, "192.0.2.7/32"], 1],  # no such class
        [["mx", "connections", True, "192.0.2.7/32"], 1],
        [["mx", "connections", 0, ""], 1],
        [["mx", "connections", 0, "x" * 65], 1],
        [["mx", "connections", 0, "192.0.2.7/32"], 0],  # no block
        [["mx", "connections", 0, "192.0.2.7/32"], "1"],
        [["mx", "connections", 0], 1],
        "mx",
    ]
    assert parse_blocks(json.dumps([*bad, good])) == parse_blocks(json.dumps([good]))
    assert parse_blocks(json.dumps([[good[0], 1e9]]))[0][1] == MAX_BLOCK  # bounded
    assert parse_blocks(b"[" + b"1," * MAX_MESSAGE + b"1]") == []  # too long
    assert parse_blocks("not json") == [] and parse_blocks("{}") == []
    assert redis_key(("imap", "commands", 3, "2001:db8::/64")) == (
        "postkeep:rate:imap:commands:ipv6_64:2001:db8::/64")
