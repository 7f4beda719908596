"""The account pages end to end in a real browser: Debian's chromium (/usr/bin/chromium, from
scripts/test-deps.sh) driven by Playwright, on a real `postkeep serve` over HTTPS whose
self-signed certificate the browser trusts by its key (``--ignore-certificate-errors-spki-list``:
a trusted certificate, not an ignored error, as WebAuthn wants).

A user logs in with the password, turns on an authenticator app from the page (the QR code
inline, the key shown as text; pyotp makes the codes from that key), sees the recovery codes
once, logs in again with a code, is refused the same code a second time and gets in with a
recovery code; registers a passkey with Chromium's virtual authenticator (CDP ``WebAuthn``:
CTAP2, resident keys, user verification) through `passkey.js`, and logs in with it from the
login page with neither address nor password. Screenshots of each screen are kept under
``test-artifacts/web-browser/`` (or ``$POSTKEEP_TEST_ARTIFACTS``), printed by the test. If
chromium cannot start, the test fails saying so: `make test` installs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright import sync_api as playwright_sync

from tests.interop.conftest import PASSWORD, Instance, make_instance

CHROMIUM = "/usr/bin/chromium"
ALICE = "alice@example.test"
ARTIFACTS = Path(os.environ.get("POSTKEEP_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts") / "web-browser"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webbrowser"))
    inst.start()
    yield inst
    inst.stop()


def spki_hash(cert_file: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (what chromium's flag takes)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_login_totp_and_passkey_in_chromium(inst: Instance) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test-deps.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {ARTIFACTS}")
    base = f"https://localhost:{inst.https_port}"
    with playwright_sync.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[f"--ignore-certificate-errors-spki-list={spki_hash(inst.ca_file)}",
                      "--host-resolver-rules=MAP localhost 127.0.0.1"])
        except playwright_sync.Error as exc:
            pytest.fail(f"chromium ({CHROMIUM}) did not start: {exc}")
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))  # an uncaught script error
            page.on("console", lambda m: errors.append(m.text)
                    if "Content Security Policy" in m.text else None)

            def shot(name: str) -> None:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            def password_login() -> None:
                page.goto(f"{base}/login")
                page.fill("input[name=address]", ALICE)
                page.fill("input[name=password]", PASSWORD)
                page.click("form[action='/login'] button[type=submit]")

            def log_out() -> None:
                page.click("form[action='/logout'] button")
                page.wait_for_url(f"{base}/login")

            password_login()
            page.wait_for_url(f"{base}/account")
            shot("01-account")

            page.click("form[action='/account/totp'] button")
            page.wait_for_selector("#totp-secret")
            assert page.locator(".qr svg").count() == 1
            assert "no longer opens them" in page.inner_text("main")
            shot("02-totp-enrol")
            secret = page.inner_text("#totp-secret").strip()
            page.fill("input[name=code]", pyotp.TOTP(secret).now())
            page.click("form[action='/account/totp/confirm'] button")
            page.wait_for_selector("#recovery-codes")
            codes = re.findall(r"[0-9a-z]{5}-[0-9a-z]{5}", page.inner_text("#recovery-codes"))
            assert len(codes) == 10
            shot("03-recovery-codes")

            log_out()
            password_login()
            page.wait_for_url(f"{base}/login/second-factor")
            shot("04-second-factor")
            code = pyotp.TOTP(secret).at(time.time() + 30)  # the next step's: not yet used
            page.fill("input[name=code]", code)
            page.click("input[value=totp] ~ button[type=submit]")
            page.wait_for_url(f"{base}/account")

            log_out()
            password_login()
            page.wait_for_url(f"{base}/login/second-factor")
            page.fill("input[name=code]", code)  # the same code again
            page.click("input[value=totp] ~ button[type=submit]")
            page.wait_for_selector("p.error")
            assert "That did not work" in page.inner_text("p.error")
            assert page.url == f"{base}/login/second-factor"
            shot("05-code-reused")
            page.fill("input[name=code]", codes[0])
            page.click("input[value=totp] ~ button[type=submit]")
            page.wait_for_url(f"{base}/account")

            cdp = context.new_cdp_session(page)
            cdp.send("WebAuthn.enable")
            authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
                "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                "hasUserVerification": True, "isUserVerified": True}})
            page.fill("form[action='/account/passkeys'] input[name=name]", "chromium")
            page.click("button[data-passkey=create]")
            page.wait_for_selector("td:text-is('chromium')")
            shot("06-passkey-added")
            creds = cdp.send("WebAuthn.getCredentials",
                             {"authenticatorId": authenticator["authenticatorId"]})
            (made,) = creds["credentials"]
            assert made["isResidentCredential"]

            log_out()
            shot("07-login")
            page.click("button[data-passkey=get]")  # passwordless: no address, no password
            page.wait_for_url(f"{base}/account")
            assert ALICE in page.inner_text("header")
            assert "web passkey" in page.inner_text("main")
            shot("08-passkey-login")
            assert not errors, errors
        finally:
            browser.close()
    inst.wait_log(r"auth ok ip=127\.0\.0\.1 user=alice@example\.test mechanism=web-passkey")
