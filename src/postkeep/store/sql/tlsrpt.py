"""TLS reporting (RFC 8460) in the SQL store: per-day counts of TLS results, and the mark that
makes each (domain, day) reported once.

Part of `postkeep.store.sql.store.SqlStore`, over the tables ``tlsrpt_results`` and
``tlsrpt_sent`` with the shared daily report methods of `postkeep.store.sql.reports` (one
upsert per distinct result, not durable; the report queued in the commit that marks the
(domain, day), so exactly once across processes: RFC 8460 §4.1, one report per domain and
period).
"""

from __future__ import annotations

from collections.abc import Sequence

from postkeep.store.api import QueueNotice, TlsResultCount
from postkeep.store.sql.reports import DailyReportsMixin
from postkeep.store.sql.schema import tlsrpt_results, tlsrpt_sent


class TlsReportsMixin(DailyReportsMixin):
    """TLS report methods of `SqlStore` (see the module docstring)."""

    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        await self._add_counts(tlsrpt_results,
                               [(c.domain, c.day, c.detail, c.count) for c in counts])

    async def tls_report_domains(self, day: int) -> list[str]:
        return await self._unreported(tlsrpt_results, tlsrpt_sent, day)

    async def tls_results(self, domain: str, day: int) -> list[TlsResultCount]:
        return [TlsResultCount(domain, day, detail, count)
                for detail, count in await self._counts(tlsrpt_results, domain, day)]

    async def queue_tls_report(
        self, domain: str, day: int, notice: QueueNotice | None, now: float
    ) -> bool:
        return await self._queue_once(tlsrpt_results, tlsrpt_sent, domain, day, notice, now)
