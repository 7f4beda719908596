"""The webmail's push and actions in a real browser: Debian's chromium (/usr/bin/chromium)
driven by Playwright, on a real `postkeep serve` over HTTPS (the certificate trusted by its
key, as in tests/interop/test_web_browser.py), `mail.js` doing the work.

The list page of a mailbox (``/mail/m/{id}``, the webmail's reading pages) is open; a message
delivered over SMTP appears in its ``#message-list`` and the INBOX's unread count goes up,
without a reload (the page's own JavaScript state survives: no navigation happened), fed by
the ``/mail/events`` stream; the message, checked, goes to Junk with the ``!`` shortcut
(``fetch`` to ``/mail/actions``), leaves the list, and IMAP finds it in Junk. No script error
and no CSP violation on the way. A screenshot of each step is kept under
``test-artifacts/webmail-browser/`` (or ``$POSTKEEP_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_web_browser import CHROMIUM, spki_hash
from tests.interop.test_webmail_actions import ALICE, deliver, mailbox_ids, uid_of

ARTIFACTS = Path(os.environ.get("POSTKEEP_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parents[2] / "test-artifacts") / "webmail-browser"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webmailbrowser"))
    inst.set_config("server", processes=2)  # the stream and the delivery in either worker
    inst.start()
    yield inst
    inst.stop()


def test_new_mail_appears_and_goes_to_junk_without_reload(inst: Instance) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test-deps.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {ARTIFACTS}")
    base = f"https://localhost:{inst.https_port}"
    inbox = mailbox_ids(inst, ALICE)["INBOX"]
    with playwright_sync.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[f"--ignore-certificate-errors-spki-list={spki_hash(inst.ca_file)}",
                      "--host-resolver-rules=MAP localhost 127.0.0.1"])
        except playwright_sync.Error as exc:
            pytest.fail(f"chromium ({CHROMIUM}) did not start: {exc}")
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text)
                    if "Content Security Policy" in m.text else None)

            def shot(name: str) -> None:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            page.goto(f"{base}/login")
            page.fill("input[name=address]", ALICE)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/account")
            with page.expect_response(lambda r: r.url.endswith("/mail/events")) as opened:
                page.goto(f"{base}/mail/m/{inbox}")
            assert opened.value.status == 200
            assert opened.value.headers["content-type"].startswith("text/event-stream")
            page.wait_for_selector("#message-list", state="attached")
            unread = page.locator(f'[data-unread-for="{inbox}"]').first
            page.wait_for_function(  # the stream's first counts are in
                "el => el.textContent.trim() !== ''", arg=unread.element_handle())
            before = int(unread.inner_text().strip() or 0)
            page.evaluate("window.postkeepNoReload = true")
            shot("1-list")

            subject = deliver(inst)
            row = page.locator("#message-list [data-uid]", has_text=subject)
            row.wait_for()  # pushed, fetched, in place
            assert page.evaluate("window.postkeepNoReload") is True  # no navigation
            page.wait_for_function(
                f"el => el.textContent.trim() === '{before + 1}'", arg=unread.element_handle())
            shot("2-new-mail")

            row.locator('input[name="uid"]').check()
            page.locator("body").press("!")  # junk
            row.wait_for(state="detached")
            assert page.evaluate("window.postkeepNoReload") is True
            shot("3-junked")
            assert uid_of(inst, ALICE, "Junk", subject) is not None
            assert uid_of(inst, ALICE, "INBOX", subject) is None
            assert not errors, errors
        finally:
            browser.close()
