"""postkeep.dns over the wire: NSD (tests/dnsserver.py) as the nameserver, a controllable clock
for the cache, real UDP sockets for the peers no server can be made to be (one that never
answers, one that truncates and has no TCP)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postkeep.config import DnsConfig
from postkeep.dns import (
    MX,
    TLSA,
    Answer,
    DnsResolver,
    InvalidName,
    NoData,
    NxDomain,
    TempFail,
)
from postkeep.errors import ConfigError
from tests.dnsserver import AuthServer, free_port, start_auth_server_port53


class Clock:
    """The cache's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def resolver(*nameservers: str, clock: Clock | None = None, **config: Any) -> DnsResolver:
    settings = {"timeout": 2.0, "attempts": 1, **config}
    return DnsResolver(DnsConfig(nameservers=list(nameservers), **settings),
                       clock=clock or Clock())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_record_types(dns_server: AuthServer) -> None:
    dns_server.add_zone("example.test", [
        "@ 600 MX 20 mx2", "@ 600 MX 10 mx1", "mx1 A 192.0.2.1", "mx1 AAAA 2001:db8::1",
        'txt TXT "v=spf1 " "-all"', 'txt TXT "second"',
        "_25._tcp.mx1 TLSA 3 1 1 " + "ab" * 32,
        "alias 120 CNAME mx1", "Upper A 192.0.2.2",
    ])
    dns_server.add_zone("2.0.192.in-addr.arpa", ["1 PTR mx1.example.test."])
    r = resolver(dns_server.nameserver)

    async def main() -> None:
        mx = await r.mx("example.test")
        assert isinstance(mx, Answer) and mx.ttl == 600 and not mx.authenticated
        assert sorted(mx.records, key=lambda m: m.preference) == [
            MX(10, "mx1.example.test"), MX(20, "mx2.example.test")]
        a = await r.a("MX1.Example.Test.")
        assert isinstance(a, Answer) and a.records == ("192.0.2.1",) and a.ttl == 300
        assert a.name == "mx1.example.test"
        aaaa = await r.aaaa("mx1.example.test")
        assert isinstance(aaaa, Answer) and aaaa.records == ("2001:db8::1",)
        txt = await r.txt("txt.example.test")
        assert isinstance(txt, Answer)
        assert sorted(txt.records) == [b"second", b"v=spf1 -all"]  # strings joined per record
        tlsa = await r.tlsa("_25._tcp.mx1.example.test")
        assert isinstance(tlsa, Answer)
        assert tlsa.records == (TLSA(3, 1, 1, bytes.fromhex("ab" * 32)),)
        ptr = await r.ptr("192.0.2.1")
        assert isinstance(ptr, Answer) and ptr.records == ("mx1.example.test",)
        assert ptr.name == "1.2.0.192.in-addr.arpa"
        alias = await r.a("alias.example.test")
        assert isinstance(alias, Answer) and alias.records == ("192.0.2.1",)
        assert alias.canonical_name == "mx1.example.test"
        assert alias.ttl == 120  # the least TTL along the chain
        upper = await r.a("upper.example.test")
        assert isinstance(upper, Answer) and upper.records == ("192.0.2.2",)

    run(main())


def test_null_mx_and_ipv6_ptr(dns_server: AuthServer) -> None:
    dns_server.add_zone("nullmx.test", ["@ MX 0 ."])
    dns_server.add_zone("8.b.d.0.1.0.0.2.ip6.arpa", [
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR v6.example.test."])
    r = resolver(dns_server.nameserver)
    mx = run(r.mx("nullmx.test"))
    assert isinstance(mx, Answer) and mx.records == (MX(0, "."),)
    ptr = run(r.ptr("2001:db8::1"))
    assert isinstance(ptr, Answer) and ptr.records == ("v6.example.test",)


def test_nxdomain_and_nodata(dns_server: AuthServer) -> None:
    dns_server.add_zone("neg.test", ["host A 192.0.2.1", "alias CNAME host",
                                     "dangling CNAME nothing"], negative_ttl=45)
    r = resolver(dns_server.nameserver)
    nx = run(r.a("nothing.neg.test"))
    assert nx == NxDomain("nothing.neg.test", "A", 45, False)
    nodata = run(r.aaaa("host.neg.test"))
    assert nodata == NoData("host.neg.test", "AAAA", 45, False, "host.neg.test")
    via_alias = run(r.aaaa("alias.neg.test"))
    assert isinstance(via_alias, NoData) and via_alias.canonical_name == "host.neg.test"
    dangling = run(r.a("dangling.neg.test"))  # a CNAME to a name that does not exist
    assert isinstance(dangling, NxDomain)


def test_ttl_expiry(dns_server: AuthServer) -> None:
    dns_server.add_zone("ttl.test", ['t 100 TXT "one"'])
    clock = Clock()
    r = resolver(dns_server.nameserver, clock=clock)
    asked = dns_server.query_count("TXT")
    first = run(r.txt("t.ttl.test"))
    assert isinstance(first, Answer) and first.records == (b"one",) and first.ttl == 100
    dns_server.add_zone("ttl.test", ['t 100 TXT "two"'])
    clock.advance(40)
    cached = run(r.txt("t.ttl.test"))
    assert isinstance(cached, Answer) and cached.records == (b"one",) and cached.ttl == 60
    clock.advance(59.5)
    assert run(r.txt("t.ttl.test")).records == (b"one",)
    assert dns_server.query_count("TXT") == asked + 1
    clock.advance(0.5)  # 100 s: expired
    fresh = run(r.txt("t.ttl.test"))
    assert isinstance(fresh, Answer) and fresh.records == (b"two",) and fresh.ttl == 100
    assert dns_server.query_count("TXT") == asked + 2


def test_negative_caching_uses_soa_minimum(dns_server: AuthServer) -> None:
    dns_server.add_zone("ncache.test", ["host A 192.0.2.1"], ttl=3600, negative_ttl=30)
    clock = Clock()
    r = resolver(dns_server.nameserver, clock=clock)
    nx = run(r.a("new.ncache.test"))
    nodata = run(r.txt("host.ncache.test"))
    assert isinstance(nx, NxDomain) and nx.ttl == 30
    assert isinstance(nodata, NoData) and nodata.ttl == 30
    asked = dns_server.query_count()
    dns_server.add_zone("ncache.test", ["host A 192.0.2.1", "new A 192.0.2.2",
                                        'host TXT "now"'], ttl=3600, negative_ttl=30)
    loads = dns_server.query_count() - asked  # the fixture's own SOA checks
    clock.advance(29)
    assert isinstance(run(r.a("new.ncache.test")), NxDomain)
    assert isinstance(run(r.txt("host.ncache.test")), NoData)
    assert dns_server.query_count() == asked + loads  # both from the cache
    clock.advance(1)
    assert run(r.a("new.ncache.test")).records == ("192.0.2.2",)
    assert run(r.txt("host.ncache.test")).records == (b"now",)


def test_soa_ttl_below_minimum_wins(dns_server: AuthServer) -> None:
    dns_server.add_zone_text("soattl.test", (
        "$ORIGIN soattl.test.\n$TTL 300\n"
        "@ 20 SOA ns hostmaster 1 3600 600 86400 900\n@ NS ns\nns A 127.0.0.1\n"))
    nx = run(resolver(dns_server.nameserver).a("x.soattl.test"))
    assert isinstance(nx, NxDomain) and nx.ttl == 20


def test_max_ttl_caps_answers_and_negative_ttls(dns_server: AuthServer) -> None:
    dns_server.add_zone("long.test", ["@ 604800 A 192.0.2.1"], negative_ttl=86400)
    clock = Clock()
    r = resolver(dns_server.nameserver, clock=clock, max_ttl=3600)
    answer = run(r.a("long.test"))
    assert isinstance(answer, Answer) and answer.ttl == 3600
    assert run(r.a("nx.long.test")).ttl == 3600
    assert run(resolver(dns_server.nameserver).a("nx.long.test")).ttl == 3 * 3600  # RFC 2308
    asked = dns_server.query_count("A")
    clock.advance(3599)
    run(r.a("long.test"))
    assert dns_server.query_count("A") == asked
    clock.advance(1)
    run(r.a("long.test"))
    assert dns_server.query_count("A") == asked + 1


def test_no_cache(dns_server: AuthServer) -> None:
    dns_server.add_zone("nocache.test", ['@ TXT "x"'])
    r = resolver(dns_server.nameserver, cache_size=0)
    asked = dns_server.query_count("TXT")
    for _ in range(3):
        run(r.txt("nocache.test"))
    assert dns_server.query_count("TXT") == asked + 3
    assert len(r.cache) == 0


def test_cache_is_bounded_lru(dns_server: AuthServer) -> None:
    dns_server.add_zone("lru.test", [f"h{i} A 192.0.2.{i}" for i in range(1, 6)]
                        + [f'big TXT {" ".join(["x" * 255] * 20)}'])
    r = resolver(dns_server.nameserver, cache_size=3)

    async def main() -> None:
        for i in (1, 2, 3):
            await r.a(f"h{i}.lru.test")
        await r.a("h1.lru.test")  # h1 used again: h2 is now the least recently used
        await r.a("h4.lru.test")
        assert len(r.cache) == 3
        asked = dns_server.query_count("A")
        await r.a("h1.lru.test")
        await r.a("h3.lru.test")
        assert dns_server.query_count("A") == asked
        await r.a("h2.lru.test")
        assert dns_server.query_count("A") == asked + 1
        big = await r.txt("big.lru.test")  # 5 KiB of record data: served, not kept
        assert isinstance(big, Answer) and len(big.records[0]) == 255 * 20
        assert r.cache.get(("big.lru.test", "TXT")) is None

    run(main())


def test_concurrent_lookups_are_one_query(dns_server: AuthServer) -> None:
    dns_server.add_zone("coalesce.test", ['@ TXT "shared"', "@ A 192.0.2.1"])
    r = resolver(dns_server.nameserver, cache_size=0)  # coalescing alone, no cache

    async def main() -> list[Any]:
        return await asyncio.gather(*[r.txt("coalesce.test") for _ in range(20)],
                                    *[r.a("coalesce.test") for _ in range(5)])

    txt_before, a_before = dns_server.query_count("TXT"), dns_server.query_count("A")
    results = run(main())
    assert all(res.records == (b"shared",) for res in results[:20])
    assert all(res.records == ("192.0.2.1",) for res in results[20:])
    assert dns_server.query_count("TXT") == txt_before + 1
    assert dns_server.query_count("A") == a_before + 1
    assert not r._inflight


def test_a_cancelled_caller_leaves_the_shared_lookup(dns_server: AuthServer) -> None:
    dns_server.add_zone("cancel.test", ['@ TXT "kept"'])
    r = resolver(dns_server.nameserver)

    async def main() -> Any:
        first = asyncio.ensure_future(r.txt("cancel.test"))
        second = asyncio.ensure_future(r.txt("cancel.test"))
        await asyncio.sleep(0)
        first.cancel()
        return await second

    assert run(main()).records == (b"kept",)


@pytest.fixture
def silent_udp() -> Iterator[socket.socket]:
    """A UDP socket that reads nothing and answers nothing: a nameserver that is gone."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    yield sock
    sock.close()


def received(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


def test_timeout_is_a_temporary_failure(silent_udp: socket.socket) -> None:
    port = silent_udp.getsockname()[1]
    r = resolver(f"127.0.0.1:{port}", timeout=0.2, attempts=3)
    result = run(r.mx("example.test"))
    assert isinstance(result, TempFail) and "timeout" in result.reason
    assert received(silent_udp) == 3  # one query each attempt
    assert len(r.cache) == 0


def test_a_dead_nameserver_falls_over_to_the_next(dns_server: AuthServer,
                                                  silent_udp: socket.socket) -> None:
    dns_server.add_zone("fallover.test", ["@ A 192.0.2.1"])
    port = silent_udp.getsockname()[1]
    r = resolver(f"127.0.0.1:{port}", dns_server.nameserver, timeout=0.2)
    assert run(r.a("fallover.test")).records == ("192.0.2.1",)
    assert received(silent_udp) == 1


def test_servfail_is_temporary_and_not_cached(dns_server: AuthServer) -> None:
    dns_server.add_broken_zone("broken.test")
    r = resolver(dns_server.nameserver)
    result = run(r.mx("broken.test"))
    assert isinstance(result, TempFail) and "SERVFAIL" in result.reason
    assert dns_server.nameserver in result.reason
    dns_server.add_zone("broken.test", ["@ MX 10 mx"])
    assert isinstance(run(r.mx("broken.test")), Answer)  # asked again at once


def test_refused_is_temporary(dns_server: AuthServer) -> None:
    result = run(resolver(dns_server.nameserver).a("not-served.test"))
    assert isinstance(result, TempFail) and "REFUSED" in result.reason


def test_large_txt_comes_over_tcp(dns_server: AuthServer) -> None:
    strings = [chr(ord("a") + i % 26) * 255 for i in range(12)]  # 3 KiB > 1232 octets
    dns_server.add_zone("big.test", [f'@ TXT {" ".join(strings)}'])
    before = dns_server.stats()
    result = run(resolver(dns_server.nameserver).txt("big.test"))
    after = dns_server.stats()
    assert isinstance(result, Answer) and result.records == ("".join(strings).encode(),)
    assert after["num.truncated"] == before["num.truncated"] + 1
    assert after["num.tcp"] == before["num.tcp"] + 1


class UdpRelay:
    """Relays UDP queries to a real server and its replies back, and listens on no TCP port:
    a nameserver whose TCP is blocked (no real server can be configured that way). With
    `forge_ad`, it sets the AD bit of each reply, as anyone on the path could."""

    def __init__(self, upstream: AuthServer, *, forge_ad: bool = False) -> None:
        self.upstream = (upstream.address, upstream.port)
        self.forge_ad = forge_ad
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                query, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                out.settimeout(5)
                out.sendto(query, self.upstream)
                reply = bytearray(out.recv(65535))
                if self.forge_ad:
                    reply[3] |= 0x20  # the AD bit (RFC 4035 §3.2.3) of the header's flags
                self.sock.sendto(bytes(reply), client)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def test_truncated_answer_without_tcp_is_temporary(dns_server: AuthServer) -> None:
    dns_server.add_zone("big.test", [f'@ TXT {" ".join(["x" * 255] * 8)}', '@ A 192.0.2.1'])
    relay = UdpRelay(dns_server)
    try:
        r = resolver(f"127.0.0.1:{relay.port}")
        assert run(r.a("big.test")).records == ("192.0.2.1",)  # the relay works
        result = run(r.txt("big.test"))
        assert isinstance(result, TempFail) and "/tcp" in result.reason
    finally:
        relay.close()


def test_the_ad_bit_counts_only_when_trusted(dns_server: AuthServer) -> None:
    dns_server.add_zone("forged.test", ["@ A 192.0.2.1"])
    relay = UdpRelay(dns_server, forge_ad=True)
    try:
        untrusted = run(resolver(f"127.0.0.1:{relay.port}").a("forged.test"))
        assert isinstance(untrusted, Answer) and not untrusted.authenticated
        # trust_ad says the path to the resolver is safe: then the bit is believed.
        trusted = run(resolver(f"127.0.0.1:{relay.port}", trust_ad=True).a("forged.test"))
        assert isinstance(trusted, Answer) and trusted.authenticated
    finally:
        relay.close()


def test_idna_names_are_asked_as_a_labels(dns_server: AuthServer) -> None:
    dns_server.add_zone("xn--bcher-kva.test", ["@ MX 10 mx"])
    result = run(resolver(dns_server.nameserver).mx("Bücher.TEST"))
    assert isinstance(result, Answer) and result.name == "xn--bcher-kva.test"


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"),
    (".", "empty"),
    ("a..test", "empty label"),
    ("a" * 64 + ".test", "label of 64"),
    (".".join(["a" * 63] * 4), "at most 253"),
    ("x" * 5000, "5000 characters"),
    ("with space.test", "letters, digits"),
    ("semi;colon.test", "letters, digits"),
    ("-lead.test", "starts or ends"),
    ("nul\x00.test", "letters, digits"),
    ("\u2488.test", "not a valid IDN label"),  # ⒈: IDNA refuses it
])
def test_invalid_names_are_refused(name: str, why: str) -> None:
    r = resolver("127.0.0.1:9")
    with pytest.raises(InvalidName, match=why):
        run(r.a(name))


def test_invalid_lookups_are_refused() -> None:
    r = resolver("127.0.0.1:9")
    with pytest.raises(InvalidName, match="not an IP address"):
        run(r.ptr("example.test"))
    with pytest.raises(ValueError, match="record type 'SOA'"):
        run(r.lookup("example.test", "SOA"))


def test_system_resolv_conf_on_port_53(tmp_path: Path) -> None:
    """An empty `nameservers` reads resolv.conf, which knows no ports: NSD on port 53 of a
    loopback address of its own."""
    server = start_auth_server_port53(tmp_path / "nsd", "127.0.0.78")
    try:
        server.add_zone("system.test", ["@ A 192.0.2.1"])
        conf = tmp_path / "resolv.conf"
        conf.write_text("search example.invalid\nnameserver 127.0.0.78\n")
        r = DnsResolver(DnsConfig(), resolv_conf=str(conf))
        assert r.nameservers == ["127.0.0.78:53"]
        assert run(r.a("system.test")).records == ("192.0.2.1",)
    finally:
        server.stop()
    empty = tmp_path / "empty.conf"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="names no nameserver"):
        DnsResolver(DnsConfig(), resolv_conf=str(empty))



def test_literal_names_are_asked_as_they_stand(dns_server: AuthServer) -> None:
    """literal=True (SPF's expanded macros): any printable ASCII label, asked as its octets
    ("\\\\", "(" and ";" too); the checked form refuses those names."""
    dns_server.add_zone("example.test", [
        "foo:bar/baz A 192.0.2.1", r"with\032space\040paren\059 A 192.0.2.2",
        r"back\092slash TXT x"])
    r = resolver(dns_server.nameserver)

    async def main() -> None:
        colon = await r.a("FOO:bar/baz.example.test", literal=True)
        assert isinstance(colon, Answer) and colon.records == ("192.0.2.1",)
        spaced = await r.a("with space(paren;.example.test", literal=True)
        assert isinstance(spaced, Answer) and spaced.records == ("192.0.2.2",)
        slash = await r.txt("back\\slash.example.test", literal=True)
        assert isinstance(slash, Answer) and slash.records == (b"x",)
        assert isinstance(await r.mx("foo:bar/baz.example.test", literal=True), NoData)
        assert isinstance(await r.aaaa("nothing here.example.test", literal=True), NxDomain)
        with pytest.raises(InvalidName, match="letters, digits"):
            await r.a("foo:bar/baz.example.test")

    run(main())


@pytest.mark.parametrize(("name", "why"), [
    ("a..test", "empty label"),
    ("a" * 64 + ".test", "label of 64"),
    (".".join(["a" * 63] * 4), "at most 253"),
    ("nul\x00.test", "printable ASCII"),
    ("tab\t.test", "printable ASCII"),
    ("b\u00fccher.test", "printable ASCII"),
])
def test_invalid_literal_names_are_refused(name: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        run(resolver("127.0.0.1:9").a(name, literal=True))
