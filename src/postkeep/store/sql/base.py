"""The plumbing of `postkeep.store.sql.store.SqlStore`: engines, lifecycle, reads, writes, keys.

Threads (design: "store" brief): reads run on a small thread pool, each on a pooled connection in
its own short transaction; every write runs on ONE writer thread (`postkeep.store.sql.writer`),
which group-commits deliveries. `SqlStoreBase` owns the engines, the read pool and the writer
thread; the store's operations are built on `_read` / `_write` in `postkeep.store.sql.store` and
its mixins (`postkeep.store.sql.security`, `postkeep.store.sql.outbound`).

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns),
``foreign_keys=ON`` and a busy timeout; the writer connection starts its transactions with
``BEGIN IMMEDIATE`` so that it never has to upgrade a read lock (other processes, e.g. the admin
CLI, may write too).

Keys: the master key is checked against the database at open (``meta`` row
``master_key_check``); the instance's outbound-queue data key (``meta`` row ``queue_data_key``,
wrapped by the master key) is created on first open and kept unwrapped in memory; account data
keys are unwrapped on demand and cached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from postkeep.errors import StoreError
from postkeep.store.blobs import INLINE_MAX, BlobFiles
from postkeep.store.crypto import (
    CryptoError,
    account_key_context,
    dkim_key_context,
    junk_key_context,
    new_key,
    queue_key_context,
    unwrap_key,
    wrap_key,
)
from postkeep.store.events import EventBus
from postkeep.store.sql.hotpath import HotStatements, hot_statements
from postkeep.store.sql.migrations import migrate
from postkeep.store.sql.prepared import Cursor
from postkeep.store.sql.schema import (
    META_DKIM_KEY,
    META_JUNK_KEY,
    META_KEY_CHECK,
    META_QUEUE_KEY,
    meta,
)
from postkeep.store.sql.writer import DeliveryStats, GroupCommitWriter, store_error

log = logging.getLogger("postkeep.store")

T = TypeVar("T")

_KEY_CHECK_CONTEXT = b"master-key-check"
LOOP_BUSY_TIMEOUT_MS = 1000  # longest an inline read may stall the event loop on a lock
# Page cache of the loop's connection. Every commit empties it anyway, and SQLite's page
# allocations on the loop's thread share the heap with the connections' buffers: with the
# default 2 MB, 10,000 idle IMAP connections cost 55.8 KiB each, with 256 KiB 49.6 KiB
# (bench/imap/run.py --only idle; 42.0 with no inline reads at all).
LOOP_CACHE_KIB = 256


def _sqlite_setup(engine: Engine, begin: str) -> None:
    """Pragmas per connection, and explicit BEGIN (pysqlite's implicit one is not usable)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)


def create_engines(url: str, read_workers: int = 4) -> tuple[Engine, Engine]:
    """(writer engine, reader engine) for `url`; the same engine twice for PostgreSQL.

    Each read thread keeps one reader connection for `SqlStoreBase._read_raw` and checks out
    another for `SqlStoreBase._read`: the reader pool holds two per read thread."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database
        if not db or db == ":memory:" or db.startswith("file:"):
            raise StoreError("the SQLite store needs a database file: sqlite:///path/store.db")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        args = {"check_same_thread": False, "timeout": 30.0}
        # the writer thread keeps this one connection while it runs (only open() shares it)
        writer = create_engine(u, connect_args=args, pool_size=1, max_overflow=0)
        reader = create_engine(u, connect_args=args, pool_size=2 * read_workers, max_overflow=0)
        _sqlite_setup(writer, "BEGIN IMMEDIATE")
        _sqlite_setup(reader, "BEGIN")
        return writer, reader
    if backend == "postgresql":
        engine = create_engine(u, pool_size=2 * read_workers + 1, max_overflow=2)
        return engine, engine
    raise StoreError(f"unsupported database URL scheme {u.drivername!r}")



class SqlStoreBase:
    """Engines, lifecycle and read/write plumbing of the SQL store (see the module docstring).

    Construct, then ``await open()``; ``await close()`` drains pending writes. `events` is the
    bus MailboxEvents are published on (one is created if not given). `maintenance` removes the
    temporary blob files a crash left behind at open: only the server's main process may, since
    another process (an IMAP worker, the admin CLI) could be writing one right then.
    `inline_max`: blobs of at most this many octets are stored in the database, not as files
    (`postkeep.store.blobs.INLINE_MAX`; 0 makes every blob a file).
    """

    def __init__(
        self,
        url: str,
        data_dir: str | os.PathLike[str],
        master_key: bytes,
        *,
        events: EventBus | None = None,
        read_workers: int = 4,
        maintenance: bool = True,
        max_batch: int = 256,
        max_batch_bytes: int = 32 << 20,
        inline_max: int = INLINE_MAX,
    ) -> None:
        if len(master_key) != 32:
            raise StoreError("the master key must be 32 bytes")
        self.url = url
        self.data_dir = Path(data_dir)
        self.events = events if events is not None else EventBus()
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.inline_max = inline_max
        self._master = master_key
        self._read_workers = read_workers
        self._maintenance = maintenance
        self._blobs = BlobFiles(self.data_dir)
        self._writer: Engine | None = None
        self._reader: Engine | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._writer_thread: GroupCommitWriter | None = None
        self._closed = False
        self._data_keys: dict[tuple[str, bytes], bytes] = {}
        self._queue_key = b""
        self._dkim_key = b""
        self._junk_key = b""
        self._hot: HotStatements | None = None
        self._sqlite = False
        self._dbapi_error: type[Exception] = Exception
        self._local = threading.local()  # a read thread's connection (`_run_read_raw`)
        self._kept: list[Any] = []  # all of those, released at close
        self._kept_lock = threading.Lock()
        # app password last-use records waiting for the writer (`postkeep.store.sql.security`)
        self._touch_lock = threading.Lock()
        self._touches: dict[int, float] = {}
        self._touch_queued = False

    # -- lifecycle ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the data dir, connect, migrate, check the master key, start the writer."""
        if self._writer_thread is not None or self._closed:
            raise StoreError("store already opened")
        await asyncio.get_running_loop().run_in_executor(None, self._open_sync)
        self._pool = ThreadPoolExecutor(self._read_workers, thread_name_prefix="store-read")
        assert self._writer is not None
        self._writer_thread = GroupCommitWriter(
            self._writer,
            self._blobs,
            self._data_key,
            self.events,
            max_batch=self.max_batch,
            max_batch_bytes=self.max_batch_bytes,
            lock_path=self._writer_lock_path(),
            inline_max=self.inline_max,
        )
        self._writer_thread.start()

    def _writer_lock_path(self) -> Path | None:
        """SQLite: ``<database>-writer.lock``, which the writer threads of all the server's
        processes (IMAP workers) take turns on; PostgreSQL needs none."""
        if not self._sqlite:
            return None
        return Path(f"{make_url(self.url).database}-writer.lock")

    def _open_sync(self) -> None:
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._blobs.setup(remove_stale=self._maintenance)
        except OSError as exc:
            raise StoreError(f"cannot set up the data directory {self.data_dir}: {exc}") from exc
        self._writer, self._reader = create_engines(self.url, self._read_workers)
        dialect = self._reader.dialect
        self._sqlite = dialect.name == "sqlite"
        self._dbapi_error = dialect.loaded_dbapi.Error
        self._hot = hot_statements(dialect)
        try:
            applied = migrate(self._writer, master_key=self._master)
            if applied:
                log.info("store schema migrated to version %d", applied[-1])
            self._check_master_key()
            self._queue_key = self._system_key(META_QUEUE_KEY, queue_key_context())
            self._dkim_key = self._system_key(META_DKIM_KEY, dkim_key_context())
            self._junk_key = self._system_key(META_JUNK_KEY, junk_key_context())
        except sa_exc.DBAPIError as exc:
            self._dispose()
            raise StoreError(f"cannot open the database: {exc.orig}") from exc
        except BaseException:
            self._dispose()
            raise

    def _check_master_key(self) -> None:
        """Refuse a master key other than the one the database was first opened with."""
        assert self._writer is not None
        query = select(meta.c.value).where(meta.c.name == META_KEY_CHECK)
        for _attempt in range(2):
            try:
                with self._writer.begin() as conn:
                    row = conn.execute(query).first()
                    if row is None or row[0] is None:
                        check = wrap_key(self._master, bytes(32), _KEY_CHECK_CONTEXT)
                        conn.execute(insert(meta).values(name=META_KEY_CHECK, value=check))
                        return
            except sa_exc.IntegrityError:
                continue  # another process stored its check first: verify against that
            try:
                unwrap_key(self._master, bytes(row[0]), _KEY_CHECK_CONTEXT)
            except CryptoError:
                raise StoreError(
                    "the master key does not match this database (wrong key file?)"
                ) from None
            return

    def _system_key(self, name: str, context: bytes) -> bytes:
        """An instance-wide data key kept wrapped in the ``meta`` row `name`; created if absent."""
        assert self._writer is not None
        query = select(meta.c.value).where(meta.c.name == name)
        for _attempt in range(2):
            try:
                with self._writer.begin() as conn:
                    row = conn.execute(query).first()
                    if row is None or row[0] is None:
                        key = new_key()
                        wrapped = wrap_key(self._master, key, context)
                        conn.execute(insert(meta).values(name=name, value=wrapped))
                        return key
            except sa_exc.IntegrityError:
                continue  # another process created it first: use that one
            return unwrap_key(self._master, bytes(row[0]), context)
        raise StoreError(f"cannot create the {name} key")

    def _dispose(self) -> None:
        for engine in {e for e in (self._writer, self._reader) if e is not None}:
            engine.dispose()

    async def close(self) -> None:
        """Finish queued writes, stop the writer and the read pool, release connections."""
        if self._closed:
            return
        self._closed = True
        if self._writer_thread is None:
            return
        pool = self._pool
        await asyncio.to_thread(self._writer_thread.stop)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        for raw in self._kept:
            raw.close()
        self._kept.clear()
        self._dispose()

    @property
    def stats(self) -> DeliveryStats:
        """Group-commit counters of the writer (batches, deliveries, largest batch...)."""
        return self._writer_thread.stats if self._writer_thread else DeliveryStats()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._writer_thread is None or self._closed:
            raise StoreError("the store is not open")

    # -- plumbing ----------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run_read, fn)

    def _run_read(self, fn: Callable[[Connection], T]) -> T:
        assert self._reader is not None
        try:
            with self._reader.connect() as conn:
                return fn(conn)
        except sa_exc.DBAPIError as exc:
            raise store_error(exc) from exc

    @property
    def hot(self) -> HotStatements:
        """The hot path's compiled statements (`postkeep.store.sql.hotpath`)."""
        assert self._hot is not None
        return self._hot

    async def _read_raw(
        self, fn: Callable[[Cursor], T], *, inline: bool = True, snapshot: bool = False
    ) -> T:
        """Like `_read`, on the driver's cursor, for `postkeep.store.sql.prepared` statements.

        On SQLite an `inline` read runs right here on the event loop's thread: the hot path's
        reads take 0.05-0.5 ms, less than the hop to a read thread and back costs once the
        threads contend for the GIL (measured: docs/architecture.md, "Store hot path").
        Callers pass ``inline=False`` for reads that may take long (large message contents).
        PostgreSQL reads always go to the read pool (a network round trip each); with
        `snapshot` their statements share one REPEATABLE READ snapshot (SQLite's read
        transaction is one already).
        """
        self._check_open()
        if inline and self._sqlite:
            return self._run_read_raw(fn, on_loop=True)
        run = self._run_read_raw
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: run(fn, snapshot=snapshot)
        )

    def _run_read_raw(
        self, fn: Callable[[Cursor], T], on_loop: bool = False, snapshot: bool = False
    ) -> T:
        """Each read thread keeps one pooled connection (checked out once, not per read); the
        event loop's own one waits at most LOOP_BUSY_TIMEOUT_MS for a lock (in WAL mode readers
        wait only in rare cases, e.g. WAL recovery after a crash), not the usual 30 s, and
        keeps a small page cache (LOOP_CACHE_KIB)."""
        assert self._reader is not None
        raw = getattr(self._local, "raw", None)
        if raw is None:
            raw = self._local.raw = self._reader.raw_connection()
            with self._kept_lock:
                self._kept.append(raw)
            if on_loop:
                raw.cursor().execute(f"PRAGMA busy_timeout={LOOP_BUSY_TIMEOUT_MS}")
                raw.cursor().execute(f"PRAGMA cache_size=-{LOOP_CACHE_KIB}")
        try:
            cur = raw.cursor()
            if self._sqlite:  # autocommit connection: one transaction for fn's reads
                cur.execute("BEGIN")
                try:
                    return fn(Cursor(cur))
                finally:
                    cur.execute("ROLLBACK")
            try:
                if snapshot:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return fn(Cursor(cur))
            finally:
                raw.rollback()
        except self._dbapi_error as exc:
            self._local.raw = None  # perhaps broken (server gone): next read reconnects
            with self._kept_lock:
                self._kept.remove(raw)
            raw.invalidate()
            raise StoreError(f"database error: {exc}") from exc

    @staticmethod
    def _cursor(conn: Connection) -> Cursor:
        """The driver cursor of a writer job's connection (same transaction)."""
        return Cursor(conn.connection.cursor())

    async def _write(
        self,
        fn: Callable[[Connection], T],
        after: Callable[[T], None] | None = None,
        *,
        prepare: Callable[[], None] | None = None,
        undo: Callable[[], None] | None = None,
        durable: bool = True,
        ordered: bool = False,
    ) -> T:
        """Run `fn(conn)` in a transaction on the writer thread; its result once committed.

        `prepare` runs on the writer thread first (outside the transaction), `undo` if the
        transaction then fails, `after` once it has committed. Cancelling the caller does not
        withdraw a job already queued. `durable=False` (flag changes, \\Recent claims) commits
        without waiting for the disk (see `GroupCommitWriter._transaction`): a crash may lose
        the last such commits, never a delivery, and never leaves a half-applied change.
        `ordered`: not before the deliveries (and their file work) queued before it.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        assert self._writer_thread is not None
        self._writer_thread.submit_job(
            fn, future, loop, after, prepare=prepare, undo=undo, durable=durable, ordered=ordered
        )
        return await future

    def _write_nowait(self, fn: Callable[[Connection], Any]) -> None:
        """Queue a write without waiting for its commit (errors are logged, not raised)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_log_failure)
        assert self._writer_thread is not None
        self._writer_thread.submit_job(fn, future, loop)

    async def sync(self) -> None:
        """Wait until every write queued before this call is committed (or has failed), and
        the file work of those commits (blob deletions after expunges) is done."""
        await self._write(lambda conn: None, ordered=True)

    def _delete_blobs_later(self, blob_ids: list[str]) -> None:
        """Remove blob files no row refers to any more (after the commit that released them),
        on the writer's files thread: the writer does not wait for the unlinks and fsyncs.
        (Inline blobs went with their rows: callers pass only the ids of files.)"""
        if blob_ids:
            assert self._writer_thread is not None
            self._writer_thread.defer_files(lambda: self._blobs.delete_many(blob_ids))

    def _blob(self, cur: Cursor, blob_id: str) -> bytes:
        """The whole encrypted blob: from its row if it is inline, else from its file."""
        data = cur.scalar(self.hot.blob_data, bid=blob_id)
        return bytes(data) if data is not None else self._blobs.read(blob_id)

    def _data_key(self, address_key: str, wrapped: bytes) -> bytes:
        """An account's data key, unwrapped with the master key (cached; thread-safe enough)."""
        cache_key = (address_key, bytes(wrapped))
        key = self._data_keys.get(cache_key)
        if key is None:
            key = unwrap_key(self._master, cache_key[1], account_key_context(address_key))
            if len(self._data_keys) >= 4096:
                self._data_keys.clear()
            self._data_keys[cache_key] = key
        return key


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("store: background write failed: %s", future.exception())
