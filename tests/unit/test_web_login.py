"""The web login's state machine (`postkeep.web.login.LoginFlow`) on a real SQLite store and
the real argon2 verifier: a wrong password, an unknown and a disabled account fail alike and
only known accounts get a history line; with no second factor the password completes the
login; with one enrolled it leads to the second-factor stage, and only that factor's check
completes it. The second factor here is a stand-in (`CodeFactor`, a fixed code) that plugs
into the `SecondFactor` seam as TOTP and passkeys do (`postkeep.web.factors`; those are tested
over the wire in `tests/interop/test_web_two_factor.py`)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from pathlib import Path

from postkeep.auth.passwords import PasswordVerifier, hash_password
from postkeep.store.api import WEB_DONE, WEB_SECOND_FACTOR, Account
from postkeep.store.sql.store import SqlStore
from postkeep.web.login import Attempt, LoginFlow, Outcome

PASSWORD = "correct horse battery staple"


class CodeFactor:
    name = "code"

    def __init__(self, enrolled_ids: set[int]) -> None:
        self.enrolled_ids = enrolled_ids

    async def enrolled(self, account: Account) -> bool:
        return account.id in self.enrolled_ids

    def form(self, account: Account) -> str:
        return "code.html"

    async def verify(self, account: Account, form: Mapping[str, str],
                     attempt: Attempt) -> Outcome:
        return Outcome(form.get("code") == "123456", "wrong code")


def at(ip: str) -> Attempt:
    return Attempt(ip, "session:x", "localhost", 443)


def test_login_stages(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "data",
                         secrets.token_bytes(32))
        await store.open()
        verifier = PasswordVerifier()
        try:
            await store.add_domain("example.org")
            alice = await store.add_account("alice@example.org", hash_password(PASSWORD))
            bob = await store.add_account("bob@example.org", hash_password(PASSWORD))
            await store.add_account("carol@example.org", hash_password(PASSWORD))
            await store.set_disabled("carol@example.org", True)
            factor = CodeFactor({bob.id})
            flow = LoginFlow(store, verifier, None, (factor,))
            for address, password in (("alice@example.org", "wrong"),
                                      ("nobody@example.org", PASSWORD),
                                      ("carol@example.org", PASSWORD), ("", PASSWORD)):
                step = await flow.password(address, password, "192.0.2.1", "ua")
                assert step.account is None and step.stage == ""
            done = await flow.password("Alice@example.org ", PASSWORD, "192.0.2.1", "ua")
            assert done.account is not None and done.stage == WEB_DONE
            assert [(r.method, r.result, r.ip) for r in await store.list_logins(alice.id, 9)] == [
                ("web password", "ok", "192.0.2.1"), ("web password", "failed", "192.0.2.1")]
            pending = await flow.password("bob@example.org", PASSWORD, "192.0.2.2", "ua")
            there = at("192.0.2.2")
            assert pending.account is not None and pending.stage == WEB_SECOND_FACTOR
            assert not await flow.second_factor(bob, "code", {"code": "000000"}, there, "")
            assert not await flow.second_factor(bob, "other", {"code": "123456"}, there, "")
            assert await flow.second_factor(bob, "code", {"code": "123456"}, there, "")
            assert [(r.method, r.result) for r in await store.list_logins(bob.id, 9)] == [
                ("web code", "ok"), ("web other", "failed"), ("web code", "failed"),
                ("web password", "second factor needed")]
            assert not await flow.second_factor(alice, "code", {"code": "123456"}, at(""), "")
        finally:
            verifier.close()
            await store.close()

    asyncio.run(main())
