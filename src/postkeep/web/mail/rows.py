"""The message list's rows and the per-process caches behind sorting, searching and threading.

A `Row` is what the list shows of a message and what the other orders need of it: the sender
and subject decoded (RFC 2047, `postkeep.imap.content`), the sent date, whether it has
attachments (from its MIME summary, `postkeep.mime.summary`), its RFC 5256 sort fields
(`postkeep.imap.thread.sort_fields`: base subject, first addresses, Message-ID, References)
and the few header lines the FROM/TO/CC/SUBJECT search keys read. It is built from the
message's summary and its header (the summary's ``body_start`` octets, at most `MAX_HEADER`),
read for a batch of messages at a time (`rows_for`), never from the whole message.

`RowCache` keeps rows least recently used out first within a byte budget, keyed by (account
id, message id): a message's content never changes and message ids are never reused, so a
row never goes stale (as `postkeep.imap.cache`). `OrderCache` keeps a few whole-mailbox
results (a sort order, a search's hits, the threads of a window), keyed by the mailbox's
UIDNEXT and message count: an append raises UIDNEXT and an expunge lowers the count (which
only an append, raising UIDNEXT, can restore), so the same pair means the same set of UIDs;
flag changes do not touch what these results depend on.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from postkeep.imap.cache import MessageCache
from postkeep.imap.content import MessageContent
from postkeep.imap.thread import SortFields, sort_fields
from postkeep.mime.structure import Part
from postkeep.mime.summary import Summary
from postkeep.store.api import MailStore, MessageInfo

T = TypeVar("T")

MAX_HEADER: Final = 64 << 10  # octets of a message's header a row is built from
BATCH_BYTES: Final = 256 << 10  # header octets read from the store in one go
SEARCH_FIELDS: Final = ("from", "to", "cc", "subject")
_OVERHEAD: Final = 400  # octets of bookkeeping per row (objects, dict slot, sort fields)


@dataclass(frozen=True, slots=True)
class Row:
    """One message as the list shows it and sorts, threads and searches it."""

    sender: str
    subject: str
    date: float
    attachments: bool
    fields: SortFields
    search_head: bytes  # the From, To, Cc and Subject lines, as the header had them

    def cost(self) -> int:
        f = self.fields
        return (_OVERHEAD + len(self.search_head) + 2 * (len(self.sender) + len(self.subject))
                + len(f.subject) + len(f.from_) + len(f.display_from) + len(f.message_id)
                + sum(len(r) for r in f.references))


def has_attachments(root: Part) -> bool:
    """Whether a leaf part is an attachment (RFC 2183 ``attachment``), or a part that is
    neither text nor an inline part with a Content-ID (an image a HTML body shows)."""
    stack = [root]
    while stack:
        part = stack.pop()
        if part.type == "multipart" or (part.type == "message" and part.children):
            stack.extend(part.children)
            continue
        disposition = part.disposition[0].lower() if part.disposition else ""
        if disposition == "attachment":
            return True
        if part.type != "text" and not (part.id and disposition != "attachment"):
            return True
    return False


def make_row(header: bytes, info: MessageInfo, root: Part) -> Row:
    """The row of `info`'s message from its `header` octets and part tree."""
    content = MessageContent.parse(header)
    fields = sort_fields(header, info.internaldate, info.size)
    subjects = content.header_values("Subject")
    lines = [f"{name}: {value}" for name in SEARCH_FIELDS
             for value in content.raw_header_values(name)[:1]]
    return Row(
        sender=fields.display_from or "(no sender)",
        subject=" ".join(subjects[0].split()) if subjects else "",
        date=fields.date,
        attachments=has_attachments(root),
        fields=fields,
        search_head=("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"),
    )


class RowCache:
    """LRU of (account id, message id) -> `Row` within `max_bytes`, and the summaries and
    headers of the messages being read (`postkeep.imap.cache.MessageCache`)."""

    def __init__(self, max_bytes: int, summary_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._rows: OrderedDict[tuple[int, int], Row] = OrderedDict()
        self.messages = MessageCache(summary_bytes)

    def get(self, account_id: int, message_id: int) -> Row | None:
        key = (account_id, message_id)
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, account_id: int, message_id: int, row: Row) -> None:
        key = (account_id, message_id)
        if self.max_bytes <= 0 or key in self._rows:
            return
        self._rows[key] = row
        self.size += row.cost()
        while self.size > self.max_bytes and self._rows:
            _key, old = self._rows.popitem(last=False)
            self.size -= old.cost()

    async def summaries(self, store: MailStore, account_id: int,
                        message_ids: Sequence[int]) -> dict[int, Summary]:
        """The decoded summaries of the messages (gone ones left out): cached, or one read."""
        out: dict[int, Summary] = {}
        unknown = []
        for message_id in message_ids:
            found = self.messages.summary(account_id, message_id)
            if found is None:
                unknown.append(message_id)
            else:
                out[message_id] = found
        if unknown:
            for message_id, doc in (await store.message_summaries(account_id, unknown)).items():
                summary = out[message_id] = Summary(doc)
                self.messages.put_summary(account_id, message_id, summary, len(doc))
        return out

    async def rows_for(self, store: MailStore, account_id: int,
                       infos: Sequence[MessageInfo]) -> dict[int, Row]:
        """The rows of `infos` by message id (messages gone meanwhile left out): from the
        cache, the others from their summaries and headers, read in batches of at most
        BATCH_BYTES of header octets (yielding to the event loop between batches)."""
        out: dict[int, Row] = {}
        missing = []
        for info in infos:
            row = self.get(account_id, info.id)
            if row is None:
                missing.append(info)
            else:
                out[info.id] = row
        for start in range(0, len(missing), 256):
            batch = missing[start:start + 256]
            by_id = {info.id: info for info in batch}
            summaries = await self.summaries(store, account_id, [i.id for i in batch])
            wanted: list[tuple[int, int | None]] = []
            total = 0
            for n, info in enumerate(batch):
                summary = summaries.get(info.id)
                if summary is not None:
                    length = min(summary.tree.body_start, MAX_HEADER, info.size)
                    wanted.append((info.id, length))
                    total += length
                if wanted and (total >= BATCH_BYTES or n == len(batch) - 1):
                    headers = await store.read_messages(account_id, wanted,
                                                        expected_bytes=total)
                    for message_id, header in headers.items():
                        row = make_row(header, by_id[message_id], summaries[message_id].tree)
                        self.put(account_id, message_id, row)
                        out[message_id] = row
                    wanted, total = [], 0
                    await asyncio.sleep(0)
        return out


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """A whole-mailbox result, with what it cost to make (for the logs and the bench)."""

    value: T
    seconds: float


class OrderCache(Generic[T]):
    """A few whole-mailbox results, keyed by (mailbox id, what, UIDNEXT, count) (see the
    module docstring), the least recently used out first beyond `entries`."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[object, ...], Result[T]] = OrderedDict()

    def get(self, key: tuple[object, ...]) -> Result[T] | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[object, ...], value: T, started: float) -> Result[T]:
        result = Result(value, time.monotonic() - started)
        if self.entries > 0:
            self._items[key] = result
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        return result
