"""Reading message data for FETCH, SEARCH, SORT and THREAD in batches bounded by octets.

Summaries (`postkeep.mime.summary`) come from the process's cache (`postkeep.imap.cache`) or
one store read for the rest of a batch; contents from one store read of at most
CONTENT_BATCH_BYTES (but at least one message); headers from the cache when it has them, and
go into it. A message larger than STREAM_SIZE is never read whole: FETCH streams it from the
store as it writes it (`MailStore.open_message`), SEARCH scans it piece by piece
(`postkeep.imap.textscan`). So what one session holds of its mailbox does not depend on the
size of its messages, nor on how many a command names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from postkeep.errors import NotFound
from postkeep.mime.summary import Summary
from postkeep.store.api import MessageInfo, MessageReader

if TYPE_CHECKING:
    from postkeep.imap.session import Session

CONTENT_BATCH_BYTES: Final = 256 << 10  # message octets read from the store in one go
STREAM_SIZE: Final = 256 << 10  # messages larger than this are never read whole


async def open_reader(session: Session, info: MessageInfo) -> MessageReader | None:
    """`info`'s message opened to be read piece by piece; None if it is gone (expunged by
    another session meanwhile). The caller closes it."""
    assert session.account is not None
    try:
        return await session.store.open_message(session.account.id, info.id)
    except NotFound:
        return None


async def read_range(reader: MessageReader, start: int, end: int) -> bytes:
    """Octets [start, end) of an open message, joined (for the small parts: a header)."""
    return b"".join([piece async for piece in reader.pieces(start, end)])


async def summaries(session: Session, infos: Sequence[MessageInfo]) -> dict[int, Summary]:
    """The decoded summaries of `infos` (expunged ones left out): from the process's cache,
    the others in one store read."""
    assert session.account is not None
    account_id, cache = session.account.id, session.cache
    out: dict[int, Summary] = {}
    unknown: list[int] = []
    for info in infos:
        summary = cache.summary(account_id, info.id)
        if summary is None:
            unknown.append(info.id)
        else:
            out[info.id] = summary
    if unknown:
        for message_id, doc in (
            await session.store.message_summaries(account_id, unknown)
        ).items():
            summary = out[message_id] = Summary(doc)
            cache.put_summary(account_id, message_id, summary, len(doc))
    return out


async def contents(
    session: Session,
    infos: Sequence[MessageInfo],
    summaries: dict[int, Summary],
    header_only: bool,
) -> dict[int, bytes]:
    """The contents (or, with `header_only`, the headers) of the first messages of `infos`, in
    one store read of at most CONTENT_BATCH_BYTES (but at least one message); headers come
    from the process's cache when it has them, and go into it. Messages gone are left out."""
    assert session.account is not None
    account_id, cache = session.account.id, session.cache
    out: dict[int, bytes] = {}
    wanted: list[tuple[int, int | None]] = []
    total = 0
    for info in infos:
        length = None
        if header_only and info.id in summaries:
            header = cache.header(account_id, info.id)
            if header is not None:
                out[info.id] = header
                continue
            length = summaries[info.id].tree.body_start
        size = info.size if length is None else length
        if wanted and total + size > CONTENT_BATCH_BYTES:
            break
        wanted.append((info.id, length))
        total += size
    if wanted:
        read = await session.store.read_messages(account_id, wanted, expected_bytes=total)
        out.update(read)
        for message_id, length in wanted:
            if length is not None and message_id in read:
                cache.put_header(account_id, message_id, read[message_id])
    return out
