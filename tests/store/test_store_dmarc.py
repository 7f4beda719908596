"""DMARC aggregate report counts, the once-per-(domain, day) mark (RFC 7489 §7.2, RFC 9990)
and the reports received, on both backends: counts add up across processes, a report is
queued by exactly one of two processes, a received report is kept once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.store.api import DmarcFeedback, DmarcResultCount, DsnRecipient, Envelope, QueueNotice
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
DAY = 1_800_000_000 // 86400 * 86400


def _report(n: int) -> QueueNotice:
    envelope = Envelope(f"DMARC{n}", "noreply-dmarc@mx.example.org",
                        [DsnRecipient("agg@example.net")], "127.0.0.1", "mx.example.org",
                        DAY + 86400 + 300.0)
    return QueueNotice(envelope, b"Subject: report\r\n\r\nreport\r\n")


def test_counts_add_up_and_a_report_is_queued_once(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore
) -> None:
    other = make_store()
    a, b = '["192.0.2.1","pass"]', '["192.0.2.2","fail"]'

    async def both() -> None:
        await asyncio.gather(*(
            s.add_dmarc_results([DmarcResultCount("example.net", DAY, a, 2),
                                 DmarcResultCount("example.net", DAY, b, 1)])
            for s in [store, other] * 5))

    run(both())
    run(store.add_dmarc_results([DmarcResultCount("example.com", DAY, a, 1)]))
    assert {r.detail: r.count for r in run(store.dmarc_results("example.net", DAY))} == {
        a: 20, b: 10}
    assert run(store.dmarc_report_domains(DAY)) == ["example.com", "example.net"]
    assert run(store.tls_report_domains(DAY)) == []  # the TLS report tables are others

    async def race() -> list[bool]:
        return list(await asyncio.gather(
            store.queue_dmarc_report("example.net", DAY, _report(1), DAY + 86400.0),
            other.queue_dmarc_report("example.net", DAY, _report(2), DAY + 86400.0)))

    assert sorted(run(race())) == [False, True]
    (queued,) = run(store.list_outbound())
    assert queued.queue_id in ("DMARC1", "DMARC2")
    assert run(store.dmarc_report_domains(DAY)) == ["example.com"]
    assert run(store.queue_dmarc_report("example.com", DAY, None, DAY + 86400.0))
    assert run(store.dmarc_report_domains(DAY)) == []
    assert len(run(store.list_outbound())) == 1


def _feedback(org: str, report_id: str, domain: str, begin: int) -> DmarcFeedback:
    return DmarcFeedback(org, f"noreply@{org}", report_id, domain, begin, begin + 86399, 5, 1,
                         '[{"source_ip":"192.0.2.1","count":6}]', float(begin + 90000))


def test_received_reports_are_kept_once_and_listed(run: Run, store: SqlStore) -> None:
    assert run(store.add_dmarc_feedback(_feedback("google.com", "1", "example.org", DAY)))
    assert not run(store.add_dmarc_feedback(_feedback("google.com", "1", "example.org", DAY)))
    assert run(store.add_dmarc_feedback(_feedback("yahoo.com", "1", "example.org", DAY + 86400)))
    assert run(store.add_dmarc_feedback(_feedback("google.com", "2", "example.com", DAY)))
    listed = run(store.list_dmarc_feedback())
    assert [(f.org_name, f.domain) for f in listed] == [
        ("yahoo.com", "example.org"), ("google.com", "example.org"),
        ("google.com", "example.com")]
    mine = run(store.list_dmarc_feedback("example.org"))
    assert [(f.org_name, f.begin) for f in mine] == [("yahoo.com", DAY + 86400),
                                                    ("google.com", DAY)]
    assert mine[1].passed == 5 and mine[1].failed == 1 and mine[1].id > 0
    assert mine[1].records == '[{"source_ip":"192.0.2.1","count":6}]'
