"""TLS report counts and the once-per-(domain, day) mark (RFC 8460), on both backends: counts
add up across processes, a report is queued by exactly one of two processes, and old days go."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.store.api import DsnRecipient, Envelope, QueueNotice, TlsResultCount
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
DAY = 1_800_000_000 // 86400 * 86400


def _report(n: int) -> QueueNotice:
    rcpt = DsnRecipient("tlsrpt@example.net")
    envelope = Envelope(f"TLSRPT{n}", "postmaster@example.org", [rcpt], "127.0.0.1",
                        "mx.example.org", DAY + 86400 + 300.0)
    return QueueNotice(envelope, b"Subject: report\r\n\r\nreport\r\n")


def test_counts_add_up_across_processes(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore
) -> None:
    other = make_store()
    ok, bad = '{"result-type": null}', '{"result-type": "certificate-expired"}'

    async def both() -> None:
        await asyncio.gather(*(
            s.add_tls_results([TlsResultCount("example.net", DAY, ok, 2),
                               TlsResultCount("example.net", DAY, bad, 1)])
            for s in [store, other] * 5))

    run(both())
    run(store.add_tls_results([TlsResultCount("example.com", DAY + 86400, ok, 1)]))
    got = {r.detail: r.count for r in run(store.tls_results("example.net", DAY))}
    assert got == {ok: 20, bad: 10}
    assert run(store.tls_report_domains(DAY)) == ["example.net"]
    assert run(store.tls_report_domains(DAY + 86400)) == ["example.com"]
    assert run(store.tls_results("example.com", DAY)) == []


def test_a_report_is_queued_exactly_once(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore
) -> None:
    other = make_store()
    run(store.add_tls_results([TlsResultCount("example.net", DAY, "{}", 1),
                               TlsResultCount("example.org", DAY, "{}", 1)]))

    async def race() -> list[bool]:
        return list(await asyncio.gather(
            store.queue_tls_report("example.net", DAY, _report(1), DAY + 86400.0),
            other.queue_tls_report("example.net", DAY, _report(2), DAY + 86400.0)))

    assert sorted(run(race())) == [False, True]
    queued = run(store.list_outbound())
    assert len(queued) == 1 and queued[0].queue_id in ("TLSRPT1", "TLSRPT2")
    assert run(store.read_outbound(queued[0].queue_id)).startswith(b"Subject: report")
    assert run(store.tls_report_domains(DAY)) == ["example.org"]
    assert run(store.queue_tls_report("example.org", DAY, None, DAY + 86400.0))  # no rua
    assert run(store.tls_report_domains(DAY)) == []
    assert len(run(store.list_outbound())) == 1
    assert not run(other.queue_tls_report("example.org", DAY, _report(3), DAY + 86400.0))
    assert len(run(store.list_outbound())) == 1  # the refused one left nothing queued


def test_results_older_than_a_week_go(run: Run, store: SqlStore) -> None:
    old, now = DAY - 8 * 86400, DAY
    run(store.add_tls_results([TlsResultCount("example.net", old, "{}", 1),
                               TlsResultCount("example.net", now, "{}", 1)]))
    assert run(store.queue_tls_report("example.net", old, None, old + 86400.0))
    assert run(store.queue_tls_report("example.net", now, None, now + 86400.0))
    assert run(store.tls_results("example.net", old)) == []
    assert len(run(store.tls_results("example.net", now))) == 1
    assert run(store.queue_tls_report("example.net", old, None, now))  # its mark went too
