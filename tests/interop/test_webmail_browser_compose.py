"""The webmail's compose form in a real browser: Debian's chromium (/usr/bin/chromium) driven
by Playwright, as in test_web_browser.py, on a real `postkeep serve` over HTTPS (its
certificate trusted by its key). A user logs in, opens /mail/compose, fills it in, attaches a
file through the file input and sends; the message is then read over real IMAP: delivered to
the recipient with the file byte for byte, and in the sender's Sent. The compose screen's
screenshot goes to ``test-artifacts/web-browser/`` (or ``$POSTKEEP_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_web_browser import ARTIFACTS, CHROMIUM, spki_hash
from tests.interop.test_webmail_compose import attachment, with_subject

ALICE, BOB = "alice@example.test", "bob@example.test"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webcompose"))
    inst.start()
    yield inst
    inst.stop()


def test_compose_attach_and_send_in_chromium(inst: Instance, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test-deps.sh)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {ARTIFACTS}")
    data = os.urandom(50_000)
    upload = tmp_path / "report.bin"
    upload.write_bytes(data)
    subject = f"from chromium {uuid.uuid4().hex}"
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
            page = browser.new_context().new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(f"{base}/login")
            page.fill("input[name=address]", ALICE)
            page.fill("input[name=password]", PASSWORD)
            page.click("form[action='/login'] button[type=submit]")
            page.wait_for_url(f"{base}/account")
            page.goto(f"{base}/mail/compose")
            assert page.input_value("#sender") == ALICE
            page.fill("#to", f"Bob <{BOB}>")
            page.fill("#subject", subject)
            page.fill("#body", "Hello from the browser.\nSee the attached report.")
            page.set_input_files("#attachment", str(upload))
            page.screenshot(path=str(ARTIFACTS / "10-compose.png"), full_page=True)
            page.click("#send")
            page.wait_for_url(re.compile(r".*/mail/m/\d+\?done=sent$"))
            assert not errors, errors
        finally:
            browser.close()
    ((_, got),) = with_subject(inst, BOB, "INBOX", subject)
    assert attachment(got) == ("report.bin", data)
    assert "Hello from the browser." in str(got.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    ((flags, _),) = with_subject(inst, ALICE, "Sent", subject)
    assert b"\\Seen" in flags
    inst.wait_log(r"message qid=\w+ ip=127\.0\.0\.1 .*user=alice@example\.test via=web ")
