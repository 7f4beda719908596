"""The second factors of the web login (`postkeep.web.login.SecondFactor`): a TOTP code or a
recovery code (RFC 6238, `postkeep.auth.totp`), and a passkey assertion (W3C WebAuthn Level 3
§7.2, `postkeep.auth.webauthn`), each checked by its core and telling the login why it refused.

A WebAuthn ceremony is bound to the browser that began it (`ceremony_key`): to the session's
token (hashed) once there is a session, and before any (the passwordless login) to the login
form's double-submit cookie. The relying party is the host the browser reached
(`relying_party`: one of `Config.web_hostnames`, the middleware checked it) and its port.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from postkeep.auth import totp, webauthn
from postkeep.errors import NotFound
from postkeep.store.api import Account, Store
from postkeep.web.login import Attempt, Outcome
from postkeep.web.security import token_hash


def ceremony_key(session_token: str | None, login_cookie: str) -> str:
    """What binds a WebAuthn challenge to this browser (see the module docstring)."""
    if session_token:
        return "session:" + token_hash(session_token)
    return "login:" + token_hash(login_cookie)


def relying_party(host: str, port: int, name: str) -> webauthn.RelyingParty:
    return webauthn.RelyingParty.for_host(host, port, name)


class TotpFactor:
    """A code of the authenticator app or a recovery code, in one field (``code``)."""

    name = "totp"

    def __init__(self, store: Store) -> None:
        self.store = store

    async def enrolled(self, account: Account) -> bool:
        try:
            return (await self.store.two_factor_status(account.address)).totp == "on"
        except NotFound:
            return False

    def form(self, account: Account) -> str:
        return "factor_totp.html"

    async def verify(self, account: Account, form: Mapping[str, str],
                     attempt: Attempt) -> Outcome:
        verdict = await totp.verify_second_factor(self.store, account.address,
                                                  form.get("code", ""), time.time())
        return Outcome(verdict.ok, verdict.reason)


class PasskeyFactor:
    """An assertion of one of the account's passkeys (``response``: the JSON `passkey.js`
    posts, answering the options of ``/login/passkey/options``)."""

    name = "webauthn"

    def __init__(self, store: Store, rp_name: str) -> None:
        self.store = store
        self.rp_name = rp_name

    async def enrolled(self, account: Account) -> bool:
        return bool(await self.store.list_webauthn_credentials(account.address))

    def form(self, account: Account) -> str:
        return "factor_webauthn.html"

    async def verify(self, account: Account, form: Mapping[str, str],
                     attempt: Attempt) -> Outcome:
        rp = relying_party(attempt.host, attempt.port, self.rp_name)
        try:
            proved = await webauthn.verify_authentication(
                self.store, rp, attempt.session, form.get("response", ""), time.time())
        except webauthn.WebAuthnRefused as refused:
            return Outcome(False, refused.reason)
        if proved.account.id != account.id:
            return Outcome(False, "passkey of another account")
        return Outcome(True)
