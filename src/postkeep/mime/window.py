"""A read-only, bytes-like view of octets that are read a block at a time.

The MIME parser (`postkeep.mime.structure`) and the delivery stages read a message with a few
`bytes` operations only: ``len``, an octet ``w[i]``, a slice ``w[a:b]``, ``find``, ``count`` and
``startswith``. `Window` offers exactly these over a `read(offset, length)` function, keeping
two blocks of `block` octets: a message far larger than memory should hold (an SMTP message
spooled to an encrypted file, `postkeep.store.spool`) is parsed in place, each block decrypted
when it is needed, and what it costs in memory is two blocks and the slices asked for.

The semantics are those of `bytes` for what the parser passes (bounds as for slices, a step of
1, a non-empty `sub` or `prefix`); `find` and `count` look at the octets in steps of one block,
overlapping by the length of what they look for, so a match across two blocks is found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

BLOCK = 256 * 1024


class Window:
    """`size` octets, read with `read(offset, length)` (which returns exactly what it is asked
    for: the range is always within the octets)."""

    __slots__ = ("_blocks", "_read", "_size", "block")

    def __init__(self, size: int, read: Callable[[int, int], bytes], block: int = BLOCK) -> None:
        if size < 0 or block < 1:
            raise ValueError("a window needs a size >= 0 and a block >= 1")
        self._size = size
        self._read = read
        self.block = block
        self._blocks: dict[int, bytes] = {}  # at most two, the newest last

    def __len__(self) -> int:
        return self._size

    def _block(self, index: int) -> bytes:
        data = self._blocks.get(index)
        if data is None:
            start = index * self.block
            data = self._read(start, min(self.block, self._size - start))
            if len(self._blocks) >= 2:
                del self._blocks[next(iter(self._blocks))]
            self._blocks[index] = data
        return data

    def _span(self, start: int, end: int) -> bytes:
        """The octets [start, end), 0 <= start <= end <= len(self)."""
        if start >= end:
            return b""
        first, last = start // self.block, (end - 1) // self.block
        base = first * self.block
        if first == last:
            data = self._block(first)
            return data[start - base : end - base]
        pieces = [self._block(i) for i in range(first, last + 1)]
        joined = b"".join(pieces)
        return joined[start - base : end - base]

    def _bounds(self, start: int | None, end: int | None) -> tuple[int, int]:
        return slice(start, end).indices(self._size)[:2]

    @overload
    def __getitem__(self, key: int) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: int | slice) -> int | bytes:
        if isinstance(key, slice):
            start, end, step = key.indices(self._size)
            if step != 1:
                raise ValueError("a window is sliced with a step of 1 only")
            return self._span(start, max(start, end))
        index = key + self._size if key < 0 else key
        if not 0 <= index < self._size:
            raise IndexError("window index out of range")
        return self._block(index // self.block)[index % self.block]

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        """Lowest index of `sub` in [start, end), or -1 (as `bytes.find`)."""
        start, end = self._bounds(start, end)
        _nonempty(sub)
        pos = start
        while pos + len(sub) <= end:
            stop = min(end, pos + self.block + len(sub) - 1)
            found = self._span(pos, stop).find(sub)
            if found >= 0:
                return pos + found
            pos += self.block
        return -1

    def count(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        """Non-overlapping occurrences of `sub` in [start, end) (as `bytes.count`)."""
        start, end = self._bounds(start, end)
        _nonempty(sub)
        if len(sub) == 1:  # no occurrence can cross a block: count block by block
            return sum(
                self._span(pos, min(end, pos + self.block)).count(sub)
                for pos in range(start, end, self.block)
            )
        n, pos = 0, start
        while (found := self.find(sub, pos, end)) >= 0:
            n += 1
            pos = found + len(sub)
        return n

    def startswith(self, prefix: bytes, start: int | None = None, end: int | None = None) -> bool:
        """Whether [start, end) begins with `prefix` (as `bytes.startswith`)."""
        start, end = self._bounds(start, end)
        _nonempty(prefix)
        if start + len(prefix) > end:
            return False
        return self._span(start, start + len(prefix)) == prefix


def _nonempty(sub: bytes) -> None:
    if not sub:
        raise ValueError("a window looks for non-empty octets only")
