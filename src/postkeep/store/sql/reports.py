"""Daily reports in the SQL store, shared by TLS reporting (RFC 8460, `tlsrpt`) and DMARC
aggregate reporting (RFC 7489 §7.2, RFC 9990, `dmarc`): per-day counts of results, and the
mark that makes each (domain, day) reported once.

A mixin over `postkeep.store.sql.base.SqlStoreBase`, its methods taking the two tables of one
kind of report (``<kind>_results``: domain, day, key, detail, count; ``<kind>_sent``: domain,
day, queue_id, sent_at). `_add_counts` is one upsert per distinct result (``INSERT ... ON
CONFLICT DO UPDATE SET count = count + excluded``), not durable (a lost count costs a line in
a report, never mail). `_queue_once` inserts the ``_sent`` row (``ON CONFLICT DO NOTHING``)
and the report's queue entry in one transaction: a second process's insert does nothing (on
PostgreSQL after waiting for the first one's commit), and its transaction (with its entry and
blob) is undone, so a report is queued exactly once (one report per domain and period:
RFC 8460 §4.1, RFC 7489 §7.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, Table, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.errors import StoreError
from postkeep.store.api import QueueNotice
from postkeep.store.crypto import encrypt_stream
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.outbound import OutboundQueueMixin, _insert_entry

KEEP = 7 * 86400  # seconds results and marks are kept


class _Reported(StoreError):
    """The (domain, day) was reported by another process: the transaction is rolled back."""


class DailyReportsMixin(OutboundQueueMixin, SqlStoreBase):
    """Counts and once-a-day marks of one kind of report (see the module docstring)."""

    async def _add_counts(self, table: Table,
                          counts: Sequence[tuple[str, int, str, int]]) -> None:
        """Add each (domain, day, detail, count) to its row."""
        if not counts:
            return
        dialect = sqlite if self._sqlite else postgresql
        rows = [{"domain": domain, "day": day, "detail": detail, "count": count,
                 "key": hashlib.sha256(detail.encode()).hexdigest()}
                for domain, day, detail, count in counts]

        def fn(conn: Connection) -> None:
            for row in rows:
                ins = dialect.insert(table).values(**row)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["domain", "day", "key"],
                    set_={"count": table.c.count + ins.excluded.count}))

        await self._write(fn, durable=False)

    async def _unreported(self, results: Table, sent: Table, day: int) -> list[str]:
        r, s = results.c, sent.c
        q = (select(r.domain).distinct()
             .where(r.day == day, ~exists().where(s.domain == r.domain, s.day == day))
             .order_by(r.domain))
        return list(await self._read(lambda conn: conn.execute(q).scalars().all()))

    async def _counts(self, results: Table, domain: str, day: int) -> list[tuple[str, int]]:
        r = results.c
        q = select(r.detail, r.count).where(r.domain == domain, r.day == day).order_by(r.key)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [(detail, count) for detail, count in rows]

    async def _queue_once(self, results: Table, sent: Table, domain: str, day: int,
                          notice: QueueNotice | None, now: float) -> bool:
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
            s = sent.c
            mark = dialect.insert(sent).values(
                domain=domain, day=day, sent_at=now,
                queue_id=None if new is None else new[0]["queue_id"])
            if conn.execute(mark.on_conflict_do_nothing().returning(s.day)).first() is None:
                raise _Reported  # undo: the entry's blob goes too
            if new is not None:
                _insert_entry(conn, new[0])
            conn.execute(delete(results).where(results.c.day < day - KEEP))
            conn.execute(delete(sent).where(s.day < day - KEEP))
            return True

        try:
            return await self._write(fn, prepare=prepare, undo=undo)
        except _Reported:
            return False
