"""Message commands of an IMAP session (`postkeep.imap.session`): APPEND, EXPUNGE, FETCH, STORE,
COPY and MOVE.

APPEND (RFC 9051 §6.3.12, MULTIAPPEND: RFC 3502, APPENDLIMIT: RFC 7889), EXPUNGE (§6.4.3) and
UID EXPUNGE (RFC 4315 §2.1), FETCH (§6.4.5, BINARY: RFC 3516, CHANGEDSINCE and VANISHED:
RFC 7162 §3.1.4.1, §3.2.6, SAVEDATE: RFC 8514, OBJECTID: RFC 8474; the items themselves are
rendered by `postkeep.imap.fetch`), STORE (§6.4.6, UNCHANGEDSINCE: RFC 7162 §3.1.3), COPY and
MOVE (§6.4.7-8, RFC 6851), each by sequence number or UID (§6.4.9), with UIDPLUS's APPENDUID
and COPYUID (RFC 4315 §3). A STORE that gives messages ``$Junk`` or ``$NotJunk`` (RFC 5788),
like a COPY or MOVE into or out of Junk, is handed to the junk filter's training.

Each `cmd_*` handler is a function of (session, command), called from `Session.execute`; see
`postkeep.imap.session` for why functions rather than mixins.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from postkeep.imap import fetch as fetchmod
from postkeep.imap import loader, streaming
from postkeep.imap.fetch import Streamed
from postkeep.imap.flags import JUNK, NOT_JUNK, flag_list, split_flags
from postkeep.imap.mailboxes import R_SERVER_OWNED, server_owned
from postkeep.imap.streaming import FLUSH_BYTES
from postkeep.imap.view import Selected
from postkeep.imap.wire import commands as c
from postkeep.imap.wire import render
from postkeep.mime.summary import Summary
from postkeep.store.api import Envelope, Flag, LocalDelivery, MessageInfo, MessageReader

if TYPE_CHECKING:
    from postkeep.imap.session import Session

_FETCH_BATCH = 200  # messages per store round trip when FETCH reads summaries or contents
_FETCH_BATCH_FLAGS = 5000  # ... and when it reads only the message rows (FLAGS, UID, ...)
_FLAG_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})  # FETCH items `_fetch_flags` renders


async def cmd_append(session: Session, cmd: c.Append) -> None:
    """APPEND / MULTIAPPEND (RFC 9051 §6.3.12, RFC 3502) with APPENDUID (RFC 4315 §3).

    Every message is checked (flags, size, quota) before any is stored; the messages of a
    MULTIAPPEND are then committed in one transaction, all or none (RFC 3502)."""
    account = session.account
    assert account is not None
    box = await session.store.get_mailbox(account.id, cmd.mailbox)
    if box is None:
        session.no(cmd.tag, "[TRYCREATE] Mailbox does not exist")
        return
    if server_owned(box.name):
        session.no(cmd.tag, R_SERVER_OWNED)
        return
    parsed: list[tuple[c.AppendMessage, Flag, tuple[str, ...]]] = []
    total = 0
    for msg in cmd.messages:
        split = split_flags(msg.flags)
        if isinstance(split, str):
            session.bad(cmd.tag, split)
            return
        if not msg.data:
            session.no(cmd.tag, "Cannot append an empty message")
            return
        if len(msg.data) > session.limits.max_append_size:
            session.no(cmd.tag, "[TOOBIG] Message exceeds APPENDLIMIT")
            return
        total += len(msg.data)
        parsed.append((msg, split[0], split[1]))
    fresh = await session.store.get_account_by_id(account.id)
    if fresh is not None and fresh.quota_bytes and fresh.used_bytes + total > fresh.quota_bytes:
        session.no(cmd.tag, "[OVERQUOTA] Quota exceeded")
        return
    deliveries = []
    for msg, flags, keywords in parsed:
        when = msg.internal_date.timestamp() if msg.internal_date else time.time()
        envelope = Envelope("", "", [], session.peer_ip, "", when)
        deliveries.append(
            LocalDelivery(envelope, [account.id], msg.data, flags, box.name, keywords)
        )
    if len(deliveries) == 1:  # group-committed with other sessions' deliveries
        results = [await session.store.deliver(deliveries[0])]
    else:
        results = await session.store.deliver_all(deliveries)
    uids = [r.delivered[0].uid for r in results]
    await session.sync(True)
    session.ok(
        cmd.tag, f"[APPENDUID {box.uidvalidity} {render.number_set(uids)}] APPEND completed"
    )


async def cmd_expunge(session: Session, cmd: c.Expunge) -> None:
    sel = session.need_selected(cmd)
    if sel is None:
        return
    assert session.account is not None
    if sel.read_only:
        session.no(cmd.tag, "[READ-ONLY] Mailbox is read-only")
        return
    ranges = None
    if cmd.uids is not None:
        ranges = render.ranges(sel.uid_set(cmd.uids))
    await session.sync(True)
    gone = await session.store.expunge(session.account.id, sel.mailbox_id, ranges)
    session.announce_expunged(sel, sel.view.remove(gone))
    await session.sync(True)
    highest = sel.modseq
    session.ok(
        cmd.tag,
        f"[HIGHESTMODSEQ {highest}] EXPUNGE completed"
        if session.condstore
        else "EXPUNGE completed",
    )


async def cmd_fetch(session: Session, cmd: c.Fetch) -> None:
    """FETCH / UID FETCH (RFC 9051 §6.4.5, §6.4.9) with CHANGEDSINCE and VANISHED
    (RFC 7162 §3.1.4.1, §3.2.6)."""
    sel = session.need_selected(cmd)
    if sel is None:
        return
    assert session.account is not None
    if cmd.vanished and not (
        cmd.uid and "QRESYNC" in session.enabled and cmd.changed_since is not None
    ):
        session.bad(cmd.tag, "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
        return
    if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in cmd.attributes):
        session.enable_condstore()
    await session.sync(cmd.uid)
    uids = sel.targets(cmd.sequence_set, cmd.uid)
    if uids is None:
        session.bad(cmd.tag, "Invalid message sequence number")
        return
    if cmd.vanished and cmd.changed_since is not None:
        gone = await session.store.expunged_since(sel.mailbox_id, cmd.changed_since)
        wanted = set(cmd.sequence_set.iter_numbers(max(gone[-1] if gone else 0, 1)))
        gone = [u for u in gone if u in wanted]
        if gone:
            session.write(f"* VANISHED (EARLIER) {render.number_set(gone)}\r\n".encode())
    modseq_item = cmd.changed_since is not None or any(
        a.name == "MODSEQ" for a in cmd.attributes
    )
    if all(a.name in _FLAG_ITEMS for a in cmd.attributes):
        missing = await _fetch_flags(session, sel, cmd, uids, modseq_item)
    else:
        found = await _fetch_items(session, sel, cmd, uids, modseq_item)
        if found is None:
            return
        missing = found
    await session.sync(cmd.uid)
    if missing and not cmd.uid:  # RFC 9051 §7.1: the client may want to NOOP soon
        session.ok(cmd.tag, "[EXPUNGEISSUED] Some messages were expunged meanwhile")
        return
    session.ok(cmd.tag, "FETCH completed")


async def _fetch_items(
    session: Session, sel: Selected, cmd: c.Fetch, uids: list[int], modseq_item: bool
) -> bool | None:
    """FETCH in general: message rows, summaries and contents read in batches (by count and
    by octets, `postkeep.imap.loader`), responses flushed to the socket past FLUSH_BYTES; a
    message larger than `loader.STREAM_SIZE` is streamed from the store
    (`postkeep.imap.streaming`). True if messages were missing; None if a NO [UNKNOWN-CTE]
    ended the command."""
    assert session.account is not None
    need = fetchmod.needs(cmd.attributes)
    set_seen = need.sets_seen and not sel.read_only
    missing = False
    atts = list(cmd.attributes)
    step = _FETCH_BATCH if need.summary or need.content or set_seen else _FETCH_BATCH_FLAGS
    for start in range(0, len(uids), step):
        batch = uids[start : start + step]
        infos = await session.store.messages_by_uid(sel.mailbox_id, render.ranges(batch))
        missing = missing or len(infos) < len(batch)
        if cmd.changed_since is not None:
            infos = [i for i in infos if i.modseq > cmd.changed_since]
        seen_changed: dict[int, MessageInfo] = {}
        if set_seen:
            unseen = [i.uid for i in infos if not i.flags & Flag.SEEN]
            if unseen:
                change = await session.store.set_flags(
                    session.account.id, sel.mailbox_id, render.ranges(unseen), "add", Flag.SEEN
                )
                seen_changed = {m.uid: m for m in change.changed}
                for m in change.changed:
                    sel.reported[m.uid] = m.modseq
        summaries: dict[int, Summary] = {}
        if need.summary and infos:
            summaries = await loader.summaries(session, infos)
        session.announce_keywords(sel, [k for i in infos for k in i.keywords], first=False)
        contents: dict[int, bytes] = {}
        for n, info in enumerate(infos):
            seq = sel.view.seq_of(info.uid)
            if seq is None:
                continue
            info = seen_changed.get(info.uid, info)
            if need.summary and info.id not in summaries:
                missing = True  # expunged by another session meanwhile
                continue
            summary = summaries.get(info.id)
            item_atts = atts
            if info.uid in seen_changed and not any(a.name == "FLAGS" for a in atts):
                item_atts = [*atts, c.FetchAtt("FLAGS")]
            data: bytes | Streamed | None = None
            reader: MessageReader | None = None
            if need.content and _streamed(info, need):
                opened = await streaming.open_message(session, info, summary, item_atts)
                if opened is None:  # expunged (row or blob gone) meanwhile
                    missing = True
                    continue
                reader, data = opened
            elif need.content:
                if info.id not in contents:
                    rest = [i for i in infos[n:] if not _streamed(i, need)]
                    contents = await loader.contents(session, rest, summaries, need.header_only)
                data = contents.get(info.id)
                if data is None:  # expunged (row or blob gone) meanwhile
                    missing = True
                    continue
            try:
                try:
                    pieces = fetchmod.render_items(
                        info,
                        item_atts,
                        summary,
                        data,
                        uid=cmd.uid,
                        modseq=modseq_item or (session.condstore and info.uid in seen_changed),
                        recent=info.uid in sel.recent,
                    )
                    scans = {} if reader is None else await streaming.measure(reader, pieces)
                except fetchmod.UnknownCte:
                    session.no(cmd.tag, "[UNKNOWN-CTE] Cannot decode the part's transfer encoding")
                    return None
                head = b"* %d FETCH " % seq
                if reader is None:
                    assert len(pieces) == 1 and isinstance(pieces[0], bytes)
                    session.write(head + pieces[0] + b"\r\n")
                else:
                    session.write(head)
                    await streaming.write(session, reader, pieces, scans)
                    session.write(b"\r\n")
            finally:
                if reader is not None:
                    reader.close()
            if session.out.buffered >= FLUSH_BYTES:
                await session.out.drain()
        await session.out.drain()
    return missing


def _streamed(info: MessageInfo, need: fetchmod.Needs) -> bool:
    """Whether FETCH streams this message from the store instead of reading it whole."""
    return info.size > loader.STREAM_SIZE and not need.header_only


async def _fetch_flags(
    session: Session, sel: Selected, cmd: c.Fetch, uids: list[int], modseq_item: bool
) -> bool:
    """A FETCH of only UID, FLAGS and MODSEQ (a client's resync: `UID FETCH 1:* (FLAGS)`,
    RFC 9051 §6.4.5, RFC 7162 §3.1.4) from the bare rows, each flag list rendered once per
    combination; the same responses as the general path. True if messages were missing."""
    names = list(dict.fromkeys(
        (["UID"] if cmd.uid else [])
        + [a.name for a in cmd.attributes]
        + (["MODSEQ"] if modseq_item else [])
    ))
    lists: dict[tuple[int, str, bool], bytes] = {}
    recent, seq_of, since = sel.recent, sel.view.seq_of, cmd.changed_since
    missing = False
    for start in range(0, len(uids), _FETCH_BATCH_FLAGS):
        batch = uids[start : start + _FETCH_BATCH_FLAGS]
        rows = await session.store.message_flags(sel.mailbox_id, render.ranges(batch))
        missing = missing or len(rows) < len(batch)
        if since is not None:
            rows = [r for r in rows if r[3] > since]
        session.announce_keywords(sel, [k for r in rows if r[2] for k in r[2].split()], False)
        out: list[bytes] = []
        for uid, bits, keywords, modseq in rows:
            seq = seq_of(uid)
            if seq is None:
                continue
            items: list[bytes] = []
            for name in names:
                if name == "UID":
                    items.append(b"UID %d" % uid)
                elif name == "FLAGS":
                    key = (bits, keywords, uid in recent)
                    flags = lists.get(key)
                    if flags is None:
                        flags = lists[key] = b"FLAGS " + flag_list(
                            Flag(bits), tuple(keywords.split()), recent=key[2]
                        )
                    items.append(flags)
                else:
                    items.append(b"MODSEQ (%d)" % modseq)
            out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
        session.write(b"".join(out))
        await session.out.drain()
    return missing


async def cmd_store(session: Session, cmd: c.Store) -> None:
    """STORE / UID STORE (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
    sel = session.need_selected(cmd)
    if sel is None:
        return
    assert session.account is not None
    flags = split_flags(cmd.flags)
    if isinstance(flags, str):
        session.bad(cmd.tag, flags)
        return
    if len(flags[1]) > session.limits.max_keywords:
        session.bad(cmd.tag, "Too many keywords")
        return
    if sel.read_only:
        session.no(cmd.tag, "[READ-ONLY] Mailbox is read-only")
        return
    if cmd.unchanged_since is not None:
        session.enable_condstore()
    await session.sync(cmd.uid)
    uids = sel.targets(cmd.sequence_set, cmd.uid)
    if uids is None:
        session.bad(cmd.tag, "Invalid message sequence number")
        return
    mode = {
        c.StoreMode.REPLACE: "replace",
        c.StoreMode.ADD: "add",
        c.StoreMode.REMOVE: "remove",
    }[cmd.mode]
    change = await session.store.set_flags(
        session.account.id,
        sel.mailbox_id,
        render.ranges(uids),
        mode,
        flags[0],
        flags[1],
        cmd.unchanged_since,
    )
    if mode != "remove":
        session.announce_keywords(sel, flags[1], first=False)
        if session.on_marked is not None and change.changed:
            await _marked(session, sel.mailbox_id, flags[1], change.changed)
    shown = sorted(
        [*change.changed, *([] if cmd.silent else change.unchanged)], key=lambda m: m.uid
    )
    session.announce_keywords(sel, [k for m in shown for k in m.keywords], first=False)
    changed_uids = {m.uid for m in change.changed}
    for m in change.changed:
        sel.reported[m.uid] = m.modseq
    for m in shown:
        seq = sel.view.seq_of(m.uid)
        if seq is None or (cmd.silent and not (session.condstore and m.uid in changed_uids)):
            continue
        parts = []
        if cmd.uid:
            parts.append(b"UID %d" % m.uid)
        if not cmd.silent:
            parts.append(b"FLAGS " + sel.flag_list(m))
        if session.condstore:
            parts.append(b"MODSEQ (%d)" % m.modseq)
        session.write(b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n")
    await session.sync(cmd.uid)
    if change.modified:
        ids = (
            change.modified
            if cmd.uid
            else [s for s in (sel.view.seq_of(u) for u in change.modified) if s]
        )
        session.ok(cmd.tag, f"[MODIFIED {render.number_set(ids)}] Conditional STORE failed")
        return
    session.ok(cmd.tag, "STORE completed")


async def _marked(session: Session, mailbox_id: int, keywords: Sequence[str],
                  changed: Sequence[MessageInfo]) -> None:
    """The junk filter's training by keyword (RFC 5788 registry: ``$Junk``, ``$NotJunk``,
    as Thunderbird and Apple Mail set them): the messages a STORE gave one of them (not
    both) handed to `Session.on_marked`, queued (not awaited)."""
    names = {k.lower() for k in keywords}
    junk, not_junk = JUNK in names, NOT_JUNK in names
    if junk == not_junk:
        return
    assert session.account is not None and session.on_marked is not None
    mailbox = await session.store.get_mailbox_by_id(mailbox_id)
    if mailbox is not None:
        session.on_marked(session.account.id, mailbox, [m.uid for m in changed], junk)


async def cmd_copy(session: Session, cmd: c.Copy) -> None:
    await _copy(session, cmd.tag, cmd.sequence_set, cmd.mailbox, cmd.uid, move=False)


async def cmd_move(session: Session, cmd: c.Move) -> None:
    await _copy(session, cmd.tag, cmd.sequence_set, cmd.mailbox, cmd.uid, move=True)


async def _copy(
    session: Session, tag: str, seqs: c.SequenceSet, target: str, uid: bool, move: bool
) -> None:
    """COPY / MOVE (RFC 9051 §6.4.7-8, RFC 6851) with COPYUID (RFC 4315 §3)."""
    sel = session.selected
    if sel is None:
        session.bad(tag, "No mailbox selected")
        return
    assert session.account is not None
    if move and sel.read_only:
        session.no(tag, "[READ-ONLY] Mailbox is read-only")
        return
    await session.sync(uid)
    uids = sel.targets(seqs, uid)
    if uids is None:
        session.bad(tag, "Invalid message sequence number")
        return
    dest = await session.store.get_mailbox(session.account.id, target)
    if dest is None:
        session.no(tag, "[TRYCREATE] Mailbox does not exist")
        return
    if server_owned(dest.name):
        session.no(tag, R_SERVER_OWNED)
        return
    result = await session.store.copy_messages(
        session.account.id, sel.mailbox_id, render.ranges(uids), dest.id, move=move
    )
    if session.on_filed is not None:  # the junk filter's training, queued (not awaited)
        session.on_filed(session.account.id, sel.mailbox_id, dest, result.pairs)
    verb = "MOVE" if move else "COPY"
    code = ""
    if result.pairs:
        src = render.number_set(s for s, _ in result.pairs)
        dst = render.number_set(d for _, d in result.pairs)
        code = f"[COPYUID {result.uidvalidity} {src} {dst}] "
    if move:
        if code:
            session.write(f"* OK {code}Moved\r\n".encode())
        session.announce_expunged(sel, sel.view.remove([s for s, _ in result.pairs]))
        await session.sync(True)
        session.ok(tag, f"{verb} completed")
        return
    await session.sync(uid)
    session.ok(tag, f"{code}{verb} completed")
