"""Inline blobs (``blobs.data``, migration 6) next to blob files, on both backends: which is
stored how, every read path giving the same octets, copies, expunges and account removal of
both, tampering detected in the row, and a version-5 database whose blobs are files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text, update

from postkeep.errors import StoreError
from postkeep.store.api import PIECE_SIZE, Account, Envelope, Flag, LocalDelivery
from postkeep.store.blobs import INLINE_MAX
from postkeep.store.crypto import CHUNK_SIZE, encrypted_size
from postkeep.store.sql.migrations import latest_version
from postkeep.store.sql.schema import blobs, schema_version
from postkeep.store.sql.store import SqlStore
from tests.store.layout import blob_files, inline_data, stored_blobs

Run = Callable[[Awaitable[Any]], Any]

# the largest message whose blob is still inline (two chunks: 24 + n + 2 * 16 octets)
LARGEST_INLINE = max(
    n for n in range(INLINE_MAX - 64, INLINE_MAX) if encrypted_size(n) <= INLINE_MAX
)


def text_of(size: int, seed: int = 0) -> bytes:
    head = b"Subject: inline %d\r\nMessage-ID: <%d@example.org>\r\n\r\n" % (seed, seed)
    body = bytes((seed + i * 7) % 251 for i in range(size))  # no two chunks alike
    return (head + body)[:size]


def deliver(run: Run, store: SqlStore, account: Account, data: bytes, mailbox: str = "INBOX"
            ) -> tuple[str, int]:
    env = Envelope("", "", [], "127.0.0.1", "", 1_700_000_000.0)
    result = run(store.deliver(LocalDelivery(env, [account.id], data, Flag(0), mailbox)))
    return result.blob_id, result.delivered[0].message_id


@pytest.fixture
def acct(run: Run, store: SqlStore) -> Account:
    run(store.add_domain("example.org"))
    return run(store.add_account("alice@example.org", "x"))


async def pieces(store: SqlStore, account_id: int, message_id: int, start: int, end: int
                 ) -> tuple[int, list[bytes]]:
    reader = await store.open_message(account_id, message_id)
    try:
        return reader.size, [p async for p in reader.pieces(start, end)]
    finally:
        reader.close()


def test_inline_up_to_the_threshold_files_past_it(
    run: Run, store: SqlStore, acct: Account, db_url: str, data_dir: Path
) -> None:
    assert encrypted_size(LARGEST_INLINE) == INLINE_MAX  # the bound is inclusive
    small, _ = deliver(run, store, acct, text_of(300))
    edge, _ = deliver(run, store, acct, text_of(LARGEST_INLINE, 1))
    past, _ = deliver(run, store, acct, text_of(LARGEST_INLINE + 1, 2))
    assert stored_blobs(db_url, data_dir) == {small: "inline", edge: "inline", past: "file"}
    assert len(inline_data(db_url, edge)) == INLINE_MAX  # the ciphertext a file would hold


@pytest.mark.parametrize(
    ("size", "layout"),
    [(0, "inline"), (5000, "inline"), (LARGEST_INLINE, "inline"), (3 * PIECE_SIZE + 5, "file")],
)
def test_every_read_path_gives_the_same_octets(
    run: Run, store: SqlStore, acct: Account, db_url: str, data_dir: Path, size: int,
    layout: str,
) -> None:
    """read_message, read_messages (whole and prefixes, across a chunk boundary) and
    open_message (pieces, ranges inside and across chunks, clamped, past the end)."""
    data = text_of(size, 3)
    blob_id, mid = deliver(run, store, acct, data)
    assert stored_blobs(db_url, data_dir) == {blob_id: layout}
    assert run(store.read_message(acct.id, mid)) == data
    prefixes = [10, CHUNK_SIZE + 20, size + 50]
    for length in (None, *prefixes):
        got = run(store.read_messages(acct.id, [(mid, length)], expected_bytes=size))
        assert got == {mid: data if length is None else data[:length]}, length
    spans = [(0, size + 1), (7, 4000), (CHUNK_SIZE - 3, CHUNK_SIZE + 3), (size - 10, size + 99),
             (size, size + 5), (size + 1, size + 9)]
    for start, end in spans:
        total, got = run(pieces(store, acct.id, mid, start, end))
        assert total == size
        assert b"".join(got) == data[max(0, start):end], (start, end)
        assert all(0 < len(p) <= PIECE_SIZE for p in got)


def test_copy_expunge_and_remove_account_of_both_kinds(
    run: Run, store: SqlStore, acct: Account, db_url: str, data_dir: Path
) -> None:
    """Copies share the blob either way; expunging one copy keeps it, the last one deletes it
    (an inline blob with its row, a file after the commit); no file is ever made for an inline
    blob, nor looked for."""
    small, large = text_of(2000, 4), text_of(INLINE_MAX + 1000, 5)
    inline_id, _ = deliver(run, store, acct, small)
    file_id, _ = deliver(run, store, acct, large)
    inbox = run(store.get_mailbox(acct.id, "INBOX")).id
    archive = run(store.get_mailbox(acct.id, "Archive")).id
    copied = run(store.copy_messages(acct.id, inbox, [(1, 2)], archive))
    assert copied.pairs == ((1, 1), (2, 2))
    both = {inline_id: "inline", file_id: "file"}
    run(store.set_flags(acct.id, inbox, [(1, 2)], "add", Flag.DELETED))
    assert run(store.expunge(acct.id, inbox)) == [1, 2]
    run(store.sync())
    assert stored_blobs(db_url, data_dir) == both  # the Archive copies hold them
    infos = run(store.list_messages(archive))
    assert [run(store.read_message(acct.id, i.id)) for i in infos] == [small, large]
    moved = run(store.copy_messages(acct.id, archive, [(1, 1)], inbox, move=True))
    assert moved.pairs == ((1, 3),)
    run(store.set_flags(acct.id, archive, [(2, 2)], "add", Flag.DELETED))
    assert run(store.expunge(acct.id, archive)) == [2]
    run(store.sync())
    assert stored_blobs(db_url, data_dir) == {inline_id: "inline"}  # the file is gone
    [info] = run(store.list_messages(inbox))
    assert run(store.read_message(acct.id, info.id)) == small
    assert run(store.get_account_by_id(acct.id)).used_bytes == len(small)
    run(store.remove_account(acct.address))
    assert stored_blobs(db_url, data_dir) == {}


def test_tampered_inline_blob_detected(
    run: Run, store: SqlStore, acct: Account, db_url: str
) -> None:
    data = text_of(CHUNK_SIZE + 500, 6)  # two chunks
    blob_id, mid = deliver(run, store, acct, data)
    raw = bytearray(inline_data(db_url, blob_id))

    def put(value: bytes) -> None:
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:
                conn.execute(update(blobs).where(blobs.c.id == blob_id).values(data=value))
        finally:
            engine.dispose()

    raw[-5] ^= 1  # in the last chunk
    put(bytes(raw))
    with pytest.raises(StoreError):
        run(store.read_message(acct.id, mid))
    with pytest.raises(StoreError, match="failed authentication"):
        run(pieces(store, acct.id, mid, 0, len(data)))
    assert run(pieces(store, acct.id, mid, 0, 100))[1] == [data[:100]]  # the first chunk is fine
    put(bytes(raw[:-20]))  # truncated
    with pytest.raises(StoreError):
        run(store.read_messages(acct.id, [(mid, None)]))


def _downgrade_to_version_5(db_url: str) -> None:
    """What a database written by the code before migration 6 looks like: no ``blobs.data``
    (nor what migrations 7 to 12 added: delivery state, DKIM keys, sending quotas, TLS reports,
    inline queued messages, DMARC reports)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for table in ("webauthn_challenges", "webauthn_credentials", "recovery_codes",
                          "two_factor", "web_sessions", "login_history"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(text("DROP TABLE quarantine"))
            conn.execute(text("DROP TABLE sending_pauses"))
            conn.execute(text("ALTER TABLE outbound_queue DROP COLUMN data"))
            conn.execute(text("DROP TABLE sending_counts"))
            conn.execute(text("DROP TABLE sending_limits"))
            conn.execute(text("DROP TABLE dkim_keys"))
            conn.execute(text("DROP TABLE tlsrpt_results"))
            conn.execute(text("DROP TABLE tlsrpt_sent"))
            for table in ("dmarc_results", "dmarc_sent", "dmarc_feedback"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(text("DROP INDEX ix_outbound_queue_due"))
            conn.execute(text("DROP INDEX ix_messages_mailbox_flags"))  # migration 19
            for column in ("held", "lease_owner", "lease_until", "delay_notified", "requiretls"):
                conn.execute(text(f"ALTER TABLE outbound_queue DROP COLUMN {column}"))
            conn.execute(text("ALTER TABLE blobs DROP COLUMN data"))
            conn.execute(schema_version.delete().where(schema_version.c.version > 5))
    finally:
        engine.dispose()


def _version(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return max(conn.execute(select(schema_version.c.version)).scalars())
    finally:
        engine.dispose()


def test_a_version_5_database_with_blob_files_still_reads(
    run: Run, make_store: Callable[..., SqlStore], db_url: str, data_dir: Path
) -> None:
    old = make_store(inline_max=0)  # every blob a file, as before migration 6
    run(old.add_domain("example.org"))
    acct = run(old.add_account("alice@example.org", "x"))
    messages = [text_of(1000, 7), text_of(CHUNK_SIZE + 9, 8)]
    stored = [deliver(run, old, acct, m) for m in messages]
    run(old.close())
    _downgrade_to_version_5(db_url)
    assert _version(db_url) == 5
    store = make_store()  # migrates to the latest
    assert _version(db_url) == latest_version() == 19
    assert stored_blobs(db_url, data_dir) == {b: "file" for b, _ in stored}
    for (_, mid), data in zip(stored, messages, strict=True):
        assert run(store.read_message(acct.id, mid)) == data
        assert run(store.read_messages(acct.id, [(mid, 50)])) == {mid: data[:50]}
        assert b"".join(run(pieces(store, acct.id, mid, 3, len(data)))[1]) == data[3:]
    assert run(store.message_summaries(acct.id, [stored[0][1]]))
    new_id, _ = deliver(run, store, acct, text_of(1000, 9))  # new small blobs go inline
    assert stored_blobs(db_url, data_dir)[new_id] == "inline"
    inbox = run(store.get_mailbox(acct.id, "INBOX")).id
    run(store.set_flags(acct.id, inbox, [(1, 1)], "add", Flag.DELETED))
    assert run(store.expunge(acct.id, inbox)) == [1]
    run(store.sync())
    assert stored_blobs(db_url, data_dir) == {stored[1][0]: "file", new_id: "inline"}
    assert len(blob_files(data_dir)) == 1
