"""What a worker process starts for `[web]`: the HTTPS listener with the account pages (and
their second factors: TOTP and passkeys, `postkeep.web.factors`, `postkeep.web.twofactor`),
the webmail's compose pages (`postkeep.web.mail.compose`, sending through `submit`: the
submission pipeline in process), its actions and event stream (`postkeep.web.mail`), the
public client-autoconfiguration routes (`postkeep.web.autoconfig`), and the HTTP listener
that redirects to it (`postkeep.web.app`), on the sockets the main process bound."""

from __future__ import annotations

import socket
import ssl

from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import Guard
from postkeep.config import Config
from postkeep.net.firewall import Rates
from postkeep.net.slots import ConnectionSlots
from postkeep.store.api import MailStore
from postkeep.web.app import make_app, make_redirect_app
from postkeep.web.autoconfig import Autoconfig
from postkeep.web.factors import PasskeyFactor, TotpFactor
from postkeep.web.login import LoginFlow
from postkeep.web.mail.actions import Filed, MailActions
from postkeep.web.mail.compose import UPLOAD_PATHS, ComposePages, Submit
from postkeep.web.mail.pages import MailPages
from postkeep.web.mail.push import EventStreams
from postkeep.web.pages import Pages
from postkeep.web.server import WebListener
from postkeep.web.twofactor import TwoFactorPages


class WebService:
    """The web listeners of one worker (HTTPS first, then HTTP; either may be absent).
    `trainer`: the junk filter's, told of the webmail's moves (None: no junk filter)."""

    def __init__(
        self,
        cfg: Config,
        store: MailStore,
        tls_context: ssl.SSLContext | None,
        verifier: PasswordVerifier,
        *,
        submit: Submit,
        slots: ConnectionSlots,
        https: list[socket.socket],
        http: list[socket.socket],
        rates: Rates | None = None,
        guard: Guard | None = None,
        trainer: Filed | None = None,
    ) -> None:
        self.listeners: list[WebListener] = []
        self.trainer = trainer
        self.streams: EventStreams | None = None
        public = Autoconfig(cfg, store).public()  # client autoconfiguration, MTA-STS
        if cfg.web.listen:
            factors = (TotpFactor(store), PasskeyFactor(store, cfg.server.hostname))
            flow = LoginFlow(store, verifier, guard, factors, cfg.web.login_history_days)
            pages = Pages(cfg, store, verifier, flow)
            self.streams = EventStreams(cfg, store, slots)
            routes = (pages.routes() + TwoFactorPages(pages).routes()
                      + MailPages(pages, store).routes()
                      + ComposePages(pages, store, submit).routes()
                      + MailActions(pages, store, cfg.junk.mailbox, trainer).routes()
                      + self.streams.routes())
            self.listeners.append(WebListener(
                cfg, make_app(cfg, store, routes, public, uploads=UPLOAD_PATHS),
                [(a, True) for a in cfg.web.listen],
                tls_context, slots=slots, sockets=https, rates=rates, guard=guard,
                role="web"))
        if cfg.web.http_listen:
            self.listeners.append(WebListener(
                cfg, make_redirect_app(cfg, public), [(a, False) for a in cfg.web.http_listen],
                None,
                slots=slots, sockets=http, rates=rates, guard=guard, role="http"))

    async def start(self) -> None:
        for listener in self.listeners:
            await listener.start()

    async def stop(self) -> None:
        if self.streams is not None:  # ended first: a TLS close waits on the client
            self.streams.stop()
        for listener in self.listeners:
            await listener.stop()
        if self.trainer is not None:  # learning queued before the store closes
            await self.trainer.drain()
