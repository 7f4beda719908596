"""The two-factor pages: TOTP enrolment (RFC 6238, `postkeep.auth.totp`), recovery codes,
passkeys (W3C WebAuthn Level 3 §7.1 registration, §7.2 authentication, `postkeep.auth.webauthn`)
and the passwordless login with a passkey.

* TOTP: ``POST /account/totp`` starts an enrolment and shows the secret as text and as the
  server-made QR code (inline SVG: no script, nothing fetched); ``/account/totp/confirm``
  takes the first code, turns TOTP on (IMAP and SMTP then take app passwords only, which the
  page says) and shows the recovery codes once; ``/account/totp/disable`` wants the password
  again; ``/account/recovery-codes`` replaces the codes (shown once).
* Passkeys: ``/static/passkey.js`` (no inline script) asks ``/account/passkeys/options`` or
  ``/login/passkey/options`` for the options (a form post with the CSRF token, answered
  JSON), calls `navigator.credentials.create()` / `get()`, and posts the credential's JSON in
  the form's ``response`` field with the CSRF token: to ``/account/passkeys`` (registration),
  ``/login/second-factor`` (a second factor) or ``/login/passkey`` (passwordless, from the
  login page). ``/account/passkeys/remove`` removes one of the account's own (another id is
  404).
* A refused passkey login is an ``auth failure ip=... mechanism=web-passkey`` line and a `web`
  strike, as a wrong password is (second factors: `postkeep.web.login.LoginFlow`); a wrong
  password at the TOTP turn-off is one too. A wrong first code at enrolment is logged only
  (the user is logged in; nothing is guessed).
"""

from __future__ import annotations

import time

from aiohttp import web

from postkeep import log
from postkeep.auth import totp, webauthn
from postkeep.auth.passwords import AuthBusy
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import WEB_DONE, WEB_SECOND_FACTOR, Account
from postkeep.web.app import client_ip, current, form_of
from postkeep.web.factors import relying_party
from postkeep.web.pages import Pages, attempt_of, user_agent

logger = log.get("web")

MAX_NAME = 64  # characters of a passkey's name
APP_PASSWORDS_ONLY = ("Two-factor authentication is on: your mail clients (IMAP and SMTP) now "
                      "need an app password; your account password no longer opens them.")


def _json(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


class TwoFactorPages:
    """The handlers of the module docstring, on the account pages' `Pages`."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.store = pages.store
        self.rp_name = pages.cfg.server.hostname

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/account/totp", self.totp_begin),
            web.post("/account/totp/confirm", self.totp_confirm),
            web.post("/account/totp/disable", self.totp_disable),
            web.post("/account/recovery-codes", self.recovery_codes),
            web.post("/account/passkeys/options", self.passkey_register_options),
            web.post("/account/passkeys", self.passkey_register),
            web.post("/account/passkeys/remove", self.passkey_remove),
            web.post("/login/passkey/options", self.passkey_login_options),
            web.post("/login/passkey", self.passkey_login),
        ]

    def _rp(self, request: web.Request) -> webauthn.RelyingParty:
        attempt = attempt_of(request)
        return relying_party(attempt.host, attempt.port, self.rp_name)

    # -- TOTP --------------------------------------------------------------------------------

    def _enrol_page(self, request: web.Request, account: Account, enrolment: totp.Enrolment,
                    status: int = 200, error: str = "") -> web.Response:
        found = current(request)
        assert found is not None
        return self.pages.render("totp_enrol.html", status, account=account, csrf=found.csrf,
                                 error=error, secret=enrolment.secret,
                                 qr_svg=enrolment.qr_svg)

    async def totp_begin(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        try:
            enrolment = await totp.begin_enrolment(self.store, account.address,
                                                   self.rp_name, time.time())
        except AlreadyExists:
            return await self.pages.account_page(request, account, 409,
                                                 error="The authenticator app is on already.")
        logger.info("totp enrolment begun ip=%s user=%s", client_ip(request),
                    log.quote(account.address))
        return self._enrol_page(request, account, enrolment)

    async def totp_confirm(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        ip = client_ip(request)
        verdict, codes = await totp.confirm_enrolment(
            self.store, account.address, form_of(request).get("code", ""), time.time())
        if not verdict.ok:
            logger.warning("totp enrolment refused ip=%s user=%s reason=%s", ip,
                           log.quote(account.address), log.quote(verdict.reason))
            state = await self.store.get_totp(account.address)
            if state is None or state.confirmed:
                raise web.HTTPSeeOther("/account")
            uri = totp.provisioning_uri(state.secret, account.address, self.rp_name)
            return self._enrol_page(request, account,
                                    totp.Enrolment(state.secret, uri, totp.qr_svg(uri)), 400,
                                    "That code did not work: type the one the app shows now.")
        logger.info("totp on ip=%s user=%s", ip, log.quote(account.address))
        await self.pages.flow.record(account.id, ip, "web totp enrolment", "ok", "")
        return await self.pages.account_page(request, account, recovery_codes=codes,
                                             notice_text=APP_PASSWORDS_ONLY)

    async def totp_disable(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        ip = client_ip(request)
        try:
            right = await self.pages.verifier.verify(account.password_hash,
                                                     form_of(request).get("password", ""))
        except AuthBusy:
            return await self.pages.account_page(request, account, 503,
                                                 error="The server is busy: try again.")
        if not right:
            await self.pages.flow.failed(ip, account.address, "web-password",
                                         "wrong password at turning TOTP off")
            return await self.pages.account_page(request, account, 400,
                                                 error="The password is wrong.")
        if not await totp.disable(self.store, account.address):
            raise web.HTTPSeeOther("/account")
        logger.info("totp off ip=%s user=%s", ip, log.quote(account.address))
        await self.pages.flow.record(account.id, ip, "web totp off", "ok", "")
        raise web.HTTPSeeOther("/account?done=totp-off")

    async def recovery_codes(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        try:
            codes = await totp.regenerate_recovery_codes(self.store, account.address,
                                                         time.time())
        except StoreError:
            return await self.pages.account_page(
                request, account, 409, error="Recovery codes come with two-factor "
                "authentication: turn on an authenticator app or add a passkey first.")
        logger.info("recovery codes regenerated ip=%s user=%s", client_ip(request),
                    log.quote(account.address))
        return await self.pages.account_page(request, account, recovery_codes=codes)

    # -- passkeys on the account page --------------------------------------------------------

    async def passkey_register_options(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        try:
            options = await webauthn.registration_options(
                self.store, self._rp(request), account.address, attempt_of(request).session,
                time.time())
        except webauthn.WebAuthnRefused as refused:
            logger.warning("passkey refused ip=%s user=%s reason=%s", client_ip(request),
                           log.quote(account.address), log.quote(refused.reason))
            raise web.HTTPNotFound() from None
        return _json(options)

    async def passkey_register(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        form = form_of(request)
        ip = client_ip(request)
        name = " ".join(form.get("name", "").split())[:MAX_NAME] or "passkey"
        try:
            registered = await webauthn.verify_registration(
                self.store, self._rp(request), account.address, attempt_of(request).session,
                form.get("response", ""), name, time.time())
        except webauthn.WebAuthnRefused as refused:
            logger.warning("passkey refused ip=%s user=%s reason=%s", ip,
                           log.quote(account.address), log.quote(refused.reason))
            return await self.pages.account_page(request, account, 400,
                                                 error="The passkey was not added.")
        logger.info("passkey added ip=%s user=%s name=%s", ip, log.quote(account.address),
                    log.quote(name))
        await self.pages.flow.record(account.id, ip, "web passkey added", "ok", name)
        return await self.pages.account_page(request, account,
                                             recovery_codes=registered.recovery_codes or None,
                                             notice_text=APP_PASSWORDS_ONLY)

    async def passkey_remove(self, request: web.Request) -> web.Response:
        account = await self.pages.account_of(request)
        wanted = form_of(request).get("id", "")
        own = {str(c.id): c for c in await self.store.list_webauthn_credentials(account.address)}
        found = own.get(wanted)
        try:
            if found is None:  # not one of this account's: as if it did not exist
                raise NotFound(wanted)
            await self.store.remove_webauthn_credential(account.address, found.id)
        except NotFound:
            return await self.pages.account_page(request, account, 404,
                                                 error="No such passkey.")
        logger.info("passkey removed ip=%s user=%s name=%s", client_ip(request),
                    log.quote(account.address), log.quote(found.name))
        raise web.HTTPSeeOther("/account?done=passkey-removed")

    # -- passkeys at the login ---------------------------------------------------------------

    async def passkey_login_options(self, request: web.Request) -> web.Response:
        """The options of a second factor (a session at that stage: its account's passkeys)
        or of a passwordless login (no session: any discoverable passkey)."""
        found = current(request)
        address = None
        if found is not None and found.session.stage == WEB_SECOND_FACTOR:
            account, _csrf = await self.pages.pending(request)
            address = account.address
        try:
            options = await webauthn.authentication_options(
                self.store, self._rp(request), attempt_of(request).session, time.time(),
                address)
        except webauthn.WebAuthnRefused:
            raise web.HTTPNotFound() from None
        return _json(options)

    async def passkey_login(self, request: web.Request) -> web.Response:
        """A passwordless login: the passkey names (and proves) the account."""
        attempt = attempt_of(request)
        try:
            proved = await webauthn.verify_authentication(
                self.store, self._rp(request), attempt.session,
                form_of(request).get("response", ""), time.time())
            if not proved.passwordless:  # a second factor's challenge: not a login of its own
                raise webauthn.WebAuthnRefused("a second factor's challenge")
        except webauthn.WebAuthnRefused as refused:
            await self.pages.flow.failed(attempt.ip, "-", "web-passkey", refused.reason)
            return self.pages.login_page(401, "That passkey did not work.")
        account = proved.account
        logger.info("auth ok ip=%s user=%s mechanism=web-passkey stage=%s", attempt.ip,
                    log.quote(account.address), WEB_DONE)
        guard = self.pages.flow.guard
        if guard is not None:
            await guard.auth_ok(attempt.ip, account.address)
        await self.pages.flow.record(account.id, attempt.ip, "web passkey", "ok",
                                     user_agent(request))
        raise await self.pages.start_session(request, account, WEB_DONE)

