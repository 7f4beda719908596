"""What a worker process starts for `[web]`: the HTTPS listener with the account pages (and
their second factors: TOTP and passkeys, `postkeep.web.factors`, `postkeep.web.twofactor`),
the webmail (`postkeep.web.mail`), the public client-autoconfiguration routes
(`postkeep.web.autoconfig`), and the HTTP listener that redirects to it (`postkeep.web.app`),
on the sockets the main process bound."""

from __future__ import annotations

import socket
import ssl
from typing import cast

from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import Guard
from postkeep.config import Config
from postkeep.net.firewall import Rates
from postkeep.net.slots import IpSlots
from postkeep.store.api import MailStore, Store
from postkeep.web.app import make_app, make_redirect_app
from postkeep.web.autoconfig import Autoconfig
from postkeep.web.factors import PasskeyFactor, TotpFactor
from postkeep.web.login import LoginFlow
from postkeep.web.mail.pages import MailPages
from postkeep.web.pages import Pages
from postkeep.web.server import WebListener
from postkeep.web.twofactor import TwoFactorPages


class WebService:
    """The web listeners of one worker (HTTPS first, then HTTP; either may be absent)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        tls_context: ssl.SSLContext | None,
        verifier: PasswordVerifier,
        *,
        slots: IpSlots,
        https: list[socket.socket],
        http: list[socket.socket],
        rates: Rates | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.listeners: list[WebListener] = []
        public = Autoconfig(cfg, store).public()  # client autoconfiguration, MTA-STS
        if cfg.web.listen:
            factors = (TotpFactor(store), PasskeyFactor(store, cfg.server.hostname))
            flow = LoginFlow(store, verifier, guard, factors, cfg.web.login_history_days)
            pages = Pages(cfg, store, verifier, flow)
            # the store given is the server's SqlStore, a `MailStore` (the webmail's reads)
            mail = MailPages(pages, cast(MailStore, store))
            routes = pages.routes() + TwoFactorPages(pages).routes() + mail.routes()
            self.listeners.append(WebListener(
                cfg, make_app(cfg, store, routes, public),
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
        for listener in self.listeners:
            await listener.stop()
