"""Mailbox and message operations of `postkeep.store.sql.store.SqlStore` that IMAP needs: its
part of `postkeep.store.api.MailStore`, whose result types (and `DELIMITER`, `OverQuota`) live
there.

Snapshots of a mailbox (UIDs in order), messages by UID range, changes since a MODSEQ, counts for
STATUS; flag changes (RFC 9051 §6.4.6, with CONDSTORE's UNCHANGEDSINCE, RFC 7162 §3.1.3),
EXPUNGE (§6.4.3, logging each expunged UID for QRESYNC, RFC 7162 §3.2.10), COPY and MOVE (§6.4.7,
RFC 6851) with UIDPLUS results (RFC 4315), APPEND (§6.3.12) through the group-commit writer, and
CREATE / DELETE / RENAME / SUBSCRIBE (§6.3.4-§6.3.7) on names with the hierarchy delimiter "/".

MODSEQ: every write that changes messages takes ONE new value from ``mailboxes.highestmodseq``
(``UPDATE … RETURNING`` under the row lock) and gives it to every message it changed — RFC 7162
§3.1 asks only that it be greater than any earlier one. Quota usage (``accounts.used_bytes``)
changes in the same transaction as the rows, so IMAP and SMTP see the same numbers. Events are
published on the bus after the commit, from the caller's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, insert, or_, select, update

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.mime.summary import summarize
from postkeep.store.api import (
    DELIMITER,
    Changes,
    CopyResult,
    Flag,
    FlagChange,
    Mailbox,
    MailboxCounts,
    MailboxEvent,
    MessageInfo,
    OverQuota,
    Snapshot,
)
from postkeep.store.crypto import (
    CryptoError,
    decrypt_blob,
    message_key_context,
    structure_context,
    unseal,
    unwrap_key,
)
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.prepared import BySize, Cursor
from postkeep.store.sql.rows import (
    MAILBOX_COLS,
    MESSAGE_UID_COLUMN,
    chunks,
    mailbox_from_row,
    mailbox_name,
    message_from_row,
)
from postkeep.store.sql.schema import (
    META_UIDVALIDITY,
    accounts,
    blobs,
    expunged,
    mailboxes,
    messages,
    meta,
    subscriptions,
)
from postkeep.store.sql.writer import UID_MAX

MAX_MAILBOX_NAME = 1000  # octets of UTF-8
MAX_MAILBOXES = 10_000  # per account
MAX_KEYWORDS = 64  # per message


def check_mailbox_name(name: str) -> str:
    """A mailbox name as stored, or StoreError: no empty levels, no control characters."""
    name = mailbox_name(name)
    if (
        not name
        or len(name.encode()) > MAX_MAILBOX_NAME
        or any(not level for level in name.split(DELIMITER))
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
        or "*" in name
        or "%" in name
    ):
        raise StoreError(f"invalid mailbox name {name!r}")
    return name


def _ranges_clause(ranges: Sequence[tuple[int, int]]) -> Any:
    return or_(*(messages.c.uid.between(lo, hi) for lo, hi in ranges))


def _flag_values(
    mode: str, flags: Flag, keywords: Sequence[str], row: MessageInfo
) -> tuple[int, str]:
    old_flags, old_kw = int(row.flags), list(row.keywords)
    if mode == "replace":
        return int(flags), " ".join(dict.fromkeys(keywords))
    lower = {k.lower() for k in keywords}
    if mode == "add":
        have = {k.lower() for k in old_kw}
        new_kw = old_kw + [k for k in dict.fromkeys(keywords) if k.lower() not in have]
        return old_flags | int(flags), " ".join(new_kw)
    return old_flags & ~int(flags), " ".join(k for k in old_kw if k.lower() not in lower)


def _rows_in(
    cur: Cursor,
    stmt: BySize,
    mailbox_id: int,
    ranges: Sequence[tuple[int, int]],
    uid_column: int,
) -> list[Any]:
    """Rows of `stmt` (ordered by UID, which is column `uid_column`) for the mailbox's UIDs in
    the inclusive `ranges`, 128 ranges per statement; ascending UID in all."""
    out: list[Any] = []
    for part in chunks(list(ranges), 128):
        sql, params = stmt(part)
        out += cur.all(sql, mid=mailbox_id, **params)
    if len(ranges) > 128:
        out.sort(key=lambda r: r[uid_column])
    return out


class MailboxOpsMixin(SqlStoreBase):
    """See the module docstring."""

    # -- reads -------------------------------------------------------------------------------------

    async def mailbox_snapshot(self, mailbox_id: int, *, keywords: bool = False) -> Snapshot:
        """The mailbox row and its UIDs in ascending order (and, if asked, the keywords in use),
        read in one transaction."""

        hot = self.hot

        def fn(cur: Cursor) -> Snapshot:
            row = cur.first(hot.mailbox, mid=mailbox_id)
            if row is None:
                raise NotFound("mailbox does not exist")
            uids = cur.column(hot.uids, mid=mailbox_id)
            used: dict[str, str] = {}
            if keywords:
                for text in cur.column(hot.keywords_used, mid=mailbox_id):
                    for k in text.split():
                        used.setdefault(k.lower(), k)
            return Snapshot(mailbox_from_row(row), uids, tuple(used.values()))

        return await self._read_raw(fn)

    async def mailbox_changes(self, mailbox_id: int, modseq: int) -> Changes:
        """See `Changes`; NotFound if the mailbox is gone."""
        hot = self.hot

        def fn(cur: Cursor) -> Changes:
            row = cur.first(hot.mailbox, mid=mailbox_id)
            if row is None:
                raise NotFound("mailbox does not exist")
            box = mailbox_from_row(row)
            if box.highestmodseq <= modseq:
                return Changes(box, [], [])
            rows = cur.all(hot.changed_since, mid=mailbox_id, modseq=modseq)
            changed = [message_from_row(r) for r in rows]
            gone = cur.column(hot.expunged_since, mid=mailbox_id, modseq=modseq)
            return Changes(box, changed, gone)

        return await self._read_raw(fn)

    async def claim_recent(self, mailbox_id: int) -> tuple[int, int]:
        """Take the mailbox's \\Recent messages for one session (RFC 3501 §2.3.2): returns
        (first, end) — UIDs in [first, end) are recent to the caller and to no one else."""

        hot = self.hot
        row = await self._read_raw(lambda cur: cur.first(hot.recent, mid=mailbox_id))
        if row is None:
            raise NotFound("mailbox does not exist")
        if int(row[1]) <= int(row[0]):  # nothing new since the last claim: no write
            return int(row[0]), int(row[1])

        def fn(conn: Connection) -> tuple[int, int]:
            cur = self._cursor(conn)
            self._lock_mailboxes(cur, mailbox_id)
            row = cur.first(hot.recent, mid=mailbox_id)
            if row is None:
                raise NotFound("mailbox does not exist")
            first, end = int(row[0]), int(row[1])
            if end > first:
                cur.execute(hot.take_recent, mid=mailbox_id, end=end)
            return first, end

        # \Recent is advisory (RFC 9051 dropped it): no fsync of its own (see `_write`)
        return await self._write(fn, durable=False)

    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        hot = self.hot
        row = await self._read_raw(lambda cur: cur.first(hot.mailbox, mid=mailbox_id))
        return mailbox_from_row(row) if row else None

    async def messages_by_uid(
        self, mailbox_id: int, ranges: Sequence[tuple[int, int]]
    ) -> list[MessageInfo]:
        """Messages whose UID falls in the inclusive `ranges`, ascending UID order."""
        if not ranges:
            return []

        return await self._read_raw(lambda cur: self._messages_in(cur, mailbox_id, ranges))

    def _messages_in(
        self, cur: Cursor, mailbox_id: int, ranges: Sequence[tuple[int, int]]
    ) -> list[MessageInfo]:
        """The mailbox's messages with a UID in the inclusive `ranges`, ascending UID."""
        return [
            message_from_row(r)
            for r in _rows_in(cur, self.hot.messages_in, mailbox_id, ranges, MESSAGE_UID_COLUMN)
        ]

    async def message_flags(
        self, mailbox_id: int, ranges: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int, str, int]]:
        """(uid, flag bits, keywords, modseq) of the messages whose UID falls in the inclusive
        `ranges`, ascending UID: the rows of a flags-only FETCH (a client's resync), without
        building a `MessageInfo` each."""
        if not ranges:
            return []
        hot = self.hot
        return await self._read_raw(lambda cur: _rows_in(cur, hot.flags_in, mailbox_id, ranges, 0))

    async def first_unseen_uid(self, mailbox_id: int) -> int | None:
        """The lowest UID without \\Seen (SELECT's UNSEEN, RFC 3501 §6.3.1), None if none."""
        hot = self.hot
        uid = await self._read_raw(lambda cur: cur.scalar(hot.first_unseen, mid=mailbox_id))
        return None if uid is None else int(uid)

    async def changed_since(self, mailbox_id: int, modseq: int) -> list[MessageInfo]:
        """Messages with MODSEQ > `modseq` (RFC 7162 §3.1.4.1 CHANGEDSINCE), ascending UID."""
        hot = self.hot
        rows = await self._read_raw(
            lambda cur: cur.all(hot.changed_since, mid=mailbox_id, modseq=modseq)
        )
        return [message_from_row(r) for r in rows]

    async def expunged_since(self, mailbox_id: int, modseq: int) -> list[int]:
        """UIDs expunged after `modseq` (RFC 7162 §3.2.10 VANISHED), ascending."""
        hot = self.hot
        return await self._read_raw(
            lambda cur: cur.column(hot.expunged_since, mid=mailbox_id, modseq=modseq)
        )

    async def mailbox_counts(self, mailbox_id: int) -> MailboxCounts:
        seen, deleted = int(Flag.SEEN), int(Flag.DELETED)
        hot = self.hot
        n, seen_sum, deleted_sum, size, recent = await self._read_raw(
            lambda cur: cur.first(hot.counts, mid=mailbox_id)
        )
        return MailboxCounts(
            int(n),
            int(n) - int(seen_sum) // seen,
            int(deleted_sum) // deleted,
            int(size),
            int(recent),
        )

    async def message_summaries(
        self, account_id: int, message_ids: Sequence[int]
    ) -> dict[int, bytes]:
        """Each message's MIME summary (`postkeep.mime.summary`), unsealed; computed from the
        message itself for blobs stored before migration 4. Missing ids are left out."""

        hot = self.hot

        def fn(cur: Cursor) -> dict[int, bytes]:
            acc = cur.first(hot.account_keys, aid=account_id)
            if acc is None:
                raise NotFound("account does not exist")
            data_key = self._data_key(acc[0], bytes(acc[1]))
            out: dict[int, bytes] = {}
            for part in chunks(list(message_ids), 256):
                stmt, params = hot.structures(part)
                for mid, blob_id, wrapped, sealed in cur.all(
                    stmt, aid=account_id, **params
                ):
                    key = unwrap_key(
                        data_key, bytes(wrapped), message_key_context(account_id, blob_id)
                    )
                    if sealed is None:  # stored before migration 4, so a file
                        out[mid] = summarize(decrypt_blob(self._blob(cur, blob_id), key))
                        continue
                    try:
                        out[mid] = unseal(key, bytes(sealed), structure_context(blob_id))
                    except CryptoError:
                        raise StoreError(f"message {mid}: damaged structure record") from None
            return out

        return await self._read_raw(fn)

    # -- flags and expunge -------------------------------------------------------------------------

    def _next_modseq(
        self, conn: Connection, mailbox_id: int, uid_count: int = 0
    ) -> tuple[int, int]:
        """Take one new MODSEQ (and `uid_count` UIDs) from the mailbox: (modseq, first uid)."""
        row = self._cursor(conn).first(self.hot.next_modseq, mid=mailbox_id, n=uid_count)
        if row is None:
            raise NotFound("mailbox does not exist")
        if row[1] - 1 > UID_MAX:
            raise StoreError("mailbox has run out of UIDs")
        return int(row[0]), int(row[1]) - uid_count

    def _lock_mailboxes(self, cur: Cursor, *mailbox_ids: int) -> None:
        """PostgreSQL: lock the mailbox rows (in id order) before a job reads what it will
        change, so that writers in other processes (IMAP workers) run one after the other per
        mailbox: otherwise two STOREs both read the old flags and the second overwrites the
        first's, and two EXPUNGEs both remove (and log) the same messages. Under READ
        COMMITTED every later statement sees what the previous holder committed. SQLite's
        writers take turns on the whole database already."""
        if self._sqlite:
            return
        for mailbox_id in sorted(set(mailbox_ids)):
            cur.first(self.hot.lock_mailbox, mid=mailbox_id)

    async def set_flags(
        self,
        account_id: int,
        mailbox_id: int,
        uids: Sequence[tuple[int, int]],
        mode: str,
        flags: Flag,
        keywords: Sequence[str] = (),
        unchanged_since: int | None = None,
    ) -> FlagChange:
        """STORE: `mode` is "replace", "add" or "remove"; only messages whose flags really
        change get the new MODSEQ. With `unchanged_since`, messages whose MODSEQ is greater are
        left alone and reported in `modified` (RFC 7162 §3.1.3)."""
        if mode not in ("replace", "add", "remove"):
            raise StoreError(f"bad flag mode {mode!r}")
        if len(keywords) > MAX_KEYWORDS:
            raise StoreError("too many keywords")

        hot = self.hot

        def fn(conn: Connection) -> FlagChange:
            if not ranges:
                return FlagChange(())
            cur = self._cursor(conn)
            self._lock_mailboxes(cur, mailbox_id)
            rows = self._messages_in(cur, mailbox_id, ranges)
            updates: list[dict[str, Any]] = []
            modified: list[int] = []
            same: list[MessageInfo] = []
            for r in rows:
                if unchanged_since is not None and r.modseq > unchanged_since:
                    modified.append(r.uid)
                    continue
                new_flags, new_kw = _flag_values(mode, flags, keywords, r)
                if new_flags != r.flags or new_kw != " ".join(r.keywords):
                    updates.append({"msg": r.id, "f": new_flags, "k": new_kw})
                else:
                    same.append(r)
            if not updates:
                return FlagChange((), tuple(modified), tuple(same))
            modseq, _ = self._next_modseq(conn, mailbox_id)
            for u in updates:
                u["modseq"] = modseq
            cur.executemany(hot.set_message_flags, updates)
            by_id = {u["msg"]: u for u in updates}
            changed = tuple(
                replace(
                    r,
                    modseq=modseq,
                    flags=Flag(by_id[r.id]["f"]),
                    keywords=tuple(by_id[r.id]["k"].split()),
                )
                for r in rows
                if r.id in by_id
            )
            return FlagChange(changed, tuple(modified), tuple(same))

        ranges = list(uids)
        result = await self._write(fn, durable=False)
        for m in result.changed:
            self.events.publish(MailboxEvent(account_id, mailbox_id, "flags", m.uid, m.modseq))
        return result

    def _remove_rows(
        self, conn: Connection, mailbox_id: int, rows: Sequence[tuple[int, int, int, str]]
    ) -> list[str]:
        """Delete message rows (id, uid, size, blob id) of one mailbox, log their UIDs as
        expunged, release blobs and quota; returns the ids of the blob files now unreferenced
        (to delete after the commit)."""
        if not rows:
            return []
        hot, cur = self.hot, self._cursor(conn)
        modseq, _ = self._next_modseq(conn, mailbox_id)
        for part in chunks([r[0] for r in rows], 256):
            stmt, params = hot.delete_messages(part)
            cur.execute(stmt, **params)
        cur.executemany(
            hot.log_expunged, [{"mid": mailbox_id, "uid": r[1], "modseq": modseq} for r in rows]
        )
        account_id = cur.scalar(hot.mailbox_owner, mid=mailbox_id)
        cur.execute(hot.release_quota, aid=account_id, n=sum(r[2] for r in rows))
        refs: dict[str, int] = {}
        for r in rows:
            refs[r[3]] = refs.get(r[3], 0) + 1
        return self._release_blobs(cur, refs)

    def _release_blobs(self, cur: Cursor, refs: dict[str, int]) -> list[str]:
        """Drop `refs` (blob id -> references gone) from the blobs' refcounts and delete the
        rows of those no message uses any more; returns which of them are files (an inline
        blob went with its row)."""
        hot = self.hot
        cur.executemany(hot.unref_blob, [{"bid": b, "n": n} for b, n in sorted(refs.items())])
        dead: list[str] = []
        files: list[str] = []
        for part in chunks(sorted(refs), 256):
            stmt, params = hot.dead_blobs(part)
            for blob_id, is_file in cur.all(stmt, **params):
                dead.append(blob_id)
                if is_file:
                    files.append(blob_id)
        for part in chunks(dead, 256):  # the SMTP envelope record goes with its blob
            stmt, params = hot.delete_envelopes(part)
            cur.execute(stmt, **params)
            stmt, params = hot.delete_blobs(part)
            cur.execute(stmt, **params)
        return files

    async def expunge(
        self, account_id: int, mailbox_id: int, uids: Sequence[tuple[int, int]] | None = None
    ) -> list[int]:
        """Remove the messages flagged \\Deleted (only those in `uids` if given: UID EXPUNGE,
        RFC 4315 §2.1); returns the expunged UIDs, ascending."""

        hot = self.hot

        def fn(conn: Connection) -> tuple[list[int], list[str]]:
            cur = self._cursor(conn)
            self._lock_mailboxes(cur, mailbox_id)
            if uids is None:
                rows = cur.all(hot.deleted, mid=mailbox_id)
            else:
                rows = []
                for part in chunks(list(uids), 128):
                    stmt, params = hot.deleted_in(part)
                    rows += cur.all(stmt, mid=mailbox_id, **params)
                rows.sort(key=lambda r: r[1])
            return [r[1] for r in rows], self._remove_rows(conn, mailbox_id, rows)

        gone, _ = await self._write(fn, lambda res: self._delete_blobs_later(res[1]))
        for uid in gone:
            self.events.publish(MailboxEvent(account_id, mailbox_id, "expunge", uid))
        return gone

    # -- copy, move, append ------------------------------------------------------------------------

    async def copy_messages(
        self,
        account_id: int,
        source_id: int,
        uids: Sequence[tuple[int, int]],
        dest_id: int,
        *,
        move: bool = False,
    ) -> CopyResult:
        """COPY (or MOVE: copy and expunge from the source, one transaction). Copies share the
        blob; quota counts each copy (a MOVE's net change is zero). OverQuota on a COPY that
        would exceed it; NotFound if either mailbox is not the account's."""

        def fn(conn: Connection) -> tuple[CopyResult, list[int], int, list[str]]:
            acc = conn.execute(
                select(accounts.c.quota_bytes, accounts.c.used_bytes)
                .where(accounts.c.id == account_id)
                .with_for_update()
            ).first()
            self._lock_mailboxes(self._cursor(conn), source_id, dest_id)
            owners = conn.execute(
                select(mailboxes.c.id, mailboxes.c.uidvalidity).where(
                    mailboxes.c.id.in_([source_id, dest_id]), mailboxes.c.account_id == account_id
                )
            ).all()
            if acc is None or len({r[0] for r in owners}) != len({source_id, dest_id}):
                raise NotFound("mailbox does not exist")
            dest_validity = next(v for i, v in owners if i == dest_id)
            rows = (
                conn.execute(
                    select(messages)
                    .where(messages.c.mailbox_id == source_id, _ranges_clause(uids))
                    .order_by(messages.c.uid)
                ).all()
                if uids
                else []
            )
            if not rows:
                return CopyResult(dest_validity, ()), [], 0, []
            total = sum(r.size for r in rows)
            if not move and acc.quota_bytes and acc.used_bytes + total > acc.quota_bytes:
                raise OverQuota("quota exceeded")
            modseq, first = self._next_modseq(conn, dest_id, len(rows))
            now = time.time()
            conn.execute(
                insert(messages),
                [
                    {
                        "mailbox_id": dest_id,
                        "uid": first + i,
                        "modseq": modseq,
                        "blob_id": r.blob_id,
                        "content_key": r.content_key,
                        "size": r.size,
                        "internaldate": r.internaldate,
                        "flags": r.flags,
                        "keywords": r.keywords,
                        "savedate": now,
                    }
                    for i, r in enumerate(rows)
                ],
            )
            refs: dict[str, int] = {}
            for r in rows:
                refs[r.blob_id] = refs.get(r.blob_id, 0) + 1
            conn.execute(
                update(blobs)
                .where(blobs.c.id == bindparam("bid"))
                .values(refcount=blobs.c.refcount + bindparam("n")),
                [{"bid": b, "n": n} for b, n in sorted(refs.items())],
            )
            conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(used_bytes=accounts.c.used_bytes + total)
            )
            dead: list[str] = []
            if move:
                removed = [(r.id, r.uid, r.size, r.blob_id) for r in rows]
                dead = self._remove_rows(conn, source_id, removed)
            pairs = tuple((r.uid, first + i) for i, r in enumerate(rows))
            return CopyResult(dest_validity, pairs), [r.uid for r in rows], modseq, dead

        result, moved, modseq, _ = await self._write(
            fn, lambda res: self._delete_blobs_later(res[3])
        )
        for _, dst in result.pairs:
            self.events.publish(MailboxEvent(account_id, dest_id, "exists", dst, modseq))
        if move:
            for uid in moved:
                self.events.publish(MailboxEvent(account_id, source_id, "expunge", uid))
        return result

    # -- mailboxes ---------------------------------------------------------------------------------

    def _publish_mailboxes(self, account_id: int) -> None:
        self.events.publish(MailboxEvent(account_id, 0, "mailboxes"))

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None
    ) -> Mailbox:
        """CREATE (RFC 9051 §6.3.4): also creates missing superior names ("a/b/c" creates "a"
        and "a/b"). AlreadyExists if `name` exists."""
        name = check_mailbox_name(name)
        levels = name.split(DELIMITER)
        wanted = [DELIMITER.join(levels[: i + 1]) for i in range(len(levels))]

        def fn(conn: Connection) -> Mailbox:
            existing = set(
                conn.execute(
                    select(mailboxes.c.name).where(
                        mailboxes.c.account_id == account_id, mailboxes.c.name.in_(wanted)
                    )
                ).scalars()
            )
            if name in existing:
                raise AlreadyExists(f"mailbox {name} exists already")
            count = conn.execute(
                select(func.count()).where(mailboxes.c.account_id == account_id)
            ).scalar_one()
            missing = [w for w in wanted if w not in existing]
            if count + len(missing) > MAX_MAILBOXES:
                raise StoreError("too many mailboxes")
            validities = self._allocate_uidvalidity(conn, len(missing))
            for w, v in zip(missing, validities, strict=True):
                conn.execute(
                    insert(mailboxes).values(
                        account_id=account_id,
                        name=w,
                        special_use=special_use if w == name else None,
                        uidvalidity=v,
                        uidnext=1,
                        highestmodseq=1,
                    )
                )
            row = conn.execute(
                select(*MAILBOX_COLS).where(
                    mailboxes.c.account_id == account_id, mailboxes.c.name == name
                )
            ).one()
            return mailbox_from_row(row)

        box = await self._write(fn)
        self._publish_mailboxes(account_id)
        return box

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        """DELETE (RFC 9051 §6.3.5): refused for INBOX and, as Dovecot does, for a mailbox that
        has children. Its messages go (quota released, blobs freed after the commit)."""
        name = mailbox_name(name)
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")

        def fn(conn: Connection) -> list[str]:
            box = conn.execute(
                select(mailboxes.c.id).where(
                    mailboxes.c.account_id == account_id, mailboxes.c.name == name
                )
            ).scalar()
            if box is None:
                raise NotFound(f"mailbox {name} does not exist")
            self._lock_mailboxes(self._cursor(conn), box)
            child = conn.execute(
                select(mailboxes.c.id).where(
                    mailboxes.c.account_id == account_id,
                    mailboxes.c.name.startswith(name + DELIMITER, autoescape=True),
                )
            ).first()
            if child is not None:
                raise StoreError(f"mailbox {name} has children, delete them first")
            rows = conn.execute(
                select(messages.c.id, messages.c.uid, messages.c.size, messages.c.blob_id).where(
                    messages.c.mailbox_id == box
                )
            ).all()
            dead = self._remove_rows(conn, box, rows)
            conn.execute(delete(expunged).where(expunged.c.mailbox_id == box))
            conn.execute(delete(mailboxes).where(mailboxes.c.id == box))
            return dead

        await self._write(fn, self._delete_blobs_later)
        self._publish_mailboxes(account_id)

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """RENAME (RFC 9051 §6.3.6), children included; superior names of `new` are created.
        Renaming INBOX moves its messages to a new mailbox and leaves INBOX empty."""
        old, new = mailbox_name(old), check_mailbox_name(new)
        if new == "INBOX" or new == old or new.startswith(old + DELIMITER):
            raise StoreError(f"cannot rename {old} to {new}")

        def fn(conn: Connection) -> None:
            rows = conn.execute(
                select(mailboxes.c.id, mailboxes.c.name).where(
                    mailboxes.c.account_id == account_id,
                    or_(
                        mailboxes.c.name == old,
                        and_(
                            old != "INBOX",
                            mailboxes.c.name.startswith(old + DELIMITER, autoescape=True),
                        ),
                    ),
                )
            ).all()
            if not any(n == old for _, n in rows):
                raise NotFound(f"mailbox {old} does not exist")
            self._lock_mailboxes(self._cursor(conn), *(i for i, _ in rows))
            targets = {i: new + n[len(old) :] for i, n in rows}
            names = set(targets.values())
            levels = new.split(DELIMITER)
            parents = [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]
            clash = (
                conn.execute(
                    select(mailboxes.c.name).where(
                        mailboxes.c.account_id == account_id,
                        mailboxes.c.name.in_(sorted(names | set(parents))),
                    )
                )
                .scalars()
                .all()
            )
            if set(clash) & names:
                raise AlreadyExists(f"mailbox {new} exists already")
            missing = [p for p in parents if p not in set(clash)]
            for p, v in zip(missing, self._allocate_uidvalidity(conn, len(missing)), strict=True):
                conn.execute(
                    insert(mailboxes).values(
                        account_id=account_id,
                        name=p,
                        special_use=None,
                        uidvalidity=v,
                        uidnext=1,
                        highestmodseq=1,
                    )
                )
            subs = (
                conn.execute(
                    select(subscriptions.c.name).where(
                        subscriptions.c.account_id == account_id,
                        subscriptions.c.name.in_([n for _, n in rows]),
                    )
                )
                .scalars()
                .all()
            )
            if subs:  # subscriptions follow the renamed mailboxes, as Dovecot does
                moved = [new + n[len(old) :] for n in subs]
                conn.execute(
                    delete(subscriptions).where(
                        subscriptions.c.account_id == account_id,
                        subscriptions.c.name.in_([*subs, *moved]),
                    )
                )
                conn.execute(
                    insert(subscriptions), [{"account_id": account_id, "name": n} for n in moved]
                )
            if old == "INBOX":
                self._rename_inbox(conn, account_id, rows[0][0], new)
                return
            conn.execute(
                update(mailboxes)
                .where(mailboxes.c.id == bindparam("mbid"))
                .values(name=bindparam("newname")),
                [{"mbid": i, "newname": n} for i, n in targets.items()],
            )

        await self._write(fn)
        self._publish_mailboxes(account_id)

    def _rename_inbox(self, conn: Connection, account_id: int, inbox_id: int, new: str) -> None:
        [validity] = self._allocate_uidvalidity(conn, 1)
        inbox = conn.execute(
            select(mailboxes.c.uidnext, mailboxes.c.highestmodseq).where(mailboxes.c.id == inbox_id)
        ).one()
        new_id = conn.execute(
            insert(mailboxes)
            .values(
                account_id=account_id,
                name=new,
                special_use=None,
                uidvalidity=validity,
                uidnext=inbox.uidnext,
                highestmodseq=inbox.highestmodseq,
            )
            .returning(mailboxes.c.id)
        ).scalar_one()
        rows = (
            conn.execute(select(messages.c.uid).where(messages.c.mailbox_id == inbox_id))
            .scalars()
            .all()
        )
        conn.execute(
            update(messages).where(messages.c.mailbox_id == inbox_id).values(mailbox_id=new_id)
        )
        if rows:
            modseq, _ = self._next_modseq(conn, inbox_id)
            conn.execute(
                insert(expunged),
                [{"mailbox_id": inbox_id, "uid": u, "modseq": modseq} for u in rows],
            )

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7-8). A name may be subscribed whether or not
        its mailbox exists, and stays subscribed when the mailbox is deleted; NotFound when
        unsubscribing a name that is not subscribed."""
        name = check_mailbox_name(name)
        key = (subscriptions.c.account_id == account_id) & (subscriptions.c.name == name)

        def fn(conn: Connection) -> None:
            present = conn.execute(select(subscriptions.c.name).where(key)).first() is not None
            if subscribed and not present:
                conn.execute(insert(subscriptions).values(account_id=account_id, name=name))
            elif not subscribed:
                if not present:
                    raise NotFound(f"{name} is not subscribed")
                conn.execute(delete(subscriptions).where(key))

        await self._write(fn)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        hot = self.hot
        return await self._read_raw(lambda cur: cur.column(hot.subscriptions_of, aid=account_id))

    @staticmethod
    def _allocate_uidvalidity(conn: Connection, n: int) -> list[int]:
        """n fresh UIDVALIDITY values: an instance-wide counter kept >= the time in seconds."""
        now = int(time.time())
        stmt = (
            update(meta)
            .where(meta.c.name == META_UIDVALIDITY)
            .values(number=case((meta.c.number + n > now, meta.c.number + n), else_=now))
            .returning(meta.c.number)
        )
        last = int(conn.execute(stmt).scalar_one())
        if last > UID_MAX:
            raise StoreError("UIDVALIDITY counter exhausted")
        return list(range(last - n + 1, last + 1))

