"""Two-factor authentication on the web pages over the wire (`postkeep.web.twofactor`,
`postkeep.web.factors`), on a real `postkeep serve` with two worker processes, driven by
`http.client` (`tests/interop/web_client.py`): what the browser's forms and `passkey.js` post.

TOTP: the account page enrols (the page shows the secret as text and the QR code as inline
SVG, and says IMAP and SMTP now take app passwords only; a wrong first code is refused), the
first code turns it on and shows 10 recovery codes once; then a login needs the password and
a code (pyotp computes it from the secret the page showed): a code used once is refused the
second time, a recovery code works once, and wrong codes are logged for fail2ban and counted
as strikes until the address is banned. Turning TOTP off wants the password. Passkeys:
registered with `tests/softauthn.py` (real ES256 keys, real CBOR, the JSON a browser posts)
answering the options the page's script fetches, then used as the second factor after the
password and as a passwordless login from the login page; a replayed assertion is refused and
logged; another account cannot remove one by id; removing the last ends 2FA.
"""

from __future__ import annotations

import html
import imaplib
import json
import re
import ssl
import time
from collections.abc import Iterator

import pyotp
import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.web_client import Browser, Reply
from tests.softauthn import SoftAuthenticator

ALICE = "alice@example.test"
BOB = "bob@example.test"
RECOVERY = re.compile(r"<li><code>([0-9a-z]{5}-[0-9a-z]{5})</code></li>")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("web2fa"))
    inst.set_config("server", processes=2)
    inst.set_config("bans", max_strikes=4.0, max_strikes_network=50.0, sync_interval=0.2)
    inst.start()
    yield inst
    inst.stop()


def origin(inst: Instance) -> str:
    return f"https://localhost:{inst.https_port}"


def imap_login(inst: Instance, user: str, password: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    with imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx, timeout=20) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        imap.logout()
        return True


def password_step(inst: Instance, address: str, source: str = "127.0.0.1") -> Browser:
    browser = Browser(inst, source=source)
    reply = browser.login(address, PASSWORD)
    assert reply.status == 303 and reply.header("Location") == "/login/second-factor", reply
    return browser


def second_factor(browser: Browser, fields: dict[str, str]) -> Reply:
    page = browser.get("/login/second-factor")
    assert page.status == 200
    return browser.post("/login/second-factor", {"csrf": page.field("csrf"), **fields})


def enrol_totp(browser: Browser) -> tuple[str, list[str]]:
    csrf = browser.account().field("csrf")
    page = browser.post("/account/totp", {"csrf": csrf})
    assert page.status == 200 and page.header("Cache-Control") == "no-store"
    m = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page.body)
    assert m is not None
    secret = m[1]
    assert '<svg width="' in page.body and "<script>" not in page.body  # inline SVG, no script
    assert "your account password no longer opens them" in page.body
    wrong = browser.post("/account/totp/confirm", {"csrf": csrf, "code": "12345x"})
    assert wrong.status == 400 and secret in wrong.body
    done = browser.post("/account/totp/confirm",
                        {"csrf": csrf, "code": pyotp.TOTP(secret).now()})
    assert done.status == 200
    codes = RECOVERY.findall(done.body)
    assert len(codes) == 10
    assert "IMAP and SMTP" in done.body and "Recovery codes left: 10" in done.body
    assert not RECOVERY.findall(browser.account().body)  # shown once
    return secret, codes


def test_totp_enrolment_login_replay_and_recovery_codes(inst: Instance) -> None:
    first = Browser(inst)
    assert first.login(ALICE, PASSWORD).header("Location") == "/account"
    secret, codes = enrol_totp(first)
    assert not imap_login(inst, ALICE, PASSWORD)  # app passwords only now
    inst.wait_log(r"postkeep\.web\[w\d\]: totp on ip=127\.0\.0\.1 user=alice@example\.test")

    # the next step's code (one step of skew is accepted): the confirmation's step is spent
    code = pyotp.TOTP(secret).at(time.time() + 30)
    browser = password_step(inst, ALICE)
    assert browser.get("/account").header("Location") == "/login/second-factor"
    ok = second_factor(browser, {"factor": "totp", "code": code})
    assert ok.status == 303 and ok.header("Location") == "/account"
    assert ALICE in browser.account().body

    again = password_step(inst, ALICE)
    reused = second_factor(again, {"factor": "totp", "code": code})
    assert reused.status == 401 and "That did not work" in reused.body
    inst.wait_log(r'auth failure ip=127\.0\.0\.1 user=alice@example\.test mechanism=web-totp '
                  r'reason="TOTP code used already"')
    assert again.get("/account").header("Location") == "/login/second-factor"

    assert second_factor(again, {"factor": "totp", "code": codes[0].upper()}).status == 303
    page = again.account().body
    assert "Recovery codes left: 9" in page
    history = re.findall(r"<td>127\.0\.0\.1</td><td>([^<]+)</td>\s*<td>([^<]+)</td>", page)
    assert ("web totp", "failed") in history and ("web totp", "ok") in history
    once_more = password_step(inst, ALICE)
    assert second_factor(once_more, {"factor": "totp", "code": codes[0]}).status == 401
    inst.wait_log(r'mechanism=web-totp reason="unknown or used recovery code"')

    # new recovery codes: the old unused ones stop working
    fresh = again.post("/account/recovery-codes", {"csrf": again.account().field("csrf")})
    new_codes = RECOVERY.findall(fresh.body)
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    assert second_factor(once_more, {"factor": "totp", "code": codes[1]}).status == 401
    assert second_factor(once_more, {"factor": "totp", "code": new_codes[1]}).status == 303

    # wrong codes from an attacker who has the password: strikes, then a ban
    attacker = password_step(inst, ALICE, source="127.0.0.77")
    statuses = [second_factor(attacker, {"factor": "totp", "code": f"{i:06d}"}).status
                for i in range(4)]
    assert statuses == [401] * 4
    inst.wait_log(r'auth failure ip=127\.0\.0\.77 user=alice@example\.test mechanism=web-totp '
                  r'reason="wrong TOTP code"')
    inst.wait_log(r'bans: ban ip=127\.0\.0\.77/32 .*reason="web login failures"')

    # turning it off wants the password
    csrf = again.account().field("csrf")
    assert again.post("/account/totp/disable", {"csrf": csrf, "password": "nope"}
                      ).status == 400
    inst.wait_log(r'auth failure ip=127\.0\.0\.1 user=alice@example\.test '
                  r'mechanism=web-password reason="wrong password at turning TOTP off"')
    off = again.post("/account/totp/disable", {"csrf": csrf, "password": PASSWORD})
    assert off.status == 303 and off.header("Location") == "/account?done=totp-off"
    assert Browser(inst).login(ALICE, PASSWORD).header("Location") == "/account"
    assert imap_login(inst, ALICE, PASSWORD)


def register_passkey(inst: Instance, browser: Browser, key: SoftAuthenticator,
                     name: str) -> Reply:
    csrf = browser.account().field("csrf")
    options = browser.post("/account/passkeys/options", {"csrf": csrf})
    assert options.status == 200 and options.header("Content-Type") == (
        "application/json; charset=utf-8")
    assert options.header("Cache-Control") == "no-store"
    response = key.create(options.body, origin(inst))
    return browser.post("/account/passkeys", {"csrf": csrf, "name": name,
                                              "response": response})


def test_passkey_registration_second_factor_and_passwordless_login(inst: Instance) -> None:
    key = SoftAuthenticator()
    bob = Browser(inst)
    assert bob.login(BOB, PASSWORD).header("Location") == "/account"
    added = register_passkey(inst, bob, key, "laptop key")
    assert added.status == 200, added.body
    assert len(RECOVERY.findall(added.body)) == 10  # the first factor brings recovery codes
    assert "<td>laptop key</td>" in added.body and "your account password no longer" in added.body
    inst.wait_log(r'passkey added ip=127\.0\.0\.1 user=bob@example\.test name="laptop key"')
    # a response for another origin is refused
    csrf = bob.account().field("csrf")
    options = bob.post("/account/passkeys/options", {"csrf": csrf}).body
    foreign = bob.post("/account/passkeys", {"csrf": csrf, "name": "evil", "response":
                                             key.create(options, "https://evil.test")})
    assert foreign.status == 400 and "<td>evil</td>" not in foreign.body

    # the second factor after the password
    pending = password_step(inst, BOB)
    page = pending.get("/login/second-factor")
    assert 'data-passkey="get"' in page.body and 'name="code"' not in page.body
    request = pending.post("/login/passkey/options", {"csrf": page.field("csrf")})
    assert request.status == 200 and len(json.loads(request.body)["allowCredentials"]) == 1
    assertion = key.get(request.body, origin(inst))
    done = pending.post("/login/second-factor", {"csrf": page.field("csrf"),
                                                 "factor": "webauthn", "response": assertion})
    assert done.status == 303 and done.header("Location") == "/account"
    again = password_step(inst, BOB)
    replayed = second_factor(again, {"factor": "webauthn", "response": assertion})
    assert replayed.status == 401
    inst.wait_log(r'auth failure ip=127\.0\.0\.1 user=bob@example\.test mechanism=web-webauthn '
                  r'reason="unknown, used or expired challenge"')

    # passwordless, from the login page
    anyone = Browser(inst)
    login = anyone.get("/login")
    assert 'action="/login/passkey"' in login.body
    request = anyone.post("/login/passkey/options", {"csrf": login.field("csrf")})
    assert request.status == 200 and not json.loads(request.body).get("allowCredentials")
    assertion = key.get(request.body, origin(inst))
    done = anyone.post("/login/passkey", {"csrf": login.field("csrf"), "response": assertion})
    assert done.status == 303 and done.header("Location") == "/account"
    account = anyone.account().body
    assert BOB in account and re.search(r"<td>web passkey</td>\s*<td>ok</td>", account)
    replay = Browser(inst)
    login = replay.get("/login")
    refused = replay.post("/login/passkey", {"csrf": login.field("csrf"), "response": assertion})
    assert refused.status == 401 and "That passkey did not work" in refused.body
    inst.wait_log(r'auth failure ip=127\.0\.0\.1 user=- mechanism=web-passkey '
                  r'reason="unknown, used or expired challenge"')

    # removal: among the account's own only; the last one gone, 2FA is off
    passkey_id = anyone.account().field("id", "/account/passkeys/remove")
    alice = Browser(inst)
    alice.login(ALICE, PASSWORD)
    assert alice.post("/account/passkeys/remove", {"csrf": alice.account().field("csrf"),
                                                   "id": passkey_id}).status == 404
    gone = anyone.post("/account/passkeys/remove", {"csrf": anyone.account().field("csrf"),
                                                    "id": passkey_id})
    assert gone.status == 303
    assert "<td>laptop key</td>" not in html.unescape(anyone.account().body)
    assert Browser(inst).login(BOB, PASSWORD).header("Location") == "/account"
