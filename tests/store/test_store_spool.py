"""Spools (`postkeep.store.spool`): encrypted nameless files, read back in ranges, stored as
blobs and queue entries chunk by chunk (both backends)."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.errors import StoreError
from postkeep.mime.summary import summarize
from postkeep.store.api import DsnRecipient, Envelope, LocalDelivery
from postkeep.store.crypto import CHUNK_SIZE, CryptoError
from postkeep.store.spool import Spool, SpooledText
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
MARKER = b"PLAINTEXT-MARKER-51c9"
TEXT = (b"Subject: spooled\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
        + MARKER + b"\r\n" + bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"\r\n--b--\r\n")


def spooled(directory: Path, data: bytes, piece: int = 100_000) -> Spool:
    spool = Spool(directory)
    for i in range(0, len(data), piece):
        spool.write(data[i : i + piece])
    return spool


def fds_in(directory: Path) -> list[str]:
    """This process's open files in `directory` (a spool shows as "<dir>/... (deleted)" or
    "<dir>/#123 (deleted)")."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            out.append(target)
    return out


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3 * CHUNK_SIZE), max_size=6), st.data())
def test_reads_are_slices_of_what_was_written(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[int], draw: st.DataObject
) -> None:
    data = os.urandom(sum(pieces))
    spool = Spool(tmp_path_factory.mktemp("spool"))
    at = 0
    for n in pieces:
        spool.write(data[at : at + n])
        at += n
    assert spool.size == len(data) and spool.buffered == len(data) % CHUNK_SIZE
    for _ in range(5):
        start = draw.draw(st.integers(0, len(data)))
        length = draw.draw(st.integers(0, len(data) - start))
        assert spool.read(start, length) == data[start : start + length]
    spool.close()


def test_nameless_encrypted_and_gone_when_closed(tmp_path: Path) -> None:
    spool = spooled(tmp_path, TEXT)
    assert list(tmp_path.iterdir()) == []  # no name in the directory
    [target] = fds_in(tmp_path)
    assert target.endswith("(deleted)")
    fd = spool._file.fileno()
    ciphertext = os.pread(fd, 10 * CHUNK_SIZE, 0)
    assert len(ciphertext) == 3 * (CHUNK_SIZE + 16) and MARKER not in ciphertext
    with pytest.raises(ValueError):
        spool.read(0, spool.size + 1)
    spool.close()
    spool.close()
    assert fds_in(tmp_path) == []
    with pytest.raises(StoreError):
        spool.read(0, 1)
    with pytest.raises(StoreError):
        spool.write(b"x")


def test_tampering_is_detected(tmp_path: Path) -> None:
    spool = spooled(tmp_path, TEXT)
    fd = spool._file.fileno()
    first = os.pread(fd, CHUNK_SIZE + 16, 0)
    second = os.pread(fd, CHUNK_SIZE + 16, CHUNK_SIZE + 16)
    os.pwrite(fd, second, 0)  # chunks swapped
    with pytest.raises(CryptoError):
        spool.read(0, 10)
    os.pwrite(fd, first[:-1] + bytes([first[-1] ^ 1]), 0)  # one bit of a tag
    with pytest.raises(CryptoError):
        spool.read(5, 10)
    assert spool.read(CHUNK_SIZE, 10) == TEXT[CHUNK_SIZE : CHUNK_SIZE + 10]  # others intact
    spool.close()


def test_spooled_text_with_a_prefix(tmp_path: Path) -> None:
    spool = spooled(tmp_path, TEXT)
    text = SpooledText(spool).with_prefix(b"Received: x\r\n").with_prefix(b"Return-Path: <>\r\n")
    whole = b"Return-Path: <>\r\nReceived: x\r\n" + TEXT
    assert len(text) == len(whole) and text[:] == whole
    assert text[10:40] == whole[10:40] and text.find(MARKER) == whole.find(MARKER)
    assert summarize(text) == summarize(whole)
    spool.close()


def test_spooled_text_with_its_head_replaced(tmp_path: Path) -> None:
    """A rewritten header section (a forged field removed) in front of the spooled rest:
    replacing within the prefix, and past it into the spool."""
    spool = spooled(tmp_path, TEXT)
    trace = b"Received: x\r\n"
    text = SpooledText(spool).with_prefix(trace)
    whole = trace + TEXT
    shorter = text.with_head(b"New: 1\r\n", len(trace) + 30)
    assert shorter[:] == b"New: 1\r\n" + TEXT[30:] and len(shorter) == len(whole) - 30 - 5
    inside = text.with_head(b"R", 3)
    assert inside[:] == b"R" + whole[3:]
    twice = shorter.with_head(b"", len(b"New: 1\r\n") + 100).with_prefix(b"P: 2\r\n")
    assert twice[:] == b"P: 2\r\n" + TEXT[130:]
    assert twice[5:CHUNK_SIZE + 50] == (b"P: 2\r\n" + TEXT[130:])[5:CHUNK_SIZE + 50]
    assert summarize(twice) == summarize(b"P: 2\r\n" + TEXT[130:])
    with pytest.raises(ValueError):
        SpooledText(spool, skip=spool.size + 1)
    spool.close()


def envelope(queue_id: str) -> Envelope:
    return Envelope(queue_id, "sender@remote.example", [DsnRecipient("a@example.org")],
                    "192.0.2.1", "mx.remote.example", time.time())


def test_a_spooled_message_is_delivered_and_queued(
    run: Run, store: SqlStore, data_dir: Path
) -> None:
    """One blob for the local recipients, one queue entry: both encrypted from the spool,
    with the summary of the whole message; the plaintext is nowhere on disk."""
    run(store.add_domain("example.org"))
    accounts = [run(store.add_account(f"{n}@example.org", "h")) for n in ("a", "b")]
    spool = store.new_spool()
    for i in range(0, len(TEXT), 70_000):
        spool.write(TEXT[i : i + 70_000])
    trace = b"Return-Path: <sender@remote.example>\r\n"
    data = SpooledText(spool).with_prefix(trace)
    result = run(store.deliver(LocalDelivery(envelope("Q1"), [a.id for a in accounts], data)))
    run(store.enqueue_outbound(envelope("Q2"), [DsnRecipient("x@remote.example")], data))
    spool.close()
    for d in result.delivered:
        assert run(store.read_message(d.account_id, d.message_id)) == trace + TEXT
        summaries = run(store.message_summaries(d.account_id, [d.message_id]))
        assert summaries[d.message_id] == summarize(trace + TEXT)
    [entry] = run(store.list_outbound())
    assert entry.size == len(trace + TEXT)
    assert run(store.read_outbound("Q2")) == trace + TEXT
    files = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 2
    assert all(MARKER not in p.read_bytes() for p in files)


def test_a_spool_closed_under_a_delivery_fails_it_cleanly(
    run: Run, store: SqlStore, data_dir: Path
) -> None:
    run(store.add_domain("example.org"))
    account = run(store.add_account("a@example.org", "h"))
    spool = store.new_spool()
    spool.write(TEXT)
    data = SpooledText(spool)
    spool.close()
    with pytest.raises(StoreError):
        run(store.deliver(LocalDelivery(envelope("Q1"), [account.id], data)))
    assert [p for p in (data_dir / "blobs").rglob("*") if p.is_file()] == []
    assert run(store.list_messages(run(store.get_mailbox(account.id, "INBOX")).id)) == []
