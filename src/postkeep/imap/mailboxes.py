"""Mailbox commands of an IMAP session (`postkeep.imap.session`): the selection of a mailbox and
the management of mailboxes, subscriptions and quota.

SELECT / EXAMINE (RFC 9051 §6.3.2-3, QRESYNC: RFC 7162 §3.2.5), CLOSE (§6.4.1), UNSELECT
(§6.4.2, RFC 3691); CREATE (§6.3.4, CREATE-SPECIAL-USE: RFC 6154 §3), DELETE (§6.3.5), RENAME
(§6.3.6), SUBSCRIBE / UNSUBSCRIBE (§6.3.7-8); LIST (§6.3.9, LIST-EXTENDED: RFC 5258,
LIST-STATUS: RFC 5819, CHILDREN: RFC 3348, SPECIAL-USE: RFC 6154 §2), LSUB (RFC 3501 §6.3.9),
NAMESPACE (§6.3.10, RFC 2342), STATUS (§6.3.11, STATUS=SIZE: RFC 8438, APPENDLIMIT: RFC 7889,
OBJECTID: RFC 8474); GETQUOTA, GETQUOTAROOT and SETQUOTA (QUOTA: RFC 9208 §4).

The "Quarantine" mailbox (`postkeep.store.api.QUARANTINE_MAILBOX`, docs/architecture.md
"Quarantine") is the server's: made and filled by it alone, so CREATE and RENAME refuse its
name (and names under it) and APPEND, COPY and MOVE into it are refused
(`postkeep.imap.messages`); what is in it is read, flagged, moved or copied out and expunged
as in any mailbox (a MOVE out releases a message, an expunge deletes it).

Each `cmd_*` handler is a function of (session, command), called from `Session.execute`; see
`postkeep.imap.session` for why functions rather than mixins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.imap.view import MailboxView, Selected
from postkeep.imap.wire import commands as c
from postkeep.imap.wire import render
from postkeep.store.api import DELIMITER, QUARANTINE_MAILBOX

if TYPE_CHECKING:
    from postkeep.imap.session import Session


async def cmd_select(session: Session, cmd: c.Select) -> None:
    """SELECT / EXAMINE (RFC 9051 §6.3.2-3, RFC 7162 §3.2.5 QRESYNC)."""
    assert session.account is not None
    verb = "EXAMINE" if cmd.read_only else "SELECT"
    if session.selected is not None:
        session.selected = None
        session.write(b"* OK [CLOSED] Previous mailbox closed\r\n")
    if cmd.qresync is not None and "QRESYNC" not in session.enabled:
        session.bad(cmd.tag, "QRESYNC is not enabled")
        return
    if cmd.condstore:
        session.enabled.add("CONDSTORE")
    box = await session.store.get_mailbox(session.account.id, cmd.mailbox)
    if box is None:
        session.no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
        return
    first_recent, end_recent = (
        (box.first_recent_uid, box.uidnext)
        if cmd.read_only
        else await session.store.claim_recent(box.id)
    )
    snap = await session.store.mailbox_snapshot(box.id, keywords=True)
    box = snap.mailbox
    sel = Selected(
        box.id,
        box.name,
        box.uidvalidity,
        cmd.read_only,
        MailboxView(snap.uids),
        box.highestmodseq,
    )
    sel.recent = {u for u in snap.uids if first_recent <= u < end_recent}
    session.drain_events()
    session.announce_keywords(sel, snap.keywords, first=True)
    session.write(b"* %d EXISTS\r\n" % len(sel.view))
    if not session.rev2:
        session.write(b"* %d RECENT\r\n" % len(sel.recent))
    session.write(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % box.uidvalidity)
    session.write(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % box.uidnext)
    session.write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % box.highestmodseq)
    session.write(b"* OK [MAILBOXID (F%d)] Ok\r\n" % box.uidvalidity)
    if not session.rev2 and sel.view.uids:
        unseen = await _first_unseen(session, sel)
        if unseen:
            session.write(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
    session.selected = sel
    if cmd.qresync is not None and cmd.qresync.uid_validity == box.uidvalidity:
        await _qresync(session, sel, cmd.qresync)
    access = "READ-ONLY" if cmd.read_only else "READ-WRITE"
    session.ok(cmd.tag, f"[{access}] {verb} completed")


async def _first_unseen(session: Session, sel: Selected) -> int | None:
    uid = await session.store.first_unseen_uid(sel.mailbox_id)
    return None if uid is None else sel.view.seq_of(uid)


async def _qresync(session: Session, sel: Selected, q: c.QresyncParams) -> None:
    """RFC 7162 §3.2.5.1: VANISHED (EARLIER) for expunges since the client's MODSEQ, then
    FETCH (UID FLAGS MODSEQ) for messages changed since it."""
    gone = await session.store.expunged_since(sel.mailbox_id, q.modseq)
    if q.known_uids is not None:
        known = set(q.known_uids.iter_numbers(max(gone[-1] if gone else 0, 1)))
        gone = [u for u in gone if u in known]
    if gone:
        session.write(f"* VANISHED (EARLIER) {render.number_set(gone)}\r\n".encode())
    changed = await session.store.changed_since(sel.mailbox_id, q.modseq)
    session.announce_keywords(sel, [k for i in changed for k in i.keywords], first=False)
    for info in changed:
        seq = sel.view.seq_of(info.uid)
        if seq is not None:
            session.write(
                b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n"
                % (seq, info.uid, sel.flag_list(info), info.modseq)
            )


async def cmd_close(session: Session, cmd: c.Close) -> None:
    sel = session.need_selected(cmd)
    if sel is None:
        return
    assert session.account is not None
    if not sel.read_only:
        await session.store.expunge(session.account.id, sel.mailbox_id)
    session.selected = None
    session.ok(cmd.tag, "CLOSE completed")


async def cmd_unselect(session: Session, cmd: c.Unselect) -> None:
    if session.need_selected(cmd) is None:
        return
    session.selected = None
    session.ok(cmd.tag, "UNSELECT completed")


def server_owned(name: str) -> bool:
    """Whether `name` is the Quarantine mailbox or under it: the server's to fill."""
    return name == QUARANTINE_MAILBOX or name.startswith(QUARANTINE_MAILBOX + DELIMITER)


R_SERVER_OWNED = "[CANNOT] The Quarantine mailbox is filled by the server's content filters"


async def cmd_create(session: Session, cmd: c.Create) -> None:
    assert session.account is not None
    name = cmd.mailbox.rstrip(DELIMITER)
    if name.upper() == "INBOX":
        session.no(cmd.tag, "[ALREADYEXISTS] INBOX exists already")
        return
    if server_owned(name):
        session.no(cmd.tag, R_SERVER_OWNED)
        return
    use = None
    if cmd.special_use:
        allowed = {"\\ARCHIVE", "\\DRAFTS", "\\JUNK", "\\SENT", "\\TRASH", "\\ALL", "\\FLAGGED"}
        if len(cmd.special_use) > 1 or cmd.special_use[0].upper() not in allowed:
            session.no(cmd.tag, "[USEATTR] Unsupported special-use attribute")
            return
        use = cmd.special_use[0].capitalize()
    try:
        await session.store.create_mailbox(session.account.id, name, use)
    except AlreadyExists:
        session.no(cmd.tag, "[ALREADYEXISTS] Mailbox exists already")
        return
    except StoreError as e:
        if isinstance(e, NotFound):
            raise
        session.no(cmd.tag, f"[CANNOT] {e}")
        return
    session.ok(cmd.tag, "CREATE completed")


async def cmd_delete(session: Session, cmd: c.Delete) -> None:
    assert session.account is not None
    try:
        await session.store.delete_mailbox(session.account.id, cmd.mailbox)
    except NotFound:
        session.no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
        return
    except StoreError as e:
        session.no(cmd.tag, f"[CANNOT] {e}")
        return
    if session.selected is not None and session.selected.name == cmd.mailbox:
        session.selected = None
    session.ok(cmd.tag, "DELETE completed")


async def cmd_rename(session: Session, cmd: c.Rename) -> None:
    assert session.account is not None
    if server_owned(cmd.old) or server_owned(cmd.new.rstrip(DELIMITER)):
        session.no(cmd.tag, R_SERVER_OWNED)
        return
    try:
        await session.store.rename_mailbox(session.account.id, cmd.old, cmd.new.rstrip(DELIMITER))
    except NotFound:
        session.no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
        return
    except AlreadyExists:
        session.no(cmd.tag, "[ALREADYEXISTS] Target mailbox exists already")
        return
    except StoreError as e:
        session.no(cmd.tag, f"[CANNOT] {e}")
        return
    session.ok(cmd.tag, "RENAME completed")


async def cmd_subscribe(session: Session, cmd: c.Subscribe) -> None:
    assert session.account is not None
    try:
        await session.store.set_subscribed(session.account.id, cmd.mailbox, True)
    except StoreError as e:
        session.no(cmd.tag, f"[CANNOT] {e}")
        return
    session.ok(cmd.tag, "SUBSCRIBE completed")


async def cmd_unsubscribe(session: Session, cmd: c.Unsubscribe) -> None:
    assert session.account is not None
    try:
        await session.store.set_subscribed(session.account.id, cmd.mailbox, False)
    except NotFound:
        session.no(cmd.tag, "[NONEXISTENT] Not subscribed")
        return
    session.ok(cmd.tag, "UNSUBSCRIBE completed")


async def cmd_list(session: Session, cmd: c.List) -> None:
    """LIST (RFC 9051 §6.3.9) with LIST-EXTENDED selection and return options (RFC 5258),
    RETURN (STATUS ...) (RFC 5819), CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154 §2)."""
    assert session.account is not None
    if cmd.patterns == ("",) and not cmd.extended:
        session.write(b'* LIST (\\Noselect) "/" ""\r\n')
        session.ok(cmd.tag, "LIST completed")
        return
    if "RECURSIVEMATCH" in cmd.select and not cmd.select - {"RECURSIVEMATCH", "REMOTE"}:
        session.bad(cmd.tag, "RECURSIVEMATCH needs another selection option (RFC 5258 §3.1)")
        return
    boxes = {b.name: b for b in await session.store.list_mailboxes(session.account.id)}
    subscribed = set(await session.store.list_subscriptions(session.account.id))
    subscribed_only = "SUBSCRIBED" in cmd.select
    special_only = "SPECIAL-USE" in cmd.select
    recursive = "RECURSIVEMATCH" in cmd.select
    matchers = [_pattern(cmd.reference, p) for p in cmd.patterns]
    listed = set(boxes) | (subscribed if subscribed_only else set())
    unlisted = {n for n in subscribed if not any(m(n) for m in matchers)}
    for name in sorted(listed, key=lambda n: (n != "INBOX", n)):
        if not any(m(name) for m in matchers):
            continue
        box = boxes.get(name)
        childinfo = b""
        if subscribed_only and name not in subscribed:
            # RFC 5258 §3.5: a parent of a subscribed mailbox the patterns do not list
            if not (recursive and _has_child_in(name, unlisted)):
                continue
            childinfo = b' ("CHILDINFO" ("SUBSCRIBED"))'
        if special_only and (box is None or not box.special_use):
            continue
        attrs = []
        if box is None:
            attrs.append("\\NonExistent")
        else:
            has_children = _has_child_in(name, set(boxes))
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if name in subscribed and (subscribed_only or cmd.returns.subscribed):
            attrs.append("\\Subscribed")
        if box is not None and box.special_use:  # always shown, as Dovecot does
            attrs.append(box.special_use)
        line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + session.mailbox_name(name)
        session.write(line + childinfo + b"\r\n")
        if cmd.returns.status is not None and box is not None:
            await _status_line(session, name, box.id, cmd.returns.status)
    session.ok(cmd.tag, "LIST completed")


async def cmd_lsub(session: Session, cmd: c.Lsub) -> None:
    """LSUB (RFC 3501 §6.3.9): a "%" that stops above a subscribed mailbox lists the
    unsubscribed level in between with \\Noselect."""
    assert session.account is not None
    subscribed = set(await session.store.list_subscriptions(session.account.id))
    match = _pattern(cmd.reference, cmd.pattern)
    parents = {
        DELIMITER.join(n.split(DELIMITER)[:i])
        for n in subscribed
        for i in range(1, n.count(DELIMITER) + 1)
    }
    for name in sorted(subscribed | parents, key=lambda n: (n != "INBOX", n)):
        if not match(name):
            continue
        if name in subscribed:
            session.write(b'* LSUB () "/" ' + session.mailbox_name(name) + b"\r\n")
        elif "%" in cmd.pattern:
            session.write(b'* LSUB (\\Noselect) "/" ' + session.mailbox_name(name) + b"\r\n")
    session.ok(cmd.tag, "LSUB completed")


async def cmd_namespace(session: Session, cmd: c.Namespace) -> None:
    session.write(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    session.ok(cmd.tag, "NAMESPACE completed")


async def cmd_status(session: Session, cmd: c.Status) -> None:
    assert session.account is not None
    box = await session.store.get_mailbox(session.account.id, cmd.mailbox)
    if box is None:
        session.no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
        return
    await _status_line(session, box.name, box.id, cmd.items)
    session.ok(cmd.tag, "STATUS completed")


async def _status_line(
    session: Session, name: str, mailbox_id: int, items: Sequence[str]
) -> None:
    """STATUS response (RFC 9051 §7.3.3, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ,
    RFC 7889 APPENDLIMIT, RFC 8474 MAILBOXID)."""
    box = await session.store.get_mailbox_by_id(mailbox_id)
    if box is None:
        return
    counts = None
    if {"MESSAGES", "UNSEEN", "DELETED", "SIZE", "RECENT"} & set(items):
        counts = await session.store.mailbox_counts(mailbox_id)
    parts: list[str] = []
    for item in items:
        if item == "MESSAGES" and counts is not None:
            parts.append(f"MESSAGES {counts.messages}")
        elif item == "RECENT" and counts is not None:
            parts.append(f"RECENT {counts.recent}")
        elif item == "UIDNEXT":
            parts.append(f"UIDNEXT {box.uidnext}")
        elif item == "UIDVALIDITY":
            parts.append(f"UIDVALIDITY {box.uidvalidity}")
        elif item == "UNSEEN" and counts is not None:
            parts.append(f"UNSEEN {counts.unseen}")
        elif item == "DELETED" and counts is not None:
            parts.append(f"DELETED {counts.deleted}")
        elif item == "SIZE" and counts is not None:
            parts.append(f"SIZE {counts.size}")
        elif item == "HIGHESTMODSEQ":
            parts.append(f"HIGHESTMODSEQ {box.highestmodseq}")
        elif item == "APPENDLIMIT":
            parts.append(f"APPENDLIMIT {session.limits.max_append_size}")
        elif item == "MAILBOXID":
            parts.append(f"MAILBOXID (F{box.uidvalidity})")
    session.write(
        b"* STATUS " + session.mailbox_name(name) + (" (" + " ".join(parts) + ")\r\n").encode()
    )


async def cmd_getquotaroot(session: Session, cmd: c.GetQuotaRoot) -> None:
    """GETQUOTAROOT (RFC 9208 §4.3): one root "" per account, STORAGE in KiB."""
    assert session.account is not None
    if await session.store.get_mailbox(session.account.id, cmd.mailbox) is None:
        session.no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
        return
    session.write(b"* QUOTAROOT " + session.mailbox_name(cmd.mailbox) + b' ""\r\n')
    await _quota_line(session)
    session.ok(cmd.tag, "GETQUOTAROOT completed")


async def cmd_getquota(session: Session, cmd: c.GetQuota) -> None:
    if cmd.root != "":
        session.no(cmd.tag, "[NONEXISTENT] No such quota root")
        return
    await _quota_line(session)
    session.ok(cmd.tag, "GETQUOTA completed")


async def cmd_setquota(session: Session, cmd: c.SetQuota) -> None:
    session.no(cmd.tag, "[NOPERM] Quotas are set by the administrator")


async def _quota_line(session: Session) -> None:
    assert session.account is not None
    acc = await session.store.get_account_by_id(session.account.id)
    if acc is None or not acc.quota_bytes:
        session.write(b'* QUOTA "" ()\r\n')
        return
    used, limit = (acc.used_bytes + 1023) // 1024, acc.quota_bytes // 1024
    session.write(b'* QUOTA "" (STORAGE %d %d)\r\n' % (used, limit))


def _has_child_in(name: str, names: set[str]) -> bool:
    prefix = name + DELIMITER
    return any(n.startswith(prefix) for n in names)


def _pattern(reference: str, pattern: str) -> Callable[[str], bool]:
    """A matcher for a LIST pattern (RFC 9051 §6.3.9): "*" matches anything, "%" anything but
    the delimiter; INBOX matches case-insensitively."""
    full = reference + pattern if reference and not pattern.startswith(DELIMITER) else pattern
    regex = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in full)
    compiled = re.compile(regex + r"\Z", re.DOTALL)
    inbox = re.compile(regex + r"\Z", re.DOTALL | re.IGNORECASE)

    def match(name: str) -> bool:
        if name == "INBOX":
            return inbox.match(name) is not None
        return compiled.match(name) is not None

    return match
