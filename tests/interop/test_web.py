"""The web listener over the wire (`postkeep.web`), on a real `postkeep serve`: HTTPS with the
instance's own certificate, HTTP that only redirects, driven by `http.client`
(`tests/interop/web_client.py`) from loopback source addresses, and imaplib for what the web
pages change on the mail side.

The HTTP listener's 308 keeps the path and refuses a foreign Host (no open redirect); every
response carries the security headers and every cookie its flags; a good login opens the
account page and a bad one is refused, logged for fail2ban (its own `fail2ban-regex` matches
the lines) and counted, until a ban refuses the address on the web listeners too; state
changes without the CSRF token, with a wrong one or from another origin are refused; one
user's session cannot revoke another's app password or session by id; a password change is
held to the policy, ends the other sessions and changes the IMAP password; an app password
made on the web opens IMAP until it is revoked; a revoked session is logged out; the login
history shows web and IMAP logins.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance, require_tool
from tests.interop.web_client import Browser, Reply

ALICE = "alice@example.test"
BOB = "bob@example.test"
CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban"
HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; object-src 'none'; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'"),
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("web"))
    inst.set_config("server", processes=2)
    inst.start()
    yield inst
    inst.stop()


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


def logged_in(inst: Instance, address: str, password: str = PASSWORD) -> Browser:
    browser = Browser(inst)
    reply = browser.login(address, password)
    assert reply.status == 303 and reply.header("Location") == "/account", reply
    return browser


def assert_secure(reply: Reply) -> None:
    for name, value in HEADERS.items():
        assert reply.header(name) == value, name
    assert "camera=()" in (reply.header("Permissions-Policy") or "")
    assert reply.header("Server") == "postkeep"


def cookie_flags(line: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in line.split(";")[1:]}


def test_http_redirects_to_https_keeping_the_path_and_never_elsewhere(inst: Instance) -> None:
    browser = Browser(inst)
    reply = browser.get("/account?tab=apps", tls=False)
    assert reply.status == 308
    assert reply.header("Location") == f"https://localhost:{inst.https_port}/account?tab=apps"
    assert_secure(reply)
    foreign = browser.get("/login", tls=False, host="evil.test")
    assert foreign.status == 421 and foreign.header("Location") is None
    # an absolute-form target names another host: the redirect still goes to ours, path kept
    absolute = browser.get("http://evil.test/x?y=1", tls=False)
    assert absolute.header("Location") == f"https://localhost:{inst.https_port}/x?y=1"
    # HTTPS answers no page for a host it does not serve either (DNS rebinding)
    assert browser.get("/login", host="evil.test").status == 421


def test_security_headers_and_cookie_flags(inst: Instance) -> None:
    browser = Browser(inst)
    page = browser.get("/login")
    assert page.status == 200 and page.header("Cache-Control") == "no-store"
    assert_secure(page)
    assert "<script>" not in page.body and " style=" not in page.body  # CSP: files only
    (login_cookie,) = page.cookies()
    assert login_cookie.startswith("__Host-pk-login=")
    assert {"secure", "httponly", "samesite", "path"} <= cookie_flags(login_cookie)
    assert "samesite=strict" in login_cookie.lower() and "domain" not in cookie_flags(
        login_cookie)
    reply = browser.post("/login", {"csrf": page.field("csrf"), "address": ALICE,
                                    "password": PASSWORD})
    session = [c for c in reply.cookies() if c.startswith("__Host-pk-session=")]
    assert len(session) == 1 and "samesite=strict" in session[0].lower()
    assert {"secure", "httponly", "path"} <= cookie_flags(session[0])
    assert_secure(reply)
    for path in ("/nowhere", "/static/app.js", "/static/app.css", "/account"):
        assert_secure(browser.get(path))
    assert browser.get("/static/app.js").header("Content-Type") == (
        "text/javascript; charset=utf-8")
    assert browser.get("/static/../pyproject.toml").status == 404
    assert_secure(browser.post("/account/app-passwords", {"name": "x"}))  # a 403 too


def test_login_good_and_bad(inst: Instance) -> None:
    browser = Browser(inst, agent="BadBrowser/1")
    bad = browser.login(ALICE, "not the password")
    assert bad.status == 401 and "Wrong address or password" in bad.body
    assert "__Host-pk-session" not in browser.jar
    unknown = browser.login("nobody@example.test", "whatever it is")
    assert unknown.status == 401 and unknown.body.count("Wrong address") == 1
    inst.wait_log(r'postkeep\.web\[w\d\]: auth failure ip=127\.0\.0\.1 user=alice@example\.test '
                  r'mechanism=web-password reason="wrong password"')
    inst.wait_log(r'auth failure ip=127\.0\.0\.1 user=nobody@example\.test '
                  r'mechanism=web-password reason="unknown user"')
    good = logged_in(inst, ALICE).account()
    assert ALICE in good.body
    assert imap_login(inst, ALICE, PASSWORD)
    history = re.findall(r"<td>127\.0\.0\.1</td><td>([^<]+)</td>\s*<td>([^<]+)</td>",
                         logged_in(inst, ALICE).account().body)
    assert ("web password", "failed") in history and ("web password", "ok") in history
    assert ("imap LOGIN", "ok") in history


def test_csrf_and_cross_site_requests_refused(inst: Instance) -> None:
    browser = logged_in(inst, ALICE)
    csrf = browser.account().field("csrf")
    form = {"name": "csrf-test", "scope_imap": "on"}
    assert browser.post("/account/app-passwords", form).status == 403
    assert browser.post("/account/app-passwords", {**form, "csrf": csrf[:-2] + "xx"}
                        ).status == 403
    assert browser.post("/account/app-passwords", {**form, "csrf": csrf},
                        headers={"Origin": "https://evil.test"}).status == 403
    assert browser.post("/account/app-passwords", {**form, "csrf": csrf},
                        headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert "csrf-test" not in browser.account().body
    made = browser.post("/account/app-passwords", {**form, "csrf": csrf},
                        headers={"Origin": f"https://localhost:{inst.https_port}",
                                 "Sec-Fetch-Site": "same-origin"})
    assert made.status == 200 and "csrf-test" in made.body
    # the login form: its token is the cookie's; another's (or none) is refused
    other = Browser(inst)
    page = other.get("/login")
    assert other.post("/login", {"address": ALICE, "password": PASSWORD}).status == 403
    other.jar["__Host-pk-login"] = "x" * 43
    assert other.post("/login", {"csrf": page.field("csrf"), "address": ALICE,
                                 "password": PASSWORD}).status == 403
    inst.wait_log(r'reject ip=127\.0\.0\.1 code=403 reason="missing or wrong CSRF token"')
    inst.wait_log(r'reject ip=127\.0\.0\.1 code=403 reason="foreign Origin"')
    # not a form, and too large
    assert browser.request("POST", "/account/password", body=b"{}", headers={
        "Content-Type": "application/json"}).status == 415
    assert browser.post("/account/password", {"csrf": csrf, "x": "y" * 70_000}).status == 413


def test_one_user_cannot_revoke_anothers_app_password_or_session(inst: Instance) -> None:
    alice, bob = logged_in(inst, ALICE), logged_in(inst, BOB)
    bob_elsewhere = logged_in(inst, BOB)
    page = bob.post("/account/app-passwords", {"csrf": bob.account().field("csrf"),
                                               "name": "bob-phone", "scope_imap": "on"})
    bob_password_id = page.field("id", "/account/app-passwords/revoke")
    bob_session_id = bob.account().field("id", "/account/sessions/revoke")
    csrf = alice.account().field("csrf")
    assert alice.post("/account/app-passwords/revoke",
                      {"csrf": csrf, "id": bob_password_id}).status == 404
    assert alice.post("/account/sessions/revoke",
                      {"csrf": csrf, "id": bob_session_id}).status == 404
    assert alice.post("/account/sessions/revoke", {"csrf": csrf, "id": "1 OR 1=1"}
                      ).status == 404
    assert "bob-phone" in bob.account().body
    assert bob_elsewhere.account().status == 200
    assert "bob-phone" not in alice.account().body and BOB not in alice.account().body


def test_app_password_made_on_the_web_opens_imap_until_revoked(inst: Instance) -> None:
    browser = logged_in(inst, ALICE)
    page = browser.post("/account/app-passwords", {"csrf": browser.account().field("csrf"),
                                                   "name": "laptop", "scope_imap": "on"})
    assert page.status == 200 and page.header("Cache-Control") == "no-store"
    m = re.search(r'<code id="new-app-password">([a-z0-9-]{19})</code>', page.body)
    assert m is not None
    assert imap_login(inst, ALICE, m[1])
    again = browser.account()
    assert m[1] not in again.body  # shown once
    row = re.search(r"<td>laptop</td><td>imap</td>\s*<td>[^<]+</td><td>([^<]+)</td>",
                    again.body)
    assert row is not None and row[1] != "never"  # its last use
    laptop = re.search(r'<td>laptop</td>.*?name="id" value="(\d+)"', again.body, re.S)
    assert laptop is not None
    revoke = browser.post("/account/app-passwords/revoke",
                          {"csrf": again.field("csrf"), "id": laptop[1]})
    assert revoke.status == 303
    assert not imap_login(inst, ALICE, m[1])
    assert "<td>laptop</td>" not in browser.account().body


def test_revoked_session_is_logged_out(inst: Instance) -> None:
    first, second = logged_in(inst, BOB), logged_in(inst, BOB)
    page = first.account()
    ids = re.findall(r'action="/account/sessions/revoke">\s*<input type="hidden" name="csrf" '
                     r'value="[^"]+">\s*<input type="hidden" name="id" value="(\d+)"', page.body)
    second_id = max(int(i) for i in ids)  # the newest one: the second browser's
    assert first.post("/account/sessions/revoke", {"csrf": page.field("csrf"),
                                                   "id": str(second_id)}).status == 303
    gone = second.get("/account")
    assert gone.status == 303 and gone.header("Location") == "/login"
    assert first.account().status == 200
    out = first.post("/logout", {"csrf": page.field("csrf")})
    assert out.status == 303 and first.get("/account").status == 303


def test_password_change_under_the_policy(tmp_path: Path) -> None:
    inst = make_instance(tmp_path)
    inst.start()
    try:
        browser, other = logged_in(inst, ALICE), logged_in(inst, ALICE)
        csrf = browser.account().field("csrf")

        def change(current: str, new: str, confirm: str | None = None) -> Reply:
            return browser.post("/account/password", {
                "csrf": csrf, "current": current, "new": new,
                "confirm": new if confirm is None else confirm})

        weak = change(PASSWORD, "password1234")
        assert weak.status == 400 and "Refused: password is too common" in weak.body
        assert change(PASSWORD, "alice.example.test!").status == 400  # the address
        assert change("wrong", "Tr0ubadour&3-horses").status == 400
        assert change(PASSWORD, "Tr0ubadour&3-horses", "other").status == 400
        done = change(PASSWORD, "Tr0ubadour&3-horses")
        assert done.status == 303 and done.header("Location") == "/account?done=password"
        assert "Your password was changed" in browser.get("/account?done=password").body
        assert other.get("/account").status == 303  # the other session ended
        assert imap_login(inst, ALICE, "Tr0ubadour&3-horses")
        assert not imap_login(inst, ALICE, PASSWORD)
        assert Browser(inst).login(ALICE, PASSWORD).status == 401
    finally:
        inst.stop()


def test_web_failures_ban_the_address_everywhere_and_fail2ban_matches(tmp_path: Path) -> None:
    regex = require_tool("fail2ban-regex", "fail2ban")
    inst = make_instance(tmp_path)
    inst.set_config("bans", max_strikes=5.0, max_strikes_network=50.0, sync_interval=0.2)
    inst.set_config("web", request_timeout=1.0)
    inst.start()
    # a request that never ends is cut off (its header trickles, its slot is given back)
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", inst.https_port), timeout=30) as raw, \
            ctx.wrap_socket(raw) as slow:
        slow.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\n")
        try:
            answer = slow.recv(100)
        except (ConnectionError, ssl.SSLError):
            answer = b""
        assert answer == b""  # closed by the server, no answer
    inst.wait_log(r'postkeep\.web\[w\d\]: timeout ip=127\.0\.0\.1 reason="request not received')
    attacker = Browser(inst, source="127.0.0.66")
    statuses = [attacker.login(ALICE, f"guess {i}").status for i in range(5)]
    assert statuses == [401] * 5
    inst.wait_log(r'bans: ban ip=127\.0\.0\.66/32 .*reason="web login failures"')
    deadline = time.monotonic() + 10
    while True:  # the ban reaches every worker within a sync
        try:
            attacker.get("/login")
        except (ConnectionError, ssl.SSLError, OSError):
            break  # implicit TLS: closed without a word
        assert time.monotonic() < deadline, "the HTTPS listener still answers"
        time.sleep(0.1)
    assert attacker.get("/", tls=False).status == 403  # plain HTTP: told
    assert imap_login(inst, ALICE, PASSWORD)  # from 127.0.0.1 (never banned)
    assert Browser(inst).login(ALICE, PASSWORD).status == 303
    inst.stop()
    log = inst.log()
    web_lines = [ln for ln in log.splitlines()
                 if "postkeep.web" in ln and ("auth failure ip=" in ln or "reason=banned" in ln)]
    assert len(web_lines) >= 6
    result = subprocess.run([regex, "--print-all-matched", str(inst.log_path),
                             str(CONTRIB / "filter.d" / "postkeep.conf")],
                            capture_output=True, text=True, timeout=120, check=True)
    matched = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", result.stdout, re.M)
    assert matched is not None, result.stdout
    assert int(matched[1]) >= len(web_lines)
    for line in web_lines:
        assert line.split(": ", 1)[1] in result.stdout, line  # each web line among the matched
