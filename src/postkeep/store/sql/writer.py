"""The store's single writer thread, with group commit for deliveries.

All writes of a `SqlStore` run here, one at a time, fed by a queue (design: "store" brief):

* Deliveries are *group-committed*: the writer takes everything pending (up to `max_batch`
  deliveries / `max_batch_bytes`), encrypts every message under a fresh content key, writes
  the blobs larger than `inline_max` as files (`BlobFiles.write_many`: fsync each file, then
  each touched directory once), and then inserts all the rows — the smaller blobs with them,
  in ``blobs.data`` — in ONE transaction: one WAL fsync on SQLite, one commit round-trip on
  PostgreSQL for the whole batch, which is all an inline blob costs to make durable. Only
  after the commit are the callers' futures resolved (on their event loops, via
  ``call_soon_threadsafe``) and the ``exists`` MailboxEvents published: `deliver()` returning
  means durable, the promise behind SMTP's ``250`` after DATA (RFC 5321
  §4.1.1.4, §6.1). If a batch transaction fails, its deliveries are retried one by one, so one
  bad delivery (e.g. an account removed meanwhile) fails alone; a failed delivery's blob file
  is removed.
* Allocation (RFC 9051 §2.3.1.1 UIDs, RFC 7162 §3.1 MODSEQ): per batch, one ``UPDATE mailboxes
  SET uidnext = uidnext + n, highestmodseq = highestmodseq + n … RETURNING`` per target mailbox
  reserves a contiguous UID and MODSEQ range under the row lock, and one ``UPDATE accounts SET
  used_bytes = used_bytes + n … RETURNING`` per account adds the quota usage (same transaction)
  and yields the account's wrapped data key. Rows are locked in sorted order, so several writer
  processes on PostgreSQL neither deadlock nor hand out a UID twice.
* Files are a stage of their own: deliveries pass through a *files thread* first, which
  prepares them (summary, encryption) and writes their blob files durably in batches before queuing
  them for the writer, and the blob deletions that follow expunges (`defer_files`) run there
  too. The writer thread then spends its time on transactions only, which is what every other
  write waits for (and, with IMAP worker processes on SQLite, what the processes take turns
  on).
* Any other write is a `_Job`: a function run in a transaction — jobs queued together share one
  transaction, each in its own SAVEPOINT, so a burst of IMAP flag changes costs one commit —
  with an optional action after the commit (e.g. deleting blob files once their rows are
  gone), and optionally a `prepare` step run first, outside the transaction (e.g. writing
  and fsyncing the blob of an outbound queue entry), with its `undo` run if the transaction
  then fails; such a job runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy import exc as sa_exc

from postkeep.errors import NotFound, StoreError
from postkeep.mime.summary import summarize
from postkeep.store.api import (
    Delivered,
    DeliveryResult,
    LocalDelivery,
    MailboxEvent,
)
from postkeep.store.blobs import INLINE_MAX, BlobData, BlobFiles, new_blob_id
from postkeep.store.crypto import (
    encrypt_stream,
    encrypted_size,
    message_key_context,
    new_key,
    seal,
    structure_context,
    wrap_key,
)
from postkeep.store.events import EventBus
from postkeep.store.sql.prepared import Cursor, Prepared
from postkeep.store.sql.rows import filter_insert, filter_row
from postkeep.store.sql.schema import accounts, blobs, envelopes, mailboxes, messages, quarantine

log = logging.getLogger("postkeep.store")

UID_MAX = 2**32 - 1


@dataclass(slots=True)
class DeliveryStats:
    """Group-commit counters (observability; also what the tests check batching with)."""

    batches: int = 0
    deliveries: int = 0
    largest_batch: int = 0
    batch_failures: int = 0
    jobs: int = 0  # other writes (flags, expunges, admin...)
    relaxed_commits: int = 0  # transactions committed without waiting for the disk
    retries: int = 0  # transactions run again after PostgreSQL aborted them (deadlock, ...)


@dataclass(slots=True, eq=False)
class _Pending:
    """A delivery waiting for (or being handled by) the writer thread."""

    delivery: LocalDelivery
    account_ids: tuple[int, ...]
    mailbox: str
    future: asyncio.Future[DeliveryResult]
    loop: asyncio.AbstractEventLoop
    blob_id: str = ""
    content_key: bytes = b""
    blob: BlobData = b""  # the blob's pieces, encrypted as they are written (a file)
    inline: bytes | None = None  # or the whole blob, for its row (at most `inline_max`)
    structure: bytes = b""
    written: bool = False  # the blob is ready for the rows: a file on disk, or `inline`


@dataclass(slots=True, eq=False)
class _Job:
    """Any other write: `prepare()` if given, then `fn(conn)` in its own transaction, then
    `after(result)` once committed — or `undo()` if the transaction failed after `prepare`."""

    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    after: Callable[[Any], None] | None = None
    prepare: Callable[[], None] | None = None
    undo: Callable[[], None] | None = None
    durable: bool = True


@dataclass(slots=True, eq=False)
class _Group:
    """Deliveries that are stored all together or not at all (RFC 3502 MULTIAPPEND)."""

    pendings: list[_Pending]


@dataclass(slots=True, eq=False)
class _Outcome:
    item: _Pending | _Job
    result: Any = None
    error: BaseException | None = None
    events: list[MailboxEvent] = field(default_factory=list)


_STOP = object()
_END = object()  # ends the files thread, after the writer has stopped


# PostgreSQL aborts one of two transactions that conflict (writers of two IMAP workers locking
# rows in opposite orders): serialization_failure, deadlock_detected. Running the aborted one
# again is the remedy the documentation gives; ATTEMPTS bounds it.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
ATTEMPTS = 4


def _retryable(exc: BaseException) -> bool:
    return any(
        getattr(e, "sqlstate", None) in _RETRY_SQLSTATES for e in (exc, getattr(exc, "orig", None))
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def store_error(exc: BaseException) -> StoreError:
    """What callers see: StoreErrors as they are, anything else wrapped (cause kept)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        err = StoreError(f"cannot write message blob: {exc}")
    elif isinstance(exc, sa_exc.DBAPIError):
        err = StoreError(f"database error: {exc.orig}")
    elif isinstance(exc, sqlite3.Error) or hasattr(exc, "sqlstate"):  # the driver's, raw cursor
        err = StoreError(f"database error: {exc}")
    else:
        log.error("unexpected error in the store writer", exc_info=exc)
        err = StoreError(f"internal store error: {exc!r}")
    err.__cause__ = exc
    return err


# The statements of a delivery batch (compiled per dialect by `_DeliveryStatements`).
_ADD_USAGE = (
    update(accounts)
    .where(accounts.c.id == bindparam("aid"))
    .values(used_bytes=accounts.c.used_bytes + bindparam("nbytes"))
    .returning(accounts.c.address_key, accounts.c.data_key)
)
_ALLOCATE = (
    update(mailboxes)
    .where(mailboxes.c.account_id == bindparam("aid"), mailboxes.c.name == bindparam("mbname"))
    .values(
        uidnext=mailboxes.c.uidnext + bindparam("count"),
        highestmodseq=mailboxes.c.highestmodseq + bindparam("count"),
    )
    .returning(mailboxes.c.id, mailboxes.c.uidnext, mailboxes.c.highestmodseq)
)
_MESSAGE_IDS = select(messages.c.id, messages.c.uid).where(
    messages.c.mailbox_id == bindparam("mbid"),
    messages.c.uid >= bindparam("lo"),
    messages.c.uid < bindparam("hi"),
)


def _insert_all(table: Any, columns: tuple[str, ...]) -> Any:
    """INSERT of the named columns, each bound to a parameter of its name."""
    return insert(table).values({name: bindparam(name) for name in columns})


_BLOB_COLUMNS = ("id", "size", "refcount", "created", "structure", "data")
_ENVELOPE_COLUMNS = (
    "queue_id", "mail_from", "recipients", "client_ip", "helo", "received_at", "ret", "envid",
    "body", "smtputf8", "blob_id",
)
_MESSAGE_COLUMNS = (
    "mailbox_id", "uid", "modseq", "blob_id", "content_key", "size", "internaldate", "flags",
    "keywords", "savedate",
)


class _DeliveryStatements:
    """The statements of a delivery batch, compiled once for the writer's dialect and run on
    the driver's cursor (`postkeep.store.sql.prepared`: through SQLAlchemy's `Connection` they
    were a quarter of the writer thread's Python time under imaptest)."""

    def __init__(self, dialect: Any) -> None:
        self.add_usage = Prepared(_ADD_USAGE, dialect)
        self.allocate = Prepared(_ALLOCATE, dialect)
        self.message_ids = Prepared(_MESSAGE_IDS, dialect)
        self.insert_blobs = Prepared(_insert_all(blobs, _BLOB_COLUMNS), dialect)
        self.insert_envelopes = Prepared(_insert_all(envelopes, _ENVELOPE_COLUMNS), dialect)
        self.insert_messages = Prepared(_insert_all(messages, _MESSAGE_COLUMNS), dialect)
        self.insert_filters = Prepared(filter_insert(), dialect)


class GroupCommitWriter:
    """The writer thread. `data_key(address_key, wrapped)` unwraps an account's data key."""

    def __init__(
        self,
        engine: Engine,
        blob_files: BlobFiles,
        data_key: Callable[[str, bytes], bytes],
        events: EventBus,
        *,
        max_batch: int = 256,
        max_batch_bytes: int = 32 << 20,
        lock_path: Path | None = None,
        inline_max: int = INLINE_MAX,
    ) -> None:
        """`lock_path`: a file this writer holds an exclusive flock(2) on for each transaction
        (SQLite: the writers of several processes then take turns as the kernel wakes them,
        instead of polling the database lock with SQLite's busy handler, which sleeps up to
        100 ms between tries). `inline_max`: blobs of at most this many octets (encrypted) go
        into their row instead of a file (`postkeep.store.blobs.INLINE_MAX`)."""
        self.stats = DeliveryStats()
        self.inline_max = inline_max
        self._lock_path = lock_path
        self._lock_fd: int | None = None
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._writer = engine
        self._statements: _DeliveryStatements | None = None
        self._conn: Connection | None = None  # kept open by the thread (`_transaction`)
        self._synchronous = "FULL"  # the SQLite connection's current setting
        self._blobs = blob_files
        self._data_key = data_key
        self._events = events
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._files: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer_main, name="store-writer", daemon=True)
        self._files_thread = threading.Thread(
            target=self._files_main, name="store-files", daemon=True
        )

    def start(self) -> None:
        self._files_thread.start()
        self._thread.start()

    def stop(self) -> None:
        """Process everything queued so far, then end the threads (blocks until they have)."""
        self._files.put(_STOP)  # forwarded to the writer after the deliveries before it
        self._thread.join()
        self._files.put(_END)  # the deletions the writer deferred until it stopped run first
        self._files_thread.join()

    def defer_files(self, fn: Callable[[], None]) -> None:
        """Run `fn` (file work after a commit, e.g. deleting blobs) on the files thread."""
        self._files.put(fn)

    def submit_delivery(
        self,
        delivery: LocalDelivery,
        account_ids: tuple[int, ...],
        mailbox: str,
        future: asyncio.Future[DeliveryResult],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._files.put(_Pending(delivery, account_ids, mailbox, future, loop))

    def submit_group(
        self,
        items: list[tuple[LocalDelivery, tuple[int, ...], str, asyncio.Future[DeliveryResult]]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Deliveries (as for `submit_delivery`) stored all in one transaction, or none."""
        self._files.put(_Group([_Pending(d, a, m, f, loop) for d, a, m, f in items]))

    def submit_job(
        self,
        fn: Callable[[Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        after: Callable[[Any], None] | None = None,
        *,
        prepare: Callable[[], None] | None = None,
        undo: Callable[[], None] | None = None,
        durable: bool = True,
        ordered: bool = False,
    ) -> None:
        """`ordered`: not before the deliveries submitted earlier (through the files thread)."""
        job = _Job(fn, future, loop, after, prepare, undo, durable)
        (self._files if ordered else self._queue).put(job)

    # -- thread ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[Connection]:
        """One transaction on the thread's own connection, kept between transactions (a pool
        checkout and return per batch cost as much as the batch's statements).

        `durable=False` commits without waiting for the disk: SQLite ``synchronous=NORMAL``
        for that transaction (in WAL mode the commit is not fsync'd; the next durable commit's
        fsync of the WAL, or a checkpoint, takes it along, so commits reach the disk in order
        and a crash can lose only a tail of non-durable ones), PostgreSQL
        ``synchronous_commit=off`` (the same guarantee)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._writer.connect()
            self._synchronous = "FULL"
        sqlite = conn.dialect.name == "sqlite"
        if sqlite and self._synchronous != ("FULL" if durable else "NORMAL"):
            self._synchronous = "FULL" if durable else "NORMAL"
            conn.connection.dbapi_connection.execute(  # type: ignore[union-attr]
                f"PRAGMA synchronous={self._synchronous}"
            )
        if self._lock_path is not None and self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            with conn.begin():
                if not durable and not sqlite:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
            if not durable:
                self.stats.relaxed_commits += 1
        except BaseException:
            if conn.invalidated or conn.closed:  # e.g. the database server went away
                conn.close()
                self._conn = None
            raise
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _writer_main(self) -> None:
        try:
            self._loop()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _files_main(self) -> None:
        """Prepare deliveries and write their blobs (in batches, like the writer's), then queue
        them for the writer in their order; run deferred file work. A delivery whose
        preparation fails goes to the writer unprepared: it retries it alone."""
        while True:
            items = [self._files.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._files.get_nowait())
                except queue.Empty:
                    break
            run: list[_Pending] = []
            for item in items:
                if isinstance(item, _Pending):
                    run.append(item)
                    continue
                self._pass_on(run)
                run = []
                if item is _END:
                    return
                if isinstance(item, _Group):
                    self._write_blobs(item.pendings)
                    self._queue.put(item)
                elif isinstance(item, _Job) or item is _STOP:
                    self._queue.put(item)
                else:
                    try:
                        item()
                    except Exception:
                        log.exception("store: deferred file work failed")
            self._pass_on(run)

    def _pass_on(self, run: list[_Pending]) -> None:
        """Write `run`'s blobs, then queue its deliveries for the writer, in order."""
        self._write_blobs(run)
        for p in run:
            self._queue.put(p)

    def _write_blobs(self, run: list[_Pending]) -> None:
        """Prepare `run` and write its blob files (one batch of fsyncs); on failure leave them
        unwritten for the writer to retry."""
        if not run:
            return
        try:
            for p in run:
                self._prepare(p)
            self._blobs.write_many([(p.blob_id, p.blob) for p in run if p.inline is None])
        except Exception:
            log.warning("store: writing a batch of %d blobs failed; retrying singly", len(run))
            for p in run:
                p.blob, p.inline = b"", None  # prepared again by the writer (`_deliver_single`)
        else:
            for p in run:
                p.written = True
                p.blob = b""

    def _loop(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            size = len(items[0].delivery.data) if isinstance(items[0], _Pending) else 0
            while len(items) < self.max_batch and size < self.max_batch_bytes:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
                if isinstance(item, _Pending):
                    size += len(item.delivery.data)
            try:
                stop = self._process(items)
            except Exception:  # a bug: keep the writer alive, fail nothing silently
                log.exception("store: writer loop error")

    def _process(self, items: list[Any]) -> bool:
        stop = False
        run: list[_Pending] = []
        jobs: list[_Job] = []
        for item in items:
            if isinstance(item, _Pending):
                if jobs:
                    self._finish(self._run_jobs(jobs))
                    jobs = []
                run.append(item)
                continue
            if run:
                self._finish(self._deliver_batch(run))
                run = []
            if isinstance(item, _Group):
                if jobs:
                    self._finish(self._run_jobs(jobs))
                    jobs = []
                self._finish(self._deliver_group(item.pendings))
            elif item is _STOP:
                if jobs:
                    self._finish(self._run_jobs(jobs))
                    jobs = []
                stop = True
            elif item.prepare is not None:  # has file work to undo: alone, as before
                if jobs:
                    self._finish(self._run_jobs(jobs))
                    jobs = []
                self._finish([self._run_job(item)])
            else:
                jobs.append(item)
        if jobs:
            self._finish(self._run_jobs(jobs))
        if run:
            self._finish(self._deliver_batch(run))
        return stop

    def _run_jobs(self, jobs: list[_Job]) -> list[_Outcome]:
        """Several jobs in ONE transaction (one commit, one fsync), each in its own SAVEPOINT so
        that a failing job is rolled back alone. If the commit itself fails, each job is run
        again in a transaction of its own."""
        if len(jobs) == 1:
            return [self._run_job(jobs[0])]
        results: list[tuple[_Job, Any, BaseException | None]] = []
        self.stats.jobs += len(jobs)
        try:
            with self._transaction(any(job.durable for job in jobs)) as conn:
                cur = conn.connection.cursor()  # savepoints on the driver: no statement objects
                for job in jobs:
                    cur.execute("SAVEPOINT job")
                    try:
                        results.append((job, job.fn(conn), None))
                    except Exception as exc:
                        cur.execute("ROLLBACK TO SAVEPOINT job")
                        results.append((job, None, exc))
                    cur.execute("RELEASE SAVEPOINT job")
        except Exception as exc:
            log.info("store: batch of %d jobs failed (%s); retrying one by one", len(jobs), exc)
            self.stats.jobs -= len(jobs)  # counted again one by one
            return [self._run_job(job) for job in jobs]
        outcomes: list[_Outcome] = []
        for job, result, error in results:
            if error is not None and _retryable(error):
                log.info("store: job aborted (%s); running it again alone", _first_line(error))
                self.stats.retries += 1
                self.stats.jobs -= 1  # counted again
                outcomes.append(self._run_job(job))  # alone now, the batch's locks released
                continue
            if error is not None:
                outcomes.append(_Outcome(job, error=store_error(error)))
                continue
            if job.after is not None:
                try:
                    job.after(result)
                except Exception:
                    log.exception("store: post-commit action failed")
            outcomes.append(_Outcome(job, result))
        return outcomes

    def _run_job(self, job: _Job) -> _Outcome:
        self.stats.jobs += 1
        try:
            if job.prepare is not None:
                job.prepare()
        except Exception as exc:
            return _Outcome(job, error=store_error(exc))
        try:
            result = self._retrying(job.fn, job.durable)
        except Exception as exc:
            if job.undo is not None:
                try:
                    job.undo()
                except Exception:
                    log.exception("store: undoing a failed job's preparation failed")
            return _Outcome(job, error=store_error(exc))
        if job.after is not None:
            try:
                job.after(result)
            except Exception:
                log.exception("store: post-commit action failed")
        return _Outcome(job, result)

    def _retrying(self, fn: Callable[[Connection], Any], durable: bool = True) -> Any:
        """`fn` in a transaction of its own, run again (up to ATTEMPTS times) when PostgreSQL
        aborts it to resolve a conflict with another process's writer."""
        attempt = 1
        while True:
            try:
                with self._transaction(durable) as conn:
                    return fn(conn)
            except Exception as exc:
                if attempt >= ATTEMPTS or not _retryable(exc):
                    raise
                log.info("store: transaction aborted (%s); running it again", _first_line(exc))
                attempt += 1
                self.stats.retries += 1

    def _finish(self, outcomes: list[_Outcome]) -> None:
        """Hand results to the callers' event loops: resolve futures, publish events."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome.item.loop, []).append(outcome)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, group)
            except RuntimeError:
                log.warning("store: event loop closed before %d results were delivered", len(group))

    def _resolve(self, group: list[_Outcome]) -> None:
        for outcome in group:
            for ev in outcome.events:
                self._events.publish(ev)
            future = outcome.item.future
            if future.done():
                continue  # the caller gave up (cancelled); the write itself stands
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.result)

    # -- group commit ------------------------------------------------------------------------------

    def _prepare(self, p: _Pending) -> None:
        """Key, summary and blob of a delivery: a small blob is encrypted whole, for its row;
        a larger one as it is written (a chunk at a time, from memory or from a spool) by
        `BlobFiles.write_many`."""
        p.blob_id = new_blob_id()
        p.content_key = new_key()
        data = p.delivery.data
        summary = summarize(data)
        p.structure = seal(p.content_key, summary, structure_context(p.blob_id))
        pieces = encrypt_stream(p.content_key, data)
        if encrypted_size(len(data)) <= self.inline_max:
            p.blob, p.inline = b"", b"".join(pieces)
        else:
            p.blob, p.inline = pieces, None

    def _deliver_batch(self, run: list[_Pending]) -> list[_Outcome]:
        if not all(p.written for p in run):  # the files thread could not write them
            return [self._deliver_single(p) for p in run]
        try:
            with self._transaction() as conn:
                placed = self._insert(conn, run)
        except Exception as exc:
            self.stats.batch_failures += 1
            if len(run) > 1:
                log.info("store: batch of %d failed (%s); retrying one by one", len(run), exc)
            return [self._deliver_single(p) for p in run]
        self.stats.batches += 1
        self.stats.deliveries += len(run)
        self.stats.largest_batch = max(self.stats.largest_batch, len(run))
        return [_Outcome(p, res, events=evs) for p, (res, evs) in zip(run, placed, strict=True)]

    def _deliver_group(self, run: list[_Pending]) -> list[_Outcome]:
        """All of `run` in one transaction, or none of it: on any failure every blob written
        is removed again and every delivery fails with the same error."""
        try:
            if not all(p.written for p in run):
                todo = [p for p in run if not p.written]
                for p in todo:
                    self._prepare(p)
                self._blobs.write_many([(p.blob_id, p.blob) for p in todo if p.inline is None])
                for p in todo:
                    p.written = True
                    p.blob = b""
            placed = self._retrying(lambda conn: self._insert(conn, run))
        except Exception as exc:
            self.stats.batch_failures += 1
            try:
                self._blobs.delete_many(p.blob_id for p in run if p.written and p.inline is None)
            except OSError:
                log.exception("store: cannot remove the blobs of a failed group delivery")
            error = store_error(exc)
            return [_Outcome(p, error=error) for p in run]
        self.stats.batches += 1
        self.stats.deliveries += len(run)
        self.stats.largest_batch = max(self.stats.largest_batch, len(run))
        return [_Outcome(p, res, events=evs) for p, (res, evs) in zip(run, placed, strict=True)]

    def _deliver_single(self, p: _Pending) -> _Outcome:
        try:
            if not p.written:
                self._prepare(p)
                if p.inline is None:
                    self._blobs.write(p.blob_id, p.blob)
                p.written = True
                p.blob = b""
            [(result, evs)] = self._retrying(lambda conn: self._insert(conn, [p]))
        except Exception as exc:
            if p.written and p.inline is None:
                try:
                    self._blobs.delete(p.blob_id)
                except OSError:
                    log.exception("store: cannot remove blob %s of a failed delivery", p.blob_id)
            return _Outcome(p, error=store_error(exc))
        self.stats.batches += 1
        self.stats.deliveries += 1
        self.stats.largest_batch = max(self.stats.largest_batch, 1)
        return _Outcome(p, result, events=evs)

    def _insert(
        self, conn: Connection, run: list[_Pending]
    ) -> list[tuple[DeliveryResult, list[MailboxEvent]]]:
        """All rows of a batch of deliveries, in the caller's transaction."""
        now = time.time()
        usage: dict[int, int] = {}
        counts: dict[tuple[int, str], int] = {}
        for p in run:
            size = len(p.delivery.data)
            for aid in p.account_ids:
                usage[aid] = usage.get(aid, 0) + size
                counts[(aid, p.mailbox)] = counts.get((aid, p.mailbox), 0) + 1
        st = self._statements
        if st is None:
            st = self._statements = _DeliveryStatements(conn.dialect)
        cur = Cursor(conn.connection.cursor())
        data_keys: dict[int, bytes] = {}
        for aid in sorted(usage):  # lock rows in a fixed order: no deadlocks between processes
            row = cur.first(st.add_usage, aid=aid, nbytes=usage[aid])
            if row is None:
                raise NotFound(f"account {aid} does not exist")
            data_keys[aid] = self._data_key(row[0], bytes(row[1]))
        slots: dict[tuple[int, str], list[int]] = {}
        for key in sorted(counts):
            n = counts[key]
            row = cur.first(st.allocate, aid=key[0], mbname=key[1], count=n)
            if row is None:
                raise NotFound(f"account {key[0]} has no mailbox {key[1]!r}")
            mailbox_id, uidnext, highest = row
            if uidnext - 1 > UID_MAX:
                raise StoreError(f"mailbox {mailbox_id} has run out of UIDs")
            slots[key] = [mailbox_id, uidnext - n, highest - n + 1]
        blob_rows: list[dict[str, Any]] = []
        envelope_rows: list[dict[str, Any]] = []
        filter_rows: list[dict[str, Any]] = []
        message_rows: list[dict[str, Any]] = []
        placements: list[list[tuple[int, int, int, int]]] = []
        for p in run:
            d, env = p.delivery, p.delivery.envelope
            size = len(d.data)
            blob_rows.append(
                {
                    "id": p.blob_id,
                    "size": size,
                    "refcount": len(p.account_ids),
                    "created": now,
                    "structure": p.structure,
                    "data": p.inline,
                }
            )
            if env.queue_id:  # IMAP APPEND has no SMTP envelope to record
                envelope_rows.append(
                    {
                        "queue_id": env.queue_id,
                        "mail_from": env.mail_from,
                        "recipients": json.dumps(
                            [[r.address, r.notify, r.orcpt] for r in env.recipients]
                        ),
                        "client_ip": env.client_ip,
                        "helo": env.helo,
                        "received_at": env.received_at,
                        "ret": env.ret,
                        "envid": env.envid,
                        "body": env.body,
                        "smtputf8": env.smtputf8,
                        "blob_id": p.blob_id,
                    }
                )
            if d.filters is not None:  # one row per delivery, whatever its recipients
                filter_rows.append(filter_row(p.blob_id, d.filters))
            internaldate = env.received_at or now
            placed: list[tuple[int, int, int, int]] = []
            for aid in p.account_ids:
                slot = slots[(aid, p.mailbox)]
                mailbox_id, uid, modseq = slot
                slot[1] += 1
                slot[2] += 1
                message_rows.append(
                    {
                        "mailbox_id": mailbox_id,
                        "uid": uid,
                        "modseq": modseq,
                        "blob_id": p.blob_id,
                        "content_key": wrap_key(
                            data_keys[aid], p.content_key, message_key_context(aid, p.blob_id)
                        ),
                        "size": size,
                        "internaldate": internaldate,
                        "flags": int(d.flags),
                        "keywords": " ".join(d.keywords),
                        "savedate": now,
                    }
                )
                placed.append((aid, mailbox_id, uid, modseq))
            placements.append(placed)
        cur.executemany(st.insert_blobs, blob_rows)
        cur.executemany(st.insert_envelopes, envelope_rows)
        cur.executemany(st.insert_filters, filter_rows)
        cur.executemany(st.insert_messages, message_rows)
        ids: dict[tuple[int, int], int] = {}
        for key, (mailbox_id, end, _) in slots.items():
            for mid, uid in cur.all(
                st.message_ids, mbid=mailbox_id, lo=end - counts[key], hi=end
            ):
                ids[(mailbox_id, uid)] = mid
        out: list[tuple[DeliveryResult, list[MailboxEvent]]] = []
        held: list[dict[str, Any]] = []
        for p, placed in zip(run, placements, strict=True):
            delivered = tuple(Delivered(a, m, u, ids[(m, u)]) for a, m, u, _ in placed)
            evs = [MailboxEvent(a, m, "exists", u, s) for a, m, u, s in placed]
            out.append((DeliveryResult(p.blob_id, delivered), evs))
            if p.delivery.quarantine is not None:
                held += _quarantine_rows(p.delivery, delivered, now)
        if held:
            conn.execute(insert(quarantine), held)
        return out


def _quarantine_rows(delivery: LocalDelivery, delivered: tuple[Delivered, ...],
                     now: float) -> list[dict[str, Any]]:
    """The quarantine rows of a held delivery (`LocalDelivery.quarantine`), one per account."""
    note, env = delivery.quarantine, delivery.envelope
    assert note is not None
    recipients = json.dumps([r.address for r in env.recipients])
    return [{"account_id": d.account_id, "message_id": d.message_id,
             "direction": note.direction, "queue_id": env.queue_id, "filter": note.filter,
             "reason": note.reason, "mail_from": env.mail_from, "recipients": recipients,
             "size": len(delivery.data), "created": now, "expires": note.expires}
            for d in delivered]

