"""New mail pushed to open webmail pages: ``GET /mail/events``, Server-Sent Events (HTML Living
Standard §9.2, ``text/event-stream``) fed by the store's event bus (`postkeep.store.events`;
the events of the other worker processes are relayed into each process's bus).

The stream of one logged-in session, as `mail.js`'s ``EventSource`` reads it:

- first ``retry:`` (how long the browser waits to reconnect) and an ``event: counts`` with
  every mailbox's unread and total counts (``{"mailboxes": [{"mailbox": id, "unread": n,
  "total": n}, ...]}``), again after the bus had to drop events for this stream (its queue
  is bounded, `QUEUE_SIZE`: the bus never waits for a stream);
- then for each change an ``event: mailbox`` with ``{"mailbox": id, "kind": "exists" |
  "expunge" | "flags", "uids": [...], "unread": n, "total": n}`` (the events queued at once
  are merged per mailbox and kind; the counts are read after them), or ``{"mailbox": 0,
  "kind": "mailboxes"}`` when a mailbox was made, renamed or deleted;
- a comment line every `web.event_heartbeat` seconds of quiet (proxies keep the connection);
  the session is checked as often, and before each event is sent: a session logged out,
  revoked or expired (idle or past its lifetime; an open stream is no activity) ends the
  stream with an ``event: end``, and the reconnect finds no session (401, which stops an
  EventSource for good).

One account holds at most `web.max_event_streams` streams at once, across the worker
processes (the main process counts them, service ``web`` account slots): one more is
answered 429. The request's deadline ended when the middleware had read it
(`postkeep.web.server`); a client that stops reading is cut off past `web.request_timeout`
by the listener, and a client gone ends its stream when the connection closes; the server's
stop ends every stream first (`EventStreams.stop`), and the browsers reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from postkeep import log
from postkeep.config import Config
from postkeep.errors import StoreError
from postkeep.net.slots import ConnectionSlots
from postkeep.store.api import WEB_DONE, MailboxEvent, MailStore
from postkeep.store.events import Subscription
from postkeep.web.app import Current, client_ip, current
from postkeep.web.mail.actions import refusal
from postkeep.web.security import token_hash
from postkeep.web.server import connection_of

logger = log.get("web")

QUEUE_SIZE = 256  # events waiting for one stream at most (then: dropped, counts sent again)
RETRY_MS = 5000
MAX_UIDS_SENT = 200  # UIDs of one merged event at most
HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
           "X-Accel-Buffering": "no"}  # a reverse proxy (nginx) must not hold events back


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One event of the stream (its data on one line: JSON has no raw newline)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def merged(events: list[MailboxEvent]) -> list[tuple[int, str, list[int]]]:
    """(mailbox id, kind, UIDs) per mailbox and kind, in the order they first came."""
    found: dict[tuple[int, str], list[int]] = {}
    for event in events:
        uids = found.setdefault((event.mailbox_id, event.kind), [])
        if event.uid is not None and len(uids) < MAX_UIDS_SENT:
            uids.append(event.uid)
    return [(box, kind, uids) for (box, kind), uids in found.items()]


class StreamEnded(Exception):
    """The stream is over: the session ended, or the client is gone."""


class EventStreams:
    """The handler of ``GET /mail/events`` (see the module docstring)."""

    def __init__(self, cfg: Config, store: MailStore, slots: ConnectionSlots) -> None:
        self.store = store
        self.slots = slots
        self.heartbeat = cfg.web.event_heartbeat
        self.idle = cfg.web.session_idle
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """The server stops: every stream ends now (before the listeners close their
        connections, which a TLS close would hold until the client's close_notify); the
        browsers reconnect to another process or once the server is back."""
        self.stopping.set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/mail/events", self.events, allow_head=False)]

    async def events(self, request: web.Request) -> web.StreamResponse:
        found = current(request)
        if found is None or found.session.stage != WEB_DONE:
            return refusal(request, 401, "not logged in")
        account = await self.store.get_account_by_id(found.session.account_id)
        if account is None or account.disabled:
            return refusal(request, 401, "not logged in")
        conn = connection_of(request)
        if conn is None:
            return refusal(request, 400, "connection gone")
        if self.stopping.is_set():
            return refusal(request, 503, "server stopping")
        if not await self.slots.acquire_account(account.id):
            return refusal(request, 429, "too many event streams")
        ip = client_ip(request)
        try:
            with self.store.subscribe(account.id, QUEUE_SIZE) as sub:
                response = web.StreamResponse(headers=HEADERS)
                await response.prepare(request)
                logger.info("event stream open ip=%s user=%s", ip, log.quote(account.address))
                ends = {asyncio.ensure_future(conn.wait_closed()),
                        asyncio.ensure_future(self.stopping.wait())}
                try:
                    why = await self.run(response, found, sub, ends)
                finally:
                    for end in ends:
                        end.cancel()
                logger.info("event stream closed ip=%s user=%s reason=%s", ip,
                            log.quote(account.address), log.quote(why))
        finally:
            self.slots.release_account(account.id)
        return response

    async def run(self, response: web.StreamResponse, found: Current, sub: Subscription,
                  ends: set[asyncio.Future[Any]]) -> str:
        """Serve the stream until it ends; why it did."""
        account_id = found.session.account_id
        getter: asyncio.Future[MailboxEvent] | None = None
        try:
            await self.write(response, f"retry: {RETRY_MS}\n\n".encode())
            await self.write(response, frame("counts", await self.counts(account_id)))
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(sub.get())
                wait = min(self.heartbeat, max(0.0, found.session.expires - time.time()))
                done, _ = await asyncio.wait({getter, *ends}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if self.stopping.is_set():
                    return "server stopping"
                if done & ends:
                    return "client gone"
                if not await self.session_alive(found):
                    await self.write(response, frame("end", {"reason": "session ended"}))
                    return "session ended"
                if getter not in done:
                    await self.write(response, b": heartbeat\n\n")
                    continue
                events = [getter.result(), *sub.drain()]
                getter = None
                if sub.reset_overflow():
                    await self.write(response, frame("counts", await self.counts(account_id)))
                    continue
                for box, kind, uids in merged(events):
                    data = await self.change(box, kind, uids)
                    if data is not None:
                        await self.write(response, frame("mailbox", data))
        except StreamEnded:
            return "client gone"
        finally:
            if getter is not None:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError, EOFError):
                    await getter

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        try:
            await response.write(data)
        except (ConnectionError, RuntimeError):  # reset, or the transport closed under it
            raise StreamEnded() from None

    async def session_alive(self, found: Current) -> bool:
        now = time.time()
        session = await self.store.get_web_session(token_hash(found.token), now,
                                                   now - self.idle)
        return session is not None and session.stage == WEB_DONE

    async def counts(self, account_id: int) -> dict[str, Any]:
        rows = []
        for box in await self.store.list_mailboxes(account_id):
            with contextlib.suppress(StoreError):  # deleted meanwhile
                counts = await self.store.mailbox_counts(box.id)
                rows.append({"mailbox": box.id, "unread": counts.unseen,
                             "total": counts.messages})
        return {"mailboxes": rows}

    async def change(self, box: int, kind: str, uids: list[int]) -> dict[str, Any] | None:
        """The data of one merged change; None if its mailbox is gone."""
        if kind == "mailboxes":
            return {"mailbox": 0, "kind": kind}
        try:
            counts = await self.store.mailbox_counts(box)
        except StoreError:
            return None
        return {"mailbox": box, "kind": kind, "uids": uids, "unread": counts.unseen,
                "total": counts.messages}
