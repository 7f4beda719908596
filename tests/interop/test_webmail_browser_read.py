"""The webmail's reading view in a real browser: Debian's chromium driven by Playwright (as in
test_web_browser.py), on a real `postkeep serve` over HTTPS.

A user logs in, opens the inbox and an HTML message whose script, event handler and remote
image must neither run nor load: no request reaches the remote host, the side effects they
would have on the frame's document are absent, and the inline (cid:) image shows. Asking for
remote images then loads the remote one (the browser asks for it). Screenshots of the inbox
(wide and phone-sized) and of the reading view go to ``test-artifacts/web-browser/``.
"""

from __future__ import annotations

import imaplib
import os
import ssl
from collections.abc import Iterator

import pytest
from playwright import sync_api as playwright_sync

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_web_browser import ARTIFACTS, CHROMIUM, spki_hash

ALICE = "alice@example.test"
REMOTE = "images.remote.test"
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
       "RU5ErkJggg==")
HTML_MAIL = (
    "From: Mallory <mallory@example.org>\r\nTo: alice@example.test\r\n"
    "Subject: Tracked newsletter\r\nDate: Wed, 03 Jun 2026 08:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=rel\r\n\r\n"
    "--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<html><body><h2 id=\"greeting\">Hello Alice</h2>"
    "<script>document.body.setAttribute('data-script-ran', '1');"
    f"new Image().src = 'https://{REMOTE}/script-ran.png';</script>"
    f"<img id=\"remote\" src=\"https://{REMOTE}/pixel.png\" "
    "onerror=\"document.body.setAttribute('data-onerror-ran', '1')\">"
    "<img id=\"logo\" src=\"cid:logo@example.org\" alt=\"logo\">"
    "<p><a href=\"javascript:document.body.setAttribute('data-link-ran','1')\">a link</a></p>"
    "</body></html>\r\n"
    "--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@example.org>\r\n"
    f"Content-Transfer-Encoding: base64\r\n\r\n{PNG}\r\n--rel--\r\n"
).encode()


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webmailbrowser"))
    inst.start()
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    with imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx, timeout=30) as conn:
        conn.login(ALICE, PASSWORD)
        for i in range(12):
            conn.append("INBOX", "\\Seen" if i % 3 else None, None,
                        (f"From: Sender {i} <s{i}@example.org>\r\nTo: alice@example.test\r\n"
                         f"Subject: Plain message {i}\r\n\r\nText {i}.\r\n").encode())
        conn.append("INBOX", None, None, HTML_MAIL)
    yield inst
    inst.stop()


def test_html_mail_script_and_remote_image_blocked(inst: Instance) -> None:
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
            context = browser.new_context(viewport={"width": 1200, "height": 800})
            requested: list[str] = []
            context.on("request", lambda r: requested.append(r.url))
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/login")
            page.fill("input[name=address]", ALICE)
            page.fill("input[name=password]", PASSWORD)
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url(f"{base}/account")
            page.goto(f"{base}/mail")
            page.wait_for_selector("ul.messages li.msg")
            assert page.locator("ul.messages li.msg").count() == 13
            assert page.locator("li.msg.unread").count() == 5
            page.screenshot(path=str(ARTIFACTS / "mail-01-inbox.png"), full_page=True)

            page.click("span.subject:text-is('Tracked newsletter')")
            page.wait_for_selector("iframe.body-frame")
            frame = page.frame_locator("iframe.body-frame")
            frame.locator("h2:text-is('Hello Alice')").wait_for()
            page.wait_for_load_state("networkidle")
            logo = frame.locator("img[alt=logo]")  # ids do not survive the sanitiser
            assert logo.evaluate("img => img.complete && img.naturalWidth") == 1  # cid: shown
            body = frame.locator("body")
            for mark in ("data-script-ran", "data-onerror-ran", "data-link-ran"):
                assert body.get_attribute(mark) is None, mark
            frame.locator("a").click()  # a javascript: link was stripped: nothing runs
            assert body.get_attribute("data-link-ran") is None
            assert frame.locator("img:not([alt])").count() == 1  # the remote one, no src
            assert frame.locator("img:not([alt])").get_attribute("src") is None
            assert not [u for u in requested if REMOTE in u], requested
            assert page.locator("h1.subject").inner_text() == "Tracked newsletter"
            page.screenshot(path=str(ARTIFACTS / "mail-02-reading.png"), full_page=True)

            page.click("a:text-is('Show them')")  # the user asks for remote images
            page.frame_locator("iframe.body-frame").locator("h2").wait_for()
            page.wait_for_load_state("networkidle")
            assert [u for u in requested if u == f"https://{REMOTE}/pixel.png"], requested
            assert not [u for u in requested if "script-ran" in u]  # the script still not

            phone = context.new_page()
            phone.set_viewport_size({"width": 390, "height": 800})
            phone.goto(f"{base}/mail")
            phone.wait_for_selector("ul.messages li.msg")
            assert not phone.locator("nav.boxes").is_visible()  # collapsed on a phone
            phone.click("label.boxes-button")
            assert phone.locator("nav.boxes").is_visible()
            phone.screenshot(path=str(ARTIFACTS / "mail-03-inbox-phone.png"), full_page=True)
        finally:
            browser.close()
