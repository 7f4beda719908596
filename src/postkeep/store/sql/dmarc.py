"""DMARC aggregate reports (RFC 7489 §7.2, RFC 9990) in the SQL store: the MX's evaluations
counted per policy domain and day, the once-per-(domain, day) mark of the report sent, and
the reports received.

Part of `postkeep.store.sql.store.SqlStore`. The counts and marks (``dmarc_results``,
``dmarc_sent``) are those of `postkeep.store.sql.reports`, as for TLS reports: a count is one
upsert, not durable; a report is queued in the commit that marks its (domain, day), exactly
once across processes. A report received (``dmarc_feedback``) is one insert, ``ON CONFLICT
DO NOTHING`` on (org_name, report_id, domain): a duplicate is kept once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.store.api import DmarcFeedback, DmarcResultCount, QueueNotice
from postkeep.store.sql.reports import DailyReportsMixin
from postkeep.store.sql.schema import dmarc_feedback, dmarc_results, dmarc_sent

_COLUMNS = ("org_name", "email", "report_id", "domain", "begin", "end", "passed", "failed",
            "records", "received_at")


class DmarcReportsMixin(DailyReportsMixin):
    """DMARC report methods of `SqlStore` (see the module docstring)."""

    async def add_dmarc_results(self, counts: Sequence[DmarcResultCount]) -> None:
        await self._add_counts(dmarc_results,
                               [(c.domain, c.day, c.detail, c.count) for c in counts])

    async def dmarc_report_domains(self, day: int) -> list[str]:
        return await self._unreported(dmarc_results, dmarc_sent, day)

    async def dmarc_results(self, domain: str, day: int) -> list[DmarcResultCount]:
        return [DmarcResultCount(domain, day, detail, count)
                for detail, count in await self._counts(dmarc_results, domain, day)]

    async def queue_dmarc_report(
        self, domain: str, day: int, notice: QueueNotice | None, now: float
    ) -> bool:
        return await self._queue_once(dmarc_results, dmarc_sent, domain, day, notice, now)

    async def add_dmarc_feedback(self, report: DmarcFeedback) -> bool:
        dialect = sqlite if self._sqlite else postgresql
        values = {name: getattr(report, name) for name in _COLUMNS}

        def fn(conn: Connection) -> bool:
            ins = dialect.insert(dmarc_feedback).values(**values).on_conflict_do_nothing()
            return conn.execute(ins.returning(dmarc_feedback.c.id)).first() is not None

        return await self._write(fn)

    async def list_dmarc_feedback(self, domain: str | None = None) -> list[DmarcFeedback]:
        f = dmarc_feedback.c
        q = select(*(f[name] for name in _COLUMNS), f.id)
        if domain is not None:
            q = q.where(f.domain == domain.lower())
        q = q.order_by(f.begin.desc(), f.org_name, f.id)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [DmarcFeedback(*row) for row in rows]
