"""TLS-RPT (RFC 8460) in the delivery workers, with an injected clock, a real store (SQLite)
and the TLSRPT records in NSD: counts flushed on each tick, the previous day reported only
from 00:05 UTC, once across two processes' reporters, not at all to a domain without a record
(but marked done), and again later when the TXT lookup failed."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.config import Config, DeliveryConfig, DnsConfig, ServerConfig
from postkeep.dns.resolver import DnsResolver
from postkeep.queue.tlsrpt import TlsReports
from postkeep.queue.tlsrpt_report import DAY, NO_POLICY, AppliedPolicy
from postkeep.store.sql.store import SqlStore
from tests.dnsserver import AuthServer

Run = Callable[[Awaitable[Any]], Any]
D = 1_800_000_000 // DAY * DAY  # 2027-01-15, 00:00 UTC
STS = AppliedPolicy.sts("enforce", ["mx.rpt.test"], 86400)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reporter(store: SqlStore, dns: AuthServer | None, clock: Clock) -> TlsReports:
    cfg = Config(server=ServerConfig(hostname="mx.example.test"), delivery=DeliveryConfig())
    servers = [dns.nameserver] if dns is not None else ["127.0.0.1:9"]  # nothing listens
    resolver = DnsResolver(DnsConfig(nameservers=servers, timeout=0.5, attempts=1))
    return TlsReports(cfg, store, resolver, clock=clock)


def tick(run: Run, reports: TlsReports) -> None:
    async def go() -> None:
        await reports.tick()
        await reports.idle()

    run(go())


def test_the_day_before_is_reported_once_after_0005(
    run: Run, store: SqlStore, dns_server: AuthServer
) -> None:
    dns_server.add_zone("rpt.test", ['_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tls@rpt.test"'])
    dns_server.add_zone("quiet.test", ["@ A 127.0.0.1"])  # no TLSRPT record
    clock = Clock(D + 3600)
    reports, other = reporter(store, dns_server, clock), reporter(store, dns_server, clock)
    reports.record("rpt.test", STS, None, "mx.rpt.test.", "127.0.0.1")
    reports.record("RPT.test", STS, None, "mx.rpt.test", "127.0.0.1")
    other.record("rpt.test", STS, "certificate-expired", "mx.rpt.test", "127.0.0.1", "expired")
    reports.record("quiet.test", NO_POLICY, "starttls-not-supported", "mx.quiet.test", None)
    tick(run, reports)
    tick(run, other)
    assert sorted(r.count for r in run(store.tls_results("rpt.test", D))) == [1, 2]
    clock.now = D + DAY + 299  # 00:04:59 the next day: not yet
    tick(run, reports)
    assert run(store.list_outbound()) == []
    clock.now = D + DAY + 300
    tick(run, reports)
    tick(run, other)  # the other process finds it done
    (entry,) = run(store.list_outbound())
    assert [r.address for r in entry.recipients] == ["tls@rpt.test"]
    assert entry.mail_from == "postmaster@example.test"
    assert run(store.tls_report_domains(D)) == []  # quiet.test marked, nothing sent
    msg = email.message_from_bytes(run(store.read_outbound(entry.queue_id)),
                                   policy=email.policy.default)
    part = [p for p in msg.iter_parts() if p.get_content_type() == "application/tlsrpt+gzip"]
    body = json.loads(gzip.decompress(part[0].get_content()))
    assert body["date-range"]["start-datetime"] == "2027-01-15T00:00:00Z"
    (policy,) = body["policies"]
    assert policy["summary"] == {"total-successful-session-count": 2,
                                 "total-failure-session-count": 1}
    assert policy["failure-details"][0]["result-type"] == "certificate-expired"
    assert run(reports.send_reports(D)) == 0  # by hand again: nothing more


def test_a_failed_txt_lookup_is_tried_again(run: Run, store: SqlStore,
                                             dns_server: AuthServer) -> None:
    clock = Clock(D + 3600)
    broken = reporter(store, None, clock)  # its resolver reaches no server
    broken.record("rpt.test", STS, None, "mx.rpt.test", "127.0.0.1")
    clock.now = D + DAY + 600
    tick(run, broken)
    assert run(store.list_outbound()) == []
    assert run(store.tls_report_domains(D)) == ["rpt.test"]  # not marked: later
    dns_server.add_zone("rpt.test", ['_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tls@rpt.test"'])
    assert run(reporter(store, dns_server, clock).send_reports(D)) == 1
