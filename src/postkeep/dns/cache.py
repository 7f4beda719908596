"""A bounded LRU cache of lookup outcomes that honours their TTLs (RFC 1035 §3.2.1, RFC 2308 §5).

Keys are (name, type). What is kept: answers for their TTL, NXDOMAIN and NODATA for their
negative TTL; a `TempFail` never (see docs/architecture.md, "DNS"). Bounds: at most
`max_entries` entries (least recently used evicted first), and an outcome whose records take
more than `MAX_ENTRY_BYTES` is not kept at all, so the cache holds at most about
`max_entries * MAX_ENTRY_BYTES` of record data whatever names it is asked about. A TTL of 0
is not cached (RFC 1035 §3.2.1: "should not be cached").

Time comes from an injected clock (seconds, monotonic) so that tests control expiry.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from postkeep.dns.results import Cacheable

#: Record data (wire octets) above which an outcome is served but not cached: real MX, TXT
#: (SPF, DKIM keys of 4096-bit RSA), TLSA sets are well below; a hostile zone's 64 KiB answer
#: must not be multiplied by the entry count.
MAX_ENTRY_BYTES = 4096


class DnsCache:
    """LRU of (name, type) -> outcome with its expiry; `get` returns the outcome with its TTL
    counted down to what remains."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Cacheable[Any]]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> Cacheable[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, outcome = entry
        remaining = expires - self.clock()
        if remaining <= 0:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        ttl = math.ceil(remaining)
        if outcome.ttl != ttl:  # one copy per second counted down, not one per hit
            outcome = dataclasses.replace(outcome, ttl=ttl)
            self._entries[key] = (expires, outcome)
        return outcome

    def put(self, key: tuple[str, str], outcome: Cacheable[Any], size: int) -> None:
        """Keep `outcome` for its `ttl` seconds; `size` is its record data in octets."""
        if self.max_entries <= 0 or outcome.ttl <= 0 or size > MAX_ENTRY_BYTES:
            return
        self._entries[key] = (self.clock() + outcome.ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
