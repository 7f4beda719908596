"""Spools: the text of a message still arriving, encrypted, in a file that has no name.

An SMTP message past `smtp.spool_threshold` is not held in memory: its text goes into a
`Spool`, and from there (read a chunk at a time) into its blob, the MIME summary and the checks
of the inbound pipeline. Nothing of it is ever on disk in plaintext:

- The file is made with ``O_TMPFILE`` in ``<data_dir>/blobs/tmp`` (or made and unlinked at
  once where the file system lacks it: `tempfile.TemporaryFile`), mode 0600. It has no name,
  so it disappears when it is closed, and with the process if that dies: an aborted
  transaction (RSET, QUIT, a disconnect, a refusal, a crash) leaves nothing behind.
- Its text is encrypted in 64 KiB chunks with AES-256-GCM (NIST SP 800-38D) under a key that
  exists only in this object: nonce = 8 random octets || u32 chunk index, AAD =
  ``postkeep/spool/v1`` || u32 index. The spool knows how many chunks it wrote and keeps the
  last, partial one in memory, so a chunk that is changed, moved, dropped or added fails its
  tag (`CryptoError`) instead of being read.

A spool is written by one task at a time (in a worker thread, `write`, unless the write fits
in `room`) and read once the
message is complete (`read`); a lock makes `close` wait for a write or read in progress, so a
file descriptor is never closed under a thread still using it (and a read after `close` is an
error, not a read of whatever file took the descriptor over).

`SpooledText` is a message as the store keeps it (trace header fields in memory, then the
spooled text) in the bytes-like form the MIME parser, the inbound checks and the blob
encryption read (`postkeep.mime.window.Window`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postkeep.errors import StoreError
from postkeep.mime.window import Window
from postkeep.store.crypto import CHUNK_SIZE, NONCE_PREFIX_SIZE, TAG_SIZE, CryptoError, new_key

_AAD = b"postkeep/spool/v1"
_SPAN = CHUNK_SIZE + TAG_SIZE  # one chunk on disk


class Spool:
    """An encrypted, nameless temporary file in `directory` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        # kept open for the spool's life: closing it is what removes it (`close`)
        self._file = tempfile.TemporaryFile(dir=Path(directory), buffering=0)  # noqa: SIM115
        self._aes = AESGCM(new_key())
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._chunks = 0  # whole chunks in the file
        self._tail = bytearray()  # the text after them (less than a chunk), in memory
        self._lock = threading.Lock()
        self._closed = False

    @property
    def size(self) -> int:
        """Octets of text written so far."""
        return self._chunks * CHUNK_SIZE + len(self._tail)

    @property
    def buffered(self) -> int:
        """Octets of text held in memory (the last, partial chunk)."""
        return len(self._tail)

    @property
    def room(self) -> int:
        """Octets a write can take without completing a chunk: such a write only adds to the
        partial chunk in memory, and does no I/O (it need not run in a worker thread)."""
        return CHUNK_SIZE - len(self._tail)

    def _nonce(self, index: int) -> bytes:
        return self._prefix + index.to_bytes(4, "big")

    def _aad(self, index: int) -> bytes:
        return _AAD + index.to_bytes(4, "big")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the spool is closed")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append text; every whole chunk is encrypted and written (blocks: a worker thread).
        A spool a write failed on (disk full...) is closed: the error is raised, and then
        `StoreError` on any use."""
        with self._lock:
            self._check_open()
            try:
                self._append(data)
            except BaseException:
                self._close()
                raise

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and write each chunk as soon as it is whole, straight from `data`."""
        with memoryview(data) as view:
            at = 0
            if self._tail:  # complete the partial chunk first
                at = min(len(view), CHUNK_SIZE - len(self._tail))
                self._tail += view[:at]
                if len(self._tail) < CHUNK_SIZE:
                    return
                self._write_chunk(self._tail)
                self._tail = bytearray()
            while len(view) - at >= CHUNK_SIZE:
                self._write_chunk(view[at : at + CHUNK_SIZE])
                at += CHUNK_SIZE
            self._tail += view[at:]

    def _write_chunk(self, chunk: bytes | bytearray | memoryview) -> None:
        index = self._chunks
        sealed = memoryview(self._aes.encrypt(self._nonce(index), chunk, self._aad(index)))
        offset = index * _SPAN
        while sealed:
            written = os.pwrite(self._file.fileno(), sealed, offset)
            offset += written
            sealed = sealed[written:]
        self._chunks += 1

    def read(self, start: int, length: int) -> bytes:
        """Text octets [start, start+length), within what was written; each chunk read is
        authenticated (`CryptoError` if the file was tampered with)."""
        end = start + length
        with self._lock:
            self._check_open()
            if start < 0 or length < 0 or end > self.size:
                raise ValueError("spool read out of range")
            if not length:
                return b""
            first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
            pieces = []
            for index in range(first, last + 1):
                if index == self._chunks:  # the tail in memory
                    pieces.append(bytes(self._tail))
                    continue
                sealed = os.pread(self._file.fileno(), _SPAN, index * _SPAN)
                try:
                    pieces.append(
                        self._aes.decrypt(self._nonce(index), sealed, self._aad(index))
                    )
                except InvalidTag:
                    raise CryptoError(f"spool chunk {index} failed authentication") from None
        base = first * CHUNK_SIZE
        joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return joined[start - base : end - base]

    def close(self) -> None:
        """Close the file, which removes it (idempotent; waits for a write or read in progress)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._tail = bytearray()
            self._file.close()


class SpooledText(Window):
    """A message as it is stored: `prefix` (header fields put in front, the trace) and then
    the text in `spool` from its octet `skip` on (what came before was replaced: a header
    section rewritten), bytes-like for the MIME parser, the checks and the blob encryption.

    Its length is fixed when it is made: make it once the text is complete."""

    __slots__ = ("prefix", "skip", "spool")

    def __init__(self, spool: Spool, prefix: bytes = b"", skip: int = 0) -> None:
        if not 0 <= skip <= spool.size:
            raise ValueError(f"skip {skip} outside the spool's {spool.size} octets")
        self.spool = spool
        self.prefix = prefix
        self.skip = skip
        super().__init__(len(prefix) + spool.size - skip, self._read_at)

    def with_prefix(self, prefix: bytes) -> SpooledText:
        """The same text with `prefix` put in front of what this one has."""
        return SpooledText(self.spool, prefix + self.prefix, self.skip)

    def with_head(self, head: bytes, old: int) -> SpooledText:
        """This text with its first `old` octets replaced by `head` (a rewritten header
        section), nothing copied from the spool."""
        if old <= len(self.prefix):
            return SpooledText(self.spool, head + self.prefix[old:], self.skip)
        return SpooledText(self.spool, head, self.skip + old - len(self.prefix))

    def _read_at(self, start: int, length: int) -> bytes:
        head = len(self.prefix)
        if start + length <= head:
            return self.prefix[start : start + length]
        if start >= head:
            return self.spool.read(self.skip + start - head, length)
        return self.prefix[start:] + self.spool.read(self.skip, start + length - head)


MessageData = bytes | SpooledText
"""A message handed to the store: in memory, or spooled."""
