"""A page of a mailbox's message list: paged in SQL, sorted, searched or threaded.

* The default view (arrival, newest first; ``rev=1`` oldest first) is one SQL page
  (`MailStore.messages_page`: ORDER BY uid LIMIT/OFFSET on the (mailbox, UID) index) and the
  rows of its 50 messages (`postkeep.web.mail.rows`): its cost does not grow with the mailbox.
* ``sort=date|from|subject|size`` (RFC 5256 §3 DATE, DISPLAYFROM of RFC 5957, SUBJECT, SIZE;
  by `postkeep.imap.thread.sort`): the first request reads every message's row (its summary
  and header) and keeps the sorted UIDs in the process's `OrderCache`; the next pages are a
  slice of it and the 50 messages' rows. Date and size sort newest/largest first, from and
  subject A to Z; ``rev=1`` turns either round.
* ``q=...``: words ``from:``, ``to:``, ``cc:``, ``subject:`` (FROM, TO, CC, SUBJECT) or bare
  (TEXT), all of them to match, quoted with ``"..."`` to keep spaces; evaluated by the IMAP
  search engine (`postkeep.imap.search`) over the mailbox, newest first: header keys on the
  rows' header lines, TEXT on the contents read a batch at a time (a message larger than
  STREAM_SIZE scanned piece by piece, `postkeep.imap.textscan`) within SEARCH_CONTENT octets;
  past it the search stops and says it looked at the newest messages only. The hits are kept
  in the `OrderCache` like a sort order, so paging through them searches once.
* ``threads=1``: RFC 5256 §2.2 REFERENCES threading (`postkeep.imap.thread`) of the newest
  THREAD_WINDOW messages of the view (of the search hits, with ``q``), the newest thread
  first; a page is PAGE_SIZE threads.
"""

from __future__ import annotations

import re
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from postkeep.imap.content import MessageContent
from postkeep.imap.search import Candidate, SearchContext, needs_body, predicate, text_needles
from postkeep.imap.textscan import ScannedContent, scan
from postkeep.imap.thread import Thread, sort, thread_references
from postkeep.imap.wire.commands import SearchAnd, SearchKey, SearchText, SortCriterion
from postkeep.store.api import Flag, Mailbox, MailStore, MessageInfo
from postkeep.web.mail.rows import OrderCache, Row, RowCache

PAGE_SIZE: Final = 50
THREAD_WINDOW: Final = 2000  # messages threaded at most (the newest of the view)
SEARCH_CONTENT: Final = 64 << 20  # message octets one search reads at most
STREAM_SIZE: Final = 256 << 10  # messages larger than this are scanned, never read whole
MAX_QUERY: Final = 200  # characters of a search
MAX_TERMS: Final = 8
#: sort name -> (RFC 5256 sort key, descending by default); "arrival" is UID order
SORTS: Final[dict[str, tuple[str, bool]]] = {
    "arrival": ("ARRIVAL", True),
    "date": ("DATE", True),
    "from": ("DISPLAYFROM", False),
    "subject": ("SUBJECT", False),
    "size": ("SIZE", True),
}
_PREFIXES: Final = {"from": "FROM", "to": "TO", "cc": "CC", "subject": "SUBJECT"}
_TERM: Final = re.compile(r'(?:(\w+):)?(?:"([^"]*)"?|(\S+))')


class BadQuery(ValueError):
    """A search the list cannot run (too long, too many words, nothing to look for)."""


def parse_query(text: str) -> SearchKey:
    """The search program of a ``q`` (see the module docstring); BadQuery if unusable."""
    if len(text) > MAX_QUERY:
        raise BadQuery(f"a search is at most {MAX_QUERY} characters")
    keys: list[SearchKey] = []
    for m in _TERM.finditer(text):
        prefix, value = (m[1] or "").lower(), m[2] if m[2] is not None else m[3]
        if prefix and prefix not in _PREFIXES:  # "word:rest" that names no field: text
            value, prefix = m[0].strip('"'), ""
        if value:
            keys.append(SearchText(_PREFIXES.get(prefix, "TEXT"), value))
    if not keys:
        raise BadQuery("nothing to search for")
    if len(keys) > MAX_TERMS:
        raise BadQuery(f"a search has at most {MAX_TERMS} words")
    return keys[0] if len(keys) == 1 else SearchAnd(tuple(keys))


@dataclass(frozen=True, slots=True)
class View:
    """What the list was asked for (the query string, checked)."""

    page: int = 1
    sort: str = "arrival"
    rev: bool = False
    q: str = ""
    threads: bool = False

    @property
    def descending(self) -> bool:
        return SORTS[self.sort][1] != self.rev


@dataclass(frozen=True, slots=True)
class Entry:
    info: MessageInfo
    row: Row
    depth: int = 0  # in a thread

    @property
    def unread(self) -> bool:
        return Flag.SEEN not in self.info.flags

    @property
    def flagged(self) -> bool:
        return Flag.FLAGGED in self.info.flags


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    total: int  # messages (threads, with threads=1) in the view
    pages: int
    partial: bool = False  # the search stopped at its budget: older messages not searched


@dataclass(frozen=True, slots=True)
class Hits:
    uids: array[int]  # in the view's order
    partial: bool


def _pages(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


def _flatten(thread: Thread) -> list[tuple[int, int]]:
    """(uid, depth) of a thread's messages in preorder (a dummy adds no line or depth)."""
    out: list[tuple[int, int]] = []
    work = [(thread, 0)]
    while work:
        node, depth = work.pop()
        if node.id is not None:
            out.append((node.id, depth))
        below = depth + (node.id is not None)
        work.extend((child, below) for child in reversed(node.children))
    return out


class Listing:
    """Pages of message lists for one worker process (the caches are its own)."""

    def __init__(self, store: MailStore, rows: RowCache, orders: OrderCache[Hits],
                 threads: OrderCache[list[list[tuple[int, int]]]]) -> None:
        self.store = store
        self.rows = rows
        self.orders = orders
        self.threads = threads

    async def page(self, account_id: int, box: Mailbox, count: int, view: View) -> Page:
        offset = (view.page - 1) * PAGE_SIZE
        if view.threads:
            return await self._thread_page(account_id, box, count, view)
        if not view.q and view.sort == "arrival":
            infos = await self.store.messages_page(box.id, offset, PAGE_SIZE,
                                                   newest_first=view.descending)
            return Page(await self._entries(account_id, infos), count, _pages(count))
        hits = await self._hits(account_id, box, count, view)
        wanted = hits.uids[offset:offset + PAGE_SIZE]
        by_uid = {i.uid: i for i in await self.store.messages_with_uids(box.id, wanted)}
        infos = [by_uid[uid] for uid in wanted if uid in by_uid]
        return Page(await self._entries(account_id, infos), len(hits.uids),
                    _pages(len(hits.uids)), hits.partial)

    async def _entries(self, account_id: int, infos: Sequence[MessageInfo],
                       depths: dict[int, int] | None = None) -> list[Entry]:
        rows = await self.rows.rows_for(self.store, account_id, infos)
        return [Entry(info, rows[info.id], (depths or {}).get(info.uid, 0))
                for info in infos if info.id in rows]

    async def _all(self, box: Mailbox) -> list[MessageInfo]:
        return await self.store.messages_by_uid(box.id, [(1, max(box.uidnext - 1, 1))])

    async def _hits(self, account_id: int, box: Mailbox, count: int, view: View) -> Hits:
        """The view's UIDs in order: a sort order, or a search's hits (sorted)."""
        key = (box.id, view.sort, view.rev, view.q, box.uidnext, count)
        found = self.orders.get(key)
        if found is not None:
            return found.value
        started = time.monotonic()
        infos = await self._all(box)
        partial = False
        if view.q:
            infos, partial = await self._search(account_id, box, count, parse_query(view.q),
                                                infos)
        if view.sort == "arrival":
            order = [i.uid for i in infos]
        else:
            rows = await self.rows.rows_for(self.store, account_id, infos)
            order = sort([(i.uid, rows[i.id].fields) for i in infos if i.id in rows],
                         [SortCriterion(SORTS[view.sort][0])])
        if view.descending:
            order.reverse()
        return self.orders.put(key, Hits(array("q", order), partial), started).value

    async def _search(self, account_id: int, box: Mailbox, count: int, key: SearchKey,
                      infos: list[MessageInfo]) -> tuple[list[MessageInfo], bool]:
        """The messages of `infos` (ascending UID) that `key` matches, looked at newest
        first; and whether the content budget stopped the search before the oldest."""
        ctx = SearchContext(count, box.uidnext - 1, now=time.time())
        pred = predicate(key, ctx)
        body = needs_body(key)
        budget = SEARCH_CONTENT
        hits: list[MessageInfo] = []
        newest_first = infos[::-1]
        for start in range(0, len(newest_first), 256):
            batch = newest_first[start:start + 256]
            contents: dict[int, MessageContent] = {}
            if body:
                got, budget = await self._contents(account_id, batch, key, budget)
                contents.update(got)
            else:
                rows = await self.rows.rows_for(self.store, account_id, batch)
                contents = {i: MessageContent(r.search_head) for i, r in rows.items()}
            for info in batch:
                cand = Candidate(0, info.uid, info.flags, frozenset(info.keywords), info.size,
                                 info.internaldate, info.savedate, info.modseq)
                result = pred(cand, None)
                if result is None and info.id in contents:
                    result = pred(cand, contents[info.id])
                if result:
                    hits.append(info)
            if budget < 0:
                hits.reverse()
                return hits, True
        hits.reverse()
        return hits, False

    async def _contents(self, account_id: int, batch: Sequence[MessageInfo], key: SearchKey,
                        budget: int) -> tuple[dict[int, MessageContent], int]:
        """The contents of `batch` for the TEXT/BODY keys, within `budget` octets (what is
        left of it returned; negative: spent, the rest not read)."""
        out: dict[int, MessageContent] = {}
        small = []
        for info in batch:
            if budget < 0:
                break
            budget -= info.size
            if info.size <= STREAM_SIZE:
                small.append(info)
                continue
            summary = (await self.rows.summaries(self.store, account_id, [info.id])).get(info.id)
            if summary is None:
                continue
            reader = await self.store.open_message(account_id, info.id)
            try:
                root = summary.tree
                header = b"".join([p async for p in reader.pieces(0, min(root.body_start,
                                                                         1 << 20))])

                async def tick(_octets: int) -> None:
                    return None

                out[info.id] = ScannedContent(header,
                                              await scan(reader, root, text_needles(key), tick))
            finally:
                reader.close()
        for start in range(0, len(small), 64):
            part = small[start:start + 64]
            read = await self.store.read_messages(account_id, [(i.id, None) for i in part],
                                                  expected_bytes=sum(i.size for i in part))
            out.update((mid, MessageContent.parse(data)) for mid, data in read.items())
        return out, budget

    async def _thread_page(self, account_id: int, box: Mailbox, count: int,
                           view: View) -> Page:
        key = (box.id, "threads", view.q, view.rev, box.uidnext, count)
        found = self.threads.get(key)
        if found is not None:
            threads = found.value
        else:
            started = time.monotonic()
            window = View(sort="arrival", q=view.q)
            if view.q:
                uids = list((await self._hits(account_id, box, count, window)).uids)
                hit_set = set(uids[:THREAD_WINDOW])
                infos = [i for i in await self._all(box) if i.uid in hit_set]
            else:
                infos = await self.store.messages_page(box.id, 0, THREAD_WINDOW)
            rows = await self.rows.rows_for(self.store, account_id, infos)
            items = sorted((i.uid, rows[i.id].fields) for i in infos if i.id in rows)
            threads = [_flatten(t) for t in reversed(thread_references(items))]
            if view.rev:
                threads.reverse()
            self.threads.put(key, threads, started)
        chosen = threads[(view.page - 1) * PAGE_SIZE:view.page * PAGE_SIZE]
        depths = {uid: depth for thread in chosen for uid, depth in thread}
        by_uid = {i.uid: i for i in await self.store.messages_with_uids(box.id, list(depths))}
        infos = [by_uid[uid] for thread in chosen for uid, _ in thread if uid in by_uid]
        return Page(await self._entries(account_id, infos, depths), len(threads),
                    _pages(len(threads)), count > THREAD_WINDOW)
