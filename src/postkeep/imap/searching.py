"""Search commands of an IMAP session (`postkeep.imap.session`): SEARCH, SORT and THREAD.

SEARCH and UID SEARCH (RFC 9051 §6.4.4, §6.4.9) with ESEARCH's result options (RFC 4731),
SEARCHRES's SAVE (RFC 5182), MODSEQ (CONDSTORE: RFC 7162 §3.1.5) and WITHIN (RFC 5032); SORT
(RFC 5256 §3) and THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §2.1-2.2, §4). The
search keys are evaluated by `postkeep.imap.search`, sorting and threading done by
`postkeep.imap.thread`, both over messages read as `postkeep.imap.content.MessageContent`; this
module reads the candidates (and contents) from the store and writes the responses.

Each `cmd_*` handler is a function of (session, command), called from `Session.execute`; see
`postkeep.imap.session` for why functions rather than mixins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from postkeep import log
from postkeep.imap import loader
from postkeep.imap.content import MessageContent
from postkeep.imap.search import (
    Candidate,
    SearchContext,
    key_count,
    needs_body,
    predicate,
    text_needles,
)
from postkeep.imap.textscan import ScannedContent, scan
from postkeep.imap.thread import (
    SortFields,
    render_threads,
    sort,
    sort_fields,
    thread_orderedsubject,
    thread_references,
)
from postkeep.imap.view import Selected
from postkeep.imap.wire import commands as c
from postkeep.imap.wire import render
from postkeep.mime.structure import Part
from postkeep.store.api import MessageInfo

if TYPE_CHECKING:
    from postkeep.imap.search import Predicate
    from postkeep.imap.session import Session

logger = log.get("imap")

SLICE_SECONDS: Final = 0.01  # longest a search runs before it lets other sessions have a turn
_BATCH: Final = 200  # messages whose content (or header) one store read brings


class _Limit(Exception):
    """The command went past one of its budgets: answered NO [LIMIT] (RFC 9051 §7.1)."""


class _Budget:
    """What one SEARCH, SORT or THREAD may still spend: content octets (imap.max_search_content)
    and time on the event loop, given back to other sessions every SLICE_SECONDS."""

    def __init__(self, session: Session) -> None:
        self.content = session.limits.max_search_content
        self._slice = time.monotonic()

    async def turn(self) -> None:
        """Let the other sessions of the process run if this one has had its slice."""
        if time.monotonic() - self._slice >= SLICE_SECONDS:
            await asyncio.sleep(0)
            self._slice = time.monotonic()

    async def read(self, octets: int) -> None:
        """Count `octets` of content about to be read (and take a turn if due)."""
        self.content -= octets
        if self.content < 0:
            raise _Limit("content")
        await self.turn()


def _refuse(session: Session, tag: str, reason: str, text: str) -> None:
    """NO [LIMIT] with the one log line every refusal gets."""
    assert session.account is not None
    logger.warning(
        "reject ip=%s user=%s reason=%s",
        session.peer_ip,
        log.quote(session.account.address),
        log.quote(reason),
    )
    session.no(tag, f"[LIMIT] {text}")


async def _candidates(session: Session, sel: Selected) -> list[tuple[Candidate, MessageInfo]]:
    infos = await session.store.messages_by_uid(sel.mailbox_id, [(1, render_max(sel))])
    out: list[tuple[Candidate, MessageInfo]] = []
    for info in infos:
        seq = sel.view.seq_of(info.uid)
        if seq is None:
            continue
        cand = Candidate(
            seq=seq,
            uid=info.uid,
            flags=info.flags,
            keywords=frozenset(info.keywords),
            size=info.size,
            internaldate=info.internaldate,
            savedate=info.savedate,
            modseq=info.modseq,
            recent=info.uid in sel.recent,
            email_id="M" + info.blob_id[:24],
        )
        out.append((cand, info))
    return out


async def _matching(
    session: Session, sel: Selected, cmd: c.Search | c.Sort | c.Thread
) -> list[tuple[Candidate, MessageInfo]] | None:
    """The messages matching the command's program, in sequence order; None once it was
    answered NO [LIMIT]: more key evaluations (keys x messages) than imap.max_search_work, or
    more content than imap.max_search_content (the parser refused more keys than
    imap.max_search_keys already).

    The keys that need no content are evaluated first, for every message; the content of the
    messages they leave undecided is then read a batch at a time (`postkeep.imap.loader`:
    headers only when no key needs the body; a message too large to hold is scanned piece by
    piece, `postkeep.imap.textscan`), evaluated and dropped. Every SLICE_SECONDS the search
    lets the other sessions of the process have a turn."""
    key, limits = cmd.key, session.limits
    keys = key_count(key)
    cands = await _candidates(session, sel)
    if keys * len(cands) > limits.max_search_work:
        _refuse(session, cmd.tag,
                f"search work {keys} keys x {len(cands)} messages, "
                f"limit {limits.max_search_work}",
                "Search too complex for this mailbox: use fewer keys")
        return None
    ctx = SearchContext(len(sel.view), sel.view.largest_uid, sel.saved, time.time())
    pred = predicate(key, ctx)
    budget = _Budget(session)
    hits: set[int] = set()
    undecided: list[tuple[Candidate, MessageInfo]] = []
    for cand, info in cands:
        result = pred(cand, None)
        if result is None:
            undecided.append((cand, info))
        elif result:
            hits.add(cand.uid)
        await budget.turn()
    try:
        for start in range(0, len(undecided), _BATCH):
            batch = undecided[start : start + _BATCH]
            hits.update(await _content_hits(session, key, pred, batch, budget))
    except _Limit:
        _refuse(session, cmd.tag, f"search content past {limits.max_search_content} octets",
                f"Search reads too much (at most {limits.max_search_content} octets)")
        return None
    return [pair for pair in cands if pair[0].uid in hits]


async def _content_hits(
    session: Session,
    key: c.SearchKey,
    pred: Predicate,
    batch: Sequence[tuple[Candidate, MessageInfo]],
    budget: _Budget,
) -> set[int]:
    """The UIDs in `batch` that match once their content is read."""
    assert session.account is not None
    header_only = not needs_body(key)
    infos = [info for _, info in batch]
    summaries = await loader.summaries(
        session, [i for i in infos if header_only or i.size > loader.STREAM_SIZE]
    )
    hits: set[int] = set()
    contents: dict[int, bytes] = {}
    for n, (cand, info) in enumerate(batch):
        if (header_only or info.size > loader.STREAM_SIZE) and info.id not in summaries:
            continue  # expunged by another session meanwhile
        if not header_only and info.size > loader.STREAM_SIZE:
            content: MessageContent | None = await _scanned(
                session, key, info, summaries[info.id].tree, budget
            )
        else:
            if info.id not in contents:
                rest = [i for i in infos[n:] if header_only or i.size <= loader.STREAM_SIZE]
                contents = await loader.contents(session, rest, summaries, header_only)
            data = contents.pop(info.id, None)
            if data is None:
                continue  # expunged meanwhile
            await budget.read(len(data))
            content = MessageContent.parse(data)
        if content is not None and pred(cand, content):
            hits.add(cand.uid)
        await budget.turn()
    return hits


async def _scanned(
    session: Session, key: c.SearchKey, info: MessageInfo, root: Part, budget: _Budget
) -> ScannedContent | None:
    """A large message's header, and its text scanned for the program's BODY and TEXT
    strings; None if it is gone."""
    reader = await loader.open_reader(session, info)
    if reader is None:
        return None
    try:
        await budget.read(root.body_start)
        header = await loader.read_range(reader, 0, root.body_start)
        found = await scan(reader, root, text_needles(key), budget.read)
    finally:
        reader.close()
    return ScannedContent(header, found)


async def cmd_search(session: Session, cmd: c.Search) -> None:
    """SEARCH / UID SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SAVE (RFC 5182)
    and MODSEQ (RFC 7162 §3.1.5)."""
    sel = session.need_selected(cmd)
    if sel is None:
        return
    await session.sync(cmd.uid)
    hits = await _matching(session, sel, cmd)
    if hits is None:
        return
    numbers = [cand.uid if cmd.uid else cand.seq for cand, _ in hits]
    uses_modseq = _uses_modseq(cmd.key)
    if uses_modseq:
        session.enable_condstore()
    highest = max((cand.modseq for cand, _ in hits), default=0)
    returns = cmd.returns
    if returns is None and session.rev2:
        returns = ("ALL",)
    if returns is not None:
        opts = set(returns) or {"ALL"}
        if "SAVE" in opts:
            sel.saved = frozenset(cand.uid for cand, _ in hits)
            opts.discard("SAVE")
            if not (set(returns) - {"SAVE"}):
                opts = set()
        parts = [f'(TAG "{cmd.tag}")']
        if cmd.uid:
            parts.append("UID")
        if numbers:
            if "MIN" in opts:
                parts.append(f"MIN {min(numbers)}")
            if "MAX" in opts:
                parts.append(f"MAX {max(numbers)}")
            if "ALL" in opts:
                parts.append(f"ALL {render.number_set(numbers)}")
        if "COUNT" in opts:
            parts.append(f"COUNT {len(numbers)}")
        if uses_modseq and numbers and opts:
            if opts <= {"MIN", "MAX"}:  # RFC 4731 §3.2: the returned messages' MODSEQ
                ends = (
                    [hits[0], hits[-1]]
                    if opts == {"MIN", "MAX"}
                    else ([hits[0]] if "MIN" in opts else [hits[-1]])
                )
                highest = max(cand.modseq for cand, _ in ends)
            parts.append(f"MODSEQ {highest}")
        if opts or not returns:
            session.write(("* ESEARCH " + " ".join(parts) + "\r\n").encode())
    else:
        line = "* SEARCH" + "".join(f" {n}" for n in numbers)
        if uses_modseq and numbers:
            line += f" (MODSEQ {highest})"
        session.write((line + "\r\n").encode())
    await session.sync(cmd.uid)
    session.ok(cmd.tag, "SEARCH completed")


async def _sort_items(
    session: Session, cmd: c.Sort | c.Thread
) -> list[tuple[int, SortFields]] | None:
    """The messages a SORT / THREAD program matches, with their sort fields (from their
    headers, read a batch at a time), keyed by UID (UID SORT / UID THREAD) or sequence number;
    None once an error was answered."""
    sel = session.need_selected(cmd)
    if sel is None:
        return None
    await session.sync(cmd.uid)
    hits = await _matching(session, sel, cmd)
    if hits is None:
        return None
    budget = _Budget(session)
    items = []
    for start in range(0, len(hits), _BATCH):
        batch = hits[start : start + _BATCH]
        infos = [info for _, info in batch]
        summaries = await loader.summaries(session, infos)
        headers: dict[int, bytes] = {}
        for n, (cand, info) in enumerate(batch):
            if info.id not in summaries:
                continue  # expunged by another session meanwhile
            if info.id not in headers:
                headers = await loader.contents(session, infos[n:], summaries, True)
            header = headers.pop(info.id, None)
            if header is None:
                continue
            ident = cand.uid if cmd.uid else cand.seq
            items.append((ident, sort_fields(header, info.internaldate, info.size)))
            await budget.turn()
    return items


async def cmd_sort(session: Session, cmd: c.Sort) -> None:
    """SORT (RFC 5256 §3)."""
    items = await _sort_items(session, cmd)
    if items is None:
        return
    order = sort(items, cmd.criteria)
    session.write(("* SORT" + "".join(f" {n}" for n in order) + "\r\n").encode())
    session.ok(cmd.tag, "SORT completed")


async def cmd_thread(session: Session, cmd: c.Thread) -> None:
    """THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §2.1-2.2, §4)."""
    items = await _sort_items(session, cmd)
    if items is None:
        return
    algo = thread_references if cmd.algorithm == "REFERENCES" else thread_orderedsubject
    session.write(("* THREAD " + render_threads(algo(items)) + "\r\n").encode())
    session.ok(cmd.tag, "THREAD completed")


def render_max(sel: Selected) -> int:
    return max(sel.view.largest_uid, 1)


def _uses_modseq(key: c.SearchKey) -> bool:
    if isinstance(key, c.SearchModSeq):
        return True
    if isinstance(key, c.SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, c.SearchOr | c.SearchAnd):
        return any(_uses_modseq(k) for k in key.keys)
    return False
