"""The MX's connect-time lookups (`postkeep.delivery.origin.ClientChecks`): a DNS block list
and iprev for the client, against zones served by a real DNS server (NSD on loopback), and
against a nameserver that never answers (a real UDP socket that reads and keeps quiet).

A first connection's lookups wait on the DNS and go on as tasks; a second one from the same
client finds every answer in the cache and is done at once. Both must give the same verdicts;
a lookup past `[inbound] check_timeout` gives its fallback (the list counts for nothing,
iprev is a temperror), and a session cancelled while it waits is cancelled, not answered."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from postkeep.config import DnsConfig, DnsListConfig, InboundConfig
from postkeep.delivery.origin import ClientChecks, InboundChecks
from postkeep.dns import DnsResolver
from tests.dnsserver import AuthServer, auth_server

LISTED, CLEAN = "127.0.0.2", "127.0.0.5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    with auth_server(tmp_path_factory.mktemp("nsd")) as srv:
        srv.add_zone("zen.test", ["2.0.0.127 A 127.0.0.2"])  # RFC 5782 §5: the test entry
        srv.add_zone("0.0.127.in-addr.arpa", ["2 PTR bad.client.test.",
                                              "5 PTR mail.client.test."])
        srv.add_zone("client.test", ["bad A 127.0.0.2", "mail A 127.0.0.5"])
        yield srv


@pytest.fixture
def silent() -> Iterator[str]:
    """A nameserver address where queries arrive and nothing answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def checks(nameserver: str, timeout: float = 5.0) -> InboundChecks:
    resolver = DnsResolver(DnsConfig(nameservers=[nameserver], timeout=10.0, attempts=1))
    cfg = InboundConfig(trusted_networks=["192.0.2.0/24"], check_timeout=timeout,
                        dnsbl=[DnsListConfig(zone="zen.test")])
    return InboundChecks(cfg, resolver)


async def verdicts(client: ClientChecks) -> tuple[str | None, str]:
    refusal, iprev = await client.refusal(), await client.iprev()
    assert iprev is not None
    return (str(refusal.reply) if refusal else None), iprev.auth_result()


def test_first_and_returning_clients_get_the_same_verdicts(server: AuthServer) -> None:
    async def go() -> list[tuple[str | None, str]]:
        mx = checks(server.nameserver)
        out = []
        for ip in (LISTED, CLEAN, LISTED, CLEAN):  # cold (tasks), then warm (done at once)
            client = mx.start(ip)
            out.append(await verdicts(client))
            client.cancel()
        return out

    cold_listed, cold_clean, warm_listed, warm_clean = asyncio.run(go())
    assert cold_listed == warm_listed and cold_clean == warm_clean
    refusal, iprev = cold_listed
    assert refusal is not None and refusal.startswith("554 5.7.1") and "zen.test" in refusal
    assert iprev.startswith("iprev=pass (bad.client.test)")
    assert cold_clean == (None, "iprev=pass (mail.client.test) policy.iprev=127.0.0.5")


def test_a_trusted_client_is_not_looked_up(server: AuthServer) -> None:
    async def go() -> tuple[object, object]:
        client = checks(server.nameserver).start("192.0.2.7")
        return await client.refusal(), await client.iprev()

    assert asyncio.run(go()) == (None, None)


def test_lookups_past_the_timeout_count_for_nothing(
    silent: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> tuple[str | None, str]:
        client = checks(silent, timeout=0.3).start(LISTED)
        return await verdicts(client)

    with caplog.at_level(logging.WARNING):
        refusal, iprev = asyncio.run(go())
    assert refusal is None  # a list that does not answer lists nobody
    assert iprev == "iprev=temperror (timed out) policy.iprev=127.0.0.2"
    assert any("dnsbl: lookup failed ip=127.0.0.2 zone=zen.test" in r.getMessage()
               and "no answer within 0.3 s" in r.getMessage() for r in caplog.records)


def test_a_session_cancelled_while_it_waits_is_cancelled(silent: str) -> None:
    async def go() -> None:
        client = checks(silent, timeout=30.0).start(LISTED)
        waiting = asyncio.ensure_future(client.refusal())
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        client.cancel()

    asyncio.run(go())
