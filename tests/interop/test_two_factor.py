"""Two-factor authentication as the mail protocols see it, over the wire: once alice turns TOTP
on (`postkeep.auth.totp`, through the store the running server uses), imaplib and smtplib
are refused her account password (IMAP ``NO [AUTHENTICATIONFAILED]``, SMTP ``535 5.7.8``,
each with the usual ``auth failure`` log line the bans count) and her app password works;
`postkeep user 2fa status|recovery|disable` as the operator uses them, the reset giving the
account password back."""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pyotp
import pytest

from postkeep import config as config_mod
from postkeep.auth import totp
from postkeep.store import open_store
from postkeep.store.api import Store
from postkeep.store.crypto import load_master_key
from tests.interop.conftest import PASSWORD, Instance

T = TypeVar("T")
ALICE = "alice@example.test"
APP_PASSWORD = re.compile(r"\(shown only this once\): ([a-z0-9]{4}(?:-[a-z0-9]{4}){3})")


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


def tls(inst: Instance) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(inst.ca_file))
    context.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1
    return context


def imap_login(inst: Instance, password: str) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=tls(inst), timeout=20)
    try:
        client.login(ALICE, password)
        client.select("INBOX")
    finally:
        client.shutdown()


def smtp_login(inst: Instance, password: str) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", inst.submissions_port, context=tls(inst),
                          timeout=20) as smtp:
        smtp.login(ALICE, password)


def turn_on_totp(inst: Instance) -> list[str]:
    async def enrol(store: Store) -> list[str]:
        now = time.time()
        enrolment = await totp.begin_enrolment(store, ALICE, "localhost", now)
        verdict, codes = await totp.confirm_enrolment(
            store, ALICE, pyotp.TOTP(enrolment.secret).at(now), now)
        assert verdict.ok
        return codes

    return with_store(inst, enrol)


def test_two_factor_allows_only_app_passwords(fresh: Instance) -> None:
    fresh.start()
    phone = APP_PASSWORD.search(fresh.cli("app-password", "add", ALICE, "phone").stdout)
    assert phone is not None
    imap_login(fresh, PASSWORD)  # before 2FA: the account password works
    smtp_login(fresh, PASSWORD)

    codes = turn_on_totp(fresh)
    status = fresh.cli("user", "2fa", "status", ALICE).stdout
    assert "two-factor authentication on (IMAP and SMTP take app passwords only)" in status
    assert "totp: on since" in status and "recovery codes left: 10" in status

    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        imap_login(fresh, PASSWORD)
    fresh.wait_log(r"imap\[w\d\]: auth failure ip=127\.0\.0\.1 user=alice@example\.test "
                   r"mechanism=LOGIN reason=\"wrong password: the account accepts app "
                   r"passwords only \(two-factor authentication on")
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_login(fresh, PASSWORD)
    assert refused.value.smtp_code == 535 and refused.value.smtp_error.startswith(b"5.7.8")
    fresh.wait_log(r"smtp\[w\d\]: auth failure ip=127\.0\.0\.1 user=alice@example\.test "
                   r"mechanism=\S+ reason=\"wrong password: the account accepts app passwords")
    imap_login(fresh, phone[1])  # an app password still works, on both
    smtp_login(fresh, phone[1])

    r = fresh.cli("user", "set", ALICE, "--app-passwords-only", "no", check=False)
    assert r.returncode == 1 and "two-factor authentication on" in r.stderr

    r = fresh.cli("user", "2fa", "recovery", ALICE)
    fresh_codes = re.findall(r"^  ([0-9a-z]{5}-[0-9a-z]{5})$", r.stdout, re.MULTILINE)
    assert len(fresh_codes) == 10 and not set(fresh_codes) & set(codes)
    assert "2fa recovery codes regenerated user=alice@example.test" in r.stderr

    r = fresh.cli("user", "2fa", "disable", ALICE)
    assert "two-factor authentication off" in r.stdout
    assert re.search(r"WARNING postkeep\.auth: 2fa reset user=alice@example\.test by=\S+ "
                     r"reason=\"operator: user 2fa disable\"", r.stderr), r.stderr
    imap_login(fresh, PASSWORD)  # the account password is back
    smtp_login(fresh, PASSWORD)
    assert "two-factor authentication off" in fresh.cli("user", "2fa", "status", ALICE).stdout
    assert "has no second factor" in fresh.cli("user", "2fa", "disable", ALICE).stdout
    r = fresh.cli("user", "2fa", "recovery", ALICE, check=False)
    assert r.returncode == 1 and "no two-factor authentication on" in r.stderr
