"""DMARC aggregate reports (RFC 7489 §7.1-7.2, RFC 9990) in the delivery workers, with an
injected clock, a real store (SQLite) and the DMARC records in NSD: counts flushed on each
tick, the previous day reported from 00:05 UTC once, to the destinations of the record as
published; an external destination only when it publishes `<domain>._report._dmarc.<host>`
(RFC 7489 §7.1; its `rua` at the same host replaces the destination), a URI whose `!size`
the report is over left out, and a failed lookup tried again later."""

from __future__ import annotations

import email
import email.policy
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.config import Config, DnsConfig, InboundConfig, ServerConfig
from postkeep.dns.resolver import DnsResolver
from postkeep.mailauth.dmarc.aggregate import DAY, ReportRow
from postkeep.mailauth.dmarc.feedback import documents, parse
from postkeep.queue.dmarcrpt import DmarcReports, reporting
from postkeep.store.sql.store import SqlStore
from tests.dnsserver import AuthServer

Run = Callable[[Awaitable[Any]], Any]
D = 1_800_000_000 // DAY * DAY  # 2027-01-15, 00:00 UTC
PASS = ReportRow("192.0.2.1", "bank.test", "bank.test", ("bank.test", "mfrom", "pass"), (),
                 "none", False, True)
FAIL = ReportRow("192.0.2.66", "bank.test", "evil.example", None, (), "reject", False, False)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reporter(store: SqlStore, dns: AuthServer | None, clock: Clock) -> DmarcReports:
    cfg = Config(server=ServerConfig(hostname="mx.example.test"),
                 inbound=InboundConfig(dmarc_report_org="Example Mail"))
    assert reporting(cfg)
    servers = [dns.nameserver] if dns is not None else ["127.0.0.1:9"]  # nothing listens
    resolver = DnsResolver(DnsConfig(nameservers=servers, timeout=0.5, attempts=1))
    return DmarcReports(cfg, store, resolver, clock=clock)


def tick(run: Run, reports: DmarcReports) -> None:
    async def go() -> None:
        await reports.tick()
        await reports.idle()

    run(go())


def zones(dns: AuthServer, bank_rua: str) -> None:
    dns.add_zone("test", [  # the top: the tree walk's every step is answered
        f'_dmarc.bank TXT "v=DMARC1; p=reject; rua={bank_rua}"',
        '_dmarc.shop TXT "v=DMARC1; p=none; rua=mailto:agg@reports.example"',
    ])
    dns.add_zone("example", [
        # rua: the destination replaced, but only by one at the same host (RFC 7489 §7.1)
        'bank.test._report._dmarc.reports TXT '
        '"v=DMARC1; rua=mailto:in@reports.example,mailto:x@elsewhere.example"',
        # shop.test's reports are not authorized
    ])


def test_a_day_is_reported_once_to_verified_destinations(
    run: Run, store: SqlStore, dns_server: AuthServer
) -> None:
    zones(dns_server, "mailto:dmarc@bank.test,mailto:agg@reports.example!10m,"
                      "mailto:tiny@bank.test!1k,mailto:x@other.example")
    clock = Clock(D + 3600)
    reports, other = reporter(store, dns_server, clock), reporter(store, dns_server, clock)
    reports.record("bank.test", PASS)
    reports.record("BANK.test", PASS)
    other.record("bank.test", FAIL)
    reports.record("shop.test", PASS)
    tick(run, reports)
    tick(run, other)
    assert sorted(r.count for r in run(store.dmarc_results("bank.test", D))) == [1, 2]
    clock.now = D + DAY + 299
    tick(run, reports)
    assert run(store.list_outbound()) == []
    clock.now = D + DAY + 300
    tick(run, reports)
    tick(run, other)  # the other process finds it done
    (entry,) = run(store.list_outbound())
    # other.example does not authorize reports, tiny@'s 1k is too small
    assert [r.address for r in entry.recipients] == ["dmarc@bank.test", "in@reports.example"]
    assert entry.mail_from == "noreply-dmarc@mx.example.test"
    assert run(store.dmarc_report_domains(D)) == []  # shop.test marked, nothing sent
    raw = run(store.read_outbound(entry.queue_id))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"].startswith(
        "Report Domain: bank.test Submitter: mx.example.test Report-ID: <2027-01-15.D")
    (part,) = [p for p in msg.iter_parts() if p.get_content_type() == "application/gzip"]
    assert part.get_filename() == f"mx.example.test!bank.test!{D}!{D + DAY - 1}.xml.gz"
    assert gzip.decompress(part.get_content()).startswith(b"<?xml")
    (xml,) = documents(raw)
    report = parse(xml)
    assert (report.org_name, report.email, report.domain) == (
        "Example Mail", "noreply-dmarc@mx.example.test", "bank.test")
    assert (report.begin, report.end, report.passed, report.failed) == (D, D + DAY - 1, 2, 1)
    assert run(reports.send_reports(D)) == 0  # by hand again: nothing more


def test_a_failed_lookup_is_tried_again(run: Run, store: SqlStore,
                                        dns_server: AuthServer) -> None:
    clock = Clock(D + 3600)
    broken = reporter(store, None, clock)  # its resolver reaches no server
    broken.record("bank.test", PASS)
    clock.now = D + DAY + 600
    tick(run, broken)
    assert run(store.list_outbound()) == []
    assert run(store.dmarc_report_domains(D)) == ["bank.test"]  # not marked: later
    zones(dns_server, "mailto:agg@reports.example")
    lines: list[str] = []
    assert run(reporter(store, dns_server, clock).send_reports(D, lines.append)) == 1
    assert len(lines) == 1 and lines[0].startswith("bank.test: report queued qid=D")
    assert lines[0].endswith(" to in@reports.example")


def test_reports_need_a_domain_as_hostname() -> None:
    assert not reporting(Config(server=ServerConfig(hostname="localhost")))
    assert not reporting(Config(server=ServerConfig(hostname="mx.example.test"),
                                inbound=InboundConfig(dmarc_reports=False)))
