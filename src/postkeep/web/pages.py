"""The account security pages: login and logout, the second-factor step, and the account page
(password change under the password policy, app passwords, web sessions, login history).

Every page and action finds the account through the request's session only (`account_of`):
no id in a URL or form names an account, and the ids a form names (an app password, a
session) are looked up among the logged-in account's own, so one user's session can never
revoke another's app password or session (answered 404, as an id that does not exist). A
session still at the second-factor stage reaches only that step. Pages are rendered by
Jinja2 with autoescaping on; the scripts and the style sheet are files under `/static/`,
served from memory (the CSP allows nothing else). A new app password is shown once, in the
answer to the form that made it (``Cache-Control: no-store``); the store keeps its hash.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

import jinja2
from aiohttp import web

from postkeep import log
from postkeep.auth.passwords import (
    AuthBusy,
    PasswordVerifier,
    generate_app_password,
    hash_app_password,
    hash_password,
)
from postkeep.config import Config
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.policy.passwords import PasswordRejected, check_password_policy
from postkeep.sasl.secrets import derive_secrets
from postkeep.store.api import (
    APP_PASSWORD_SCOPES,
    MAX_APP_PASSWORDS,
    WEB_DONE,
    WEB_SECOND_FACTOR,
    Account,
    Store,
)
from postkeep.web.app import client_ip, current, form_of
from postkeep.web.factors import ceremony_key
from postkeep.web.login import Attempt, LoginFlow
from postkeep.web.security import (
    COOKIE_FLAGS,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    new_token,
    split_host,
    token_hash,
)

logger = log.get("web")

HISTORY_SHOWN = 50
MAX_NAME = 64  # characters of an app password's name
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
NOTICES = {  # what a redirect after an action may show (a key, never text from the request)
    "password": "Your password was changed; your other web sessions were logged out.",
    "revoked": "The app password was revoked.",
    "session": "The session was logged out.",
    "totp-off": "The authenticator app was turned off.",
    "passkey-removed": "The passkey was removed.",
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The files of `postkeep/web/static/`, read once: name -> (content, type)."""
    files: dict[str, tuple[bytes, str]] = {}
    for item in resources.files("postkeep.web").joinpath("static").iterdir():
        kind = STATIC_TYPES.get(PurePosixPath(item.name).suffix)
        if kind is not None and item.is_file():
            files[item.name] = (item.read_bytes(), kind)
    return files


def attempt_of(request: web.Request) -> Attempt:
    """The client, the ceremony key and the host and port the browser reached (the Host
    header, which the middleware checked against the configured names)."""
    found = current(request)
    parts = split_host(request.headers.get("Host", "")) or ("", None)
    return Attempt(client_ip(request),
                   ceremony_key(found.token if found else None,
                                request.cookies.get(LOGIN_CSRF_COOKIE, "")),
                   parts[0], parts[1] or 443)


def user_agent(request: web.Request) -> str:
    return request.headers.get("User-Agent", "")[:255]


def _when(value: float | None) -> str:
    if value is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(value))


class Pages:
    """The handlers, and what they share (see the module docstring)."""

    def __init__(self, cfg: Config, store: Store, verifier: PasswordVerifier,
                 flow: LoginFlow) -> None:
        self.cfg = cfg
        self.store = store
        self.verifier = verifier
        self.flow = flow
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("postkeep.web", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, enable_async=False)
        self.templates.filters["when"] = _when
        self.static = _static_files()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/login", self.login_form),
            web.post("/login", self.login),
            web.get("/login/second-factor", self.second_factor_form),
            web.post("/login/second-factor", self.second_factor),
            web.post("/logout", self.logout),
            web.get("/account", self.account),
            web.post("/account/password", self.change_password),
            web.post("/account/app-passwords", self.add_app_password),
            web.post("/account/app-passwords/revoke", self.revoke_app_password),
            web.post("/account/sessions/revoke", self.revoke_session),
            web.get("/static/{name}", self.static_file),
        ]

    # -- rendering ---------------------------------------------------------------------------

    def render(self, name: str, status: int = 200, **values: Any) -> web.Response:
        text = self.templates.get_template(name).render(**values)
        return web.Response(status=status, text=text, content_type="text/html")

    async def static_file(self, request: web.Request) -> web.Response:
        found = self.static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    # -- who is logged in --------------------------------------------------------------------

    async def account_of(self, request: web.Request) -> Account:
        """The logged-in account (login done), or a redirect to the login."""
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/login")
        if found.session.stage != WEB_DONE:
            raise web.HTTPSeeOther("/login/second-factor")
        account = await self.store.get_account_by_id(found.session.account_id)
        if account is None or account.disabled:
            await self.store.remove_web_sessions(found.session.account_id)
            raise web.HTTPSeeOther("/login")
        return account

    # -- login -------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/account" if current(request) else "/login")

    def login_page(self, status: int = 200, error: str = "") -> web.Response:
        token = new_token()
        response = self.render("login.html", status, csrf=token, error=error)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, **COOKIE_FLAGS)  # type: ignore[arg-type]
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        found = current(request)
        if found is not None and found.session.stage == WEB_DONE:
            raise web.HTTPSeeOther("/account")
        return self.login_page()

    async def login(self, request: web.Request) -> web.Response:
        form = form_of(request)
        ip, agent = client_ip(request), request.headers.get("User-Agent", "")[:255]
        try:
            step = await self.flow.password(form.get("address", ""), form.get("password", ""),
                                            ip, agent)
        except AuthBusy:
            return self.login_page(503, "The server is busy: try again in a moment.")
        if step.account is None:
            return self.login_page(401, "Wrong address or password.")
        raise await self.start_session(request, step.account, step.stage)

    async def start_session(self, request: web.Request, account: Account,
                            stage: str) -> web.HTTPSeeOther:
        """A new session at `stage` (replacing the browser's), as the redirect that sets it."""
        old = current(request)
        if old is not None:  # a login replaces the session the browser had
            await self.store.remove_web_session(old.session.account_id, old.session.id)
        token = new_token()
        now = time.time()
        web_cfg = self.cfg.web
        await self.store.add_web_session(token_hash(token), account.id, stage, now,
                                         now + web_cfg.session_lifetime, client_ip(request),
                                         user_agent(request), web_cfg.max_sessions_per_account)
        target = "/account" if stage == WEB_DONE else "/login/second-factor"
        response = web.HTTPSeeOther(target)
        response.set_cookie(SESSION_COOKIE, token, **COOKIE_FLAGS)  # type: ignore[arg-type]
        response.del_cookie(LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True,
                            samesite="Strict")
        return response

    async def pending(self, request: web.Request) -> tuple[Account, str]:
        """The account and CSRF token of a session at the second-factor stage."""
        found = current(request)
        if found is None:
            raise web.HTTPSeeOther("/login")
        if found.session.stage != WEB_SECOND_FACTOR:
            raise web.HTTPSeeOther("/account")
        account = await self.store.get_account_by_id(found.session.account_id)
        if account is None or account.disabled:
            raise web.HTTPSeeOther("/login")
        return account, found.csrf

    async def second_factor_form(self, request: web.Request) -> web.Response:
        account, csrf = await self.pending(request)
        factors = await self.flow.enrolled_factors(account)
        return self.render("second_factor.html", csrf=csrf, error="",
                           forms=[(f.name, f.form(account)) for f in factors])

    async def second_factor(self, request: web.Request) -> web.Response:
        account, csrf = await self.pending(request)
        found = current(request)
        assert found is not None
        form = form_of(request)
        if not await self.flow.second_factor(account, form.get("factor", ""), form,
                                             attempt_of(request), user_agent(request)):
            factors = await self.flow.enrolled_factors(account)
            return self.render("second_factor.html", 401, csrf=csrf,
                               error="That did not work: try again.",
                               forms=[(f.name, f.form(account)) for f in factors])
        token = new_token()  # a new stage, a new token
        await self.store.advance_web_session(found.session.id, token_hash(token), WEB_DONE,
                                             time.time())
        response = web.HTTPSeeOther("/account")
        response.set_cookie(SESSION_COOKIE, token, **COOKIE_FLAGS)  # type: ignore[arg-type]
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        found = current(request)
        if found is not None:
            await self.store.remove_web_session(found.session.account_id, found.session.id)
            logger.info("logout ip=%s session=%d", client_ip(request), found.session.id)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                            samesite="Strict")
        raise response

    # -- the account page --------------------------------------------------------------------

    async def account_page(self, request: web.Request, account: Account, status: int = 200,
                            **values: Any) -> web.Response:
        found = current(request)
        assert found is not None
        now = time.time()
        values.setdefault("error", "")
        values.setdefault("new_password", None)
        values.setdefault("recovery_codes", None)
        notice = values.pop("notice_text", "") or NOTICES.get(request.query.get("done", ""), "")
        return self.render(
            "account.html", status, account=account, csrf=found.csrf, notice=notice,
            this_session=found.session.id, scopes=APP_PASSWORD_SCOPES,
            app_passwords=await self.store.list_app_passwords(account.address),
            sessions=await self.store.list_web_sessions(account.id, now),
            logins=await self.store.list_logins(account.id, HISTORY_SHOWN),
            two_factor=await self.store.two_factor_status(account.address),
            passkeys=await self.store.list_webauthn_credentials(account.address), **values)

    async def account(self, request: web.Request) -> web.Response:
        return await self.account_page(request, await self.account_of(request))

    async def change_password(self, request: web.Request) -> web.Response:
        account = await self.account_of(request)
        form = form_of(request)
        old, new = form.get("current", ""), form.get("new", "")
        try:
            right = await self.verifier.verify(account.password_hash, old)
        except AuthBusy:
            return await self.account_page(request, account, 503,
                                            error="The server is busy: try again.")
        ip = client_ip(request)
        if not right:
            logger.warning("auth failure ip=%s user=%s mechanism=web-password reason=%s", ip,
                           log.quote(account.address),
                           log.quote("wrong current password at a password change"))
            if self.flow.guard is not None:
                await self.flow.guard.auth_failed(ip, account.address, "web")
            return await self.account_page(request, account, 400,
                                            error="The current password is wrong.")
        if new != form.get("confirm", ""):
            return await self.account_page(request, account, 400,
                                            error="The two new passwords differ.")
        try:  # zxcvbn and argon2: CPU-bound, off the event loop
            await asyncio.to_thread(check_password_policy, new, [account.address])
        except PasswordRejected as e:
            return await self.account_page(request, account, 400, error=f"Refused: {e}.")
        password_hash, secrets = await asyncio.to_thread(
            lambda: (hash_password(new), derive_secrets(account.address, new)))
        await self.store.set_password(account.address, password_hash, secrets)
        found = current(request)
        assert found is not None
        ended = await self.store.remove_web_sessions(account.id, keep_id=found.session.id)
        logger.info("password changed ip=%s user=%s sessions_ended=%d", ip,
                    log.quote(account.address), ended)
        await self.flow.record(account.id, ip, "web password change", "ok", "")
        raise web.HTTPSeeOther("/account?done=password")

    async def add_app_password(self, request: web.Request) -> web.Response:
        account = await self.account_of(request)
        form = form_of(request)
        name = " ".join(form.get("name", "").split())[:MAX_NAME]
        scopes = [s for s in APP_PASSWORD_SCOPES if form.get(f"scope_{s}") == "on"]
        if not name or not scopes:
            return await self.account_page(
                request, account, 400, error="An app password needs a name and a protocol.")
        active = await self.store.list_app_passwords(account.address)
        if len(active) >= MAX_APP_PASSWORDS:
            return await self.account_page(
                request, account, 400,
                error=f"At most {MAX_APP_PASSWORDS} app passwords: revoke one first.")
        password = generate_app_password()
        password_hash = await asyncio.to_thread(hash_app_password, password)
        try:
            await self.store.add_app_password(account.address, name, password_hash, scopes)
        except AlreadyExists:
            return await self.account_page(
                request, account, 400, error="An app password of that name exists already.")
        logger.info("app password added ip=%s user=%s name=%s scopes=%s", client_ip(request),
                    log.quote(account.address), log.quote(name), ",".join(scopes))
        return await self.account_page(request, account, new_password=(name, password))

    async def revoke_app_password(self, request: web.Request) -> web.Response:
        account = await self.account_of(request)
        wanted = form_of(request).get("id", "")
        own = {str(p.id): p for p in await self.store.list_app_passwords(account.address)}
        found = own.get(wanted)
        if found is None:  # not one of this account's: as if it did not exist
            return await self.account_page(request, account, 404,
                                            error="No such app password.")
        try:
            await self.store.revoke_app_password(account.address, found.name)
        except (NotFound, StoreError):
            return await self.account_page(request, account, 404,
                                            error="No such app password.")
        logger.info("app password revoked ip=%s user=%s name=%s", client_ip(request),
                    log.quote(account.address), log.quote(found.name))
        raise web.HTTPSeeOther("/account?done=revoked")

    async def revoke_session(self, request: web.Request) -> web.Response:
        account = await self.account_of(request)
        wanted = form_of(request).get("id", "")
        if not wanted.isdigit() or len(wanted) > 18 or not await self.store.remove_web_session(
                account.id, int(wanted)):
            return await self.account_page(request, account, 404, error="No such session.")
        logger.info("session revoked ip=%s user=%s session=%s", client_ip(request),
                    log.quote(account.address), wanted)
        raise web.HTTPSeeOther("/account?done=session")
