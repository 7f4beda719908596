"""The content filters' record of each stored message (migration 18) in the SQL store.

Part of `postkeep.store.sql.store.SqlStore`. The group-commit writer inserts the row in the
delivery's own transaction (`LocalDelivery.filters`, `postkeep.store.sql.writer`): one row
per delivery, keyed by its blob, whatever the number of recipients, so it costs the batch one
more ``executemany`` and no round trip of its own. The row goes with the blob (ON DELETE
CASCADE), when the last message using it is expunged; a COPY or MOVE keeps it.
`filter_report` reads it for one account's message, the message's owner checked in the same
query (another account's message id reads as None).
"""

from __future__ import annotations

from sqlalchemy import select

from postkeep.store.api import FilterReport
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.rows import FILTER_COLS, report_from_row
from postkeep.store.sql.schema import filter_results, mailboxes, messages


class FilterResultsMixin(SqlStoreBase):
    """`filter_report` of `SqlStore` (see the module docstring)."""

    async def filter_report(self, account_id: int, message_id: int) -> FilterReport | None:
        m = messages.c
        q = (select(*FILTER_COLS)
             .join_from(messages, filter_results, filter_results.c.blob_id == m.blob_id)
             .join(mailboxes, mailboxes.c.id == m.mailbox_id)
             .where(m.id == message_id, mailboxes.c.account_id == account_id))
        row = await self._read(lambda conn: conn.execute(q).first())
        return None if row is None else report_from_row(row)
