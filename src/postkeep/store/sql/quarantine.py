"""The quarantine in the SQL store (`postkeep.delivery.quarantine`): messages the content
filters held, as messages of the account's "Quarantine" mailbox with a ``quarantine`` row each.

Part of `postkeep.store.sql.store.SqlStore`. A held message is delivered as any message is
(`deliver`, the group-commit writer: its blob encrypted under a fresh content key wrapped
with the account's data key, `postkeep.store.crypto`; nothing in clear at rest), into
`QUARANTINE_MAILBOX`, made first where the account has none (and subscribed, so that clients
show it); the writer adds the ``quarantine`` rows in the delivery's own transaction
(`LocalDelivery.quarantine`), so a message is never held without its record or the other
way round.

The row points at the message (``message_id``, ON DELETE CASCADE): whatever removes the
message removes the entry with it, an IMAP MOVE out of the mailbox (the user's release) or an
EXPUNGE (the user's delete), the account's removal. `release_quarantine` is that MOVE, done
for the operator; `delete_quarantine` and `expire_quarantine` remove the message rows as an
expunge does (quota released, UIDs logged for QRESYNC, blob files deleted after the commit).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import (
    QUARANTINE_MAILBOX,
    DeliveryResult,
    LocalDelivery,
    MailboxEvent,
    QuarantineEntry,
)
from postkeep.store.sql.mailops import MailboxOpsMixin
from postkeep.store.sql.rows import FILTER_COLS, report_from_row
from postkeep.store.sql.schema import accounts, filter_results, mailboxes, messages, quarantine

_q = quarantine.c
_COLS = (_q.id, _q.account_id, accounts.c.address, _q.message_id, _q.direction, _q.queue_id,
         _q.filter, _q.reason, _q.mail_from, _q.recipients, _q.size, _q.created, _q.expires)


def _entry(row: Sequence[Any]) -> QuarantineEntry:
    values = list(row[:len(_COLS)])
    values[9] = tuple(json.loads(values[9]))
    report = row[len(_COLS):]
    filters = report_from_row(report) if report[0] is not None else None
    return QuarantineEntry(*values, filters=filters)


def _select() -> Any:
    """The entries with their filters' record (`filter_results`, by the message's blob)."""
    return (select(*_COLS, *FILTER_COLS)
            .join_from(quarantine, accounts, accounts.c.id == _q.account_id)
            .join(messages, messages.c.id == _q.message_id)
            .outerjoin(filter_results, filter_results.c.blob_id == messages.c.blob_id))


class QuarantineMixin(MailboxOpsMixin):
    """Quarantine methods of `SqlStore` (see the module docstring)."""

    async def quarantine(self, delivery: LocalDelivery) -> DeliveryResult:
        if delivery.quarantine is None:
            raise StoreError("a quarantine delivery needs its note")
        for account_id in dict.fromkeys(delivery.account_ids):
            if await self.get_mailbox(account_id, QUARANTINE_MAILBOX) is None:
                with contextlib.suppress(AlreadyExists):  # made meanwhile by another session
                    await self.create_mailbox(account_id, QUARANTINE_MAILBOX)
                await self.set_subscribed(account_id, QUARANTINE_MAILBOX, True)
        delivery.mailbox_name = QUARANTINE_MAILBOX
        return await self.deliver(delivery)

    async def list_quarantine(self, account_id: int | None = None,
                              direction: str | None = None) -> list[QuarantineEntry]:
        q = _select().order_by(_q.created, _q.id)
        if account_id is not None:
            q = q.where(_q.account_id == account_id)
        if direction is not None:
            q = q.where(_q.direction == direction)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [_entry(r) for r in rows]

    async def get_quarantine(self, entry_id: int) -> QuarantineEntry:
        q = _select().where(_q.id == entry_id)
        row = await self._read(lambda conn: conn.execute(q).first())
        if row is None:
            raise NotFound(f"quarantine entry {entry_id} does not exist")
        return _entry(row)

    async def read_quarantine(self, entry_id: int) -> bytes:
        entry = await self.get_quarantine(entry_id)
        return await self.read_message(entry.account_id, entry.message_id)

    async def release_quarantine(self, entry_id: int, mailbox: str = "INBOX") -> None:
        entry = await self.get_quarantine(entry_id)
        source = await self.get_mailbox(entry.account_id, QUARANTINE_MAILBOX)
        dest = await self.get_mailbox(entry.account_id, mailbox)
        uid = await self._read(lambda conn: conn.execute(
            select(messages.c.uid).where(messages.c.id == entry.message_id)).scalar())
        if source is None or dest is None or uid is None:
            raise NotFound(f"quarantine entry {entry_id}: no mailbox {mailbox} or message")
        moved = await self.copy_messages(entry.account_id, source.id, [(uid, uid)], dest.id,
                                         move=True)
        if not moved.pairs:
            raise NotFound(f"quarantine entry {entry_id} was released or deleted meanwhile")

    async def delete_quarantine(self, entry_id: int) -> None:
        if not await self._remove_entries(_q.id == entry_id, 1):
            raise NotFound(f"quarantine entry {entry_id} does not exist")

    async def expire_quarantine(self, now: float, limit: int) -> int:
        return await self._remove_entries(_q.expires <= now, limit)

    async def _remove_entries(self, where: Any, limit: int) -> int:
        """Remove up to `limit` entries matching `where`, and their messages, in one
        transaction; how many."""

        def fn(conn: Connection) -> tuple[list[tuple[int, int, int]], list[str]]:
            m = messages.c
            rows = conn.execute(
                select(m.mailbox_id, m.id, m.uid, m.size, m.blob_id, mailboxes.c.account_id)
                .join_from(quarantine, messages, m.id == _q.message_id)
                .join(mailboxes, mailboxes.c.id == m.mailbox_id)
                .where(where).order_by(m.mailbox_id, m.uid).limit(limit)
            ).all()
            gone: list[tuple[int, int, int]] = []
            dead: list[str] = []
            by_box: dict[int, list[tuple[int, int, int, str]]] = {}
            for box, mid, uid, size, blob_id, account_id in rows:
                by_box.setdefault(box, []).append((mid, uid, size, blob_id))
                gone.append((account_id, box, uid))
            for box, removed in by_box.items():
                self._lock_mailboxes(self._cursor(conn), box)
                dead += self._remove_rows(conn, box, removed)
            return gone, dead

        gone, _ = await self._write(fn, lambda res: self._delete_blobs_later(res[1]))
        for account_id, box, uid in gone:
            self.events.publish(MailboxEvent(account_id, box, "expunge", uid))
        return len(gone)
