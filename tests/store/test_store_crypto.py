"""Encryption at rest: blob format, range decryption, key wrapping, master key file."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.errors import AlreadyExists, StoreError
from postkeep.store import crypto
from postkeep.store.crypto import (
    CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    CryptoError,
    create_master_key,
    decrypt_blob,
    decrypt_range,
    encrypt_blob,
    encrypted_size,
    load_master_key,
    new_key,
    unwrap_key,
    wrap_key,
)

KEY = bytes(range(32))
BIG = os.urandom(3 * CHUNK_SIZE + 1234)
BIG_BLOB = encrypt_blob(KEY, BIG)


@pytest.mark.parametrize(
    "size", [0, 1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 200_000]
)
def test_roundtrip_sizes(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt_blob(KEY, data)
    assert len(blob) == encrypted_size(size)
    assert blob.startswith(crypto.MAGIC)
    assert decrypt_blob(blob, KEY) == data
    assert decrypt_blob(io.BytesIO(blob), KEY) == data
    assert crypto.blob_plaintext_size(blob) == size


def test_ciphertext_differs_and_hides_plaintext() -> None:
    data = b"SECRET-MARKER " * 100
    a, b = encrypt_blob(KEY, data), encrypt_blob(KEY, data)
    assert a != b  # random nonce prefix
    assert b"SECRET-MARKER" not in a


@settings(max_examples=60, deadline=None, database=None)
@given(start=st.integers(0, len(BIG) + 10), length=st.integers(0, 3 * CHUNK_SIZE))
def test_decrypt_range_matches_slice(start: int, length: int) -> None:
    expected = BIG[start : start + length]
    assert decrypt_range(BIG_BLOB, KEY, start, length) == expected
    assert decrypt_range(io.BytesIO(BIG_BLOB), KEY, start, length) == expected


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (CHUNK_SIZE - 1, 2),  # straddles chunk 0/1
        (CHUNK_SIZE, 1),  # first byte of chunk 1
        (CHUNK_SIZE - 10, 2 * CHUNK_SIZE + 20),  # spans three chunks
        (3 * CHUNK_SIZE, 5000),  # into the short final chunk, clamped
        (len(BIG) - 1, 100),
        (len(BIG), 10),
    ],
)
def test_decrypt_range_chunk_boundaries(start: int, length: int) -> None:
    assert decrypt_range(BIG_BLOB, KEY, start, length) == BIG[start : start + length]


def test_decrypt_range_reads_only_needed_chunks() -> None:
    damaged = bytearray(BIG_BLOB)
    damaged[-5] ^= 1  # corrupt the last chunk only
    assert decrypt_range(bytes(damaged), KEY, 10, 100) == BIG[10:110]
    with pytest.raises(CryptoError):
        decrypt_range(bytes(damaged), KEY, len(BIG) - 10, 10)


def test_decrypt_range_rejects_negative() -> None:
    with pytest.raises(ValueError):
        decrypt_range(BIG_BLOB, KEY, -1, 5)


def test_wrong_key_detected() -> None:
    with pytest.raises(CryptoError):
        decrypt_blob(BIG_BLOB, new_key())
    with pytest.raises(CryptoError):
        decrypt_range(BIG_BLOB, new_key(), 0, 10)


def test_truncation_detected() -> None:
    # cut at a chunk boundary: every remaining chunk is intact, yet the loss is noticed
    cut = HEADER_SIZE + 2 * (CHUNK_SIZE + TAG_SIZE)
    with pytest.raises(CryptoError):
        decrypt_blob(BIG_BLOB[:cut], KEY)
    with pytest.raises(CryptoError):
        decrypt_blob(BIG_BLOB[:-1], KEY)
    with pytest.raises(CryptoError):
        decrypt_range(BIG_BLOB[:cut], KEY, 3 * CHUNK_SIZE, 10)
    with pytest.raises(CryptoError):
        decrypt_blob(BIG_BLOB[:10], KEY)
    with pytest.raises(CryptoError):
        decrypt_blob(BIG_BLOB + b"x", KEY)


def test_truncated_small_blob_detected() -> None:
    blob = encrypt_blob(KEY, b"hello world")
    with pytest.raises(CryptoError):
        decrypt_blob(blob[:-3], KEY)
    with pytest.raises(CryptoError):
        decrypt_blob(blob[:HEADER_SIZE], KEY)


def test_chunk_swap_and_reorder_detected() -> None:
    span = CHUNK_SIZE + TAG_SIZE
    c0 = BIG_BLOB[HEADER_SIZE : HEADER_SIZE + span]
    c1 = BIG_BLOB[HEADER_SIZE + span : HEADER_SIZE + 2 * span]
    swapped = BIG_BLOB[:HEADER_SIZE] + c1 + c0 + BIG_BLOB[HEADER_SIZE + 2 * span :]
    with pytest.raises(CryptoError):
        decrypt_blob(swapped, KEY)
    # a chunk from another blob under the same key (same position) is rejected as well
    other = encrypt_blob(KEY, BIG)
    mixed = BIG_BLOB[: HEADER_SIZE + span] + other[HEADER_SIZE + span :]
    with pytest.raises(CryptoError):
        decrypt_blob(mixed, KEY)


def test_header_and_ciphertext_tampering_detected() -> None:
    blob = bytearray(encrypt_blob(KEY, b"x" * 1000))
    for pos in (HEADER_SIZE - 1, 10, HEADER_SIZE + 5, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(CryptoError):
            decrypt_blob(bytes(bad), KEY)
    with pytest.raises(CryptoError, match="magic"):
        decrypt_blob(b"XXXX" + bytes(blob[4:]), KEY)


def test_wrap_unwrap() -> None:
    kek, key = new_key(), new_key()
    wrapped = wrap_key(kek, key, b"ctx")
    assert len(wrapped) == crypto.WRAPPED_KEY_SIZE
    assert unwrap_key(kek, wrapped, b"ctx") == key
    with pytest.raises(CryptoError):
        unwrap_key(kek, wrapped, b"other")  # bound to its context (account / blob)
    with pytest.raises(CryptoError):
        unwrap_key(new_key(), wrapped, b"ctx")
    with pytest.raises(CryptoError):
        unwrap_key(kek, wrapped[:-1], b"ctx")


def test_contexts_are_distinct() -> None:
    assert crypto.message_key_context(1, "ab") != crypto.message_key_context(2, "ab")
    assert crypto.message_key_context(1, "ab") != crypto.message_key_context(1, "ac")
    assert crypto.account_key_context("a@x") != crypto.account_key_context("b@x")


def test_master_key_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    old = os.umask(0)  # the mode must not depend on the umask
    try:
        key = create_master_key(path)
    finally:
        os.umask(old)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(path) == key
    with pytest.raises(AlreadyExists):
        create_master_key(path)
    assert load_master_key(path) == key  # not overwritten


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_master_key_refuses_open_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    create_master_key(path)
    path.chmod(mode)
    with pytest.raises(StoreError, match="0600"):
        load_master_key(path)


def test_master_key_bad_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        load_master_key(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(StoreError, match="32 bytes"):
        load_master_key(short)
    with pytest.raises(StoreError, match="regular file"):
        d = tmp_path / "dir.key"
        d.mkdir(mode=0o700)
        load_master_key(d)
