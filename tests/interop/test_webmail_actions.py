"""The webmail's actions and event stream over the wire (`postkeep.web.mail.actions`,
`postkeep.web.mail.push`), on a real `postkeep serve` with two worker processes: HTTPS with
the instance's own certificate (`tests/interop/web_client.py`), mail delivered over real SMTP
(smtplib), every effect read back over real IMAP (imaplib).

Each action (flags, move, copy, delete to Trash and out of it, archive into an Archive made
on the spot, junk and notjunk) is seen by IMAP; a refused CSRF token, another account's ids,
malformed ids and actions and a `back` that leaves /mail/ change nothing; training through
the web's junk and notjunk changes the junk filter's next verdicts as IMAP moves do. The
event stream: a message delivered over SMTP arrives as an event with the new counts (the
worker that took it may not be the stream's: relayed), heartbeats keep a stream open past
the request deadline, the streams of an account are limited across the workers, and a
logout ends the stream.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import re
import signal
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from postkeep import config as config_mod
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_junk import HAMMY, SPAMMY, message, send_mx, where
from tests.interop.web_client import Browser, Reply

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
REQUEST_TIMEOUT = 2.0
HEARTBEAT = 1.0
MAX_STREAMS = 3


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webact"))
    inst.cli("user", "add", CAROL, "--password-stdin", input=PASSWORD + "\n")
    inst.set_config("server", processes=2)
    inst.set_config("web", request_timeout=REQUEST_TIMEOUT, event_heartbeat=HEARTBEAT,
                    max_event_streams=MAX_STREAMS)
    inst.set_config("filters", inbound=["junk"])
    inst.set_config("junk", min_messages=2)
    inst.start()
    yield inst
    inst.stop()


# -- helpers ---------------------------------------------------------------------------------------

def mailbox_ids(inst: Instance, address: str) -> dict[str, int]:
    """The account's mailboxes, name -> id (read from the store beside the server)."""
    async def read() -> dict[str, int]:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)
        try:
            account = await store.get_account(address)
            assert account is not None
            return {b.name: b.id for b in await store.list_mailboxes(account.id)}
        finally:
            await store.close()
    return asyncio.run(read())


def imap(inst: Instance, user: str) -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx, timeout=20)
    client.login(user, PASSWORD)
    return client


def deliver(inst: Instance, to: str = ALICE, body: str = HAMMY) -> str:
    """A message delivered over SMTP to `to`'s INBOX; its subject."""
    subject = f"webact {uuid.uuid4().hex}"
    assert send_mx(inst, message(subject, body, "boss@corp.test", to), to)[0] == 250
    return subject


def uid_of(inst: Instance, user: str, box: str, subject: str) -> int | None:
    client = imap(inst, user)
    try:
        assert client.select(box)[0] == "OK"
        typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK"
        found = data[0].split()
        return int(found[0]) if found else None
    finally:
        client.logout()


def flags_of(inst: Instance, user: str, box: str, uid: int) -> str:
    client = imap(inst, user)
    try:
        assert client.select(box)[0] == "OK"
        typ, data = client.uid("FETCH", str(uid), "(FLAGS)")
        assert typ == "OK" and data[0] is not None
        item = data[0]
        return item.decode() if isinstance(item, bytes) else str(item)
    finally:
        client.logout()


def logged_in(inst: Instance, address: str) -> Browser:
    browser = Browser(inst)
    reply = browser.login(address, PASSWORD)
    assert reply.status == 303 and reply.header("Location") == "/account", reply
    return browser


def csrf_of(browser: Browser) -> str:
    page = browser.get("/account")
    assert page.status == 200
    return page.field("csrf")


def act(browser: Browser, fields: list[tuple[str, str]], *, json_reply: bool = False,
        csrf: str | None = None) -> Reply:
    """POST /mail/actions with `fields` (repeated names kept) and the session's CSRF token."""
    body = urllib.parse.urlencode(
        [("csrf", csrf if csrf is not None else csrf_of(browser)), *fields]).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if json_reply:
        headers["Accept"] = "application/json"
    return browser.request("POST", "/mail/actions", body=body, headers=headers)


def action(box: int, uids: list[int], name: str, **extra: str) -> list[tuple[str, str]]:
    return [("mailbox", str(box)), *(("uid", str(u)) for u in uids), ("action", name),
            *extra.items()]


class EventStream:
    """A GET /mail/events read event by event (a raw TLS socket: nothing buffers it)."""

    def __init__(self, inst: Instance, browser: Browser) -> None:
        ctx = ssl.create_default_context(cafile=str(inst.ca_file))
        ctx.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", inst.https_port), timeout=20)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        cookies = "; ".join(f"{k}={v}" for k, v in browser.jar.items())
        self.sock.sendall((f"GET /mail/events HTTP/1.1\r\nHost: localhost:{inst.https_port}\r\n"
                           f"Cookie: {cookies}\r\nAccept: text/event-stream\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()):
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.buffer = b""

    def _more(self) -> bool:
        """Read the next chunk of the body into the buffer; False at its end."""
        if not self.chunked:
            data = self.file.read1(65536)
            self.buffer += data
            return bool(data)
        size_line = self.file.readline()
        if not size_line:
            return False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return False
        self.buffer += self.file.read(size)
        self.file.readline()  # the chunk's CRLF
        return True

    def next(self) -> tuple[str, Any] | None:
        """The next block: (event name, its data decoded), ("comment", text) for a comment,
        ("retry", ms); None once the stream ended."""
        while b"\n\n" not in self.buffer:
            if not self._more():
                return None
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        text = block.decode()
        if text.startswith(":"):
            return ("comment", text[1:].strip())
        fields = dict(line.split(": ", 1) for line in text.split("\n"))
        if "retry" in fields:
            return ("retry", int(fields["retry"]))
        return (fields["event"], json.loads(fields["data"]))

    def until(self, name: str, test: Any = None) -> Any:
        """Read on to the first event `name` (whose data passes `test`); its data."""
        while (item := self.next()) is not None:
            if item[0] == name and (test is None or test(item[1])):
                return item[1]
        raise AssertionError(f"the stream ended before {name}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- the actions -----------------------------------------------------------------------------------

def test_flags_seen_over_imap(inst: Instance) -> None:
    subject = deliver(inst)
    uid = uid_of(inst, ALICE, "INBOX", subject)
    assert uid is not None
    inbox = mailbox_ids(inst, ALICE)["INBOX"]
    browser = logged_in(inst, ALICE)
    reply = act(browser, action(inbox, [uid], "flag"))
    assert reply.status == 303 and reply.header("Location") == f"/mail/m/{inbox}"
    assert "\\Flagged" in flags_of(inst, ALICE, "INBOX", uid)
    assert act(browser, action(inbox, [uid], "seen")).status == 303
    assert "\\Seen" in flags_of(inst, ALICE, "INBOX", uid)
    assert act(browser, action(inbox, [uid], "unflag")).status == 303
    assert act(browser, action(inbox, [uid], "unseen")).status == 303
    flags = flags_of(inst, ALICE, "INBOX", uid)
    assert "\\Flagged" not in flags and "\\Seen" not in flags
    inst.wait_log(rf"mail action ip=127\.0\.0\.1 user=alice@example\.test action=unseen "
                  rf"mailbox={inbox} messages=1 target=-")


def test_move_copy_delete_and_archive_seen_over_imap(inst: Instance) -> None:
    client = imap(inst, ALICE)
    try:
        assert client.create("Projects")[0] == "OK"
        assert client.delete("Archive")[0] == "OK"  # made again by the archive action
    finally:
        client.logout()
    ids = mailbox_ids(inst, ALICE)
    assert "Archive" not in ids
    subjects = [deliver(inst) for _ in range(4)]
    uids = [uid_of(inst, ALICE, "INBOX", s) for s in subjects]
    assert None not in uids
    browser = logged_in(inst, ALICE)
    inbox, projects = ids["INBOX"], ids["Projects"]
    # two at once, answered in JSON (as mail.js asks)
    reply = act(browser, action(inbox, [uids[0], uids[1]], "move", target=str(projects)),
                json_reply=True)
    assert reply.status == 200
    assert (reply.header("Content-Type") or "").startswith("application/json")
    assert json.loads(reply.body) == {"ok": True, "action": "move", "mailbox": inbox,
                                      "count": 2, "target": projects,
                                      "back": f"/mail/m/{inbox}"}
    assert uid_of(inst, ALICE, "INBOX", subjects[0]) is None
    assert uid_of(inst, ALICE, "Projects", subjects[0]) is not None
    assert uid_of(inst, ALICE, "Projects", subjects[1]) is not None
    assert act(browser, action(inbox, [uids[2]], "copy", target=str(projects))).status == 303
    assert uid_of(inst, ALICE, "INBOX", subjects[2]) is not None
    assert uid_of(inst, ALICE, "Projects", subjects[2]) is not None
    # delete: into Trash, then, deleted in Trash, gone
    assert act(browser, action(inbox, [uids[2]], "delete")).status == 303
    assert uid_of(inst, ALICE, "INBOX", subjects[2]) is None
    in_trash = uid_of(inst, ALICE, "Trash", subjects[2])
    assert in_trash is not None
    trash = ids["Trash"]
    assert act(browser, action(trash, [in_trash], "delete")).status == 303
    assert uid_of(inst, ALICE, "Trash", subjects[2]) is None
    # archive: the Archive mailbox made again, with its special use (RFC 6154)
    assert act(browser, action(inbox, [uids[3]], "archive")).status == 303
    assert uid_of(inst, ALICE, "INBOX", subjects[3]) is None
    assert uid_of(inst, ALICE, "Archive", subjects[3]) is not None
    client = imap(inst, ALICE)
    try:
        typ, listed = client.list('""', "Archive")
        assert typ == "OK" and b"\\Archive" in (listed[0] or b"")
    finally:
        client.logout()
    inst.wait_log(r"mailbox made user=alice@example\.test mailbox=Archive "
                  r"special_use=\\Archive")


def test_csrf_refused_and_nothing_changed(inst: Instance) -> None:
    subject = deliver(inst)
    uid = uid_of(inst, ALICE, "INBOX", subject)
    assert uid is not None
    inbox = mailbox_ids(inst, ALICE)["INBOX"]
    browser = logged_in(inst, ALICE)
    good = csrf_of(browser)
    for token in ("", good[:-2] + "xx"):
        assert act(browser, action(inbox, [uid], "delete"), csrf=token).status == 403
    cross = browser.request(
        "POST", "/mail/actions",
        body=urllib.parse.urlencode(
            [("csrf", good), *action(inbox, [uid], "delete")]).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403
    assert uid_of(inst, ALICE, "INBOX", subject) == uid
    inst.wait_log(r"reject ip=127\.0\.0\.1 code=403 reason=\"missing or wrong CSRF token\" "
                  r"path=/mail/actions")
    # no session at all: no CSRF token can be right
    anonymous = Browser(inst)
    reply = anonymous.request("POST", "/mail/actions", body=b"action=flag",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 403


def test_one_account_cannot_act_on_anothers_messages(inst: Instance) -> None:
    subject = deliver(inst)
    uid = uid_of(inst, ALICE, "INBOX", subject)
    assert uid is not None
    alice, bob = mailbox_ids(inst, ALICE), mailbox_ids(inst, BOB)
    browser = logged_in(inst, BOB)
    # alice's mailbox, by id
    assert act(browser, action(alice["INBOX"], [uid], "delete")).status == 404
    assert act(browser, action(alice["INBOX"], [uid], "flag")).status == 404
    # bob's own mailbox, alice's mailbox as the target
    bob_subject = deliver(inst, BOB)
    bob_uid = uid_of(inst, BOB, "INBOX", bob_subject)
    assert bob_uid is not None
    assert act(browser, action(bob["INBOX"], [bob_uid], "move",
                               target=str(alice["INBOX"]))).status == 404
    assert uid_of(inst, BOB, "INBOX", bob_subject) == bob_uid
    assert uid_of(inst, ALICE, "INBOX", bob_subject) is None
    assert "\\Flagged" not in flags_of(inst, ALICE, "INBOX", uid)
    assert uid_of(inst, ALICE, "INBOX", subject) == uid
    inst.wait_log(r"reject ip=127\.0\.0\.1 code=404 reason=\"no such mailbox\"")


def test_bad_ids_and_actions_refused(inst: Instance) -> None:
    subject = deliver(inst)
    uid = uid_of(inst, ALICE, "INBOX", subject)
    assert uid is not None
    ids = mailbox_ids(inst, ALICE)
    inbox = ids["INBOX"]
    browser = logged_in(inst, ALICE)
    csrf = csrf_of(browser)
    cases: list[tuple[list[tuple[str, str]], int, str]] = [
        (action(inbox, [uid], "explode"), 400, "unknown action"),
        ([("mailbox", "abc"), ("uid", str(uid)), ("action", "flag")], 400, "malformed mailbox"),
        ([("mailbox", str(inbox)), ("uid", "-1"), ("action", "flag")], 400, "malformed uid"),
        ([("mailbox", str(inbox)), ("uid", "99999999999"), ("action", "flag")], 400,
         "malformed uid"),
        ([("mailbox", str(inbox)), ("action", "flag")], 400, "no message chosen"),
        (action(inbox, [uid], "move"), 400, "no target mailbox"),
        (action(inbox, [uid], "move", target=str(inbox)), 400,
         "the messages are in that mailbox already"),
        (action(inbox, [uid], "notjunk"), 400, "the messages are not in the Junk mailbox"),
        (action(ids["Junk"], [uid], "junk"), 404, "no such message"),
        (action(999999, [uid], "flag"), 404, "no such mailbox"),
        (action(inbox, [999999], "flag"), 404, "no such message"),
        (action(inbox, [uid, 999999], "delete"), 404, "no such message"),
        (action(inbox, [uid], "move", target="999999"), 404, "no such target mailbox"),
    ]
    for fields, status, reason in cases:
        reply = act(browser, fields, json_reply=True, csrf=csrf)
        assert (reply.status, json.loads(reply.body)) == (
            status, {"ok": False, "error": reason}), fields
    plain = act(browser, action(inbox, [uid], "explode"), csrf=csrf)
    assert (plain.status, plain.body) == (400, "unknown action\n")
    assert uid_of(inst, ALICE, "INBOX", subject) == uid
    assert "\\Flagged" not in flags_of(inst, ALICE, "INBOX", uid)
    inst.wait_log(r"reject ip=127\.0\.0\.1 code=400 reason=\"unknown action\"")


def test_open_redirect_refused(inst: Instance) -> None:
    subject = deliver(inst)
    uid = uid_of(inst, ALICE, "INBOX", subject)
    assert uid is not None
    inbox = mailbox_ids(inst, ALICE)["INBOX"]
    browser = logged_in(inst, ALICE)
    csrf = csrf_of(browser)
    for back in ("https://evil.test/", "//evil.test/mail/", "/mail//evil.test",
                 "/\\evil.test", "/account", "/mail/../account", "/mail/%2e%2e/account",
                 "/mail/./../account", "/mail/x\r\nSet-Cookie: a=b",
                 "javascript:alert(1)"):
        reply = act(browser, action(inbox, [uid], "flag", back=back), csrf=csrf)
        assert reply.status == 400 and reply.header("Location") is None, back
        assert reply.body == "back must be a path under /mail/\n"
    assert "\\Flagged" not in flags_of(inst, ALICE, "INBOX", uid)
    back = f"/mail/m/{inbox}/{uid}?page=2"
    reply = act(browser, action(inbox, [uid], "flag", back=back), csrf=csrf)
    assert reply.status == 303 and reply.header("Location") == back


def test_junk_and_notjunk_change_the_next_verdict(inst: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    spams = [f"watches {tag} {i}" for i in range(3)]
    hams = [f"planning {tag} {i}" for i in range(2)]
    for subject in spams:
        assert send_mx(inst, message(subject, SPAMMY, "deals@shop.test", CAROL), CAROL)[0] == 250
    for subject in hams:
        assert send_mx(inst, message(subject, HAMMY, "boss@corp.test", CAROL), CAROL)[0] == 250
    assert all(where(inst, s, CAROL) == "INBOX" for s in spams + hams)  # nothing learnt yet
    ids = mailbox_ids(inst, CAROL)
    browser = logged_in(inst, CAROL)
    csrf = csrf_of(browser)

    def uids(box: str, subjects: list[str]) -> list[int]:
        found = [uid_of(inst, CAROL, box, s) for s in subjects]
        assert None not in found
        return [u for u in found if u is not None]

    assert act(browser, action(ids["INBOX"], uids("INBOX", spams), "junk"),
               csrf=csrf).status == 303
    inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk learnt=3")
    assert all(where(inst, s, CAROL) == "Junk" for s in spams)
    # false positives rescued: into Junk (spam), then back out with notjunk (ham)
    assert act(browser, action(ids["INBOX"], uids("INBOX", hams), "junk"),
               csrf=csrf).status == 303
    inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk learnt=2")
    assert act(browser, action(ids["Junk"], uids("Junk", hams), "notjunk"),
               csrf=csrf).status == 303
    inst.wait_log(r"junk trained account=\d+ class=ham mailbox=INBOX relearnt=2")
    assert all(where(inst, s, CAROL) == "INBOX" for s in hams)
    spam = f"watches {tag} new"
    assert send_mx(inst, message(spam, SPAMMY, "deals@shop.test", CAROL), CAROL)[0] == 250
    assert where(inst, spam, CAROL) == "Junk"
    ham = f"planning {tag} new"
    assert send_mx(inst, message(ham, HAMMY, "boss@corp.test", CAROL), CAROL)[0] == 250
    assert where(inst, ham, CAROL) == "INBOX"


# -- the event stream ------------------------------------------------------------------------------

def test_delivered_mail_arrives_on_the_event_stream(inst: Instance) -> None:
    browser = logged_in(inst, ALICE)
    inbox = mailbox_ids(inst, ALICE)["INBOX"]
    stream = EventStream(inst, browser)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        assert stream.next() == ("retry", 5000)
        first = stream.until("counts")
        before = {row["mailbox"]: row for row in first["mailboxes"]}[inbox]
        subject = deliver(inst)
        event = stream.until("mailbox", lambda d: d["mailbox"] == inbox
                             and d["kind"] == "exists")
        uid = uid_of(inst, ALICE, "INBOX", subject)
        assert event["uids"] == [uid]
        assert event["total"] == before["total"] + 1
        assert event["unread"] == before["unread"] + 1
        client = imap(inst, ALICE)  # the counts are IMAP's
        try:
            typ, status = client.status("INBOX", "(MESSAGES UNSEEN)")
            assert typ == "OK"
            assert f"MESSAGES {event['total']} UNSEEN {event['unread']}".encode() in status[0]
            # a change over IMAP is an event too
            assert client.select("INBOX")[0] == "OK"
            assert client.uid("STORE", str(uid), "+FLAGS", "(\\Seen)")[0] == "OK"
        finally:
            client.logout()
        seen = stream.until("mailbox", lambda d: d["kind"] == "flags")
        assert (seen["mailbox"], seen["uids"], seen["unread"]) == (
            inbox, [uid], event["unread"] - 1)
    finally:
        stream.close()


def test_heartbeats_keep_the_stream_past_the_request_deadline(inst: Instance) -> None:
    browser = logged_in(inst, ALICE)
    stream = EventStream(inst, browser)
    try:
        assert stream.status == 200
        stream.until("counts")
        started = time.monotonic()
        beats = 0
        while time.monotonic() - started < 2 * REQUEST_TIMEOUT:
            item = stream.next()
            assert item is not None, "the stream ended"
            beats += item == ("comment", "heartbeat")
        assert beats >= 2
        # and it still carries events
        subject = deliver(inst)
        event = stream.until("mailbox", lambda d: d["kind"] == "exists")
        assert event["uids"] == [uid_of(inst, ALICE, "INBOX", subject)]
    finally:
        stream.close()
    assert "reason=\"request not received in time\"" not in inst.log()


def test_event_streams_of_an_account_are_limited(inst: Instance) -> None:
    browsers = [logged_in(inst, BOB) for _ in range(MAX_STREAMS + 1)]
    streams = [EventStream(inst, b) for b in browsers[:MAX_STREAMS]]
    try:
        for stream in streams:
            assert stream.status == 200
            stream.until("counts")  # open: its slot is taken
        over = EventStream(inst, browsers[-1])
        assert over.status == 429
        over.close()
        inst.wait_log(r"reject ip=127\.0\.0\.1 code=429 reason=\"too many event streams\"")
        other = EventStream(inst, logged_in(inst, ALICE))  # another account: its own streams
        assert other.status == 200
        other.close()
        streams.pop().close()  # one closed: its slot is given back once the server sees it
        deadline = time.monotonic() + 20
        while True:
            again = EventStream(inst, browsers[-1])
            if again.status == 200 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.2)
        assert again.status == 200
        streams.append(again)
    finally:
        for stream in streams:
            stream.close()


def test_logout_ends_the_stream(inst: Instance) -> None:
    browser = logged_in(inst, ALICE)
    stream = EventStream(inst, browser)
    try:
        assert stream.status == 200
        stream.until("counts")
        csrf = csrf_of(browser)
        assert browser.post("/logout", {"csrf": csrf}).status == 303
        assert stream.until("end") == {"reason": "session ended"}
        assert stream.next() is None  # the response is over
    finally:
        stream.close()
    inst.wait_log(r"event stream closed ip=127\.0\.0\.1 user=alice@example\.test "
                  r"reason=\"session ended\"")
    assert EventStream(inst, browser).status == 401  # no cookie any more
    anonymous = Browser(inst)
    assert anonymous.get("/mail/events").status == 401
    assert re.search(r"reject ip=127\.0\.0\.1 code=401 reason=\"not logged in\" "
                     r"path=/mail/events", inst.log())


def test_server_stop_ends_the_streams_first(fresh: Instance) -> None:
    fresh.start()
    browser = logged_in(fresh, ALICE)
    stream = EventStream(fresh, browser)
    try:
        assert stream.status == 200
        stream.until("counts")
        assert fresh.proc is not None
        fresh.proc.send_signal(signal.SIGTERM)
        while (item := stream.next()) is not None:  # the response ends: no "end" event,
            assert item[0] != "end"  # so that the browser reconnects
    finally:
        stream.close()
    assert fresh.proc.wait(60) == 0
    assert re.search(r"event stream closed ip=127\.0\.0\.1 user=alice@example\.test "
                     r"reason=\"server stopping\"", fresh.log())
