"""Blob files: durable, atomic storage of encrypted message blobs on the local file system.

Only blobs larger than INLINE_MAX are files: smaller ones are stored in the database, in the
``blobs.data`` column of their row, written in the transaction that inserts the message rows
(`postkeep.store.sql.writer`), so they cost no file, no fsync and no unlink of their own.

Layout: ``<data_dir>/blobs/ab/cd/<blob_id>`` where ``abcd`` are the first four characters of the
blob id. A blob id is 36 lower-case hex characters (URL- and file-name-safe, safe on
case-insensitive file systems): a 16-bit time bucket (the time in 64-second units, modulo 2**16)
followed by 128 random bits. The random part makes ids unique and unguessable; the time prefix
makes the blobs written together (one group-commit batch) share one ``ab/cd`` directory, so a
batch costs one directory fsync instead of one per message, while the 65536 directories are still
used evenly over time (a full cycle every ~48 days).

New blobs are written as ``<data_dir>/blobs/tmp/<blob_id>.tmp``, fsync'd, renamed into place, and
then the destination directory is fsync'd, so after a crash a blob is either absent or complete
(the classic write-fsync-rename-fsync(dir) sequence; see rename(2) and fsync(2) on Linux).
Directories created on the way are made durable by fsyncing their parents.

`write_many` is the group-commit form: it writes N blobs, fsyncs each file, renames them all and
then fsyncs each touched directory once. A blob is given whole or as an iterable of pieces
(`crypto.encrypt_stream`), written as they come: a large message is never in memory whole.

Files are created 0600 and directories 0700: the contents are ciphertext, but their sizes and
times are still metadata worth keeping private.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from postkeep.errors import StoreError


class BlobMissing(StoreError):
    """A blob file that the database refers to is not on disk (lost or deleted behind our back)."""


_BLOB_ID = re.compile(r"[0-9a-f]{36}")
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

BlobData = bytes | bytearray | memoryview | Iterable[bytes]  # whole, or in pieces

INLINE_MAX = 128 << 10
"""Largest blob (encrypted size, octets) stored inline in the database instead of as a file.

Creating and fsyncing a file per message cost 0.7-1.2 ms of kernel time per message in SMTP
ingest, more than all of the Python work; a blob in its row rides on the batch's one WAL fsync
(or PostgreSQL commit). SQLite's own measurements ("35% Faster Than The Filesystem",
"Internal Versus External BLOBs") put the break-even between a blob in the database and one
in a file at about 100 KB with the default 4 KiB pages. 128 KiB also bounds what an inline
blob costs in memory while it is encrypted and inserted, or read back whole (IMAP reads
messages of up to 256 KiB whole anyway).
"""


def new_blob_id() -> str:
    """A fresh blob id: 16-bit time bucket + 128 random bits, as 36 lower-case hex characters."""
    return f"{(int(time.time()) >> 6) & 0xFFFF:04x}{secrets.token_hex(16)}"


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class BlobFiles:
    """The blob directory of one data dir. Methods block: call them from worker threads."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "blobs"
        self.tmp = self.root / "tmp"
        self._root = str(self.root)
        self._tmp = str(self.tmp)

    # -- setup -------------------------------------------------------------------------------------

    def setup(self, remove_stale: bool = True) -> None:
        """Create the blob and tmp directories (durably); with `remove_stale`, remove the tmp
        files a crash left behind (only when no other process can be writing blobs)."""
        created: list[Path] = []
        self._makedirs(self.tmp, created)
        for parent in {p.parent for p in created}:
            _fsync_dir(parent)
        if not remove_stale:
            return
        for entry in os.scandir(self.tmp):
            if entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    @staticmethod
    def _makedirs(path: Path, created: list[Path]) -> None:
        """mkdir -p recording each directory it creates (their parents need an fsync)."""
        missing: list[Path] = []
        p = Path(path)
        while not p.is_dir():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, _DIR_MODE)
            except FileExistsError:
                continue  # a concurrent writer made it: its creator fsyncs the parent
            created.append(d)

    # -- paths -------------------------------------------------------------------------------------

    def path(self, blob_id: str) -> Path:
        """Where blob `blob_id` lives; rejects ids that are not ours (no path tricks)."""
        return Path(self._path(blob_id))

    def _dir(self, blob_id: str) -> str:
        if not _BLOB_ID.fullmatch(blob_id):
            raise StoreError(f"invalid blob id {blob_id!r}")
        return f"{self._root}/{blob_id[0:2]}/{blob_id[2:4]}"

    def _path(self, blob_id: str) -> str:
        return f"{self._dir(blob_id)}/{blob_id}"

    # -- writing -----------------------------------------------------------------------------------

    def write(self, blob_id: str, data: BlobData) -> None:
        """Durably store one blob (see `write_many`)."""
        self.write_many([(blob_id, data)])

    def write_many(self, items: Sequence[tuple[str, BlobData]]) -> None:
        """Durably store several new blobs: all are on disk and fsync'd when this returns.

        On error, every blob of the batch is removed again (tmp or final) and the error raised.
        """
        if not items:
            return
        dirs = [self._dir(blob_id) for blob_id, _ in items]
        tmps: list[str] = []
        renamed: list[str] = []
        try:
            fds: list[int] = []
            try:
                for blob_id, data in items:
                    tmp = f"{self._tmp}/{blob_id}.tmp"
                    fd = os.open(tmp, _CREATE_FLAGS, _FILE_MODE)
                    tmps.append(tmp)
                    fds.append(fd)
                    if isinstance(data, bytes | bytearray | memoryview):
                        _write_all(fd, data)
                    else:
                        for piece in data:
                            _write_all(fd, piece)
                # Write everything first, then flush each: the file system can overlap the work.
                for fd in fds:
                    os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)
            created: list[Path] = []
            touched: set[str] = set()
            for (blob_id, _), tmp, d in zip(items, tmps, dirs, strict=True):
                final = f"{d}/{blob_id}"
                try:
                    os.replace(tmp, final)
                except FileNotFoundError:  # first blob in this directory: create it
                    self._makedirs(Path(d), created)
                    os.replace(tmp, final)
                renamed.append(final)
                touched.add(d)
            touched.update(str(p.parent) for p in created)
            for d in sorted(touched, key=len, reverse=True):  # deepest first
                _fsync_dir(d)
        except BaseException:
            for p in (*tmps, *renamed):
                with contextlib.suppress(OSError):
                    os.unlink(p)
            raise

    # -- reading -----------------------------------------------------------------------------------

    def open(self, blob_id: str) -> BinaryIO:
        """Open a blob for reading (binary, seekable); BlobMissing if it does not exist."""
        try:
            return open(self._path(blob_id), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {blob_id} is missing") from None

    def read(self, blob_id: str) -> bytes:
        """The whole (encrypted) blob."""
        with self.open(blob_id) as f:
            return f.read()

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        """`length` bytes of the (encrypted) blob from `offset` (fewer at the end of the file)."""
        with self.open(blob_id) as f:
            return os.pread(f.fileno(), length, offset)

    def exists(self, blob_id: str) -> bool:
        return os.path.isfile(self._path(blob_id))

    def size(self, blob_id: str) -> int:
        """Size on disk of the (encrypted) blob."""
        try:
            return os.stat(self._path(blob_id)).st_size
        except FileNotFoundError:
            raise BlobMissing(f"blob {blob_id} is missing") from None

    # -- deleting ----------------------------------------------------------------------------------

    def delete(self, blob_id: str) -> None:
        """Remove a blob; a missing one is fine (deletion is idempotent)."""
        self.delete_many([blob_id])

    def delete_many(self, blob_ids: Iterable[str]) -> None:
        """Remove blobs, then fsync their directories once each so the removal is durable.

        Empty ``ab/cd`` directories are left in place: they are reused and bounded in number.
        """
        touched: set[Path] = set()
        for blob_id in blob_ids:
            p = self.path(blob_id)
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            touched.add(p.parent)
        for d in touched:
            _fsync_dir(d)
