"""The durable outbound queue in the SQL store (authenticated submission to remote recipients).

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).

`enqueue_outbound` keeps the promise `deliver` keeps (RFC 5321 §6.1: a ``250`` after DATA means the
server has taken responsibility): it returns only once the ``outbound_queue`` row is committed
with the message: an encrypted message of at most `postkeep.store.blobs.INLINE_MAX` octets in
the row itself (``data``, migration 11: no file, and group-committed with other writes), a
larger one as a blob file on disk first (written, fsync'd, renamed, directory fsync'd —
`postkeep.store.blobs`; outside the transaction, removed again if the transaction fails).

Encryption at rest: each queued message is encrypted (chunked AES-256-GCM, as mailbox messages)
under a fresh content key, wrapped with the instance's "queue" data key (AAD = queue id + blob id),
which is itself wrapped by the master key in the ``meta`` table (`SqlStoreBase._system_key`).

The delivery workers (`postkeep.queue`) claim due entries (`claim_outbound`: one UPDATE ...
RETURNING over a sub-select, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that concurrent
workers of several processes or nodes never get the same entry; on SQLite the write lock
serialises claims), record each recipient's outcome as soon as the remote server gave it
(`update_outbound`: the window in which a crash makes a delivered message go out again is one
commit), and queue their notices (DSNs) in the commit that records what they report.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import DsnRecipient, Envelope, QueueEntry, QueueNotice, QueueRecipient
from postkeep.store.blobs import new_blob_id
from postkeep.store.crypto import (
    decrypt_blob,
    encrypt_blob,
    encrypt_stream,
    encrypted_size,
    new_key,
    outbound_key_context,
    unwrap_key,
    wrap_key,
)
from postkeep.store.spool import MessageData, SpooledText
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import outbound_queue

_MAX_QUEUE_ID = 64

_ENTRY_COLS = (
    outbound_queue.c.id,
    outbound_queue.c.queue_id,
    outbound_queue.c.blob_id,
    outbound_queue.c.size,
    outbound_queue.c.mail_from,
    outbound_queue.c.recipients,
    outbound_queue.c.ret,
    outbound_queue.c.envid,
    outbound_queue.c.body,
    outbound_queue.c.smtputf8,
    outbound_queue.c.created,
    outbound_queue.c.next_attempt,
    outbound_queue.c.attempts,
    outbound_queue.c.last_error,
    outbound_queue.c.held,
    outbound_queue.c.lease_owner,
    outbound_queue.c.lease_until,
    outbound_queue.c.delay_notified,
    outbound_queue.c.requiretls,
)
_RECIPIENT_KEYS = ("address", "notify", "orcpt", "status", "reply", "remote", "updated")


def _recipients_json(recipients: Sequence[DsnRecipient | QueueRecipient]) -> str:
    return json.dumps(
        [
            {k: v for k in _RECIPIENT_KEYS if (v := getattr(r, k, None)) is not None}
            | {"status": getattr(r, "status", "pending")}
            for r in recipients
        ]
    )


def _entry(r: Sequence[Any]) -> QueueEntry:
    rcpts = tuple(
        QueueRecipient(**{k: d[k] for k in _RECIPIENT_KEYS if k in d}) for d in json.loads(r[5])
    )
    return QueueEntry(
        r[0], r[1], r[2], r[3], r[4], rcpts, r[6], r[7], r[8], bool(r[9]), r[10], r[11], r[12],
        r[13], bool(r[14]), r[15], r[16], bool(r[17]), bool(r[18]),
    )


class OutboundQueueMixin(SqlStoreBase):
    """Outbound queue methods of `SqlStore` (see the module docstring)."""

    async def enqueue_outbound(
        self, envelope: Envelope, recipients: Sequence[DsnRecipient], data: MessageData
    ) -> str:
        """Queue `data` for the remote `recipients`; returns the queue id once durable.
        `data` in memory or spooled is encrypted as it is written, a chunk at a time.

        The queue id is `envelope.queue_id` (a fresh one if empty); AlreadyExists if an entry with
        that id is queued already. Cancelling the caller does not withdraw a queued write.
        """
        self._check_open()
        row, blob_id, content_key = self._new_entry(envelope, recipients, len(data))
        queue_id = row["queue_id"]

        def fn(conn: Connection) -> str:
            _insert_entry(conn, row)
            return queue_id

        if encrypted_size(len(data)) <= self.inline_max and not isinstance(data, SpooledText):
            row["data"] = encrypt_blob(content_key, data)  # in the row: no file, no fsync
            return await self._write(fn)

        def prepare() -> None:  # writer thread, before the transaction
            self._blobs.write(blob_id, encrypt_stream(content_key, data))

        def undo() -> None:
            self._blobs.delete(blob_id)

        return await self._write(fn, prepare=prepare, undo=undo)

    def _new_entry(
        self, envelope: Envelope, recipients: Sequence[DsnRecipient], size: int
    ) -> tuple[dict[str, Any], str, bytes]:
        """The row of a new entry, its blob id and its content key."""
        if not recipients:
            raise StoreError("an outbound message needs at least one recipient")
        queue_id = envelope.queue_id or secrets.token_hex(8).upper()
        if len(queue_id) > _MAX_QUEUE_ID or not queue_id.isprintable():
            raise StoreError(f"invalid queue id {queue_id!r}")
        blob_id = new_blob_id()
        content_key = new_key()
        now = envelope.received_at or time.time()  # queued as it arrived, due at once
        row = {
            "queue_id": queue_id,
            "blob_id": blob_id,
            "content_key": wrap_key(
                self._queue_key, content_key, outbound_key_context(queue_id, blob_id)
            ),
            "size": size,
            "mail_from": envelope.mail_from,
            "recipients": _recipients_json(recipients),
            "ret": envelope.ret,
            "envid": envelope.envid,
            "body": envelope.body,
            "smtputf8": envelope.smtputf8,
            "requiretls": envelope.requiretls,
            "created": now,
            "next_attempt": now,
            "attempts": 0,
            "last_error": None,
        }
        return row, blob_id, content_key

    async def list_outbound(self) -> list[QueueEntry]:
        """Every queue entry, the next due first (by ``next_attempt``, then id)."""
        q = select(*_ENTRY_COLS).order_by(outbound_queue.c.next_attempt, outbound_queue.c.id)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [_entry(r) for r in rows]

    async def read_outbound(self, queue_id: str) -> bytes:
        """The decrypted queued message (every chunk authenticated); NotFound if not queued."""
        t = outbound_queue.c
        q = select(t.blob_id, t.content_key, t.data).where(t.queue_id == queue_id)

        def fn(conn: Connection) -> bytes:
            row = conn.execute(q).first()
            if row is None:
                raise NotFound(f"queue id {queue_id} is not queued")
            blob_id, wrapped, inline = row
            context = outbound_key_context(queue_id, blob_id)
            key = unwrap_key(self._queue_key, bytes(wrapped), context)
            blob = bytes(inline) if inline is not None else self._blobs.read(blob_id)
            return decrypt_blob(blob, key)

        return await self._read(fn)

    async def get_outbound(self, queue_id: str) -> QueueEntry:
        q = select(*_ENTRY_COLS).where(outbound_queue.c.queue_id == queue_id)
        row = await self._read(lambda conn: conn.execute(q).first())
        if row is None:
            raise NotFound(f"queue id {queue_id} is not queued")
        return _entry(row)

    async def claim_outbound(
        self, owner: str, now: float, lease: float, limit: int, queue_id: str | None = None
    ) -> list[QueueEntry]:
        t = outbound_queue.c
        pick = select(t.id).where(
            ~t.held, or_(t.lease_until.is_(None), t.lease_until < now)
        )
        if queue_id is None:
            pick = pick.where(t.next_attempt <= now).order_by(t.next_attempt, t.id).limit(limit)
        else:
            pick = pick.where(t.queue_id == queue_id)
        if not self._sqlite:
            pick = pick.with_for_update(skip_locked=True)
        claim = (
            update(outbound_queue)
            .where(t.id.in_(pick.scalar_subquery()))
            .values(lease_owner=owner, lease_until=now + lease)
            .returning(*_ENTRY_COLS)
        )
        rows = await self._write(lambda conn: conn.execute(claim).all(), durable=False)
        return sorted((_entry(r) for r in rows), key=lambda e: (e.next_attempt, e.id))

    async def release_outbound_claims(self, owner_prefix: str) -> int:
        t = outbound_queue.c
        q = (
            update(outbound_queue)
            .where(t.lease_owner.startswith(owner_prefix, autoescape=True))
            .values(lease_owner=None, lease_until=None)
        )
        return await self._write(lambda conn: conn.execute(q).rowcount)

    async def update_outbound(
        self,
        entry_id: int,
        owner: str,
        recipients: Sequence[QueueRecipient],
        *,
        reschedule: float | None = None,
        last_error: str | None = None,
        delay_notified: bool = False,
        notices: Sequence[QueueNotice] = (),
    ) -> bool:
        self._check_open()
        t = outbound_queue.c
        new = [(self._new_entry(n.envelope, n.envelope.recipients, len(n.data)), n.data)
               for n in notices]
        files = []
        for (row, blob_id, key), data in new:
            if encrypted_size(len(data)) <= self.inline_max:
                row["data"] = encrypt_blob(key, data)
            else:
                files.append((blob_id, key, data))
        removed: list[str] = []

        def prepare() -> None:
            for blob_id, key, data in files:
                self._blobs.write(blob_id, encrypt_stream(key, data))

        def undo() -> None:
            for blob_id, _key, _data in files:
                self._blobs.delete(blob_id)

        def fn(conn: Connection) -> bool:
            row = conn.execute(
                select(t.recipients, t.blob_id, t.attempts, t.data.is_(None)).where(
                    t.id == entry_id, t.lease_owner == owner
                )
            ).first()
            if row is None:
                raise _ClaimLost  # undo: the notices' blobs go too
            by_address = {r.address: r for r in recipients}
            merged = [
                by_address.get(d["address"])
                or QueueRecipient(**{k: d[k] for k in _RECIPIENT_KEYS if k in d})
                for d in json.loads(row[0])
            ]
            for (entry_row, _blob_id, _key), _data in new:
                _insert_entry(conn, entry_row)
            here = outbound_queue.c.id == entry_id
            if reschedule is not None and all(r.status != "pending" for r in merged):
                conn.execute(delete(outbound_queue).where(here))
                if row[3]:  # a file (an inline message went with its row)
                    removed.append(row[1])
                return True
            values: dict[str, Any] = {"recipients": _recipients_json(merged)}
            if delay_notified:
                values["delay_notified"] = True
            if reschedule is not None:
                values |= {"next_attempt": reschedule, "attempts": row[2] + 1,
                           "last_error": last_error, "lease_owner": None, "lease_until": None}
            conn.execute(update(outbound_queue).where(here).values(**values))
            return True

        def after(_done: bool) -> None:
            for blob_id in removed:
                self._blobs.delete(blob_id)

        try:
            if files:
                return await self._write(fn, after, prepare=prepare, undo=undo)
            return await self._write(fn, after)  # no file work: group-committed with others
        except _ClaimLost:
            return False

    async def hold_outbound(self, queue_id: str, held: bool) -> None:
        q = update(outbound_queue).where(outbound_queue.c.queue_id == queue_id).values(held=held)
        if not await self._write(lambda conn: conn.execute(q).rowcount):
            raise NotFound(f"queue id {queue_id} is not queued")

    async def retry_outbound(self, queue_id: str | None, now: float) -> int:
        q = update(outbound_queue).values(next_attempt=now)
        if queue_id is not None:
            q = q.where(outbound_queue.c.queue_id == queue_id)
        return await self._write(lambda conn: conn.execute(q).rowcount)

    async def delete_outbound(self, queue_id: str) -> None:
        t = outbound_queue.c
        removed: list[str] = []

        def fn(conn: Connection) -> None:
            row = conn.execute(
                select(t.blob_id, t.data.is_(None)).where(t.queue_id == queue_id)).first()
            if row is None:
                raise NotFound(f"queue id {queue_id} is not queued")
            conn.execute(delete(outbound_queue).where(t.queue_id == queue_id))
            if row[1]:
                removed.append(row[0])

        await self._write(fn, lambda _none: self._blobs.delete_many(removed))


class _ClaimLost(StoreError):
    """The entry is gone or claimed by another worker: the transaction is rolled back."""


def _insert_entry(conn: Connection, row: dict[str, Any]) -> None:
    queue_id = row["queue_id"]
    exists = select(outbound_queue.c.id).where(outbound_queue.c.queue_id == queue_id)
    if conn.execute(exists).first() is not None:
        raise AlreadyExists(f"queue id {queue_id} is queued already")
    try:
        conn.execute(insert(outbound_queue).values(**row))
    except sa_exc.IntegrityError:
        raise AlreadyExists(f"queue id {queue_id} is queued already") from None
