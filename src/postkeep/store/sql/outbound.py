"""The durable outbound queue in the SQL store (authenticated submission to remote recipients).

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).

`enqueue_outbound` keeps the promise `deliver` keeps (RFC 5321 §6.1: a ``250`` after DATA means the
server has taken responsibility): it returns only once the message blob is on disk (written,
fsync'd, renamed, directory fsync'd — `postkeep.store.blobs`) and the ``outbound_queue`` row is
committed. Both steps run on the store's single writer thread, in queue order: the blob is written
first, outside the transaction, and removed again if the transaction fails.

Encryption at rest: each queued message is encrypted (chunked AES-256-GCM, as mailbox messages)
under a fresh content key, wrapped with the instance's "queue" data key (AAD = queue id + blob id),
which is itself wrapped by the master key in the ``meta`` table (`SqlStoreBase._system_key`).

The delivery workers (later) pick entries by ``next_attempt`` and record per-recipient ``status``,
``attempts`` and ``last_error``; this module only adds, lists and reads entries.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import exc as sa_exc

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import DsnRecipient, Envelope, QueueEntry, QueueRecipient
from postkeep.store.blobs import new_blob_id
from postkeep.store.crypto import (
    decrypt_blob,
    encrypt_stream,
    new_key,
    outbound_key_context,
    unwrap_key,
    wrap_key,
)
from postkeep.store.spool import MessageData
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
)


def _recipients_json(recipients: Sequence[DsnRecipient]) -> str:
    return json.dumps(
        [
            {"address": r.address, "notify": r.notify, "orcpt": r.orcpt, "status": "pending"}
            for r in recipients
        ]
    )


def _entry(r: Sequence[Any]) -> QueueEntry:
    rcpts = tuple(
        QueueRecipient(d["address"], d.get("notify"), d.get("orcpt"), d.get("status", "pending"))
        for d in json.loads(r[5])
    )
    return QueueEntry(
        r[0], r[1], r[2], r[3], r[4], rcpts, r[6], r[7], r[8], bool(r[9]), r[10], r[11], r[12],
        r[13],
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
        if not recipients:
            raise StoreError("an outbound message needs at least one recipient")
        queue_id = envelope.queue_id or secrets.token_hex(8).upper()
        if len(queue_id) > _MAX_QUEUE_ID or not queue_id.isprintable():
            raise StoreError(f"invalid queue id {queue_id!r}")
        blob_id = new_blob_id()
        content_key = new_key()
        now = time.time()
        row = {
            "queue_id": queue_id,
            "blob_id": blob_id,
            "content_key": wrap_key(
                self._queue_key, content_key, outbound_key_context(queue_id, blob_id)
            ),
            "size": len(data),
            "mail_from": envelope.mail_from,
            "recipients": _recipients_json(recipients),
            "ret": envelope.ret,
            "envid": envelope.envid,
            "body": envelope.body,
            "smtputf8": envelope.smtputf8,
            "created": now,
            "next_attempt": now,
            "attempts": 0,
            "last_error": None,
        }

        def prepare() -> None:  # writer thread, before the transaction
            self._blobs.write(blob_id, encrypt_stream(content_key, data))

        def undo() -> None:
            self._blobs.delete(blob_id)

        def fn(conn: Connection) -> str:
            exists = select(outbound_queue.c.id).where(outbound_queue.c.queue_id == queue_id)
            if conn.execute(exists).first() is not None:
                raise AlreadyExists(f"queue id {queue_id} is queued already")
            try:
                conn.execute(insert(outbound_queue).values(**row))
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"queue id {queue_id} is queued already") from None
            return queue_id

        return await self._write(fn, prepare=prepare, undo=undo)

    async def list_outbound(self) -> list[QueueEntry]:
        """Every queue entry, the next due first (by ``next_attempt``, then id)."""
        q = select(*_ENTRY_COLS).order_by(outbound_queue.c.next_attempt, outbound_queue.c.id)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [_entry(r) for r in rows]

    async def read_outbound(self, queue_id: str) -> bytes:
        """The decrypted queued message (every chunk authenticated); NotFound if not queued."""
        q = select(outbound_queue.c.blob_id, outbound_queue.c.content_key).where(
            outbound_queue.c.queue_id == queue_id
        )

        def fn(conn: Connection) -> bytes:
            row = conn.execute(q).first()
            if row is None:
                raise NotFound(f"queue id {queue_id} is not queued")
            blob_id, wrapped = row
            context = outbound_key_context(queue_id, blob_id)
            key = unwrap_key(self._queue_key, bytes(wrapped), context)
            return decrypt_blob(self._blobs.read(blob_id), key)

        return await self._read(fn)
