"""The webmail's reads (`postkeep.web.mail`) of `postkeep.store.sql.store.SqlStore`: a page of
a mailbox in UID order, scattered UIDs (a page of a sort order) and the sidebar's counts, each
answered from the (mailbox_id, uid) and (mailbox_id, flags) indexes (migration 19), so a
100,000-message mailbox costs a page what a small one does (docs/architecture.md, "Webmail").
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, select

from postkeep.store.api import Flag, MessageInfo
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.prepared import Cursor
from postkeep.store.sql.rows import chunks, message_from_row
from postkeep.store.sql.schema import messages


class WebmailReadsMixin(SqlStoreBase):
    """See the module docstring."""

    async def messages_page(
        self, mailbox_id: int, offset: int, limit: int, *, newest_first: bool = True
    ) -> list[MessageInfo]:
        """`limit` messages from the `offset`-th, by UID (descending with `newest_first`):
        one walk of the (mailbox_id, uid) index, LIMIT/OFFSET in SQL."""
        if limit <= 0 or offset < 0:
            return []
        stmt = self.hot.page_desc if newest_first else self.hot.page_asc
        rows = await self._read_raw(
            lambda cur: cur.all(stmt, mid=mailbox_id, n=limit, o=offset)
        )
        return [message_from_row(r) for r in rows]

    async def messages_with_uids(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageInfo]:
        """The mailbox's messages with these UIDs (gone ones left out), ascending UID: IN
        lists of at most 128, each UID one seek of the (mailbox_id, uid) index."""
        wanted = sorted(set(uids))
        stmt = self.hot.messages_uid_list

        def fn(cur: Cursor) -> list[MessageInfo]:
            out: list[MessageInfo] = []
            for part in chunks(wanted, 128):
                sql, params = stmt(part)
                out += [message_from_row(r) for r in cur.all(sql, mid=mailbox_id, **params)]
            return out

        return await self._read_raw(fn) if wanted else []

    async def mailbox_totals(self, mailbox_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(messages, unseen) of each mailbox, from indexes only: the (mailbox_id, uid) one
        counts the messages, the (mailbox_id, flags) one (migration 19) the unseen, looked
        up by each flag value without \\Seen (flags are five bits, `Flag`)."""
        if not mailbox_ids:
            return {}
        ids = list(mailbox_ids)
        unseen = [f for f in range(32) if not f & int(Flag.SEEN)]

        def fn(conn: Connection) -> dict[int, tuple[int, int]]:
            box = messages.c.mailbox_id
            total = dict(conn.execute(select(box, func.count()).where(box.in_(ids))
                                      .group_by(box)).all())
            fresh = dict(conn.execute(
                select(box, func.count()).where(box.in_(ids), messages.c.flags.in_(unseen))
                .group_by(box)).all())
            return {i: (int(total.get(i, 0)), int(fresh.get(i, 0))) for i in ids}

        return await self._read(fn)
