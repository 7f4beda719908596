"""The selected mailbox as one IMAP session sees it (RFC 9051 §2.3.1, §7.5.1; RFC 7162 §3.2.10).

Message sequence numbers are positions in the session's own list of UIDs, which changes only
when the session tells the client: EXISTS adds UIDs at the end, EXPUNGE / VANISHED removes them.
`apply()` takes what changed in the store since the view was last brought up to date (UIDs
expunged, UIDs added: RFC 7162's MODSEQ order makes that exact, see `Session.sync`) and returns
what must be announced, so two sessions on one mailbox stay consistent whatever order their
changes commit in. Expunges are held back (the UIDs stay in the view) while a FETCH, STORE or
SEARCH by sequence number runs, as RFC 9051 §7.5.1 requires.

`Selected` is the session's selected mailbox: the view and what the session has announced of
the mailbox (HIGHESTMODSEQ, keywords, \\Recent messages, SEARCHRES's saved result).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from postkeep.imap import flags
from postkeep.imap.wire.commands import SequenceSet
from postkeep.store.api import MessageInfo


@dataclass(slots=True)
class SyncResult:
    """What changed since the view was last synchronised."""

    expunged: list[tuple[int, int]]  # (sequence number as announced, uid), in announce order
    exists: int | None  # new message count to announce, or None


class MailboxView:
    """The UIDs of the selected mailbox in sequence order, as last announced to the client."""

    def __init__(self, uids: Sequence[int]) -> None:
        self.uids: list[int] = list(uids)
        self.held: set[int] = set()  # expunged in the store, not announced yet

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def by_seq(self, seqs: SequenceSet) -> list[int]:
        """UIDs named by sequence numbers ("*" is the last message); out-of-range → []."""
        out: list[int] = []
        n = len(self.uids)
        for low, high in seqs.resolve(n):
            if low > n:
                continue
            out.extend(self.uids[low - 1 : min(high, n)])
        return out

    def seq_in_range(self, seqs: SequenceSet) -> bool:
        """Whether every number is a valid sequence number (RFC 9051 §6.4.5: else BAD)."""
        n = len(self.uids)
        return all(high <= n for _, high in seqs.resolve(n))

    def by_uid(self, uids: SequenceSet) -> list[int]:
        """UIDs in the view named by a UID set ("*" is the largest UID in the view)."""
        out: list[int] = []
        for low, high in uids.resolve(self.largest_uid):
            out.extend(self.uids[bisect_left(self.uids, low) : bisect_right(self.uids, high)])
        return out

    def apply(self, gone: Iterable[int], added: Sequence[int], allow_expunge: bool) -> SyncResult:
        """Take UIDs expunged from the store and UIDs added to it (ascending, all above the
        view's) since the last call. Expunges of UIDs in the view are announced only when
        `allow_expunge`; until then they are held back and the UIDs stay in the view."""
        self.held.update(u for u in gone if self.seq_of(u) is not None)
        expunged: list[tuple[int, int]] = []
        if allow_expunge and self.held:
            expunged = self.remove(sorted(self.held))
            self.held.clear()
        largest = self.largest_uid
        new = [u for u in added if u > largest]
        if new:
            self.uids.extend(new)
        return SyncResult(expunged, len(self.uids) if new else None)

    def remove(self, uids: Sequence[int]) -> list[tuple[int, int]]:
        """Remove UIDs this session expunged itself; (sequence number as announced, uid)."""
        gone = set(uids)
        out: list[tuple[int, int]] = []
        kept: list[int] = []
        for i, uid in enumerate(self.uids):
            if uid in gone:
                out.append((i + 1 - len(out), uid))
            else:
                kept.append(uid)
        self.uids = kept
        return out


@dataclass(slots=True)
class Selected:
    """The selected mailbox of one session (RFC 9051 §3.3): its view, and what was announced."""

    mailbox_id: int
    name: str
    uidvalidity: int
    read_only: bool
    view: MailboxView
    modseq: int  # highest MODSEQ announced
    keywords: set[str] = field(default_factory=set)  # lower-case keywords announced in FLAGS
    keyword_names: list[str] = field(default_factory=list)
    dirty: bool = False
    reported: dict[int, int] = field(default_factory=dict)  # uid -> modseq already sent
    saved: frozenset[int] = frozenset()  # SEARCHRES "$" (UIDs)
    recent: set[int] = field(default_factory=set)  # UIDs \Recent to this session

    def flag_list(self, info: MessageInfo) -> bytes:
        """The FLAGS list of a message, with \\Recent when it is recent to this session."""
        return flags.flag_list(info.flags, info.keywords, recent=info.uid in self.recent)

    def uid_set(self, uids: SequenceSet) -> list[int]:
        """UIDs in the view a UID set names, with SEARCHRES's "$" (RFC 5182)."""
        found = self.view.by_uid(uids)
        if uids.saved:
            found = sorted(set(found) | (self.saved & set(self.view.uids)))
        return found

    def targets(self, seqs: SequenceSet, uid: bool) -> list[int] | None:
        """UIDs a command names; None (the command is answered BAD) for sequence numbers out of
        range."""
        if uid:
            return self.uid_set(seqs)
        if not self.view.seq_in_range(seqs):
            return None
        found = self.view.by_seq(seqs)
        if seqs.saved:
            found = sorted(set(found) | (self.saved & set(self.view.uids)))
        return found
