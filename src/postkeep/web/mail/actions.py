"""What the webmail does to messages: ``POST /mail/actions``.

A form (the message list's, or `mail.js` sending the same fields with ``fetch``): ``csrf``,
``mailbox`` (the id of the mailbox the messages are in), one or more ``uid``, ``action``
and, for ``move`` and ``copy``, ``target`` (a mailbox id). The actions are the store's own
operations, called as the IMAP commands call them, so IMAP clients see each change at once
(their IDLE and NOTIFY through the event bus, `postkeep.store.events`):

- ``flag`` / ``unflag``, ``seen`` / ``unseen``: STORE +FLAGS / -FLAGS of ``\\Flagged`` or
  ``\\Seen`` (RFC 9051 §6.4.6);
- ``move`` / ``copy``: MOVE (RFC 6851) / COPY (RFC 9051 §6.4.7) into ``target``;
- ``delete``: a MOVE into the ``\\Trash`` mailbox (RFC 6154 §2; made, as "Trash", if the
  account has none), or, for messages in Trash already, ``\\Deleted`` and UID EXPUNGE
  (RFC 4315 §2.1) of just those;
- ``archive``: a MOVE into ``\\Archive`` (made as "Archive" if missing);
- ``junk``: a MOVE into the Junk mailbox (``\\Junk``, or the one `junk.mailbox` names; made
  if missing), ``notjunk``: a MOVE out of it into INBOX. Each copy or move is handed to the
  junk filter's trainer as IMAP's are (`postkeep.filters.junk.training`: into Junk learns
  spam, out of it ham), given by the server wiring as a `Filed`.

Every id is looked up among the logged-in account's own mailboxes and messages; one that is
not there is answered 404, as one that does not exist (no account can act on another's
messages), a malformed one 400; the Quarantine mailbox (the server's) is no target. The
answer is a 303 back to the list (``back``, if given, must be a path under ``/mail/``: no
open redirect), or JSON when the request asks for it (``Accept: application/json``). Every
refusal is logged ``reject ip=... code=... reason=...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from postkeep import log
from postkeep.errors import AlreadyExists, NotFound
from postkeep.store.api import (
    DELIMITER,
    QUARANTINE_MAILBOX,
    Account,
    Flag,
    Mailbox,
    MailStore,
    OverQuota,
    SpecialUse,
)
from postkeep.web.app import client_ip, current, form_of, form_values
from postkeep.web.pages import Pages

logger = log.get("web")

FLAG_ACTIONS: dict[str, tuple[str, Flag]] = {
    "flag": ("add", Flag.FLAGGED),
    "unflag": ("remove", Flag.FLAGGED),
    "seen": ("add", Flag.SEEN),
    "unseen": ("remove", Flag.SEEN),
}
ACTIONS = ("move", "copy", *FLAG_ACTIONS, "delete", "archive", "junk", "notjunk")
MAX_UIDS = 1000  # messages of one action at most
MAX_UID = 2**32 - 1  # RFC 9051 §2.3.1.1: a UID is a 32-bit number
MAX_ID_DIGITS = 18
# a path under /mail/ of our own pages: no scheme, no host, no backslash, no "//", no
# percent sign before the query (no encoded dot segment), and no dot segment (checked apart)
BACK = re.compile(r"/mail/(?:[A-Za-z0-9._~=&+-]+/?)*(?:\?[A-Za-z0-9._~%=&+/-]*)?")
MAX_BACK = 512


class Filed(Protocol):
    """The junk filter's trainer as the webmail uses it
    (`postkeep.filters.junk.training.JunkTrainer`)."""

    def filed(self, account_id: int, source_id: int, dest: Mailbox,
              pairs: Sequence[tuple[int, int]]) -> None:
        """Committed: `pairs` (source UID, destination UID) went from `source_id` to `dest`."""

    async def drain(self) -> None:
        """Wait for the learning queued so far."""


class Refused(Exception):
    """An action refused: its status and the reason (logged, and told to the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Done:
    """An action carried out: on how many messages, into which mailbox (moves and copies)."""

    action: str
    count: int
    target: Mailbox | None


def ranges(uids: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending UIDs as inclusive (low, high) runs, as the store takes them."""
    runs: list[tuple[int, int]] = []
    for uid in sorted(set(uids)):
        if runs and runs[-1][1] == uid - 1:
            runs[-1] = (runs[-1][0], uid)
        else:
            runs.append((uid, uid))
    return runs


def parse_id(value: str | None, what: str) -> int:
    """A mailbox id or UID of a form; `Refused` 400 if it is not a positive number."""
    if value is None or value == "":
        raise Refused(400, f"no {what}")
    if not value.isdigit() or not value.isascii() or len(value) > MAX_ID_DIGITS \
            or int(value) == 0:
        raise Refused(400, f"malformed {what}")
    return int(value)


def back_path(value: str | None, default: str) -> str:
    """Where the redirect after the action goes: `value` if it is one of our /mail/ paths,
    `default` if none was given; `Refused` 400 for anything else (an open redirect)."""
    if value is None or value == "":
        return default
    if len(value) > MAX_BACK or "//" in value or BACK.fullmatch(value) is None or any(
            part in (".", "..") for part in value.partition("?")[0].split("/")):
        raise Refused(400, "back must be a path under /mail/")
    return value


def server_owned(name: str) -> bool:
    """The Quarantine mailbox and those under it: the server's content filters fill them."""
    return name == QUARANTINE_MAILBOX or name.startswith(QUARANTINE_MAILBOX + DELIMITER)


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def refusal(request: web.Request, status: int, reason: str) -> web.Response:
    """The answer to a refused request (JSON for `mail.js`), logged for the operator."""
    logger.warning("reject ip=%s code=%d reason=%s path=%s", client_ip(request), status,
                   log.quote(reason), log.quote(request.path[:200]))
    if wants_json(request):
        return web.json_response({"ok": False, "error": reason}, status=status)
    return web.Response(status=status, text=f"{reason}\n")


class MailActions:
    """The handler of ``POST /mail/actions`` (see the module docstring)."""

    def __init__(self, pages: Pages, store: MailStore, junk_mailbox: str,
                 trainer: Filed | None) -> None:
        self.pages = pages
        self.store = store
        self.junk_mailbox = junk_mailbox
        self.trainer = trainer

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/mail/actions", self.act)]

    async def act(self, request: web.Request) -> web.StreamResponse:
        if wants_json(request) and current(request) is None:
            return refusal(request, 401, "not logged in")
        account = await self.pages.account_of(request)
        fields, uids = form_of(request), form_values(request, "uid")  # the middleware's
        try:
            action = fields.get("action", "")
            if action not in ACTIONS:
                raise Refused(400, "unknown action")
            box = await self.own_mailbox(account, fields.get("mailbox"), "mailbox")
            back = back_path(fields.get("back"), f"/mail/m/{box.id}")
            done = await self.perform(account, action, box, await self.own_uids(box, uids),
                                      fields.get("target"))
        except Refused as e:
            return refusal(request, e.status, e.reason)
        logger.info("mail action ip=%s user=%s action=%s mailbox=%d messages=%d target=%s",
                    client_ip(request), log.quote(account.address), action, box.id,
                    done.count, done.target.id if done.target else "-")
        if wants_json(request):
            return web.json_response({
                "ok": True, "action": action, "mailbox": box.id, "count": done.count,
                "target": done.target.id if done.target else None, "back": back})
        raise web.HTTPSeeOther(back)

    # -- the ids, among the account's own -----------------------------------------------------

    async def own_mailbox(self, account: Account, value: str | None, what: str) -> Mailbox:
        wanted = parse_id(value, what)
        for box in await self.store.list_mailboxes(account.id):
            if box.id == wanted:
                return box
        raise Refused(404, f"no such {what}")

    async def own_uids(self, box: Mailbox, values: list[str]) -> list[tuple[int, int]]:
        if not values:
            raise Refused(400, "no message chosen")
        if len(values) > MAX_UIDS:
            raise Refused(400, f"more than {MAX_UIDS} messages")
        uids = {parse_id(v, "uid") for v in values}
        if max(uids) > MAX_UID:
            raise Refused(400, "malformed uid")
        runs = ranges(sorted(uids))
        found = {m.uid for m in await self.store.messages_by_uid(box.id, runs)}
        if found != uids:
            raise Refused(404, "no such message")
        return runs

    # -- the actions --------------------------------------------------------------------------

    async def perform(self, account: Account, action: str, box: Mailbox,
                      runs: list[tuple[int, int]], target: str | None) -> Done:
        count = sum(high - low + 1 for low, high in runs)
        if action in FLAG_ACTIONS:
            mode, flag = FLAG_ACTIONS[action]
            await self.store.set_flags(account.id, box.id, runs, mode, flag)
            return Done(action, count, None)
        if action in ("move", "copy"):
            dest = await self.own_mailbox(account, target, "target mailbox")
            if server_owned(dest.name):
                raise Refused(400, "the Quarantine mailbox is filled by the server")
            if dest.id == box.id and action == "move":
                raise Refused(400, "the messages are in that mailbox already")
            return await self.file(account, box, runs, dest, action, move=action == "move")
        if action == "delete":
            trash = await self.special(account, SpecialUse.TRASH, "Trash")
            if trash.id != box.id:
                return await self.file(account, box, runs, trash, action)
            await self.store.set_flags(account.id, box.id, runs, "add", Flag.DELETED)
            gone = await self.store.expunge(account.id, box.id, runs)
            return Done(action, len(gone), None)
        if action == "archive":
            dest = await self.special(account, SpecialUse.ARCHIVE, "Archive")
        elif action == "junk":
            dest = await self.special(account, SpecialUse.JUNK, self.junk_mailbox)
        else:  # notjunk
            if not self.is_junk(box):
                raise Refused(400, "the messages are not in the Junk mailbox")
            inbox = await self.store.get_mailbox(account.id, "INBOX")
            if inbox is None:
                raise Refused(404, "no INBOX")
            dest = inbox
        if dest.id == box.id:
            raise Refused(400, f"the messages are in {dest.name} already")
        return await self.file(account, box, runs, dest, action)

    async def file(self, account: Account, box: Mailbox, runs: list[tuple[int, int]],
                   dest: Mailbox, action: str, *, move: bool = True) -> Done:
        """MOVE or COPY, then the trainer told, as `postkeep.imap.messages` does."""
        try:
            result = await self.store.copy_messages(account.id, box.id, runs, dest.id,
                                                    move=move)
        except OverQuota:
            raise Refused(507, "over quota") from None
        except NotFound:
            raise Refused(404, "no such mailbox") from None
        if self.trainer is not None:  # queued, not awaited
            self.trainer.filed(account.id, box.id, dest, result.pairs)
        return Done(action, len(result.pairs), dest)

    def is_junk(self, box: Mailbox) -> bool:
        return box.special_use == SpecialUse.JUNK or box.name == self.junk_mailbox

    async def special(self, account: Account, use: SpecialUse, name: str) -> Mailbox:
        """The account's mailbox of special use `use` (RFC 6154 §2), else the one named
        `name`, else `name` made with that special use."""
        boxes = await self.store.list_mailboxes(account.id)
        for box in boxes:
            if box.special_use == use:
                return box
        for box in boxes:
            if box.name == name:
                return box
        try:
            made = await self.store.create_mailbox(account.id, name, use)
        except AlreadyExists:  # made meanwhile (another request, an IMAP CREATE)
            found = await self.store.get_mailbox(account.id, name)
            if found is None:
                raise Refused(409, f"{name} could not be made") from None
            return found
        logger.info("mailbox made user=%s mailbox=%s special_use=%s",
                    log.quote(account.address), log.quote(name), use.value)
        return made
