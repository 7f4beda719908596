"""`postkeep app-password add|list|revoke`, `user set --app-passwords-only`, and the password
policy and SASL secrets behind `user add|passwd` and `init`, as an operator uses them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from postkeep import config as config_mod
from postkeep.auth.passwords import AuthOutcome, PasswordVerifier, authenticate_password
from postkeep.store import open_store
from postkeep.store.api import Store
from postkeep.store.crypto import load_master_key
from postkeep.store.sql.store import SqlStore
from tests.interop.conftest import PASSWORD, Instance

T = TypeVar("T")
ALICE = "alice@example.test"
APP_PASSWORD = re.compile(r"\(shown only this once\): ([a-z0-9]{4}(?:-[a-z0-9]{4}){3})")
LIST_LINE = re.compile(
    r"^(?P<name>[^\t]+)\tscopes=(?P<scopes>[a-z,]+)\tcreated=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    r"\tlast_used=(?P<used>never|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)(?P<revoked>\trevoked)?$"
)


def shown(pattern: re.Pattern[str] | str, stdout: str) -> str:
    """The first group of `pattern` in a command's output (the secret it showed)."""
    m = re.search(pattern, stdout)
    assert m, stdout
    return m[1]


def with_store(inst: Instance, action: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)))
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def login(inst: Instance, password: str, scope: str = "smtp", address: str = ALICE
          ) -> AuthOutcome:
    async def go(store: Store) -> AuthOutcome:
        verifier = PasswordVerifier()
        try:
            outcome = await authenticate_password(store, address, password, scope, verifier)
        finally:
            verifier.close()
        if outcome.ok:
            assert isinstance(store, SqlStore)
            await store.sync()  # let the (fire-and-forget) last-use record land
        return outcome

    return with_store(inst, go)


def listing(inst: Instance, *extra: str) -> dict[str, dict[str, Any]]:
    out = inst.cli("app-password", "list", ALICE, *extra).stdout
    rows: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        m = LIST_LINE.match(line)
        assert m, line
        rows[m["name"] + (" (revoked)" if m["revoked"] else "")] = m.groupdict()
    return rows


def test_app_password_lifecycle(fresh: Instance) -> None:
    r = fresh.cli("app-password", "add", ALICE, "phone", "--scope", "smtp")
    phone = shown(APP_PASSWORD, r.stdout)
    assert r.stdout.count(phone) == 1  # shown once
    r = fresh.cli("app-password", "add", ALICE, "laptop")
    laptop = shown(APP_PASSWORD, r.stdout)
    assert "smtp and imap" in r.stdout

    rows = listing(fresh)
    assert set(rows) == {"phone", "laptop"}
    assert rows["phone"]["scopes"] == "smtp" and rows["laptop"]["scopes"] == "smtp,imap"
    assert rows["phone"]["used"] == "never"
    assert phone not in fresh.cli("app-password", "list", ALICE).stdout

    out = login(fresh, phone)
    assert out.ok and out.via == "app-password:phone"
    assert not login(fresh, phone, scope="imap").ok  # not in its scopes
    assert login(fresh, laptop, scope="imap").via == "app-password:laptop"
    assert listing(fresh)["phone"]["used"] != "never"

    r = fresh.cli("app-password", "add", ALICE, "phone", check=False)
    assert r.returncode == 1 and "exists already" in r.stderr
    r = fresh.cli("app-password", "add", "nobody@example.test", "phone", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = fresh.cli("app-password", "add", ALICE, "x", "--scope", "pop3", check=False)
    assert r.returncode == 2 and "invalid choice" in r.stderr

    fresh.cli("app-password", "revoke", ALICE, "phone")
    assert not login(fresh, phone).ok
    r = fresh.cli("app-password", "revoke", ALICE, "phone", check=False)
    assert r.returncode == 1 and "no app password 'phone'" in r.stderr
    assert set(listing(fresh)) == {"laptop"}
    assert set(listing(fresh, "--all")) == {"phone (revoked)", "laptop"}
    fresh.cli("app-password", "add", ALICE, "phone")  # the name is free again


def test_app_passwords_only(fresh: Instance) -> None:
    phone = shown(APP_PASSWORD, fresh.cli("app-password", "add", ALICE, "phone").stdout)
    assert login(fresh, PASSWORD).ok
    r = fresh.cli("user", "set", ALICE, "--app-passwords-only", "yes")
    assert "app passwords only: yes" in r.stdout
    assert f"{ALICE}\t" in fresh.cli("user", "list").stdout
    assert "app-passwords-only" in next(
        line for line in fresh.cli("user", "list").stdout.splitlines() if line.startswith(ALICE)
    )
    refused = login(fresh, PASSWORD)
    assert not refused.ok and "app passwords only" in refused.reason
    assert login(fresh, phone).ok
    fresh.cli("user", "set", ALICE, "--app-passwords-only", "no")
    assert login(fresh, PASSWORD).ok
    r = fresh.cli("user", "set", ALICE, check=False)
    assert r.returncode == 1 and "nothing to set" in r.stderr
    r = fresh.cli("user", "set", "nobody@example.test", "--app-passwords-only", "yes",
                  check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = fresh.cli("user", "set", ALICE, "--app-passwords-only", "maybe", check=False)
    assert r.returncode == 2


def test_password_policy_and_secrets(fresh: Instance) -> None:
    for weak, message in (("password1234", "too common"), ("qwertyuiop12", "too common"),
                          ("carol@example.test", "based on the address"),
                          ("Carol.Example.2024", "based on the address")):
        r = fresh.cli("user", "add", "carol@example.test", "--password-stdin", input=weak + "\n",
                      check=False)
        assert r.returncode == 1 and message in r.stderr, (weak, r.stderr)
    r = fresh.cli("user", "add", "carol@example.test")  # generated: passes the policy
    generated = shown(r"password: (\S+)", r.stdout)
    assert login(fresh, generated, address="carol@example.test").ok

    def secrets_of(address: str) -> dict[str, str]:
        async def go(store: Store) -> dict[str, str]:
            record = await store.get_auth(address)
            assert record is not None
            return record.secrets

        return with_store(fresh, go)

    mechanisms = {"SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5", "DIGEST-MD5"}
    assert set(secrets_of("postmaster@example.test")) == mechanisms  # from `init`
    before = secrets_of(ALICE)
    assert set(before) == mechanisms
    r = fresh.cli("user", "passwd", ALICE, "--password-stdin", input="password1234\n",
                  check=False)
    assert r.returncode == 1 and "too common" in r.stderr
    assert secrets_of(ALICE) == before
    fresh.cli("user", "passwd", ALICE, "--password-stdin", input="a brand new passphrase\n")
    after = secrets_of(ALICE)
    assert set(after) == mechanisms and after["CRAM-MD5"] != before["CRAM-MD5"]
    assert login(fresh, "a brand new passphrase").ok and not login(fresh, PASSWORD).ok
