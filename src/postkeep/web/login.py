"""Web logins as a small state machine, and what each step records.

```
(no session) ──password ok──► second-factor ──a factor verified──► done
      │                             │
      └─password wrong─► (no session; a strike `web`, a history line)
```

`LoginFlow.password` checks an address and password: the account's own password only (app
passwords are for mail clients and never open the web pages, where they could be used to
change the password or make more of them). An unknown or disabled account costs one argon2
verification against a dummy hash, as a wrong password does, so timing does not tell them
apart; the answer to the user is the same for all three. A failure is logged in the line the
mail protocols use, which fail2ban matches (``auth failure ip=... user=... mechanism=
web-password reason=...``), is a strike of kind ``web`` (`postkeep.bans`: the address is
banned past `bans.max_strikes`, on every listener), and is written to the account's login
history when the account exists.

The step after the password is `stage_after_password`: ``second-factor`` when one of the
`SecondFactor`s given to the flow is enrolled for the account, else ``done``. A second factor
(TOTP, WebAuthn: `auth/totp.py`, `auth/webauthn.py`) plugs in as a `SecondFactor`; the pages
(`postkeep.web.pages`) show each enrolled factor's form at ``/login/second-factor`` and call
`LoginFlow.second_factor` with what the user sent. Every move to a further stage gives the
session a new token (no session fixation).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import Guard
from postkeep.bans.policy import WEB
from postkeep.policy.passwords import MAX_PASSWORD_LENGTH
from postkeep.store.api import WEB_DONE, WEB_SECOND_FACTOR, Account, LoginRecord, Store

logger = log.get("web")

PASSWORD_METHOD = "web password"
MAX_ADDRESS = 320


@dataclass(frozen=True, slots=True)
class Attempt:
    """Where a second factor comes from: the client's address, what binds a WebAuthn
    ceremony to this browser (`session`: derived from its session token), and the host name
    and port the browser reached (the WebAuthn origin)."""

    ip: str
    session: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """A second factor's check: `reason` says why not (for the log line only)."""

    ok: bool
    reason: str = ""


class SecondFactor(Protocol):
    """A second factor of web logins (TOTP, a passkey): whether the account has one, its
    form on the second-factor page, and the check of what the user sent."""

    name: str  # "totp", "webauthn": the history's method is "web <name>"

    async def enrolled(self, account: Account) -> bool: ...

    def form(self, account: Account) -> str:
        """The template (under `postkeep/web/templates/`) of its form."""

    async def verify(self, account: Account, form: Mapping[str, str],
                     attempt: Attempt) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class PasswordStep:
    """The outcome of the password step: the account and the stage reached, or None and the
    reason (for the log only)."""

    account: Account | None
    stage: str
    reason: str


class LoginFlow:
    """The steps of a web login (see the module docstring)."""

    def __init__(self, store: Store, verifier: PasswordVerifier, guard: Guard | None,
                 factors: Sequence[SecondFactor] = (), history_days: int = 90) -> None:
        self.store = store
        self.verifier = verifier
        self.guard = guard
        self.factors = tuple(factors)
        self.history_days = history_days

    async def password(self, address: str, password: str, ip: str,
                       user_agent: str) -> PasswordStep:
        """Check an address and password. `postkeep.auth.passwords.AuthBusy` when the verifier
        is saturated (the page says to try again; no strike)."""
        address = address.strip()[:MAX_ADDRESS]
        account, reason, known = await self._check(address, password)
        if account is None:
            if known is not None:
                await self.record(known.id, ip, PASSWORD_METHOD, "failed", reason)
            logger.warning("auth failure ip=%s user=%s mechanism=web-password reason=%s", ip,
                           log.quote(address or "-"), log.quote(reason))
            if self.guard is not None:
                await self.guard.auth_failed(ip, address or "-", WEB)
            return PasswordStep(None, "", reason)
        stage = await self.stage_after_password(account)
        logger.info("auth ok ip=%s user=%s mechanism=web-password stage=%s", ip,
                    log.quote(account.address), stage)
        if self.guard is not None:
            await self.guard.auth_ok(ip, account.address)
        result = "ok" if stage == WEB_DONE else "second factor needed"
        await self.record(account.id, ip, PASSWORD_METHOD, result, user_agent)
        return PasswordStep(account, stage, "")

    async def _check(self, address: str, password: str
                     ) -> tuple[Account | None, str, Account | None]:
        """(the account logged in, or None and why, and the account the address names)."""
        if not address or not password:
            return None, "empty address or password", None
        if len(password) > MAX_PASSWORD_LENGTH:
            return None, "password too long", None
        record = await self.store.get_auth(address)
        if record is None or record.account.disabled:
            await self.verifier.verify_dummy(password)
            if record is None:
                return None, "unknown user", None
            return None, "account disabled", record.account
        account = record.account
        if await self.verifier.verify(account.password_hash, password):
            return account, "", account
        return None, "wrong password", account

    async def stage_after_password(self, account: Account) -> str:
        for factor in self.factors:
            if await factor.enrolled(account):
                return WEB_SECOND_FACTOR
        return WEB_DONE

    async def enrolled_factors(self, account: Account) -> list[SecondFactor]:
        return [f for f in self.factors if await f.enrolled(account)]

    async def second_factor(self, account: Account, name: str, form: Mapping[str, str],
                            attempt: Attempt, user_agent: str) -> bool:
        """Whether the factor `name`, enrolled for the account, accepts what the user sent
        (a failure is a strike, as a wrong password is)."""
        for factor in await self.enrolled_factors(account):
            if factor.name == name:
                outcome = await factor.verify(account, form, attempt)
                break
        else:
            outcome = Outcome(False, "no such second factor enrolled")
        ip = attempt.ip
        method = f"web {name[:32]}"
        await self.record(account.id, ip, method, "ok" if outcome.ok else "failed",
                          user_agent)
        if outcome.ok:
            logger.info("auth ok ip=%s user=%s mechanism=web-%s stage=%s", ip,
                        log.quote(account.address), log.quote(name[:32]), WEB_DONE)
        else:
            await self.failed(ip, account.address, f"web-{name[:32]}", outcome.reason)
        return outcome.ok

    async def failed(self, ip: str, user: str, mechanism: str, reason: str) -> None:
        """The line fail2ban matches and a strike `web`, for a refused second factor or
        passkey login."""
        logger.warning("auth failure ip=%s user=%s mechanism=%s reason=%s", ip,
                       log.quote(user), log.quote(mechanism), log.quote(reason or "refused"))
        if self.guard is not None:
            await self.guard.auth_failed(ip, user, WEB)

    async def record(self, account_id: int, ip: str, method: str, result: str,
                     detail: str) -> None:
        """A line of the account's login history (kept `web.login_history_days`)."""
        now = time.time()
        await self.store.add_login(LoginRecord(account_id, now, ip, method, result, detail),
                                   now - self.history_days * 86400)

