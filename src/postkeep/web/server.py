"""The web listeners in a worker process: HTTPS (the account pages, `postkeep.web.pages`) and
plain HTTP, which only redirects to HTTPS (RFC 9110 §15.4.9, 308 Permanent Redirect).

aiohttp's HTTP/1.1 server runs on the worker's own event loop, on the sockets the main process
bound, behind `postkeep.net.listener.Listeners` like every other listener: a connection meets
the bans, the firewall's lists and rates, the PROXY header (for proxied listeners) and the
per-IP connection slots (service ``web``) before any octet of it is read, and on the HTTPS
listener the TLS handshake (the context of `postkeep.net.tls`, TLS 1.2+, AEAD, forward
secrecy) after its slot, bounded by `tls.handshake_timeout`. Each admitted connection is an
`HttpConnection`, a `SessionProtocol` that hands the transport to one aiohttp
`RequestHandler` (the protocol aiohttp's `web.Server` makes), so aiohttp parses HTTP
(bounded: request line and header fields 8 KiB, 64 header fields, the body at
`web.max_body_size`) and our listener keeps the limits, the slot and the stop.

A request's header and body must arrive within `web.request_timeout` of its first octet
(`HttpConnection.expired` closes the connection past it: a slowloris holds its slot no
longer); an idle keep-alive connection is closed after `web.keepalive_timeout` (aiohttp).
Once the request is in (`request_read`, called by the middleware of `postkeep.web.app`
before any handler runs) its deadline is over, however long the answer takes: a streamed
answer (the webmail's event stream, `postkeep.web.mail.push`) lasts as long as its handler
writes, and octets the client sends meanwhile arm no deadline (`in_request`). What bounds a
response instead is its reader: a client that stops reading (the transport's buffer past its
high-water mark: `pause_writing`) has `web.request_timeout` to read on before the
connection is aborted, so a stalled stream holds neither its slot nor its handler.
Behind a proxy the client is the address the PROXY header named (`peer_of`), never a
forwarded-for header.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from postkeep import log
from postkeep.bans.keeper import Guard
from postkeep.bans.policy import TLS
from postkeep.config import Config
from postkeep.net.firewall import Firewall, LocalRates, Rates
from postkeep.net.listener import Listeners, Peer, SessionProtocol
from postkeep.net.slots import IpSlots

logger = log.get("web")

MAX_LINE = 8190  # octets of the request line and of one header field (aiohttp's default)
MAX_HEADERS = 64

def _http_reply(status: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


BUSY = _http_reply("503 Service Unavailable", "Too many connections")
BANNED = _http_reply("403 Forbidden", "Refused")


class HttpConnection(SessionProtocol):
    """One web connection: the listener's admission, then an aiohttp `RequestHandler`."""

    __slots__ = ("_early", "deadline", "handler", "in_request", "server", "slow_at")

    def __init__(self, listeners: Listeners, peer: Peer | None, server: WebListener) -> None:
        super().__init__(listeners, peer)
        self.server = server
        self.handler: RequestHandler[web.Request] | None = None
        self.deadline: float | None = None  # the loop time the current request must be in by
        self.slow_at: float | None = None
        self.in_request = False  # a handler runs (its body is read or was)
        self._early = bytearray()

    def begin(self) -> None:
        self.handler = self.server.http()
        self.handler.connection_made(self.transport)
        if self._early:
            self.data_received(bytes(self._early))
            self._early.clear()

    def data_received(self, data: bytes) -> None:
        if self.handler is None:  # before the admission: kept (reading is paused meanwhile)
            if len(self._early) + len(data) <= MAX_LINE:
                self._early += data
            return
        if self.deadline is None and not self.in_request:
            self.deadline = asyncio.get_running_loop().time() + self.server.request_timeout
            self.listeners.watch.add(self)
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return False  # close once the replies are written (half-close is no use over TLS)

    def pause_writing(self) -> None:
        """The client stopped reading: it has `request_timeout` to read on."""
        self.slow_at = asyncio.get_running_loop().time() + self.server.request_timeout
        self.listeners.watch.add(self)
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.slow_at = None
        if self.deadline is None:
            self.listeners.watch.discard(self)
        if self.handler is not None:
            self.handler.resume_writing()

    def request_read(self) -> None:
        """The current request is in (header and body): its deadline is met."""
        self.deadline = None
        if self.slow_at is None:
            self.listeners.watch.discard(self)

    def expired(self, now: float) -> None:
        assert self.peer is not None
        self.listeners.watch.discard(self)
        stalled = self.slow_at is not None and self.slow_at < now
        logger.warning("timeout ip=%s reason=%s", self.peer.ip, log.quote(
            "response not read in time" if stalled else "request not received in time"))
        if self.transport is not None:
            self.transport.abort()

    def ended(self, exc: BaseException | None) -> None:
        self.listeners.watch.discard(self)
        if self.handler is not None:
            self.handler.connection_lost(exc)

    def goodbye(self) -> None:
        if self.handler is not None:
            self.handler.close()  # no new request on it; the one in progress is cancelled
        self.close()


def connection_of(request: web.BaseRequest) -> HttpConnection | None:
    """The connection a request came on (None once it is gone)."""
    transport = request.transport
    if transport is None:
        return None
    protocol = transport.get_protocol()
    return protocol if isinstance(protocol, HttpConnection) else None


class WebListener:
    """The HTTPS or the redirecting HTTP listener of one worker: aiohttp's low-level server
    for `app` behind a `Listeners` of role `web` or `http`."""

    def __init__(
        self,
        cfg: Config,
        app: web.Application,
        listen: list[tuple[str, bool]],
        tls_context: ssl.SSLContext | None,
        *,
        slots: IpSlots,
        sockets: list[Any] | None,
        rates: Rates | None,
        guard: Guard | None,
        role: str,
    ) -> None:
        self.app = app
        self.request_timeout = cfg.web.request_timeout
        self.keepalive_timeout = cfg.web.keepalive_timeout
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    keepalive_timeout=cfg.web.keepalive_timeout,
                                    max_line_size=MAX_LINE, max_field_size=MAX_LINE,
                                    max_headers=MAX_HEADERS, lingering_time=2.0)
        self.server: web.Server[web.Request] | None = None
        self.firewall = Firewall(cfg.firewall, "web", rates or LocalRates(cfg.firewall))
        self.listeners = Listeners(
            listen,
            None,
            tls_context,
            protocol=self._connection,
            slots=slots,
            busy=BUSY,
            busy_code="503",
            role=role,
            logger=logger,
            read_size=MAX_LINE,
            sockets=sockets,
            handshake_timeout=cfg.tls.handshake_timeout,
            firewall=self.firewall,
            refused=lambda reason: _http_reply("403 Forbidden", f"Refused ({reason})"),
            proxy_timeout=cfg.firewall.proxy_timeout,
            ban_lookup=guard.refused if guard is not None else None,
            banned=BANNED,
            banned_code="403",
            on_handshake_failed=(lambda ip: guard.strike(ip, TLS)) if guard is not None else None,
        )

    def _connection(self, listeners: Listeners, peer: Peer | None) -> HttpConnection:
        return HttpConnection(listeners, peer, self)

    def http(self) -> RequestHandler[web.Request]:
        assert self.server is not None
        return self.server()

    async def start(self) -> None:
        await self.runner.setup()
        self.server = self.runner.server
        await self.listeners.start()

    async def stop(self) -> None:
        await self.listeners.stop()
        await self.runner.cleanup()
