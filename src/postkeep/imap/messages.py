"""One IMAP session: the command handlers of IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501).

The parser (`postkeep.imap.wire.parser`) turns input into typed commands; this module
executes them against the store and writes the responses through an `Output`. States follow
RFC 9051 §3: not authenticated → authenticated → selected → logout. Framing, TLS, SASL
round-trips, IDLE waiting and COMPRESS belong to the driver (`postkeep.imap.server`).

Extensions handled here: ENABLE (RFC 5161) of IMAP4rev2, CONDSTORE, QRESYNC (RFC 7162) and
UTF8=ACCEPT (RFC 6855); NAMESPACE (RFC 2342); ID (RFC 2971); UNSELECT (RFC 3691); UIDPLUS
(RFC 4315); MOVE (RFC 6851); SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154); LIST-EXTENDED
(RFC 5258), LIST-STATUS (RFC 5819), CHILDREN (RFC 3348); ESEARCH (RFC 4731), SEARCHRES
(RFC 5182); SORT and THREAD (RFC 5256); QUOTA (RFC 9208); BINARY (RFC 3516); MULTIAPPEND
(RFC 3502); APPENDLIMIT (RFC 7889); STATUS=SIZE (RFC 8438); SAVEDATE (RFC 8514); OBJECTID
(RFC 8474); WITHIN (RFC 5032).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from postkeep import log
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.imap import fetch as fetchmod
from postkeep.imap.cache import MessageCache
from postkeep.imap.search import Candidate, MessageContent, SearchContext, needs_content, search
from postkeep.imap.thread import (
    SortFields,
    render_threads,
    sort,
    sort_fields,
    thread_orderedsubject,
    thread_references,
)
from postkeep.imap.view import MailboxView
from postkeep.imap.wire import commands as c
from postkeep.imap.wire import render
from postkeep.mime.summary import Summary
from postkeep.store.api import (
    DELIMITER,
    Account,
    Envelope,
    Flag,
    LocalDelivery,
    MailStore,
    MessageInfo,
    OverQuota,
)
from postkeep.store.events import Subscription

logger = log.get("imap")

_FETCH_BATCH = 200  # messages per store round trip when FETCH reads summaries or contents
_CONTENT_BATCH_BYTES = 4 << 20  # message data FETCH reads from the store in one go
_FETCH_BATCH_FLAGS = 5000  # ... and when it reads only the message rows (FLAGS, UID, ...)
_FLAG_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ"})  # FETCH items `_fetch_flags` renders


class Output(Protocol):
    """Where responses go: `write()` buffers, `drain()` flushes to the peer."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_append_size: int
    max_search_content: int = 20_000  # messages a content search may read
    max_keywords: int = 64


@dataclass(slots=True)
class Selected:
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


class Session:
    """Executes parsed commands for one connection; see the module docstring."""

    def __init__(
        self,
        store: MailStore,
        out: Output,
        limits: SessionLimits,
        *,
        peer_ip: str,
        capabilities: Sequence[str],
        cache: MessageCache | None = None,
    ) -> None:
        """`cache`: the process's cache of decoded summaries and headers (default: none)."""
        self.store = store
        self.cache = cache if cache is not None else MessageCache(0)
        self.out = out
        self.limits = limits
        self.peer_ip = peer_ip
        self.capabilities = list(capabilities)
        self.account: Account | None = None
        self.selected: Selected | None = None
        self.enabled: set[str] = set()
        self.events: Subscription | None = None

    # -- state -------------------------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        return bool(self.enabled & {"IMAP4REV2", "UTF8=ACCEPT"})

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self) -> bool:
        return bool(self.enabled & {"CONDSTORE", "QRESYNC"})

    def _enable_condstore(self) -> None:
        """A CONDSTORE enabling command (RFC 7162 §3.1): from now on FETCH responses carry
        MODSEQ; a selected mailbox's HIGHESTMODSEQ is announced at once."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self._w(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % self.selected.modseq)

    def login(self, account: Account) -> None:
        self.account = account
        self.events = self.store.subscribe(account.id, 64)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def _w(self, data: bytes) -> None:
        self.out.write(data)

    def _ok(self, tag: str, text: str) -> None:
        self._w(f"{tag} OK {text}\r\n".encode())

    def _no(self, tag: str, text: str) -> None:
        self._w(f"{tag} NO {text}\r\n".encode())

    def _bad(self, tag: str, text: str) -> None:
        self._w(f"{tag} BAD {text}\r\n".encode())

    def _mbox(self, name: str) -> bytes:
        return render.mailbox(name, self.utf8)

    # -- dispatch ----------------------------------------------------------------------------------

    async def execute(self, cmd: c.Command) -> None:
        """Run an authenticated-state or selected-state command (the driver handles the rest)."""
        assert self.account is not None
        handler = getattr(self, "_cmd_" + type(cmd).__name__.lower(), None)
        if handler is None:
            self._bad(cmd.tag, "Command not available in this state")
            return
        try:
            await handler(cmd)
        except OverQuota:
            self._no(cmd.tag, "[OVERQUOTA] Quota exceeded")
        except NotFound as e:
            self._no(cmd.tag, f"[NONEXISTENT] {e}")
        except AlreadyExists as e:
            self._no(cmd.tag, f"[ALREADYEXISTS] {e}")
        except StoreError as e:
            logger.warning(
                "store error ip=%s user=%s command=%s error=%s",
                self.peer_ip,
                log.quote(self.account.address),
                type(cmd).__name__,
                log.quote(str(e)),
            )
            self._no(cmd.tag, f"[SERVERBUG] {e}")
        except OSError:
            raise  # the connection is gone: the driver ends it
        except Exception:  # a bug: log it, keep the connection and the server
            logger.exception(
                "internal error ip=%s user=%s command=%s",
                self.peer_ip,
                log.quote(self.account.address),
                type(cmd).__name__,
            )
            self._no(cmd.tag, "[SERVERBUG] Internal error, see the server log")

    def _need_selected(self, cmd: c.Command) -> Selected | None:
        if self.selected is None:
            self._bad(cmd.tag, "No mailbox selected")
        return self.selected

    # -- any state ---------------------------------------------------------------------------------

    async def _cmd_noop(self, cmd: c.Noop) -> None:
        await self.sync(True, poll=True)
        self._ok(cmd.tag, "NOOP completed")

    async def _cmd_check(self, cmd: c.Check) -> None:
        await self.sync(True, poll=True)
        self._ok(cmd.tag, "CHECK completed")

    async def _cmd_capability(self, cmd: c.Capability) -> None:
        self._w(("* CAPABILITY " + " ".join(self.capabilities) + "\r\n").encode())
        self._ok(cmd.tag, "CAPABILITY completed")

    async def _cmd_id(self, cmd: c.Id) -> None:
        self._w(b'* ID ("name" "postkeep" "vendor" "postkeep")\r\n')
        self._ok(cmd.tag, "ID completed")

    # -- authenticated state -----------------------------------------------------------------------

    async def _cmd_enable(self, cmd: c.Enable) -> None:
        """ENABLE (RFC 5161 §3.1): unknown capabilities are ignored; QRESYNC implies CONDSTORE."""
        known = {"CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT"}
        new = [
            x
            for x in dict.fromkeys(cap.upper() for cap in cmd.capabilities)
            if x in known and x not in self.enabled
        ]
        if "QRESYNC" in new and "CONDSTORE" not in self.enabled and "CONDSTORE" not in new:
            new.append("CONDSTORE")
        self.enabled.update(new)
        if new:
            self._w(("* ENABLED " + " ".join(new) + "\r\n").encode())
        self._ok(cmd.tag, "ENABLE completed")

    async def _cmd_namespace(self, cmd: c.Namespace) -> None:
        self._w(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
        self._ok(cmd.tag, "NAMESPACE completed")

    async def _cmd_select(self, cmd: c.Select) -> None:
        """SELECT / EXAMINE (RFC 9051 §6.3.2-3, RFC 7162 §3.2.5 QRESYNC)."""
        assert self.account is not None
        verb = "EXAMINE" if cmd.read_only else "SELECT"
        if self.selected is not None:
            self.selected = None
            self._w(b"* OK [CLOSED] Previous mailbox closed\r\n")
        if cmd.qresync is not None and "QRESYNC" not in self.enabled:
            self._bad(cmd.tag, "QRESYNC is not enabled")
            return
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        box = await self.store.get_mailbox(self.account.id, cmd.mailbox)
        if box is None:
            self._no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
            return
        first_recent, end_recent = (
            (box.first_recent_uid, box.uidnext)
            if cmd.read_only
            else await self.store.claim_recent(box.id)
        )
        snap = await self.store.mailbox_snapshot(box.id, keywords=True)
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
        self._drain_events()
        self._announce_keywords(sel, snap.keywords, first=True)
        self._w(b"* %d EXISTS\r\n" % len(sel.view))
        if not self.rev2:
            self._w(b"* %d RECENT\r\n" % len(sel.recent))
        self._w(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % box.uidvalidity)
        self._w(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % box.uidnext)
        self._w(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % box.highestmodseq)
        self._w(b"* OK [MAILBOXID (F%d)] Ok\r\n" % box.uidvalidity)
        if not self.rev2 and sel.view.uids:
            unseen = await self._first_unseen(sel)
            if unseen:
                self._w(b"* OK [UNSEEN %d] First unseen\r\n" % unseen)
        self.selected = sel
        if cmd.qresync is not None and cmd.qresync.uid_validity == box.uidvalidity:
            await self._qresync(sel, cmd.qresync)
        access = "READ-ONLY" if cmd.read_only else "READ-WRITE"
        self._ok(cmd.tag, f"[{access}] {verb} completed")

    async def _first_unseen(self, sel: Selected) -> int | None:
        uid = await self.store.first_unseen_uid(sel.mailbox_id)
        return None if uid is None else sel.view.seq_of(uid)

    @staticmethod
    def _flags(sel: Selected, info: MessageInfo) -> bytes:
        """The FLAGS list of a message, with \\Recent when it is recent to this session."""
        return render.flag_list(info.flags, info.keywords, recent=info.uid in sel.recent)

    def _announce_keywords(self, sel: Selected, keywords: Sequence[str], first: bool) -> None:
        new = [k for k in keywords if k.lower() not in sel.keywords]
        if not new and not first:
            return
        for k in new:
            sel.keywords.add(k.lower())
            sel.keyword_names.append(k)
        names = " ".join(["\\Answered \\Flagged \\Deleted \\Seen \\Draft", *sel.keyword_names])
        self._w(f"* FLAGS ({names})\r\n".encode())
        if not sel.read_only:
            keywords = "".join(f" {k}" for k in sel.keyword_names)
            permanent = f"(\\Answered \\Flagged \\Deleted \\Seen \\Draft{keywords} \\*)"
            self._w(b"* OK [PERMANENTFLAGS " + permanent.encode() + b"] Flags permitted\r\n")
        else:
            self._w(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")

    async def _qresync(self, sel: Selected, q: c.QresyncParams) -> None:
        """RFC 7162 §3.2.5.1: VANISHED (EARLIER) for expunges since the client's MODSEQ, then
        FETCH (UID FLAGS MODSEQ) for messages changed since it."""
        gone = await self.store.expunged_since(sel.mailbox_id, q.modseq)
        if q.known_uids is not None:
            known = set(q.known_uids.iter_numbers(max(gone[-1] if gone else 0, 1)))
            gone = [u for u in gone if u in known]
        if gone:
            self._w(f"* VANISHED (EARLIER) {render.number_set(gone)}\r\n".encode())
        changed = await self.store.changed_since(sel.mailbox_id, q.modseq)
        self._announce_keywords(sel, [k for i in changed for k in i.keywords], first=False)
        for info in changed:
            seq = sel.view.seq_of(info.uid)
            if seq is not None:
                self._w(
                    b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n"
                    % (seq, info.uid, self._flags(sel, info), info.modseq)
                )

    async def _cmd_create(self, cmd: c.Create) -> None:
        assert self.account is not None
        name = cmd.mailbox.rstrip(DELIMITER)
        if name.upper() == "INBOX":
            self._no(cmd.tag, "[ALREADYEXISTS] INBOX exists already")
            return
        use = None
        if cmd.special_use:
            allowed = {"\\ARCHIVE", "\\DRAFTS", "\\JUNK", "\\SENT", "\\TRASH", "\\ALL", "\\FLAGGED"}
            if len(cmd.special_use) > 1 or cmd.special_use[0].upper() not in allowed:
                self._no(cmd.tag, "[USEATTR] Unsupported special-use attribute")
                return
            use = cmd.special_use[0].capitalize()
        try:
            await self.store.create_mailbox(self.account.id, name, use)
        except AlreadyExists:
            self._no(cmd.tag, "[ALREADYEXISTS] Mailbox exists already")
            return
        except StoreError as e:
            if isinstance(e, NotFound):
                raise
            self._no(cmd.tag, f"[CANNOT] {e}")
            return
        self._ok(cmd.tag, "CREATE completed")

    async def _cmd_delete(self, cmd: c.Delete) -> None:
        assert self.account is not None
        try:
            await self.store.delete_mailbox(self.account.id, cmd.mailbox)
        except NotFound:
            self._no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
            return
        except StoreError as e:
            self._no(cmd.tag, f"[CANNOT] {e}")
            return
        if self.selected is not None and self.selected.name == cmd.mailbox:
            self.selected = None
        self._ok(cmd.tag, "DELETE completed")

    async def _cmd_rename(self, cmd: c.Rename) -> None:
        assert self.account is not None
        try:
            await self.store.rename_mailbox(self.account.id, cmd.old, cmd.new.rstrip(DELIMITER))
        except NotFound:
            self._no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
            return
        except AlreadyExists:
            self._no(cmd.tag, "[ALREADYEXISTS] Target mailbox exists already")
            return
        except StoreError as e:
            self._no(cmd.tag, f"[CANNOT] {e}")
            return
        self._ok(cmd.tag, "RENAME completed")

    async def _cmd_subscribe(self, cmd: c.Subscribe) -> None:
        assert self.account is not None
        try:
            await self.store.set_subscribed(self.account.id, cmd.mailbox, True)
        except StoreError as e:
            self._no(cmd.tag, f"[CANNOT] {e}")
            return
        self._ok(cmd.tag, "SUBSCRIBE completed")

    async def _cmd_unsubscribe(self, cmd: c.Unsubscribe) -> None:
        assert self.account is not None
        try:
            await self.store.set_subscribed(self.account.id, cmd.mailbox, False)
        except NotFound:
            self._no(cmd.tag, "[NONEXISTENT] Not subscribed")
            return
        self._ok(cmd.tag, "UNSUBSCRIBE completed")

    async def _cmd_list(self, cmd: c.List) -> None:
        """LIST (RFC 9051 §6.3.9) with LIST-EXTENDED selection and return options (RFC 5258),
        RETURN (STATUS ...) (RFC 5819), CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154 §2)."""
        assert self.account is not None
        if cmd.patterns == ("",) and not cmd.extended:
            self._w(b'* LIST (\\Noselect) "/" ""\r\n')
            self._ok(cmd.tag, "LIST completed")
            return
        if "RECURSIVEMATCH" in cmd.select and not cmd.select - {"RECURSIVEMATCH", "REMOTE"}:
            self._bad(cmd.tag, "RECURSIVEMATCH needs another selection option (RFC 5258 §3.1)")
            return
        boxes = {b.name: b for b in await self.store.list_mailboxes(self.account.id)}
        subscribed = set(await self.store.list_subscriptions(self.account.id))
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
            line = b"* LIST (" + " ".join(attrs).encode() + b') "/" ' + self._mbox(name)
            self._w(line + childinfo + b"\r\n")
            if cmd.returns.status is not None and box is not None:
                await self._status_line(name, box.id, cmd.returns.status)
        self._ok(cmd.tag, "LIST completed")

    async def _cmd_lsub(self, cmd: c.Lsub) -> None:
        """LSUB (RFC 3501 §6.3.9): a "%" that stops above a subscribed mailbox lists the
        unsubscribed level in between with \\Noselect."""
        assert self.account is not None
        subscribed = set(await self.store.list_subscriptions(self.account.id))
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
                self._w(b'* LSUB () "/" ' + self._mbox(name) + b"\r\n")
            elif "%" in cmd.pattern:
                self._w(b'* LSUB (\\Noselect) "/" ' + self._mbox(name) + b"\r\n")
        self._ok(cmd.tag, "LSUB completed")

    async def _cmd_status(self, cmd: c.Status) -> None:
        assert self.account is not None
        box = await self.store.get_mailbox(self.account.id, cmd.mailbox)
        if box is None:
            self._no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
            return
        await self._status_line(box.name, box.id, cmd.items)
        self._ok(cmd.tag, "STATUS completed")

    async def _status_line(self, name: str, mailbox_id: int, items: Sequence[str]) -> None:
        """STATUS response (RFC 9051 §7.3.3, RFC 8438 SIZE, RFC 7162 HIGHESTMODSEQ,
        RFC 7889 APPENDLIMIT, RFC 8474 MAILBOXID)."""
        box = await self.store.get_mailbox_by_id(mailbox_id)
        if box is None:
            return
        counts = None
        if {"MESSAGES", "UNSEEN", "DELETED", "SIZE", "RECENT"} & set(items):
            counts = await self.store.mailbox_counts(mailbox_id)
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
                parts.append(f"APPENDLIMIT {self.limits.max_append_size}")
            elif item == "MAILBOXID":
                parts.append(f"MAILBOXID (F{box.uidvalidity})")
        self._w(b"* STATUS " + self._mbox(name) + (" (" + " ".join(parts) + ")\r\n").encode())

    async def _cmd_append(self, cmd: c.Append) -> None:
        """APPEND / MULTIAPPEND (RFC 9051 §6.3.12, RFC 3502) with APPENDUID (RFC 4315 §3).

        Every message is checked (flags, size, quota) before any is stored; the messages of a
        MULTIAPPEND are then committed in one transaction, all or none (RFC 3502)."""
        account = self.account
        assert account is not None
        box = await self.store.get_mailbox(account.id, cmd.mailbox)
        if box is None:
            self._no(cmd.tag, "[TRYCREATE] Mailbox does not exist")
            return
        parsed: list[tuple[c.AppendMessage, Flag, tuple[str, ...]]] = []
        total = 0
        for msg in cmd.messages:
            flags = render.split_flags(msg.flags)
            if isinstance(flags, str):
                self._bad(cmd.tag, flags)
                return
            if not msg.data:
                self._no(cmd.tag, "Cannot append an empty message")
                return
            if len(msg.data) > self.limits.max_append_size:
                self._no(cmd.tag, "[TOOBIG] Message exceeds APPENDLIMIT")
                return
            total += len(msg.data)
            parsed.append((msg, flags[0], flags[1]))
        fresh = await self.store.get_account_by_id(account.id)
        if fresh is not None and fresh.quota_bytes and fresh.used_bytes + total > fresh.quota_bytes:
            self._no(cmd.tag, "[OVERQUOTA] Quota exceeded")
            return
        deliveries = []
        for msg, flags, keywords in parsed:
            when = msg.internal_date.timestamp() if msg.internal_date else time.time()
            envelope = Envelope("", "", [], self.peer_ip, "", when)
            deliveries.append(
                LocalDelivery(envelope, [account.id], msg.data, flags, box.name, keywords)
            )
        if len(deliveries) == 1:  # group-committed with other sessions' deliveries
            results = [await self.store.deliver(deliveries[0])]
        else:
            results = await self.store.deliver_all(deliveries)
        uids = [r.delivered[0].uid for r in results]
        await self.sync(True)
        self._ok(
            cmd.tag, f"[APPENDUID {box.uidvalidity} {render.number_set(uids)}] APPEND completed"
        )

    async def _cmd_getquotaroot(self, cmd: c.GetQuotaRoot) -> None:
        """GETQUOTAROOT (RFC 9208 §4.3): one root "" per account, STORAGE in KiB."""
        assert self.account is not None
        if await self.store.get_mailbox(self.account.id, cmd.mailbox) is None:
            self._no(cmd.tag, "[NONEXISTENT] Mailbox does not exist")
            return
        self._w(b"* QUOTAROOT " + self._mbox(cmd.mailbox) + b' ""\r\n')
        await self._quota_line()
        self._ok(cmd.tag, "GETQUOTAROOT completed")

    async def _cmd_getquota(self, cmd: c.GetQuota) -> None:
        if cmd.root != "":
            self._no(cmd.tag, "[NONEXISTENT] No such quota root")
            return
        await self._quota_line()
        self._ok(cmd.tag, "GETQUOTA completed")

    async def _cmd_setquota(self, cmd: c.SetQuota) -> None:
        self._no(cmd.tag, "[NOPERM] Quotas are set by the administrator")

    async def _quota_line(self) -> None:
        assert self.account is not None
        acc = await self.store.get_account_by_id(self.account.id)
        if acc is None or not acc.quota_bytes:
            self._w(b'* QUOTA "" ()\r\n')
            return
        used, limit = (acc.used_bytes + 1023) // 1024, acc.quota_bytes // 1024
        self._w(b'* QUOTA "" (STORAGE %d %d)\r\n' % (used, limit))

    # -- selected state ----------------------------------------------------------------------------

    async def _cmd_close(self, cmd: c.Close) -> None:
        sel = self._need_selected(cmd)
        if sel is None:
            return
        assert self.account is not None
        if not sel.read_only:
            await self.store.expunge(self.account.id, sel.mailbox_id)
        self.selected = None
        self._ok(cmd.tag, "CLOSE completed")

    async def _cmd_unselect(self, cmd: c.Unselect) -> None:
        if self._need_selected(cmd) is None:
            return
        self.selected = None
        self._ok(cmd.tag, "UNSELECT completed")

    async def _cmd_expunge(self, cmd: c.Expunge) -> None:
        sel = self._need_selected(cmd)
        if sel is None:
            return
        assert self.account is not None
        if sel.read_only:
            self._no(cmd.tag, "[READ-ONLY] Mailbox is read-only")
            return
        ranges = None
        if cmd.uids is not None:
            ranges = render.ranges(self._uid_set(sel, cmd.uids))
        await self.sync(True)
        gone = await self.store.expunge(self.account.id, sel.mailbox_id, ranges)
        self._announce_expunged(sel, sel.view.remove(gone))
        await self.sync(True)
        highest = sel.modseq
        self._ok(
            cmd.tag,
            f"[HIGHESTMODSEQ {highest}] EXPUNGE completed"
            if self.condstore
            else "EXPUNGE completed",
        )

    def _announce_expunged(self, sel: Selected, gone: Sequence[tuple[int, int]]) -> None:
        if not gone:
            return
        sel.recent.difference_update(u for _, u in gone)
        if "QRESYNC" in self.enabled:
            self._w(f"* VANISHED {render.number_set(u for _, u in gone)}\r\n".encode())
        else:
            self._w(b"".join(b"* %d EXPUNGE\r\n" % seq for seq, _ in gone))

    def _uid_set(self, sel: Selected, uids: c.SequenceSet) -> list[int]:
        found = sel.view.by_uid(uids)
        if uids.saved:
            found = sorted(set(found) | (sel.saved & set(sel.view.uids)))
        return found

    def _targets(self, sel: Selected, seqs: c.SequenceSet, uid: bool) -> list[int] | None:
        """UIDs a command names; None (after a BAD) for sequence numbers out of range."""
        if uid:
            return self._uid_set(sel, seqs)
        if not sel.view.seq_in_range(seqs):
            return None
        found = sel.view.by_seq(seqs)
        if seqs.saved:
            found = sorted(set(found) | (sel.saved & set(sel.view.uids)))
        return found

    async def _cmd_fetch(self, cmd: c.Fetch) -> None:
        """FETCH / UID FETCH (RFC 9051 §6.4.5, §6.4.9) with CHANGEDSINCE and VANISHED
        (RFC 7162 §3.1.4.1, §3.2.6)."""
        sel = self._need_selected(cmd)
        if sel is None:
            return
        assert self.account is not None
        if cmd.vanished and not (
            cmd.uid and "QRESYNC" in self.enabled and cmd.changed_since is not None
        ):
            self._bad(cmd.tag, "VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
            return
        if cmd.changed_since is not None or any(a.name == "MODSEQ" for a in cmd.attributes):
            self._enable_condstore()
        await self.sync(cmd.uid)
        uids = self._targets(sel, cmd.sequence_set, cmd.uid)
        if uids is None:
            self._bad(cmd.tag, "Invalid message sequence number")
            return
        if cmd.vanished and cmd.changed_since is not None:
            gone = await self.store.expunged_since(sel.mailbox_id, cmd.changed_since)
            wanted = set(cmd.sequence_set.iter_numbers(max(gone[-1] if gone else 0, 1)))
            gone = [u for u in gone if u in wanted]
            if gone:
                self._w(f"* VANISHED (EARLIER) {render.number_set(gone)}\r\n".encode())
        modseq_item = cmd.changed_since is not None or any(
            a.name == "MODSEQ" for a in cmd.attributes
        )
        if all(a.name in _FLAG_ITEMS for a in cmd.attributes):
            missing = await self._fetch_flags(sel, cmd, uids, modseq_item)
        else:
            found = await self._fetch_items(sel, cmd, uids, modseq_item)
            if found is None:
                return
            missing = found
        await self.sync(cmd.uid)
        if missing and not cmd.uid:  # RFC 9051 §7.1: the client may want to NOOP soon
            self._ok(cmd.tag, "[EXPUNGEISSUED] Some messages were expunged meanwhile")
            return
        self._ok(cmd.tag, "FETCH completed")

    async def _fetch_items(
        self, sel: Selected, cmd: c.Fetch, uids: list[int], modseq_item: bool
    ) -> bool | None:
        """FETCH in general: message rows, summaries and contents read in batches. True if
        messages were missing; None if a NO [UNKNOWN-CTE] ended the command."""
        assert self.account is not None
        need = fetchmod.needs(cmd.attributes)
        set_seen = need.sets_seen and not sel.read_only
        missing = False
        atts = list(cmd.attributes)
        step = _FETCH_BATCH if need.summary or need.content or set_seen else _FETCH_BATCH_FLAGS
        for start in range(0, len(uids), step):
            batch = uids[start : start + step]
            infos = await self.store.messages_by_uid(sel.mailbox_id, render.ranges(batch))
            missing = missing or len(infos) < len(batch)
            if cmd.changed_since is not None:
                infos = [i for i in infos if i.modseq > cmd.changed_since]
            seen_changed: dict[int, MessageInfo] = {}
            if set_seen:
                unseen = [i.uid for i in infos if not i.flags & Flag.SEEN]
                if unseen:
                    change = await self.store.set_flags(
                        self.account.id, sel.mailbox_id, render.ranges(unseen), "add", Flag.SEEN
                    )
                    seen_changed = {m.uid: m for m in change.changed}
                    for m in change.changed:
                        sel.reported[m.uid] = m.modseq
            summaries: dict[int, Summary] = {}
            if need.summary and infos:
                summaries = await self._summaries(infos)
            self._announce_keywords(sel, [k for i in infos for k in i.keywords], first=False)
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
                data = None
                if need.content:
                    if info.id not in contents:
                        contents = await self._contents(infos[n:], summaries, need.header_only)
                    data = contents.get(info.id)
                    if data is None:  # expunged (row or blob gone) meanwhile
                        missing = True
                        continue
                item_atts = atts
                if info.uid in seen_changed and not any(a.name == "FLAGS" for a in atts):
                    item_atts = [*atts, c.FetchAtt("FLAGS")]
                try:
                    body = fetchmod.render_items(
                        info,
                        item_atts,
                        summary,
                        data,
                        uid=cmd.uid,
                        modseq=modseq_item or (self.condstore and info.uid in seen_changed),
                        recent=info.uid in sel.recent,
                    )
                except fetchmod.UnknownCte:
                    self._no(cmd.tag, "[UNKNOWN-CTE] Cannot decode the part's transfer encoding")
                    return None
                self._w(b"* %d FETCH " % seq + body + b"\r\n")
            await self.out.drain()
        return missing

    async def _fetch_flags(
        self, sel: Selected, cmd: c.Fetch, uids: list[int], modseq_item: bool
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
            rows = await self.store.message_flags(sel.mailbox_id, render.ranges(batch))
            missing = missing or len(rows) < len(batch)
            if since is not None:
                rows = [r for r in rows if r[3] > since]
            self._announce_keywords(sel, [k for r in rows if r[2] for k in r[2].split()], False)
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
                            flags = lists[key] = b"FLAGS " + render.flag_list(
                                Flag(bits), tuple(keywords.split()), recent=key[2]
                            )
                        items.append(flags)
                    else:
                        items.append(b"MODSEQ (%d)" % modseq)
                out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
            self._w(b"".join(out))
            await self.out.drain()
        return missing

    async def _summaries(self, infos: Sequence[MessageInfo]) -> dict[int, Summary]:
        """The decoded summaries of `infos` (expunged ones left out): from the process's
        cache, the others in one store read."""
        assert self.account is not None
        account_id, cache = self.account.id, self.cache
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
                await self.store.message_summaries(account_id, unknown)
            ).items():
                summary = out[message_id] = Summary(doc)
                cache.put_summary(account_id, message_id, summary, len(doc))
        return out

    async def _contents(
        self, infos: Sequence[MessageInfo], summaries: dict[int, Summary], header_only: bool
    ) -> dict[int, bytes]:
        """The contents (or headers) of the first messages of `infos`, in one store read of
        at most _CONTENT_BATCH_BYTES (but at least one message); headers come from the
        process's cache when it has them, and go into it."""
        assert self.account is not None
        account_id, cache = self.account.id, self.cache
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
            if wanted and total + size > _CONTENT_BATCH_BYTES:
                break
            wanted.append((info.id, length))
            total += size
        if wanted:
            read = await self.store.read_messages(account_id, wanted, expected_bytes=total)
            out.update(read)
            for message_id, length in wanted:
                if length is not None and message_id in read:
                    cache.put_header(account_id, message_id, read[message_id])
        return out

    async def _cmd_store(self, cmd: c.Store) -> None:
        """STORE / UID STORE (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
        sel = self._need_selected(cmd)
        if sel is None:
            return
        assert self.account is not None
        flags = render.split_flags(cmd.flags)
        if isinstance(flags, str):
            self._bad(cmd.tag, flags)
            return
        if len(flags[1]) > self.limits.max_keywords:
            self._bad(cmd.tag, "Too many keywords")
            return
        if sel.read_only:
            self._no(cmd.tag, "[READ-ONLY] Mailbox is read-only")
            return
        if cmd.unchanged_since is not None:
            self._enable_condstore()
        await self.sync(cmd.uid)
        uids = self._targets(sel, cmd.sequence_set, cmd.uid)
        if uids is None:
            self._bad(cmd.tag, "Invalid message sequence number")
            return
        mode = {
            c.StoreMode.REPLACE: "replace",
            c.StoreMode.ADD: "add",
            c.StoreMode.REMOVE: "remove",
        }[cmd.mode]
        change = await self.store.set_flags(
            self.account.id,
            sel.mailbox_id,
            render.ranges(uids),
            mode,
            flags[0],
            flags[1],
            cmd.unchanged_since,
        )
        if mode != "remove":
            self._announce_keywords(sel, flags[1], first=False)
        shown = sorted(
            [*change.changed, *([] if cmd.silent else change.unchanged)], key=lambda m: m.uid
        )
        self._announce_keywords(sel, [k for m in shown for k in m.keywords], first=False)
        changed_uids = {m.uid for m in change.changed}
        for m in change.changed:
            sel.reported[m.uid] = m.modseq
        for m in shown:
            seq = sel.view.seq_of(m.uid)
            if seq is None or (cmd.silent and not (self.condstore and m.uid in changed_uids)):
                continue
            parts = []
            if cmd.uid:
                parts.append(b"UID %d" % m.uid)
            if not cmd.silent:
                parts.append(b"FLAGS " + self._flags(sel, m))
            if self.condstore:
                parts.append(b"MODSEQ (%d)" % m.modseq)
            self._w(b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n")
        await self.sync(cmd.uid)
        if change.modified:
            ids = (
                change.modified
                if cmd.uid
                else [s for s in (sel.view.seq_of(u) for u in change.modified) if s]
            )
            self._ok(cmd.tag, f"[MODIFIED {render.number_set(ids)}] Conditional STORE failed")
            return
        self._ok(cmd.tag, "STORE completed")

    async def _cmd_copy(self, cmd: c.Copy) -> None:
        await self._copy(cmd.tag, cmd.sequence_set, cmd.mailbox, cmd.uid, move=False)

    async def _cmd_move(self, cmd: c.Move) -> None:
        await self._copy(cmd.tag, cmd.sequence_set, cmd.mailbox, cmd.uid, move=True)

    async def _copy(
        self, tag: str, seqs: c.SequenceSet, target: str, uid: bool, move: bool
    ) -> None:
        """COPY / MOVE (RFC 9051 §6.4.7-8, RFC 6851) with COPYUID (RFC 4315 §3)."""
        sel = self.selected
        if sel is None:
            self._bad(tag, "No mailbox selected")
            return
        assert self.account is not None
        if move and sel.read_only:
            self._no(tag, "[READ-ONLY] Mailbox is read-only")
            return
        await self.sync(uid)
        uids = self._targets(sel, seqs, uid)
        if uids is None:
            self._bad(tag, "Invalid message sequence number")
            return
        dest = await self.store.get_mailbox(self.account.id, target)
        if dest is None:
            self._no(tag, "[TRYCREATE] Mailbox does not exist")
            return
        result = await self.store.copy_messages(
            self.account.id, sel.mailbox_id, render.ranges(uids), dest.id, move=move
        )
        verb = "MOVE" if move else "COPY"
        code = ""
        if result.pairs:
            src = render.number_set(s for s, _ in result.pairs)
            dst = render.number_set(d for _, d in result.pairs)
            code = f"[COPYUID {result.uidvalidity} {src} {dst}] "
        if move:
            if code:
                self._w(f"* OK {code}Moved\r\n".encode())
            self._announce_expunged(sel, sel.view.remove([s for s, _ in result.pairs]))
            await self.sync(True)
            self._ok(tag, f"{verb} completed")
            return
        await self.sync(uid)
        self._ok(tag, f"{code}{verb} completed")

    async def _candidates(self, sel: Selected) -> list[tuple[Candidate, MessageInfo]]:
        infos = await self.store.messages_by_uid(sel.mailbox_id, [(1, render_max(sel))])
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
        self, sel: Selected, key: c.SearchKey
    ) -> tuple[list[tuple[Candidate, MessageInfo]], dict[int, bytes]] | str:
        """The messages matching `key` (in sequence order) and the contents read for it."""
        assert self.account is not None
        cands = await self._candidates(sel)
        ctx = SearchContext(len(sel.view), sel.view.largest_uid, sel.saved, time.time())
        contents: dict[int, bytes] = {}
        if needs_content(key):
            if len(cands) > self.limits.max_search_content:
                return "[LIMIT] Mailbox too large for a text search"
            for cand, info in cands:
                contents[cand.uid] = await self.store.read_message(self.account.id, info.id)
        parsed: dict[int, MessageContent] = {}

        def load(cand: Candidate) -> MessageContent:
            if cand.uid not in parsed:
                parsed[cand.uid] = MessageContent.parse(contents[cand.uid])
            return parsed[cand.uid]

        hits = {h.uid for h in search(key, [x for x, _ in cands], load, ctx)}
        return [pair for pair in cands if pair[0].uid in hits], contents

    async def _cmd_search(self, cmd: c.Search) -> None:
        """SEARCH / UID SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SAVE (RFC 5182)
        and MODSEQ (RFC 7162 §3.1.5)."""
        sel = self._need_selected(cmd)
        if sel is None:
            return
        await self.sync(cmd.uid)
        found = await self._matching(sel, cmd.key)
        if isinstance(found, str):
            self._no(cmd.tag, found)
            return
        hits, _ = found
        numbers = [cand.uid if cmd.uid else cand.seq for cand, _ in hits]
        uses_modseq = _uses_modseq(cmd.key)
        if uses_modseq:
            self._enable_condstore()
        highest = max((cand.modseq for cand, _ in hits), default=0)
        returns = cmd.returns
        if returns is None and self.rev2:
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
                self._w(("* ESEARCH " + " ".join(parts) + "\r\n").encode())
        else:
            line = "* SEARCH" + "".join(f" {n}" for n in numbers)
            if uses_modseq and numbers:
                line += f" (MODSEQ {highest})"
            self._w((line + "\r\n").encode())
        await self.sync(cmd.uid)
        self._ok(cmd.tag, "SEARCH completed")

    async def _sort_items(self, cmd: c.Sort | c.Thread) -> list[tuple[int, SortFields]] | None:
        """The messages a SORT / THREAD program matches, with their sort fields, keyed by UID
        (UID SORT / UID THREAD) or sequence number; None once an error was answered."""
        sel = self._need_selected(cmd)
        if sel is None:
            return None
        assert self.account is not None
        await self.sync(cmd.uid)
        found = await self._matching(sel, cmd.key)
        if isinstance(found, str):
            self._no(cmd.tag, found)
            return None
        hits, contents = found
        items = []
        for cand, info in hits:
            data = contents.get(cand.uid)
            if data is None:
                data = await self.store.read_message(self.account.id, info.id)
            ident = cand.uid if cmd.uid else cand.seq
            items.append((ident, sort_fields(data, info.internaldate, info.size)))
        return items

    async def _cmd_sort(self, cmd: c.Sort) -> None:
        """SORT (RFC 5256 §3)."""
        items = await self._sort_items(cmd)
        if items is None:
            return
        order = sort(items, cmd.criteria)
        self._w(("* SORT" + "".join(f" {n}" for n in order) + "\r\n").encode())
        self._ok(cmd.tag, "SORT completed")

    async def _cmd_thread(self, cmd: c.Thread) -> None:
        """THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §2.1-2.2, §4)."""
        items = await self._sort_items(cmd)
        if items is None:
            return
        algo = thread_references if cmd.algorithm == "REFERENCES" else thread_orderedsubject
        self._w(("* THREAD " + render_threads(algo(items)) + "\r\n").encode())
        self._ok(cmd.tag, "THREAD completed")

    # -- synchronisation ---------------------------------------------------------------------------

    def _drain_events(self) -> None:
        """Mark the selected mailbox dirty if an event concerns it."""
        if self.events is None:
            return
        overflowed = self.events.reset_overflow()
        events = self.events.drain()
        sel = self.selected
        if sel is not None and (overflowed or any(e.mailbox_id == sel.mailbox_id for e in events)):
            sel.dirty = True

    async def wait_event(self) -> None:
        """Wait until an event arrives (for IDLE)."""
        assert self.events is not None
        event = await self.events.get()
        sel = self.selected
        if sel is not None and event.mailbox_id == sel.mailbox_id:
            sel.dirty = True

    async def sync(self, allow_expunge: bool, *, poll: bool = False) -> None:
        """Announce changes other sessions (or deliveries) made to the selected mailbox:
        EXPUNGE / VANISHED (only when `allow_expunge`), EXISTS, and FETCH FLAGS (RFC 9051
        §7.5.1, §7.4.1; RFC 7162 §3.2.10).

        Reads only what changed after the MODSEQ last synchronised: every change (new message,
        flag change, expunge) takes a new MODSEQ from the mailbox in commit order, so the rows
        with a greater MODSEQ and the expunge log after it are exactly the difference.

        Events mark the mailbox dirty; an event from another process (IMAP workers) arrives a
        moment after the commit, so with `poll` (NOOP, CHECK, the start of IDLE: the commands
        clients poll with) the mailbox's HIGHESTMODSEQ is read too: they see every change
        committed before they began, whichever process made it."""
        self._drain_events()
        sel = self.selected
        if sel is None:
            return
        if poll and not sel.dirty:
            box = await self.store.get_mailbox_by_id(sel.mailbox_id)
            if self.selected is not sel:
                return
            if box is not None and box.highestmodseq > sel.modseq:
                sel.dirty = True
        if not sel.dirty:
            return
        delta = await self.store.mailbox_changes(sel.mailbox_id, sel.modseq)
        if self.selected is not sel:
            return
        largest = sel.view.largest_uid
        added = [i.uid for i in delta.changed if i.uid > largest]
        result = sel.view.apply(delta.expunged, added, allow_expunge)
        self._announce_expunged(sel, result.expunged)
        if result.exists is not None:
            self._w(b"* %d EXISTS\r\n" % result.exists)
            if not sel.read_only:
                first, end = await self.store.claim_recent(sel.mailbox_id)
                sel.recent.update(u for u in sel.view.uids if first <= u < end)
            if not self.rev2:
                self._w(b"* %d RECENT\r\n" % len(sel.recent))
        if delta.mailbox.highestmodseq > sel.modseq:
            changed = delta.changed
            self._announce_keywords(sel, [k for i in changed for k in i.keywords], first=False)
            for info in changed:
                seq = sel.view.seq_of(info.uid)
                if seq is None or sel.reported.get(info.uid) == info.modseq:
                    continue
                extra = b" MODSEQ (%d)" % info.modseq if self.condstore else b""
                uid = b"UID %d " % info.uid if "QRESYNC" in self.enabled else b""
                self._w(
                    b"* %d FETCH (%sFLAGS %s%s)\r\n" % (seq, uid, self._flags(sel, info), extra)
                )
            sel.modseq = delta.mailbox.highestmodseq
        sel.reported.clear()
        sel.dirty = bool(sel.view.held)  # announce them at the next command that may


def _has_child_in(name: str, names: set[str]) -> bool:
    prefix = name + DELIMITER
    return any(n.startswith(prefix) for n in names)


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
