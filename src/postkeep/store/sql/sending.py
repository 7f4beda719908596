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

An account paused after an outbound content filter hit (``sending_pauses``,
`pause_sending`) is refused before anything is counted: its row read in the charging
transaction (an indexed primary-key lookup), the hit's limit name "paused".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.errors import StoreError
from postkeep.store.api import SendingLimits, SendingPause, SendingUsage
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import accounts, sending_counts, sending_limits, sending_pauses

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

        paused = [(scope, select(sending_pauses.c.until).where(
                      sending_pauses.c.account_id == int(scope[2:]),
                      sending_pauses.c.until > now))
                  for scope, _ in scopes if scope.startswith("a:") and scope[2:].isdigit()]

        def fn(conn: Connection) -> None:
            cur = self._cursor(conn)
            for scope, query in paused:
                if conn.execute(query).first() is not None:
                    raise _OverLimit(scope, "paused", SendingLimits())
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

    async def pause_sending(self, account_id: int, until: float, filter: str, reason: str,
                            queue_id: str, now: float) -> None:
        dialect = sqlite if self._sqlite else postgresql
        values = {"until": until, "filter": filter, "reason": reason[:1000],
                  "queue_id": queue_id, "created": now}

        def fn(conn: Connection) -> None:
            ins = dialect.insert(sending_pauses).values(account_id=account_id, **values)
            conn.execute(ins.on_conflict_do_update(index_elements=["account_id"], set_=values))
            conn.execute(delete(sending_pauses).where(sending_pauses.c.until <= now))

        await self._write(fn)

    async def resume_sending(self, account_id: int) -> bool:
        def fn(conn: Connection) -> bool:
            q = delete(sending_pauses).where(sending_pauses.c.account_id == account_id)
            return bool(conn.execute(q).rowcount)

        return await self._write(fn)

    async def sending_pauses(self, now: float) -> list[SendingPause]:
        p = sending_pauses.c
        q = (select(p.account_id, accounts.c.address, p.until, p.filter, p.reason, p.queue_id,
                    p.created)
             .join_from(sending_pauses, accounts, accounts.c.id == p.account_id)
             .where(p.until > now).order_by(accounts.c.address))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [SendingPause(*row) for row in rows]
