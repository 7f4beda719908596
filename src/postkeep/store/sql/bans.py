"""Bans and known clients (`postkeep.bans`) in the SQL store.

Part of `postkeep.store.sql.store.SqlStore`. A ban is one upsert on its key (the row of the
key's previous ban is replaced: it only served for the escalation level), with the rows that
ended `forget_after` ago removed in the same transaction; ending a ban early sets its `until`
to now. A known client is one upsert of its `seen`, not durable (losing one costs a delay at
worst, never a login).
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from postkeep.store.api import Ban
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import bans, known_clients

_COLUMNS = ("key", "until", "reason", "strikes", "level", "created")


class BansMixin(SqlStoreBase):
    """Ban and known-client methods of `SqlStore` (see the module docstring)."""

    async def put_ban(self, ban: Ban, forget_after: float) -> None:
        dialect = sqlite if self._sqlite else postgresql
        values = {name: getattr(ban, name) for name in _COLUMNS}

        def fn(conn: Connection) -> None:
            ins = dialect.insert(bans).values(**values)
            conn.execute(ins.on_conflict_do_update(
                index_elements=["key"], set_={k: ins.excluded[k] for k in _COLUMNS[1:]}))
            conn.execute(delete(bans).where(bans.c.until < ban.created - forget_after))

        await self._write(fn)

    async def remove_ban(self, key: str) -> bool:
        now = time.time()

        def fn(conn: Connection) -> bool:
            q = (update(bans).where(bans.c.key == key, bans.c.until > now)
                 .values(until=now).returning(bans.c.key))
            return conn.execute(q).first() is not None

        return await self._write(fn)

    async def get_ban(self, key: str) -> Ban | None:
        q = select(*(bans.c[n] for n in _COLUMNS)).where(bans.c.key == key)
        row = await self._read(lambda conn: conn.execute(q).first())
        return None if row is None else Ban(*row)

    async def list_bans(self, now: float) -> list[Ban]:
        q = select(*(bans.c[n] for n in _COLUMNS)).where(bans.c.until > now).order_by(bans.c.key)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [Ban(*row) for row in rows]

    async def remember_client(self, address: str, ip_class: str, now: float,
                              forget_before: float) -> None:
        dialect = sqlite if self._sqlite else postgresql
        address = address.lower()

        def fn(conn: Connection) -> None:
            ins = dialect.insert(known_clients).values(address=address, ip_class=ip_class,
                                                       seen=now)
            conn.execute(ins.on_conflict_do_update(index_elements=["address", "ip_class"],
                                                   set_={"seen": ins.excluded.seen}))
            conn.execute(delete(known_clients).where(known_clients.c.seen < forget_before))

        await self._write(fn, durable=False)

    async def known_client(self, address: str, ip_class: str, since: float) -> bool:
        k = known_clients.c
        q = select(k.seen).where(k.address == address.lower(), k.ip_class == ip_class,
                                 k.seen >= since)
        return await self._read(lambda conn: conn.execute(q).first()) is not None
