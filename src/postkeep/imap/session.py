"""One IMAP session: its state, the dispatch of its commands, and the synchronisation of its
selected mailbox (IMAP4rev2, RFC 9051; IMAP4rev1, RFC 3501).

The parser (`postkeep.imap.wire.parser`) turns input into typed commands; `Session.execute`
runs an authenticated- or selected-state one against the store and writes the responses
through an `Output`. States follow RFC 9051 §3: not authenticated → authenticated → selected
→ logout. Framing, TLS, SASL round-trips, IDLE waiting and COMPRESS belong to the driver
(`postkeep.imap.server`).

Here: CAPABILITY, NOOP (RFC 9051 §6.1.1-2), CHECK (RFC 3501 §6.4.1), ID (RFC 2971), ENABLE
(RFC 9051 §6.3.1, RFC 5161) of IMAP4rev2, CONDSTORE, QRESYNC (RFC 7162) and UTF8=ACCEPT
(RFC 6855); what the session announces of its selected mailbox: FLAGS and PERMANENTFLAGS
(§7.3.5, §7.1), EXISTS (§7.4.1), EXPUNGE (§7.5.1) or VANISHED (RFC 7162 §3.2.10), and FETCH
FLAGS (§7.5.2, with MODSEQ under CONDSTORE) of changes made elsewhere. The other commands, by
family: `postkeep.imap.mailboxes` (SELECT, LIST, CREATE, STATUS, QUOTA, ...),
`postkeep.imap.messages` (APPEND, FETCH, STORE, COPY, MOVE, EXPUNGE) and
`postkeep.imap.searching` (SEARCH, SORT, THREAD).

A handler is a function of (session, command): the session holds all the state and the helpers
the handlers share (responses, `sync`, announcements); a handler module imports `Session` only
for type checking. Plain functions rather than mixins: no import cycle, no method resolution
order to follow, and what a handler needs from the session is what it names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postkeep import log
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.imap import mailboxes, messages, searching
from postkeep.imap.cache import MessageCache
from postkeep.imap.view import Selected
from postkeep.imap.wire import commands as c
from postkeep.imap.wire import render
from postkeep.store.api import Account, Mailbox, MailStore, OverQuota
from postkeep.store.events import Subscription

logger = log.get("imap")


class Output(Protocol):
    """Where responses go: `write()` buffers, `drain()` flushes to the peer (and waits until
    the socket has taken most of it); `buffered` counts the octets written since."""

    @property
    def buffered(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """A session's bounds (the `imap.*` config keys of the same names)."""

    max_append_size: int
    max_search_work: int = 10_000_000  # keys x messages one SEARCH, SORT or THREAD may cost
    max_search_content: int = 1 << 30  # message octets one of them may read
    max_keywords: int = 64


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
        # told of each committed COPY / MOVE: (account id, source mailbox id, destination,
        # (source UID, destination UID) pairs); the junk filter learns from it
        self.on_filed: Callable[[int, int, Mailbox, Sequence[tuple[int, int]]], None] | None \
            = None
        # told of each committed STORE that gave messages $Junk (True) or $NotJunk (False):
        # (account id, the mailbox, their UIDs, spam); the junk filter learns from it too
        self.on_marked: Callable[[int, Mailbox, Sequence[int], bool], None] | None = None

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

    def enable_condstore(self) -> None:
        """A CONDSTORE enabling command (RFC 7162 §3.1): from now on FETCH responses carry
        MODSEQ; a selected mailbox's HIGHESTMODSEQ is announced at once."""
        if "CONDSTORE" in self.enabled:
            return
        self.enabled.add("CONDSTORE")
        if self.selected is not None:
            self.write(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % self.selected.modseq)

    def login(self, account: Account) -> None:
        self.account = account
        self.events = self.store.subscribe(account.id, 64)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    # -- responses ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Buffer a response; the driver sends it (or a handler drains `out`)."""
        self.out.write(data)

    def ok(self, tag: str, text: str) -> None:
        """The tagged OK that completes a command (RFC 9051 §7.1.1); `bad` and `no` likewise."""
        self.write(f"{tag} OK {text}\r\n".encode())

    def no(self, tag: str, text: str) -> None:
        self.write(f"{tag} NO {text}\r\n".encode())

    def bad(self, tag: str, text: str) -> None:
        self.write(f"{tag} BAD {text}\r\n".encode())

    def mailbox_name(self, name: str) -> bytes:
        """A mailbox name as sent: UTF-8 once enabled (RFC 6855, IMAP4rev2), else modified UTF-7."""
        return render.mailbox(name, self.utf8)

    # -- dispatch ----------------------------------------------------------------------------------

    async def execute(self, cmd: c.Command) -> None:
        """Run an authenticated-state or selected-state command (the driver handles the rest)."""
        assert self.account is not None
        running = self._handler(cmd)
        if running is None:
            self.bad(cmd.tag, "Command not available in this state")
            return
        try:
            await running
        except OverQuota:
            self.no(cmd.tag, "[OVERQUOTA] Quota exceeded")
        except NotFound as e:
            self.no(cmd.tag, f"[NONEXISTENT] {e}")
        except AlreadyExists as e:
            self.no(cmd.tag, f"[ALREADYEXISTS] {e}")
        except StoreError as e:
            logger.warning(
                "store error ip=%s user=%s command=%s error=%s",
                self.peer_ip,
                log.quote(self.account.address),
                type(cmd).__name__,
                log.quote(str(e)),
            )
            self.no(cmd.tag, f"[SERVERBUG] {e}")
        except OSError:
            raise  # the connection is gone: the driver ends it
        except Exception:  # a bug: log it, keep the connection and the server
            logger.exception(
                "internal error ip=%s user=%s command=%s",
                self.peer_ip,
                log.quote(self.account.address),
                type(cmd).__name__,
            )
            self.no(cmd.tag, "[SERVERBUG] Internal error, see the server log")

    def _handler(self, cmd: c.Command) -> Awaitable[None] | None:
        """The handler of `cmd`, called (each case narrows `cmd` to the type its handler takes);
        None for the commands the driver runs, not available once it hands them here."""
        match cmd:
            # any state (RFC 9051 §6.1), authenticated state (§6.3)
            case c.Capability():
                return cmd_capability(self, cmd)
            case c.Noop():
                return cmd_noop(self, cmd)
            case c.Check():
                return cmd_check(self, cmd)
            case c.Id():
                return cmd_id(self, cmd)
            case c.Enable():
                return cmd_enable(self, cmd)
            # mailboxes
            case c.Select():
                return mailboxes.cmd_select(self, cmd)
            case c.Close():
                return mailboxes.cmd_close(self, cmd)
            case c.Unselect():
                return mailboxes.cmd_unselect(self, cmd)
            case c.Create():
                return mailboxes.cmd_create(self, cmd)
            case c.Delete():
                return mailboxes.cmd_delete(self, cmd)
            case c.Rename():
                return mailboxes.cmd_rename(self, cmd)
            case c.Subscribe():
                return mailboxes.cmd_subscribe(self, cmd)
            case c.Unsubscribe():
                return mailboxes.cmd_unsubscribe(self, cmd)
            case c.List():
                return mailboxes.cmd_list(self, cmd)
            case c.Lsub():
                return mailboxes.cmd_lsub(self, cmd)
            case c.Status():
                return mailboxes.cmd_status(self, cmd)
            case c.Namespace():
                return mailboxes.cmd_namespace(self, cmd)
            case c.GetQuotaRoot():
                return mailboxes.cmd_getquotaroot(self, cmd)
            case c.GetQuota():
                return mailboxes.cmd_getquota(self, cmd)
            case c.SetQuota():
                return mailboxes.cmd_setquota(self, cmd)
            # messages
            case c.Append():
                return messages.cmd_append(self, cmd)
            case c.Fetch():
                return messages.cmd_fetch(self, cmd)
            case c.Store():
                return messages.cmd_store(self, cmd)
            case c.Copy():
                return messages.cmd_copy(self, cmd)
            case c.Move():
                return messages.cmd_move(self, cmd)
            case c.Expunge():
                return messages.cmd_expunge(self, cmd)
            # searching
            case c.Search():
                return searching.cmd_search(self, cmd)
            case c.Sort():
                return searching.cmd_sort(self, cmd)
            case c.Thread():
                return searching.cmd_thread(self, cmd)
            case _:  # LOGIN, AUTHENTICATE, STARTTLS, LOGOUT, IDLE, COMPRESS
                return None

    def need_selected(self, cmd: c.Command) -> Selected | None:
        """The selected mailbox; None, and `cmd` answered BAD, in the authenticated state."""
        if self.selected is None:
            self.bad(cmd.tag, "No mailbox selected")
        return self.selected

    # -- the selected mailbox ----------------------------------------------------------------------

    def announce_keywords(self, sel: Selected, keywords: Sequence[str], first: bool) -> None:
        """FLAGS and PERMANENTFLAGS (RFC 9051 §7.3.5, §7.1) if `keywords` holds new ones, and
        always when `first` (SELECT)."""
        new = [k for k in keywords if k.lower() not in sel.keywords]
        if not new and not first:
            return
        for k in new:
            sel.keywords.add(k.lower())
            sel.keyword_names.append(k)
        names = " ".join(["\\Answered \\Flagged \\Deleted \\Seen \\Draft", *sel.keyword_names])
        self.write(f"* FLAGS ({names})\r\n".encode())
        if not sel.read_only:
            keywords = "".join(f" {k}" for k in sel.keyword_names)
            permanent = f"(\\Answered \\Flagged \\Deleted \\Seen \\Draft{keywords} \\*)"
            self.write(b"* OK [PERMANENTFLAGS " + permanent.encode() + b"] Flags permitted\r\n")
        else:
            self.write(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")

    def announce_expunged(self, sel: Selected, gone: Sequence[tuple[int, int]]) -> None:
        """EXPUNGE (RFC 9051 §7.5.1), or VANISHED under QRESYNC (RFC 7162 §3.2.10), for the
        (sequence number, UID) pairs removed from the view."""
        if not gone:
            return
        sel.recent.difference_update(u for _, u in gone)
        if "QRESYNC" in self.enabled:
            self.write(f"* VANISHED {render.number_set(u for _, u in gone)}\r\n".encode())
        else:
            self.write(b"".join(b"* %d EXPUNGE\r\n" % seq for seq, _ in gone))

    # -- synchronisation ---------------------------------------------------------------------------

    def drain_events(self) -> None:
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
        self.drain_events()
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
        self.announce_expunged(sel, result.expunged)
        if result.exists is not None:
            self.write(b"* %d EXISTS\r\n" % result.exists)
            if not sel.read_only:
                first, end = await self.store.claim_recent(sel.mailbox_id)
                sel.recent.update(u for u in sel.view.uids if first <= u < end)
            if not self.rev2:
                self.write(b"* %d RECENT\r\n" % len(sel.recent))
        if delta.mailbox.highestmodseq > sel.modseq:
            changed = delta.changed
            self.announce_keywords(sel, [k for i in changed for k in i.keywords], first=False)
            for info in changed:
                seq = sel.view.seq_of(info.uid)
                if seq is None or sel.reported.get(info.uid) == info.modseq:
                    continue
                extra = b" MODSEQ (%d)" % info.modseq if self.condstore else b""
                uid = b"UID %d " % info.uid if "QRESYNC" in self.enabled else b""
                self.write(
                    b"* %d FETCH (%sFLAGS %s%s)\r\n" % (seq, uid, sel.flag_list(info), extra)
                )
            sel.modseq = delta.mailbox.highestmodseq
        sel.reported.clear()
        sel.dirty = bool(sel.view.held)  # announce them at the next command that may


# -- any state, authenticated state ----------------------------------------------------------------


async def cmd_noop(session: Session, cmd: c.Noop) -> None:
    await session.sync(True, poll=True)
    session.ok(cmd.tag, "NOOP completed")


async def cmd_check(session: Session, cmd: c.Check) -> None:
    await session.sync(True, poll=True)
    session.ok(cmd.tag, "CHECK completed")


async def cmd_capability(session: Session, cmd: c.Capability) -> None:
    session.write(("* CAPABILITY " + " ".join(session.capabilities) + "\r\n").encode())
    session.ok(cmd.tag, "CAPABILITY completed")


async def cmd_id(session: Session, cmd: c.Id) -> None:
    session.write(b'* ID ("name" "postkeep" "vendor" "postkeep")\r\n')
    session.ok(cmd.tag, "ID completed")


async def cmd_enable(session: Session, cmd: c.Enable) -> None:
    """ENABLE (RFC 5161 §3.1): unknown capabilities are ignored; QRESYNC implies CONDSTORE."""
    known = {"CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT"}
    new = [
        x
        for x in dict.fromkeys(cap.upper() for cap in cmd.capabilities)
        if x in known and x not in session.enabled
    ]
    if "QRESYNC" in new and "CONDSTORE" not in session.enabled and "CONDSTORE" not in new:
        new.append("CONDSTORE")
    session.enabled.update(new)
    if new:
        session.write(("* ENABLED " + " ".join(new) + "\r\n").encode())
    session.ok(cmd.tag, "ENABLE completed")
