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

import time
from typing import TYPE_CHECKING

from postkeep.imap.content import MessageContent
from postkeep.imap.search import Candidate, SearchContext, needs_content, search
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
from postkeep.store.api import MessageInfo

if TYPE_CHECKING:
    from postkeep.imap.session import Session


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
    session: Session, sel: Selected, key: c.SearchKey
) -> tuple[list[tuple[Candidate, MessageInfo]], dict[int, bytes]] | str:
    """The messages matching `key` (in sequence order) and the contents read for it."""
    assert session.account is not None
    cands = await _candidates(session, sel)
    ctx = SearchContext(len(sel.view), sel.view.largest_uid, sel.saved, time.time())
    contents: dict[int, bytes] = {}
    if needs_content(key):
        if len(cands) > session.limits.max_search_content:
            return "[LIMIT] Mailbox too large for a text search"
        for cand, info in cands:
            contents[cand.uid] = await session.store.read_message(session.account.id, info.id)
    parsed: dict[int, MessageContent] = {}

    def load(cand: Candidate) -> MessageContent:
        if cand.uid not in parsed:
            parsed[cand.uid] = MessageContent.parse(contents[cand.uid])
        return parsed[cand.uid]

    hits = {h.uid for h in search(key, [x for x, _ in cands], load, ctx)}
    return [pair for pair in cands if pair[0].uid in hits], contents


async def cmd_search(session: Session, cmd: c.Search) -> None:
    """SEARCH / UID SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SAVE (RFC 5182)
    and MODSEQ (RFC 7162 §3.1.5)."""
    sel = session.need_selected(cmd)
    if sel is None:
        return
    await session.sync(cmd.uid)
    found = await _matching(session, sel, cmd.key)
    if isinstance(found, str):
        session.no(cmd.tag, found)
        return
    hits, _ = found
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
    """The messages a SORT / THREAD program matches, with their sort fields, keyed by UID
    (UID SORT / UID THREAD) or sequence number; None once an error was answered."""
    sel = session.need_selected(cmd)
    if sel is None:
        return None
    assert session.account is not None
    await session.sync(cmd.uid)
    found = await _matching(session, sel, cmd.key)
    if isinstance(found, str):
        session.no(cmd.tag, found)
        return None
    hits, contents = found
    items = []
    for cand, info in hits:
        data = contents.get(cand.uid)
        if data is None:
            data = await session.store.read_message(session.account.id, info.id)
        ident = cand.uid if cmd.uid else cand.seq
        items.append((ident, sort_fields(data, info.internaldate, info.size)))
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
