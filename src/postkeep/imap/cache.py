"""A process's cache of what FETCH decodes per message: the MIME summary and the header.

FETCH ENVELOPE, BODYSTRUCTURE, BODY[HEADER.FIELDS (...)] and the like need a message's summary
(`postkeep.mime.summary`: one row read, a key unwrapped, the document unsealed and decoded, its
part tree rebuilt) and, for header items, the header octets (the blob opened and its first
chunk decrypted). Clients ask for the same messages again and again (every device of a user,
every resync, every new connection of a mail client), so the decoded forms are kept here,
least recently used out first, within `max_bytes` (an estimate of the memory they take).

Entries never go stale: a message's content never changes, and message ids are never reused
(SQLite AUTOINCREMENT, PostgreSQL identity columns); an expunged message's entry is simply no
longer asked for and ages out. Entries are keyed by (account id, message id), and a session
only asks for ids its own mailbox listing gave it. Like every decrypted message a FETCH sends,
the entries live in this process's memory only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from postkeep.mime.summary import Summary

_OVERHEAD = 300  # octets of bookkeeping per entry (key tuple, entry object, dict slot)
_SUMMARY_FACTOR = 3  # decoded strings and the part tree take about this much the document


@dataclass(slots=True)
class _Entry:
    summary: Summary | None = None
    header: bytes | None = None
    size: int = _OVERHEAD


class MessageCache:
    """LRU of (account id, message id) -> decoded summary and header octets."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()
        self.size = 0

    def summary(self, account_id: int, message_id: int) -> Summary | None:
        entry = self._get((account_id, message_id))
        return entry.summary if entry is not None else None

    def header(self, account_id: int, message_id: int) -> bytes | None:
        entry = self._get((account_id, message_id))
        return entry.header if entry is not None else None

    def put_summary(
        self, account_id: int, message_id: int, summary: Summary, raw_size: int
    ) -> None:
        entry = self._entry((account_id, message_id))
        if entry is not None and entry.summary is None:
            entry.summary = summary
            self._grow(entry, raw_size * _SUMMARY_FACTOR)

    def put_header(self, account_id: int, message_id: int, header: bytes) -> None:
        entry = self._entry((account_id, message_id))
        if entry is not None and entry.header is None:
            entry.header = header
            self._grow(entry, len(header))

    def _get(self, key: tuple[int, int]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _entry(self, key: tuple[int, int]) -> _Entry | None:
        """The entry to fill for `key` (created if new); None when caching is off."""
        if self.max_bytes <= 0:
            return None
        entry = self._get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self.size += entry.size
        return entry

    def _grow(self, entry: _Entry, octets: int) -> None:
        entry.size += octets
        self.size += octets
        while self.size > self.max_bytes and self._entries:
            _key, old = self._entries.popitem(last=False)
            self.size -= old.size
