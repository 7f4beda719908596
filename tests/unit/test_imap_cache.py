"""postkeep.imap.cache.MessageCache: per (account, message) entries, least recently used out
first within the byte bound, off at 0."""

from __future__ import annotations

from postkeep.imap.cache import MessageCache
from postkeep.mime.summary import Summary, summarize

MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Hello\r\n"
    b"Message-ID: <1@example.test>\r\n\r\nBody text.\r\n"
)
DOC = summarize(MESSAGE)


def test_entries_are_per_account_and_message() -> None:
    cache = MessageCache(1 << 20)
    summary = Summary(DOC)
    cache.put_summary(1, 10, summary, len(DOC))
    cache.put_header(1, 10, b"Subject: Hello\r\n\r\n")
    assert cache.summary(1, 10) is summary
    assert cache.header(1, 10) == b"Subject: Hello\r\n\r\n"
    assert cache.summary(2, 10) is None and cache.header(2, 10) is None  # another account
    assert cache.summary(1, 11) is None
    cache.put_header(1, 11, b"X: y\r\n\r\n")  # a header without the summary is kept too
    assert cache.header(1, 11) == b"X: y\r\n\r\n" and cache.summary(1, 11) is None


def test_least_recently_used_out_first_within_the_bound() -> None:
    header = b"H" * 1000
    cache = MessageCache(10_000)
    for mid in range(1, 6):
        cache.put_header(1, mid, header)
    assert cache.size <= 10_000
    assert cache.header(1, 1) == header  # touched: now the most recently used
    for mid in range(6, 20):
        cache.put_header(1, mid, header)
        assert cache.size <= 10_000
    kept = [mid for mid in range(1, 20) if cache.header(1, mid) is not None]
    assert kept == list(range(20 - len(kept), 20))  # the newest survive, 1 went in its turn
    assert 5 <= len(kept) < 10
    big = MessageCache(500)  # an entry larger than the whole bound is not kept
    big.put_header(1, 1, header)
    assert big.header(1, 1) is None and big.size == 0


def test_a_touched_entry_outlives_older_untouched_ones() -> None:
    """Least recently used, not first in: reading an old entry (either kind) keeps it when the
    bound is next passed, and the oldest untouched entry goes instead."""
    header = b"H" * 1000  # 1300 octets an entry with the bookkeeping
    for touch in (MessageCache.header, MessageCache.summary):
        cache = MessageCache(7 * 1300)  # room for exactly 7
        for mid in range(1, 8):
            cache.put_header(1, mid, header)
        assert cache.size == 7 * 1300
        touch(cache, 1, 1)  # the oldest, read again
        cache.put_header(1, 8, header)  # past the bound: one must go
        assert cache.size == 7 * 1300
        assert cache.header(1, 1) == header  # touched: kept
        assert cache.header(1, 2) is None  # the least recently used: evicted
        assert all(cache.header(1, mid) == header for mid in range(3, 9))


def test_filling_an_entry_counts_as_a_use() -> None:
    header = b"H" * 1000
    cache = MessageCache(3 * 1300 + 3 * len(DOC) + 100)
    for mid in (1, 2, 3):
        cache.put_header(1, mid, header)
    cache.put_summary(1, 1, Summary(DOC), len(DOC))  # entry 1 gets its summary: used now
    cache.put_header(1, 4, header)
    assert cache.summary(1, 1) is not None and cache.header(1, 2) is None


def test_zero_turns_it_off() -> None:
    cache = MessageCache(0)
    cache.put_summary(1, 1, Summary(DOC), len(DOC))
    cache.put_header(1, 1, b"X: y\r\n\r\n")
    assert cache.summary(1, 1) is None and cache.header(1, 1) is None and cache.size == 0
