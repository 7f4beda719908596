"""Sending quotas in the SQL store: counts per scope and window, and per-scope exceptions.

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).
`charge_sending` adds one message to each scope's hour and day windows with an upsert that
returns the new counts (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``; it runs for every
submitted message, so it is compiled once in `postkeep.store.sql.hotpath` and run on the
driver's cursor). The counts are held against the scope's exception (`set_sending_limits`),
read in the same transaction, where it has one, else against the limits given; if one passes
its limit, the transaction is rolled back: nothing is counted. The upsert takes the row's lock on
PostgreSQL and the database's write lock on SQLite, so concurrent charges from several
processes are serialised and the counts exact. Windows older than two days are deleted by
the first charge of each hour.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.errors import StoreError
from postkeep.store.api import SendingLimits, SendingUsage
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import sending_counts, sending_limits

HOUR, DAY = 3600, 86400


class _OverLimit(StoreError):
    def __init__(self, scope: str, limit: str, limits: SendingLimits) -> None:
        super().__init__(f"{scope} over {limit}")
        self.hit = (scope, limit, limits)


def _decode(raw: str | None) -> SendingLimits | None:
    """A stored exception (JSON of `SendingLimits`), None for no row."""
    return None if raw is None else SendingLimits(**json.loads(raw))


class SendingQuotasMixin(SqlStoreBase):
    """Sending quota methods of `SqlStore` (see the module docstring)."""

    async def charge_sending(
        self, scopes: Sequence[tuple[str, SendingLimits]], recipients: int, now: float
    ) -> tuple[str, str, SendingLimits] | None:
        windows = ((HOUR, "per_hour"), (DAY, "per_day"))
        hot = self.hot  # compiled once (`postkeep.store.sql.hotpath`): run per submitted message

        def fn(conn: Connection) -> None:
            cur = self._cursor(conn)
            for scope, defaults in scopes:
                limits = _decode(cur.scalar(hot.sending_exception, scope=scope)) or defaults
                for width, suffix in windows:
                    window = int(now) // width * width
                    messages, rcpts = cur.first(hot.charge_window, scope=scope, width=width,
                                                window=window, rcpts=recipients)
                    for name, count in ((f"messages_{suffix}", messages),
                                        (f"recipients_{suffix}", rcpts)):
                        limit = getattr(limits, name)
                        if limit and count > limit:
                            raise _OverLimit(scope, name, limits)
            hour = int(now) // HOUR
            if getattr(self, "_sending_swept", None) != hour:  # once an hour: windows past use
                conn.execute(delete(sending_counts).where(sending_counts.c.window < now - 2 * DAY))
                self._sending_swept = hour

        try:
            await self._write(fn, durable=False)
        except _OverLimit as e:
            return e.hit
        return None

    async def sending_usage(self, scope: str, now: float) -> SendingUsage:
        t = sending_counts.c
        q = select(t.width, t.messages, t.recipients).where(
            t.scope == scope,
            ((t.width == HOUR) & (t.window == int(now) // HOUR * HOUR))
            | ((t.width == DAY) & (t.window == int(now) // DAY * DAY)))
        rows = await self._read(lambda conn: conn.execute(q).all())
        got = {width: (m, r) for width, m, r in rows}
        hour, day = got.get(HOUR, (0, 0)), got.get(DAY, (0, 0))
        return SendingUsage(hour[0], day[0], hour[1], day[1])

    async def get_sending_limits(self, scope: str) -> SendingLimits | None:
        q = select(sending_limits.c.limits).where(sending_limits.c.scope == scope)
        return _decode(await self._read(lambda conn: conn.execute(q).scalar()))

    async def set_sending_limits(self, scope: str, limits: SendingLimits | None) -> None:
        dialect = sqlite if self._sqlite else postgresql

        def fn(conn: Connection) -> None:
            if limits is None:
                conn.execute(delete(sending_limits).where(sending_limits.c.scope == scope))
                return
            value = json.dumps(dataclasses.asdict(limits))
            conn.execute(dialect.insert(sending_limits).values(scope=scope, limits=value)
                         .on_conflict_do_update(index_elements=["scope"],
                                                set_={"limits": value}))

        await self._write(fn)
