"""MX routing (RFC 5321 §5.1, RFC 7505) against a real nameserver (NSD, tests/dnsserver.py)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.queue.outcome import Outcome
from postkeep.queue.routes import MxHost, host_addresses, mx_hosts
from tests.dnsserver import AuthServer


def resolver(server: AuthServer) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=[server.nameserver], timeout=2.0, attempts=1))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_preference_order_with_equal_ones_shuffled(dns_server: AuthServer) -> None:
    dns_server.add_zone("shuffle.test", [
        "@ MX 20 c", "@ MX 10 a", "@ MX 10 b", "@ MX 30 d",
    ])

    async def orders() -> set[tuple[str, ...]]:
        r = resolver(dns_server)
        seen = set()
        for seed in range(40):
            hosts = await mx_hosts(r, "shuffle.test", "me.test", rng=random.Random(seed))
            assert isinstance(hosts, list)
            assert [h.preference for h in hosts] == [10, 10, 20, 30]
            seen.add(tuple(h.name for h in hosts))
        return seen

    assert run(orders()) == {
        ("a.shuffle.test", "b.shuffle.test", "c.shuffle.test", "d.shuffle.test"),
        ("b.shuffle.test", "a.shuffle.test", "c.shuffle.test", "d.shuffle.test"),
    }


def test_implicit_mx_null_mx_nxdomain_and_loops(dns_server: AuthServer) -> None:
    dns_server.add_zone("plain.test", ["@ A 192.0.2.5", "@ AAAA 2001:db8::5"])
    dns_server.add_zone("null.test", ["@ MX 0 ."])
    dns_server.add_zone("loop.test", ["@ MX 10 me.loop.test.", "@ MX 5 better",
                                      "@ MX 20 worse"])
    dns_server.add_zone("onlyme.test", ["@ MX 10 me.onlyme.test."])

    async def check() -> None:
        r = resolver(dns_server)
        assert await mx_hosts(r, "plain.test", "me.test") == [
            MxHost("plain.test", 0, implicit=True)]
        assert await host_addresses(r, "plain.test") == ["2001:db8::5", "192.0.2.5"]
        null = await mx_hosts(r, "null.test", "me.test")
        assert isinstance(null, Outcome) and null.permanent and null.enhanced == "5.1.10"
        gone = await mx_hosts(r, "nowhere.plain.test", "me.test")
        assert isinstance(gone, Outcome) and gone.permanent and gone.enhanced == "5.1.2"
        assert await mx_hosts(r, "loop.test", "me.loop.test") == [MxHost("better.loop.test", 5)]
        only = await mx_hosts(r, "onlyme.test", "ME.onlyme.test.")
        assert isinstance(only, Outcome) and only.enhanced == "5.4.6"
        none = await host_addresses(r, "nowhere.plain.test")
        assert isinstance(none, Outcome) and none.permanent
        bad = await mx_hosts(r, "bad..name", "me.test")
        assert isinstance(bad, Outcome) and bad.permanent

    run(check())


def test_a_dns_failure_defers(dns_server: AuthServer) -> None:
    dns_server.add_broken_zone("broken.test")

    async def check() -> None:
        r = resolver(dns_server)
        failed = await mx_hosts(r, "broken.test", "me.test")
        assert isinstance(failed, Outcome) and not failed.permanent
        assert failed.enhanced == "4.4.3"
        addr = await host_addresses(r, "mx.broken.test")
        assert isinstance(addr, Outcome) and not addr.permanent

    run(check())
