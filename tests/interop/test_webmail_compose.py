"""The webmail's compose pages over the wire (`postkeep.web.mail.compose`), on a real
`postkeep serve`: HTTPS with the instance's own certificate (`tests/interop/web_client.py`),
multipart/form-data forms with files, what was sent read back over real IMAP (imaplib, TLS)
and from the outbound queue.

A message sent from the web goes through the submission pipeline as one over SMTP does: to a
local user it is delivered (its attachment byte for byte, DKIM-signed) and a copy is in Sent
with \\Seen; to a remote address it is queued, DKIM-signed; a From the login does not own is
refused (553 5.7.1), the sending quota refuses past its limit (451 4.7.1), GTUBE is refused
by the outbound junk filter (554 5.7.1, held in the sender's quarantine), each shown in the
form with nothing delivered or queued. Replies, reply-all and forwards get their headers
(RFC 5322 §3.6.4) and the forwarded attachment; drafts are saved, replaced, reopened with
their attachment and sent. CSRF, another account's message, an oversized upload and a line
break in a header field are refused.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import os
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate

import pytest

from postkeep import config as config_mod
from postkeep.filters.junk.rules import GTUBE
from postkeep.store import load_master_key, open_store
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.web_client import Browser, Reply

ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
LIMIT = 1024 * 1024  # web.max_compose_size of the instance


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("compose"))
    inst.cli("user", "add", CAROL, "--password-stdin", input=PASSWORD + "\n")
    inst.cli("user", "limits", CAROL, "--messages-per-hour", "1")
    inst.set_config("filters", outbound=["junk"], outbound_hit_pause=0)
    inst.set_config("web", max_compose_size=LIMIT)
    inst.start()
    yield inst
    inst.stop()


def logged_in(inst: Instance, address: str = ALICE) -> Browser:
    browser = Browser(inst)
    reply = browser.login(address, PASSWORD)
    assert reply.status == 303 and reply.header("Location") == "/account", reply
    return browser


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n").encode()
    for filename, data in files:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                ).encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post(browser: Browser, path: str, fields: dict[str, str],
         files: list[tuple[str, bytes]] | None = None, page: Reply | None = None,
         csrf: bool = True) -> Reply:
    """Post the compose form (the fields of `page`, or a fresh form's, under `fields`)."""
    page = page or browser.get("/mail/compose")
    assert page.status == 200, page
    sent = {name: page.field(name) for name in ("source", "draft", "in_reply_to",
                                                "references")}
    if csrf:
        sent["csrf"] = page.field("csrf")
    sent["sender"] = ALICE
    sent |= fields
    body, kind = multipart(sent, files or [])
    return browser.request("POST", path, body=body, headers={"Content-Type": kind})


def imap_messages(inst: Instance, user: str, mailbox: str) -> list[tuple[bytes, bytes]]:
    """(FLAGS item, message) of every message in the mailbox, over IMAPS."""
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    with imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx, timeout=20) as imap:
        imap.login(user, PASSWORD)
        typ, _ = imap.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", mailbox
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        found = []
        for item in data:
            if isinstance(item, tuple):
                found.append((item[0], item[1]))
        imap.logout()
    return found


def with_subject(inst: Instance, user: str, mailbox: str, subject: str
                 ) -> list[tuple[bytes, EmailMessage]]:
    out = []
    for flags, raw in imap_messages(inst, user, mailbox):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if msg["Subject"] == subject:
            out.append((flags, msg))
    return out


def queued(inst: Instance, subject: str) -> list[tuple[list[str], bytes]]:
    return [(rcpts, data) for rcpts, data in inst.outbound() if subject.encode() in data]


def ref(inst: Instance, user: str, mailbox: str, subject: str) -> str:
    """``MAILBOXID/UID`` of the message with `subject` in the mailbox (read from the store)."""
    async def find() -> str:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)
        try:
            account = await store.get_account(user)
            assert account is not None
            box = await store.get_mailbox(account.id, mailbox)
            assert box is not None
            for info in await store.list_messages(box.id):
                if subject.encode() in await store.read_message(account.id, info.id):
                    return f"{box.id}/{info.uid}"
            raise AssertionError(f"{subject} not in {user}'s {mailbox}")
        finally:
            await store.close()
    return asyncio.run(find())


def attachment(msg: EmailMessage) -> tuple[str, bytes]:
    (part,) = list(msg.iter_attachments())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename() or "", payload


def test_send_to_a_local_user_with_an_attachment_and_a_copy_in_sent(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"Grüße {uuid.uuid4().hex}"
    data = os.urandom(200_000) + b"\r\n.\r\n\x00\xff"  # binary, an SMTP end-of-data inside
    reply = post(browser, "/mail/compose/send",
                 {"to": f"Bob <{BOB}>", "bcc": CAROL, "subject": subject,
                  "body": "Hello Bob,\r\nsee the file.\r\nÄ line in UTF-8\r\n"},
                 [("données.bin", data)])
    assert reply.status == 303 and re.fullmatch(r"/mail/m/\d+\?done=sent",
                                                reply.header("Location") or ""), reply
    ((_, got),) = with_subject(inst, BOB, "INBOX", subject)
    assert attachment(got) == ("données.bin", data)
    assert got["From"] == ALICE and got["To"] == f"Bob <{BOB}>" and got["Bcc"] is None
    assert re.fullmatch(r"<[^@]+@localhost>", got["Message-ID"])
    assert "Ä line in UTF-8" in got.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert got["DKIM-Signature"] is not None and "d=example.test" in str(got["DKIM-Signature"])
    assert "with ESMTPSA" in str(got["Received"]) and "webmail" in str(got["Received"])
    assert with_subject(inst, CAROL, "INBOX", subject)  # the Bcc recipient has it too
    ((flags, sent),) = with_subject(inst, ALICE, "Sent", subject)
    assert b"\\Seen" in flags and sent["Bcc"] == CAROL and attachment(sent)[1] == data
    line = inst.wait_log(r"message qid=\w+ ip=127\.0\.0\.1 tls=TLSv1\.[23] "
                         r"user=alice@example\.test via=web .*")
    assert got["Message-ID"] in line[0] and 'result="250 2.0.0"' in line[0]


def test_send_to_a_remote_address_is_queued_and_signed(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"remote {uuid.uuid4().hex}"
    reply = post(browser, "/mail/compose/send",
                 {"to": "someone@remote.test", "subject": subject, "body": "hi"})
    assert reply.status == 303, reply
    ((rcpts, data),) = queued(inst, subject)
    assert rcpts == ["someone@remote.test"]
    assert data.startswith(b"DKIM-Signature: ") and b"d=example.test" in data[:2000]
    assert not with_subject(inst, ALICE, "INBOX", subject)
    assert with_subject(inst, ALICE, "Sent", subject)


def test_a_forged_from_is_refused_and_nothing_sent(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"forged {uuid.uuid4().hex}"
    reply = post(browser, "/mail/compose/send",
                 {"sender": BOB, "to": f"{CAROL}, x@remote.test", "subject": subject,
                  "body": "I am Bob"})
    assert reply.status == 400
    assert "Not sent: 553 5.7.1 Sender address &lt;bob@example.test&gt; is not owned" \
        in reply.body
    assert f'value="{subject}"' in reply.body  # the form is shown again, as filled in
    assert not with_subject(inst, CAROL, "INBOX", subject) and not queued(inst, subject)
    assert not with_subject(inst, ALICE, "Sent", subject)
    inst.wait_log(r"reject ip=127\.0\.0\.1 cmd=WEB code=553 5\.7\.1 .*user=alice@example\.test")


def test_the_sending_quota_refuses_past_its_limit(inst: Instance) -> None:
    browser = logged_in(inst, CAROL)
    first, second = (f"quota {i} {uuid.uuid4().hex}" for i in range(2))
    reply = post(browser, "/mail/compose/send",
                 {"sender": CAROL, "to": "far@remote.test", "subject": first, "body": "1"})
    assert reply.status == 303, reply
    reply = post(browser, "/mail/compose/send",
                 {"sender": CAROL, "to": "far@remote.test", "subject": second, "body": "2"})
    assert reply.status == 400
    assert "Not sent: 451 4.7.1 Sending limit reached: this account may send 1 messages " \
           "per hour" in reply.body
    assert queued(inst, first) and not queued(inst, second)
    assert not with_subject(inst, CAROL, "Sent", second)
    inst.wait_log(r"sending quota a:\d+ messages_per_hour=1 login=carol@example\.test")


def test_gtube_is_refused_by_the_outbound_filter_and_held(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"gtube {uuid.uuid4().hex}"
    reply = post(browser, "/mail/compose/send",
                 {"to": f"{BOB}, x@remote.test", "subject": subject, "body": GTUBE})
    assert reply.status == 400
    assert "Not sent: 554 5.7.1 Message refused by content filter junk" in reply.body
    assert not with_subject(inst, BOB, "INBOX", subject) and not queued(inst, subject)
    assert not with_subject(inst, ALICE, "Sent", subject)
    assert any(subject.encode() in m for m in inst.messages(ALICE, "Quarantine"))
    inst.wait_log(r"outbound held qid=\w+ ip=127\.0\.0\.1 account=alice@example\.test "
                  r"filter=junk")


def send_mx(inst: Instance, subject: str) -> None:
    """A message to alice (Cc bob and carol) with References and an attachment, over SMTP."""
    msg = EmailMessage()
    msg["From"], msg["To"] = "Dora <dora@remote.test>", f"{ALICE}, Eve <eve@remote.test>"
    msg["Cc"], msg["Reply-To"] = f"{BOB}, {CAROL}", "replies@remote.test"
    msg["Subject"], msg["Date"] = subject, formatdate()
    msg["Message-ID"], msg["References"] = "<orig-1@remote.test>", "<root-0@remote.test>"
    msg.set_content("first line\nsecond line\n")
    msg.add_attachment(b"PDF\x00data", maintype="application", subtype="pdf",
                       filename="plan.pdf")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as c:
        c.sendmail("dora@remote.test", [ALICE], msg.as_bytes().replace(b"\n", b"\r\n"))


def test_reply_reply_all_and_forward(inst: Instance) -> None:
    subject = f"plans {uuid.uuid4().hex}"
    send_mx(inst, subject)
    original = ref(inst, ALICE, "INBOX", subject)
    browser = logged_in(inst)
    page = browser.get(f"/mail/compose?reply={original}&mode=reply")
    assert page.status == 200
    assert page.field("to") == "replies@remote.test" and page.field("cc") == ""
    assert page.field("subject") == f"Re: {subject}"
    assert page.field("in_reply_to") == "<orig-1@remote.test>"
    assert page.field("references") == "<root-0@remote.test> <orig-1@remote.test>"
    assert "&gt; first line\n&gt; second line" in page.body
    every = browser.get(f"/mail/compose?reply={original}&mode=all")
    assert every.field("to") == "replies@remote.test"
    # alice, the user, is left out
    assert every.field("cc") == f"Eve <eve@remote.test>, {BOB}, {CAROL}"
    reply = post(browser, "/mail/compose/send",
                 {"to": BOB, "subject": every.field("subject"), "body": "ok"}, page=every)
    assert reply.status == 303, reply
    ((_, got),) = with_subject(inst, BOB, "INBOX", f"Re: {subject}")
    assert got["In-Reply-To"] == "<orig-1@remote.test>"
    assert got["References"] == "<root-0@remote.test> <orig-1@remote.test>"
    forward = browser.get(f"/mail/compose?reply={original}&mode=forward")
    assert forward.field("subject") == f"Fwd: {subject}" and forward.field("to") == ""
    assert forward.field("source") == original and 'name="keep_0" checked' in forward.body
    assert "---------- Forwarded message ----------" in forward.body
    reply = post(browser, "/mail/compose/send",
                 {"to": BOB, "subject": f"Fwd: {subject}", "body": "see below",
                  "keep_0": "on"}, page=forward)
    assert reply.status == 303, reply
    ((_, fwd),) = with_subject(inst, BOB, "INBOX", f"Fwd: {subject}")
    assert attachment(fwd) == ("plan.pdf", b"PDF\x00data") and fwd["In-Reply-To"] is None
    assert browser.get(f"/mail/compose?reply={original}&mode=bogus").status == 400


def test_drafts_are_saved_replaced_reopened_and_sent(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"draft {uuid.uuid4().hex}"
    data = os.urandom(5000)
    reply = post(browser, "/mail/compose/draft",
                 {"to": BOB, "subject": subject, "body": "first version"},
                 [("notes.bin", data)])
    assert reply.status == 303
    location = reply.header("Location") or ""
    first = re.fullmatch(r"/mail/compose\?draft=(\d+/\d+)&done=draft", location)
    assert first, location
    page = browser.get(location)
    assert "The draft was saved." in page.body and page.field("draft") == first[1]
    assert page.field("to") == BOB and page.field("subject") == subject
    assert "first version" in page.body and "notes.bin" in page.body
    ((flags, saved),) = with_subject(inst, ALICE, "Drafts", subject)
    assert b"\\Draft" in flags and attachment(saved)[1] == data
    reply = post(browser, "/mail/compose/draft",
                 {"to": BOB, "subject": subject, "body": "second version", "keep_0": "on"},
                 page=page)
    second = re.fullmatch(r"/mail/compose\?draft=(\d+/\d+)&done=draft",
                          reply.header("Location") or "")
    assert second and second[1] != first[1]
    ((_, saved),) = with_subject(inst, ALICE, "Drafts", subject)  # the old version is gone
    assert "second version" in saved.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert browser.get(f"/mail/compose?draft={first[1]}").status == 404
    page = browser.get(f"/mail/compose?draft={second[1]}")
    reply = post(browser, "/mail/compose/send",
                 {"to": BOB, "subject": subject, "body": "final", "keep_0": "on"}, page=page)
    assert reply.status == 303, reply
    assert not with_subject(inst, ALICE, "Drafts", subject)
    ((_, got),) = with_subject(inst, BOB, "INBOX", subject)
    assert attachment(got) == ("notes.bin", data)
    assert with_subject(inst, ALICE, "Sent", subject)


def test_csrf_and_another_accounts_messages_are_refused(inst: Instance) -> None:
    subject = f"bob's {uuid.uuid4().hex}"
    bob = logged_in(inst, BOB)
    assert post(bob, "/mail/compose/draft", {"sender": BOB, "to": ALICE,
                                             "subject": subject}).status == 303
    theirs = ref(inst, BOB, "Drafts", subject)
    alice = logged_in(inst)
    for query in (f"reply={theirs}&mode=reply", f"reply={theirs}&mode=forward",
                  f"draft={theirs}", "reply=999999/1", "draft=x/1"):
        assert alice.get(f"/mail/compose?{query}").status == 404, query
    # a posted source or draft of another account's is not used: not attached, not removed
    page = alice.get("/mail/compose")
    body, kind = multipart({"csrf": page.field("csrf"), "sender": ALICE, "to": ALICE,
                            "subject": f"steal {subject}", "source": theirs,
                            "draft": theirs, "keep_0": "on"}, [])
    assert alice.request("POST", "/mail/compose/send", body=body,
                         headers={"Content-Type": kind}).status == 303
    ((_, got),) = with_subject(inst, ALICE, "INBOX", f"steal {subject}")
    assert not list(got.iter_attachments())
    assert with_subject(inst, BOB, "Drafts", subject)  # still there
    forged = post(alice, "/mail/compose/send", {"to": BOB, "subject": subject}, csrf=False)
    assert forged.status == 403 and "CSRF" in forged.body
    body, kind = multipart({"csrf": "x" * 43, "sender": ALICE, "to": BOB}, [])
    assert alice.request("POST", "/mail/compose/send", body=body,
                         headers={"Content-Type": kind}).status == 403
    assert Browser(inst).get("/mail/compose").header("Location") == "/login"


def test_oversized_upload_and_header_injection_are_refused(inst: Instance) -> None:
    browser = logged_in(inst)
    subject = f"big {uuid.uuid4().hex}"
    reply = post(browser, "/mail/compose/send", {"to": BOB, "subject": subject},
                 [("big.bin", os.urandom(LIMIT + 1))])
    assert reply.status == 413 and "too large" in reply.body
    assert not with_subject(inst, BOB, "INBOX", subject)
    inst.wait_log(r"reject ip=127\.0\.0\.1 code=413 reason=\"request body too large\" "
                  r"path=/mail/compose/send")
    for fields, error in (
            ({"to": BOB, "subject": f"{subject}\r\nBcc: evil@remote.test"},
             "Subject may not contain line breaks"),
            ({"to": f"{BOB}\r\nBcc: evil@remote.test", "subject": subject},
             "To may not contain line breaks"),
            ({"to": BOB, "cc": "evil@remote.test\nX-Injected: 1", "subject": subject},
             "Cc may not contain line breaks"),
            ({"to": "not an address", "subject": subject}, "To: &#39;not an address&#39; is "
             "not a valid address list"),
            ({"to": "", "subject": subject}, "Give at least one recipient")):
        reply = post(browser, "/mail/compose/send", fields)
        assert reply.status == 400 and error in reply.body, (fields, reply.body[-2000:])
    assert not queued(inst, subject) and not with_subject(inst, BOB, "INBOX", subject)
    assert not any(b"X-Injected" in data for _, data in inst.outbound())
