"""TLS reporting (RFC 8460) in the SQL store: per-day counts of TLS results, and the mark that
makes each (domain, day) reported once.

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).
`add_tls_results` is one upsert per distinct result (``INSERT ... ON CONFLICT DO UPDATE SET
count = count + excluded``), not durable (a lost count costs a line in a report, never mail).
`queue_tls_report` inserts the ``tlsrpt_sent`` row (``ON CONFLICT DO NOTHING``) and the
report's queue entry in one transaction: a second process's insert does nothing (on
PostgreSQL after waiting for the first one's commit), and its transaction (with its entry and
blob) is undone, so a report is queued exactly once (RFC 8460 §4.1: one report
per domain and period).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.errors import StoreError
from postkeep.store.api import QueueNotice, TlsResultCount
from postkeep.store.crypto import encrypt_stream
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.outbound import OutboundQueueMixin, _insert_entry
from postkeep.store.sql.schema import tlsrpt_results, tlsrpt_sent

KEEP = 7 * 86400  # seconds results and marks are kept


class _Reported(StoreError):
    """The (domain, day) was reported by another process: the transaction is rolled back."""


class TlsReportsMixin(OutboundQueueMixin, SqlStoreBase):
    """TLS report methods of `SqlStore` (see the module docstring)."""

    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        if not counts:
            return
        dialect = sqlite if self._sqlite else postgresql
        rows = [{"domain": c.domain, "day": c.day, "detail": c.detail, "count": c.count,
                 "key": hashlib.sha256(c.detail.encode()).hexdigest()} for c in counts]

        def fn(conn: Connection) -> None:
            for row in rows:
                ins = dialect.insert(tlsrpt_results).values(**row)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["domain", "day", "key"],
                    set_={"count": tlsrpt_results.c.count + ins.excluded.count}))

        await self._write(fn, durable=False)

    async def tls_report_domains(self, day: int) -> list[str]:
        r, s = tlsrpt_results.c, tlsrpt_sent.c
        q = (select(r.domain).distinct()
             .where(r.day == day, ~exists().where(s.domain == r.domain, s.day == day))
             .order_by(r.domain))
        return list(await self._read(lambda conn: conn.execute(q).scalars().all()))

    async def tls_results(self, domain: str, day: int) -> list[TlsResultCount]:
        r = tlsrpt_results.c
        q = select(r.detail, r.count).where(r.domain == domain, r.day == day).order_by(r.key)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [TlsResultCount(domain, day, detail, count) for detail, count in rows]

    async def queue_tls_report(
        self, domain: str, day: int, notice: QueueNotice | None, now: float
    ) -> bool:
        self._check_open()
        dialect = sqlite if self._sqlite else postgresql
        new = (None if notice is None else
               self._new_entry(notice.envelope, notice.envelope.recipients, len(notice.data)))

        def prepare() -> None:
            if new is not None and notice is not None:
                self._blobs.write(new[1], encrypt_stream(new[2], notice.data))

        def undo() -> None:
            if new is not None:
                self._blobs.delete(new[1])

        def fn(conn: Connection) -> bool:
            s = tlsrpt_sent.c
            mark = dialect.insert(tlsrpt_sent).values(
                domain=domain, day=day, sent_at=now,
                queue_id=None if new is None else new[0]["queue_id"])
            if conn.execute(mark.on_conflict_do_nothing().returning(s.day)).first() is None:
                raise _Reported  # undo: the entry's blob goes too
            if new is not None:
                _insert_entry(conn, new[0])
            conn.execute(delete(tlsrpt_results).where(tlsrpt_results.c.day < day - KEEP))
            conn.execute(delete(tlsrpt_sent).where(s.day < day - KEEP))
            return True

        try:
            return await self._write(fn, prepare=prepare, undo=undo)
        except _Reported:
            return False
