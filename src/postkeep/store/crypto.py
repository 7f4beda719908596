"""Encryption at rest: the master key, per-account data keys and chunked message blobs.

Key hierarchy (design: "encryption at rest" in the store brief)::

    master key (32 bytes, file 0600, one per instance)
      ├─ wraps each account's data key          (AES-256-GCM, AAD = account address key)
      │    ├─ wraps each message's content key  (AES-256-GCM, AAD = account id + blob id)
      │    │    └─ encrypts the message blob    (chunked AES-256-GCM, see below)
      │    └─ seals the account's SASL secrets  (AES-256-GCM, AAD = account id + mechanism)
      └─ wraps the outbound-queue data key      (AES-256-GCM, AAD = "queue-data-key")
           └─ wraps each queued message's content key (AAD = queue id + blob id)

One blob is shared by every local recipient of a message: its random content key is wrapped once
per recipient account and stored in that recipient's message row, so each account's data key opens
only its own messages, and removing an account leaves nothing decryptable behind.

Blob format, version 1 (all integers big-endian)::

    header  = magic "PKMB" | version u8 (=1) | chunk_shift u8 (=16) | reserved u16 (=0)
              | nonce prefix (8 random bytes) | plaintext length u64          (24 bytes)
    chunk i = AES-256-GCM(content key, nonce = prefix || u32 i,
                          AAD = header || u32 i || u8 final) of plaintext[i*64KiB : (i+1)*64KiB]

There is always at least one chunk (an empty message is one empty, final chunk). Because every
chunk's AAD covers the whole header (and so the plaintext length), its own index and whether it is
the last one, truncation, extension, reordering, swapping chunks between blobs and editing the
header are all detected. Fixed-size chunks let `decrypt_range` (IMAP partial FETCH, RFC 9051
§6.4.5 ``BODY[]<start.len>``) read and authenticate only the chunks a byte range touches.

AES-GCM follows NIST SP 800-38D: 96-bit nonces, 128-bit tags. Nonces never repeat under a key:
content keys encrypt a single blob with distinct chunk counters; wrapping keys use random nonces
(far below the 2**32 invocation bound per key).
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postkeep.errors import AlreadyExists, StoreError

KEY_SIZE = 32
"""Every key here (master, data, content) is an AES-256 key."""

MAGIC = b"PKMB"
VERSION = 1
CHUNK_SHIFT = 16
CHUNK_SIZE = 1 << CHUNK_SHIFT  # 64 KiB of plaintext per chunk
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 8
_HEADER = struct.Struct(">4sBBH8sQ")
HEADER_SIZE = _HEADER.size  # 24
_CHUNK_AAD = struct.Struct(">IB")
_MAX_CHUNKS = 1 << 32

_WRAP_VERSION = b"\x01"
_WRAP_NONCE_SIZE = 12
WRAPPED_KEY_SIZE = 1 + _WRAP_NONCE_SIZE + KEY_SIZE + TAG_SIZE  # 61
_WRAP_AAD_PREFIX = b"postkeep/key-wrap/v1\x00"
_SEAL_VERSION = b"\x01"
_SEAL_AAD_PREFIX = b"postkeep/seal/v1\x00"

BlobSource = bytes | bytearray | memoryview | BinaryIO


class CryptoError(StoreError):
    """Decryption failed: wrong key, or the data was truncated, extended or tampered with."""


# -- keys ------------------------------------------------------------------------------------------


def new_key() -> bytes:
    """A fresh random 256-bit key (data key or content key) from the OS CSPRNG."""
    return os.urandom(KEY_SIZE)


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise StoreError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")


def account_key_context(address_key: str) -> bytes:
    """AAD binding an account's wrapped data key to its (normalised) address."""
    return b"account-data-key\x00" + address_key.encode()


def message_key_context(account_id: int, blob_id: str) -> bytes:
    """AAD binding a wrapped content key to the owning account and to the blob it opens."""
    return b"message-content-key\x00%d\x00%s" % (account_id, blob_id.encode("ascii"))


def wrap_key(kek: bytes, key: bytes, context: bytes) -> bytes:
    """Encrypt `key` under the key-encryption key `kek` (AES-256-GCM, AAD = `context`).

    Output: version byte | 12-byte random nonce | ciphertext+tag (61 bytes for a 32-byte key).
    """
    nonce = os.urandom(_WRAP_NONCE_SIZE)
    return _WRAP_VERSION + nonce + AESGCM(kek).encrypt(nonce, key, _WRAP_AAD_PREFIX + context)


def seal(key: bytes, value: bytes, context: bytes) -> bytes:
    """Encrypt a small value (e.g. a SASL secret) under `key` (AES-256-GCM, AAD = `context`).

    Output: version byte | 12-byte random nonce | ciphertext+tag; `unseal` reverses it.
    """
    nonce = os.urandom(_WRAP_NONCE_SIZE)
    return _SEAL_VERSION + nonce + AESGCM(key).encrypt(nonce, value, _SEAL_AAD_PREFIX + context)


def unseal(key: bytes, sealed: bytes, context: bytes) -> bytes:
    """Inverse of `seal`; raises CryptoError on a wrong key, context or damaged input."""
    if len(sealed) < 1 + _WRAP_NONCE_SIZE + TAG_SIZE or sealed[:1] != _SEAL_VERSION:
        raise CryptoError("sealed value has an unknown format")
    nonce = sealed[1 : 1 + _WRAP_NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(
            nonce, sealed[1 + _WRAP_NONCE_SIZE :], _SEAL_AAD_PREFIX + context
        )
    except InvalidTag:
        raise CryptoError("cannot unseal value: wrong key or tampered data") from None


def secret_context(account_id: int, mechanism: str) -> bytes:
    """AAD binding a sealed SASL secret to its account and mechanism."""
    return b"account-secret\x00%d\x00%s" % (account_id, mechanism.encode("ascii"))


def structure_context(blob_id: str) -> bytes:
    """AAD binding a sealed MIME summary (``blobs.structure``) to its blob."""
    return b"message-structure\x00%s" % blob_id.encode("ascii")


def queue_key_context() -> bytes:
    """AAD of the instance's outbound-queue data key (wrapped by the master key)."""
    return b"queue-data-key"


def outbound_key_context(queue_id: str, blob_id: str) -> bytes:
    """AAD binding a queued message's wrapped content key to its queue entry and blob."""
    return b"outbound-content-key\x00%s\x00%s" % (queue_id.encode(), blob_id.encode("ascii"))


def dkim_key_context() -> bytes:
    """AAD of the instance's DKIM data key (wrapped by the master key)."""
    return b"dkim-data-key"


def junk_key_context() -> bytes:
    """AAD of the instance's junk token key (wrapped by the master key), which hashes the
    junk classifier's tokens (`postkeep.store.sql.junk`)."""
    return b"junk-token-key"


def dkim_private_context(domain: str, selector: str) -> bytes:
    """AAD binding a sealed DKIM private key to its domain and selector."""
    return b"dkim-private-key\x00%s\x00%s" % (domain.encode(), selector.encode())


def unwrap_key(kek: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Inverse of `wrap_key`; raises CryptoError on a wrong key, context or damaged input."""
    if len(wrapped) != WRAPPED_KEY_SIZE or wrapped[:1] != _WRAP_VERSION:
        raise CryptoError("wrapped key has an unknown format")
    nonce = wrapped[1 : 1 + _WRAP_NONCE_SIZE]
    try:
        return AESGCM(kek).decrypt(
            nonce, wrapped[1 + _WRAP_NONCE_SIZE :], _WRAP_AAD_PREFIX + context
        )
    except InvalidTag:
        raise CryptoError("cannot unwrap key: wrong key or tampered data") from None


# -- master key file -------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_master_key(path: str | os.PathLike[str]) -> bytes:
    """Create the instance master key: 32 random bytes in a new file with mode 0600.

    Refuses (AlreadyExists) to overwrite an existing file: losing the old key loses all mail.
    The file and its directory entry are fsync'd before returning the key.
    """
    p = Path(path)
    key = new_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError:
        raise AlreadyExists(f"{p}: master key file exists already; refusing to overwrite") from None
    except OSError as exc:
        raise StoreError(f"{p}: cannot create master key file: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask did
        view = memoryview(key)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        p.unlink(missing_ok=True)
        raise
    os.close(fd)
    _fsync_dir(p.parent.resolve())
    return key


def load_master_key(path: str | os.PathLike[str]) -> bytes:
    """Read the master key file; refuses a file that group or others may read or write.

    Raises StoreError naming the file and the fix (``chmod 600``) for a too-open mode, a file that
    is not a regular file, or one that does not hold exactly 32 bytes.
    """
    p = Path(path)
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise StoreError(f"{p}: master key file does not exist") from None
    except OSError as exc:
        raise StoreError(f"{p}: cannot open master key file: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{p}: master key is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise StoreError(
                f"{p}: master key file is accessible by group/other (mode {mode:04o}); "
                f"it must be 0600 (chmod 600 {p})"
            )
        data = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_SIZE:
        raise StoreError(f"{p}: master key file must hold exactly {KEY_SIZE} bytes")
    return data


# -- blobs -----------------------------------------------------------------------------------------


def encrypted_size(plaintext_size: int) -> int:
    """Size on disk of a blob holding `plaintext_size` bytes."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return HEADER_SIZE + plaintext_size + chunks * TAG_SIZE


class Plaintext(Protocol):
    """What a blob is encrypted from: octets with a length that can be sliced (bytes, or a
    `postkeep.mime.window.Window` onto a spooled message)."""

    def __len__(self) -> int: ...
    def __getitem__(self, key: slice, /) -> bytes | bytearray | memoryview: ...


def encrypt_stream(key: bytes, data: Plaintext) -> Iterator[bytes]:
    """The blob of `data` (see the module docstring) in pieces: the header, then each chunk's
    ciphertext. `data` is read a chunk at a time, as the pieces are taken, so writing them one
    by one never holds more than a chunk of the message or of its blob."""
    _check_key(key, "content key")
    size = len(data)
    chunks = max(1, -(-size // CHUNK_SIZE))
    if chunks > _MAX_CHUNKS:
        raise StoreError("message too large to encrypt")
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = _HEADER.pack(MAGIC, VERSION, CHUNK_SHIFT, 0, prefix, size)
    return _chunks(AESGCM(key), header, prefix, data, chunks)


def _chunks(
    aes: AESGCM, header: bytes, prefix: bytes, data: Plaintext, chunks: int
) -> Iterator[bytes]:
    yield header
    last = chunks - 1
    for i in range(chunks):
        chunk = data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        aad = header + _CHUNK_AAD.pack(i, i == last)
        yield aes.encrypt(prefix + i.to_bytes(4, "big"), chunk, aad)


def encrypt_blob(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Encrypt a whole message held in memory into the chunked blob format."""
    return b"".join(encrypt_stream(key, memoryview(data)))


class _Header:
    __slots__ = ("chunk_size", "chunks", "prefix", "raw", "size")

    def __init__(self, raw: bytes) -> None:
        if len(raw) < HEADER_SIZE:
            raise CryptoError("blob truncated: incomplete header")
        magic, version, shift, reserved, prefix, size = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise CryptoError("not a postkeep blob (bad magic)")
        if version != VERSION or shift != CHUNK_SHIFT or reserved != 0:
            raise CryptoError(f"unsupported blob format (version {version}, chunk shift {shift})")
        self.raw = bytes(raw[:HEADER_SIZE])
        self.prefix: bytes = prefix
        self.size: int = size
        self.chunk_size: int = 1 << shift
        self.chunks: int = max(1, -(-size // self.chunk_size))
        if self.chunks > _MAX_CHUNKS:
            raise CryptoError("blob header claims an impossible size")

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + self.size + self.chunks * TAG_SIZE

    def chunk_span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index`'s ciphertext+tag within the blob."""
        offset = HEADER_SIZE + index * (self.chunk_size + TAG_SIZE)
        plain = min(self.chunk_size, self.size - index * self.chunk_size)
        return offset, plain + TAG_SIZE

    def open_chunk(self, aes: AESGCM, index: int, ciphertext: bytes | memoryview) -> bytes:
        final = index == self.chunks - 1
        nonce = self.prefix + index.to_bytes(4, "big")
        try:
            return aes.decrypt(nonce, ciphertext, self.raw + _CHUNK_AAD.pack(index, final))
        except InvalidTag:
            raise CryptoError(
                f"blob chunk {index} failed authentication: wrong key, truncated or tampered"
            ) from None


class _Reader:
    """Random access to a blob held in memory or in a seekable binary file."""

    def __init__(self, source: BlobSource) -> None:
        if isinstance(source, bytes | bytearray | memoryview):
            self._buf: memoryview | None = memoryview(source)
            self._file: BinaryIO | None = None
        else:
            self._buf = None
            self._file = source

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if self._buf is not None:
            return self._buf[offset : offset + length]
        assert self._file is not None
        self._file.seek(offset)
        return self._file.read(length)

    def size(self) -> int:
        if self._buf is not None:
            return len(self._buf)
        assert self._file is not None
        return int(self._file.seek(0, io.SEEK_END))


def blob_plaintext_size(source: BlobSource) -> int:
    """The plaintext length a blob's header claims (authenticated only once a chunk decrypts)."""
    return _Header(bytes(_Reader(source).read(0, HEADER_SIZE))).size


def decrypt_blob(source: BlobSource, key: bytes) -> bytes:
    """Decrypt and authenticate a whole blob (bytes or a seekable binary file)."""
    _check_key(key, "content key")
    reader = _Reader(source)
    header = _Header(bytes(reader.read(0, HEADER_SIZE)))
    actual = reader.size()
    if actual != header.total_size:
        raise CryptoError(
            f"blob is {actual} bytes, its header implies {header.total_size}: truncated or extended"
        )
    aes = AESGCM(key)
    if header.chunks == 1:
        return header.open_chunk(aes, 0, reader.read(HEADER_SIZE, actual - HEADER_SIZE))
    out = bytearray()
    for i in range(header.chunks):
        offset, length = header.chunk_span(i)
        out += header.open_chunk(aes, i, reader.read(offset, length))
    return bytes(out)


def decrypt_range(source: BlobSource, key: bytes, start: int, length: int) -> bytes:
    """Decrypt plaintext bytes [start, start+length) reading only the chunks that hold them.

    The range is clamped to the message, like IMAP partial fetch (RFC 9051 §6.4.5): a start past
    the end gives b"". Every chunk touched is authenticated; a short read raises CryptoError.
    """
    _check_key(key, "content key")
    if start < 0 or length < 0:
        raise ValueError("start and length must be non-negative")
    reader = _Reader(source)
    header = _Header(bytes(reader.read(0, HEADER_SIZE)))
    end = min(start + length, header.size)
    if start >= end:
        return b""
    aes = AESGCM(key)
    first, last = start // header.chunk_size, (end - 1) // header.chunk_size
    out = bytearray()
    for i in range(first, last + 1):
        offset, span = header.chunk_span(i)
        ciphertext = reader.read(offset, span)
        if len(ciphertext) != span:
            raise CryptoError(f"blob truncated in chunk {i}")
        out += header.open_chunk(aes, i, ciphertext)
    base = first * header.chunk_size
    return bytes(out[start - base : end - base])
