"""Pruning the junk classifier's tokens (`[junk] hapax_days`, `max_account_tokens`,
`max_instance_tokens`, `prune_rows`), so that the table does not grow without bound.

Two passes, each in transactions of at most `BATCH` rows (`Store.junk_prune_hapaxes`,
`Store.junk_trim`), so a prune never holds the store's writer for long:

1. hapaxes: tokens seen in one learnt message only and not learnt for `hapax_days` days
   (most of a Bayes database: bogofilter's and SpamAssassin's expiry drop them first), found
   by walking the table in key order; a run that stops at its bound (`prune_rows` rows looked
   at) leaves its place to the next run of the same `JunkPruner`;
2. caps: each scope over its cap (an account's, the instance's) loses its least informative
   tokens, those in fewest messages and, among them, the longest unseen, down to the cap
   (at most `prune_rows` of them a run, too).

The server runs one from its delivery worker 1 once an hour (`postkeep.queue.runner`), one
log line a run with what went; `postkeep junk prune` runs one without the bound and shows
its progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from postkeep.config.junk import JunkConfig
from postkeep.store.api import Store

BATCH = 2000  # rows looked at (hapaxes) or deleted (caps) per transaction
DAY = 86400
GLOBAL = 0  # the instance's scope


@dataclass(slots=True)
class PruneCounts:
    """What one run did: rows looked at, hapaxes deleted, tokens trimmed past the caps, and
    whether the hapax walk reached the table's end (False: stopped at the bound)."""

    examined: int = 0
    hapaxes: int = 0
    trimmed: int = 0
    complete: bool = True

    def summary(self) -> str:
        return (f"examined={self.examined} hapaxes={self.hapaxes} trimmed={self.trimmed} "
                f"complete={'yes' if self.complete else 'no'}")


class JunkPruner:
    """Prunes one store's tokens as `cfg` says; remembers where a bounded run stopped."""

    def __init__(self, store: Store, cfg: JunkConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._after: tuple[int, int] | None = None  # the hapax walk's place

    async def run(self, now: float | None = None, limit: int | None = None,
                  progress: Callable[[PruneCounts], None] | None = None) -> PruneCounts:
        """One run at `now` (None: now): each pass looks at (hapaxes) or deletes (caps) at
        most `limit` rows (None: `prune_rows`; 0: no bound); `progress` is told after each
        batch."""
        now = time.time() if now is None else now
        budget = self.cfg.prune_rows if limit is None else limit or None
        counts = PruneCounts()
        if self.cfg.hapax_days:
            before = int(now // DAY) - self.cfg.hapax_days
            while budget is None or counts.examined < budget:
                batch = BATCH if budget is None else min(BATCH, budget - counts.examined)
                examined, deleted, self._after = await self.store.junk_prune_hapaxes(
                    before, self._after, batch)
                counts.examined += examined
                counts.hapaxes += deleted
                if progress is not None:
                    progress(counts)
                if self._after is None:
                    break
            else:
                counts.complete = False
        await self._trim(counts, budget, progress)
        return counts

    async def _trim(self, counts: PruneCounts, budget: int | None,
                    progress: Callable[[PruneCounts], None] | None) -> None:
        sizes = await self.store.junk_token_counts()
        for scope, size in sorted(sizes.items()):
            cap = self.cfg.max_instance_tokens if scope == GLOBAL else self.cfg.max_account_tokens
            excess = size - cap if cap else 0
            while excess > 0:
                room = BATCH if budget is None else min(BATCH, budget - counts.trimmed)
                if room <= 0:
                    counts.complete = False
                    return
                gone = await self.store.junk_trim(scope, min(room, excess))
                counts.trimmed += gone
                excess -= gone
                if progress is not None:
                    progress(counts)
                if not gone:
                    break
