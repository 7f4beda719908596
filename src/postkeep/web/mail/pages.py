"""The webmail's read side: the mailbox list, the message list and the reading view.

Routes (every one behind the login, `Pages.account_of`):

* ``GET /mail``: to the inbox's list.
* ``GET /mail/m/{mailbox}``: the message list (`postkeep.web.mail.listing`: ``page``,
  ``sort``, ``rev``, ``q``, ``threads``) in the layout ``mail.html``.
* ``GET /mail/m/{mailbox}/{uid}``: the reading view; marks the message \\Seen through the
  store's `set_flags`, as an IMAP FETCH of its body would (RFC 9051 §6.4.5), so the user's
  IMAP clients see it read (a new MODSEQ, an event to IDLE).
* ``GET /mail/m/{mailbox}/{uid}/body``: the HTML part, sanitised, under the frame's CSP
  (`postkeep.web.mail.sanitize`); ``?images=1`` lets remote (https) images load.
* ``GET /mail/m/{mailbox}/{uid}/part/{section}``: an attachment, streamed, as a download
  (``Content-Disposition: attachment`` with RFC 6266 ``filename*``, ``nosniff``, a type
  that can be rendered replaced by application/octet-stream, `reading.SAFE_TYPES`).

A mailbox id is looked up and must be the logged-in account's own; a UID is looked up in that
mailbox; anything else is answered 404 exactly as an id that does not exist (and logged
``reject ip=... code=404``), so no id in a URL reaches another account's mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

from aiohttp import web

from postkeep import log
from postkeep.errors import NotFound
from postkeep.imap.content import decode_bytes
from postkeep.store.api import (
    Account,
    Flag,
    Mailbox,
    MailboxCounts,
    MailStore,
    MessageInfo,
    MessageReader,
    SpecialUse,
)
from postkeep.web.app import client_ip, current
from postkeep.web.mail import reading
from postkeep.web.mail.listing import SORTS, THREAD_WINDOW, BadQuery, Hits, Listing, View
from postkeep.web.mail.rows import OrderCache, RowCache
from postkeep.web.mail.sanitize import FRAME_SANDBOX, clean, frame_csp, frame_document
from postkeep.web.pages import Pages

logger = log.get("web")

ROW_CACHE_BYTES: Final = 64 << 20  # per worker: list rows, sort keys (docs/architecture.md)
SUMMARY_CACHE_BYTES: Final = 8 << 20  # per worker: decoded summaries of messages read
ORDERS_KEPT: Final = 16  # whole-mailbox sort orders and search hits kept per worker
MAX_PAGE: Final = 100_000
SPECIAL_ORDER: Final = (None, SpecialUse.DRAFTS, SpecialUse.SENT, SpecialUse.ARCHIVE,
                        SpecialUse.JUNK, SpecialUse.TRASH)
SPECIAL_LABELS: Final = {"INBOX": "Inbox"}


def _number(text: str, limit: int) -> int | None:
    """A decimal id of the URL (1 to `limit`), None for anything else."""
    if not text.isdigit() or len(text) > 18:
        return None
    value = int(text)
    return value if 1 <= value <= limit else None


def mailbox_order(boxes: list[Mailbox]) -> list[Mailbox]:
    """Inbox, Drafts, Sent, Archive, Junk, Trash (RFC 6154 special uses), then the others by
    name."""
    def key(box: Mailbox) -> tuple[int, str]:
        if box.name == "INBOX":
            return 0, ""
        if box.special_use in SPECIAL_ORDER:
            return SPECIAL_ORDER.index(box.special_use), box.name
        return len(SPECIAL_ORDER), box.name.casefold()
    return sorted(boxes, key=key)


def _urls(box: Mailbox, view: View) -> Callable[..., str]:
    """The list's link maker: this view's URL with some of its settings changed."""
    def url(**changes: object) -> str:
        settings = {"page": view.page, "sort": view.sort, "rev": view.rev, "q": view.q,
                    "threads": view.threads, **changes}
        query = {"page": settings["page"] if settings["page"] != 1 else None,
                 "sort": settings["sort"] if settings["sort"] != "arrival" else None,
                 "rev": "1" if settings["rev"] else None, "q": settings["q"] or None,
                 "threads": "1" if settings["threads"] else None}
        text = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return f"/mail/m/{box.id}" + (f"?{text}" if text else "")
    return url


def _when(value: float) -> str:
    now = time.time()
    if now - 20 * 3600 < value <= now + 3600:
        return time.strftime("%H:%M", time.gmtime(value))
    return time.strftime("%Y-%m-%d", time.gmtime(value))


def _size(value: int) -> str:
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value >= step:
            return f"{value / step:.1f} {unit}"
    return f"{value} B"


DONE_NOTICES = {  # what a redirect after sending may show (a key, never text from the request)
    "sent": "Your message was sent; a copy is in Sent.",
    "sent-nocopy": "Your message was sent (no copy could be kept in Sent).",
    "held": "Your message is held for review by the content filters.",
}


class MailPages:
    """The handlers of the module docstring, on the account pages' `Pages`."""

    def __init__(self, pages: Pages, store: MailStore) -> None:
        self.pages = pages
        self.store = store
        self.rows = RowCache(ROW_CACHE_BYTES, SUMMARY_CACHE_BYTES)
        self.listing = Listing(store, self.rows, OrderCache[Hits](ORDERS_KEPT),
                               OrderCache[list[list[tuple[int, int]]]](ORDERS_KEPT))
        pages.templates.filters["short_when"] = _when
        pages.templates.filters["size"] = _size

    def routes(self) -> list[web.RouteDef]:
        box, uid = "{mailbox:[0-9]+}", "{uid:[0-9]+}"
        return [
            web.get("/mail", self.index),
            web.get(f"/mail/m/{box}", self.message_list),
            web.get(f"/mail/m/{box}/{uid}", self.message),
            web.get(f"/mail/m/{box}/{uid}/body", self.body),
            web.get(f"/mail/m/{box}/{uid}/part/{{part:[0-9.]+}}", self.part),
        ]

    # -- lookups, each among the account's own -----------------------------------------------

    def _missing(self, request: web.Request, account: Account, what: str) -> web.HTTPNotFound:
        logger.warning("reject ip=%s user=%s code=404 reason=%s path=%s", client_ip(request),
                       log.quote(account.address), log.quote(f"no such {what}"),
                       log.quote(request.path[:200]))
        return web.HTTPNotFound(text=f"No such {what}.\n")

    async def own_mailbox(self, request: web.Request, account: Account) -> Mailbox:
        """The URL's mailbox if it is the account's (else 404, as a missing one)."""
        mailbox_id = _number(request.match_info["mailbox"], 1 << 62)
        box = None if mailbox_id is None else await self.store.get_mailbox_by_id(mailbox_id)
        if box is None or box.account_id != account.id:
            raise self._missing(request, account, "mailbox")
        return box

    async def own_message(self, request: web.Request,
                          account: Account) -> tuple[Mailbox, MessageInfo]:
        box = await self.own_mailbox(request, account)
        uid = _number(request.match_info["uid"], 1 << 62)
        found = [] if uid is None else await self.store.messages_by_uid(box.id, [(uid, uid)])
        if not found:
            raise self._missing(request, account, "message")
        return box, found[0]

    async def sidebar(self, account: Account
                      ) -> tuple[list[tuple[Mailbox, str, int]], dict[int, tuple[int, int]]]:
        """(mailbox, label, unseen) of the account's mailboxes, in `mailbox_order`, and each
        one's (messages, unseen): counted from indexes (`MailStore.mailbox_totals`), never by
        reading message rows."""
        boxes = mailbox_order(await self.store.list_mailboxes(account.id))
        totals = await self.store.mailbox_totals([b.id for b in boxes])
        return [(b, SPECIAL_LABELS.get(b.name, b.name), totals.get(b.id, (0, 0))[1])
                for b in boxes], totals

    def _layout(self, request: web.Request, account: Account, box: Mailbox | None,
                sidebar: list[tuple[Mailbox, str, int]]) -> dict[str, object]:
        found = current(request)
        assert found is not None
        done = request.query.get("done", "")
        return {"account": account, "csrf": found.csrf, "mailbox": box, "sidebar": sidebar,
                "error": "", "notice": DONE_NOTICES.get(done, ""),
                "junk_name": self.pages.cfg.junk.mailbox,
                "targets": [(b, label) for b, label, _ in sidebar if box is None or b.id != box.id],
                "title": SPECIAL_LABELS.get(box.name, box.name) if box else "Mail"}

    # -- pages -------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        inbox = await self.store.get_mailbox(account.id, "INBOX")
        if inbox is None:
            raise web.HTTPNotFound(text="No inbox.\n")
        raise web.HTTPSeeOther(f"/mail/m/{inbox.id}")

    def _view(self, request: web.Request) -> View:
        query = request.query
        page = _number(query.get("page", "1"), MAX_PAGE) or 1
        sort = query.get("sort", "arrival")
        return View(page=page, sort=sort if sort in SORTS else "arrival",
                    rev=query.get("rev") == "1", q=query.get("q", "").strip(),
                    threads=query.get("threads") == "1")

    async def message_list(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        box = await self.own_mailbox(request, account)
        view = self._view(request)
        sidebar, totals = await self.sidebar(account)
        total, unseen = totals.get(box.id, (0, 0))
        counts = MailboxCounts(total, unseen, 0, 0)
        values = self._layout(request, account, box, sidebar)
        try:
            page = await self.listing.page(account.id, box, counts.messages, view)
        except BadQuery as exc:
            logger.warning("reject ip=%s user=%s code=400 reason=%s", client_ip(request),
                           log.quote(account.address), log.quote(f"bad search: {exc}"))
            values["error"] = f"Search refused: {exc}."
            return self.pages.render("mail_list.html", 400, view=view, counts=counts,
                                     page=None, sorts=list(SORTS), url=_urls(box, view),
                                     thread_window=THREAD_WINDOW, **values)
        return self.pages.render("mail_list.html", view=view, counts=counts, page=page,
                                 sorts=list(SORTS), url=_urls(box, view),
                                 thread_window=THREAD_WINDOW, **values)

    async def message(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        box, info = await self.own_message(request, account)
        summary = (await self.rows.summaries(self.store, account.id, [info.id])).get(info.id)
        if summary is None:
            raise self._missing(request, account, "message")
        reader = await self._open(request, account, info)
        try:
            shown = await reading.reading(reader, summary.tree, info.internaldate)
        finally:
            reader.close()
        if Flag.SEEN not in info.flags:
            with contextlib.suppress(NotFound):  # expunged meanwhile: nothing to mark
                await self.store.set_flags(account.id, box.id, [(info.uid, info.uid)], "add",
                                           Flag.SEEN)
        sidebar, _totals = await self.sidebar(account)
        base = f"/mail/m/{box.id}/{info.uid}"
        filters = await self.store.filter_report(account.id, info.id)
        return self.pages.render("mail_read.html", message=shown, info=info, base=base,
                                 filters=filters, flagged=Flag.FLAGGED in info.flags,
                                 images=request.query.get("images") == "1",
                                 plain=request.query.get("plain") == "1",
                                 sandbox=FRAME_SANDBOX,
                                 **self._layout(request, account, box, sidebar))

    async def _open(self, request: web.Request, account: Account,
                    info: MessageInfo) -> MessageReader:
        try:
            return await self.store.open_message(account.id, info.id)
        except NotFound:
            raise self._missing(request, account, "message") from None

    async def body(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        _box, info = await self.own_message(request, account)
        summary = (await self.rows.summaries(self.store, account.id, [info.id])).get(info.id)
        if summary is None:
            raise self._missing(request, account, "message")
        images = request.query.get("images") == "1"
        reader = await self._open(request, account, info)
        try:
            root = summary.tree
            part = next((p for _s, p in reading.leaves(root)
                         if reading.content_type(p) == "text/html"
                         and not (p.disposition and p.disposition[0].lower() == "attachment")),
                        None)
            if part is None:
                raise self._missing(request, account, "HTML part")
            data = b"".join([c async for c in reading.decoded(reader, part, reading.MAX_HTML)])
            inline = await reading.inline_images(reader, root)
        finally:
            reader.close()
        html = decode_bytes(data, reading.param(part, "charset"))
        text, dropped = await asyncio.to_thread(clean, html, inline, images)
        notice = ""
        if part.body_end - part.body_start > reading.MAX_HTML:
            notice = "This message is long: only its beginning is shown."
        if dropped:
            logger.info("remote images blocked user=%s message=%d count=%d",
                        log.quote(account.address), info.id, dropped)
        return web.Response(
            text=frame_document(text, notice), content_type="text/html",
            headers={"Content-Security-Policy": frame_csp(images),
                     "X-Frame-Options": "SAMEORIGIN", "Cache-Control": "no-store"})

    async def part(self, request: web.Request) -> web.StreamResponse:
        account = await self.pages.account_of(request)
        _box, info = await self.own_message(request, account)
        summary = (await self.rows.summaries(self.store, account.id, [info.id])).get(info.id)
        section = request.match_info["part"]
        part = None if summary is None else reading.find_section(summary.tree, section)
        if part is None:
            raise self._missing(request, account, "part")
        reader = await self._open(request, account, info)
        try:
            response = web.StreamResponse(headers={
                "Content-Type": reading.download_type(part),
                "Content-Disposition": reading.content_disposition(
                    reading.file_name(part, section)),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, no-store",
            })
            await response.prepare(request)
            if part.type == "message":  # an attached message: as it is, with its header
                async for piece in reader.pieces(part.body_start, part.body_end):
                    await response.write(piece)
            else:
                async for chunk in reading.decoded(reader, part, 0):
                    await response.write(chunk)
            await response.write_eof()
        finally:
            reader.close()
        return response
