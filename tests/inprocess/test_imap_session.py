"""postkeep.imap.session end to end through the real ImapServer in the harness: LOGIN and the
authenticated state's commands (CAPABILITY, LIST with special-use, CREATE, STATUS, APPEND,
GETQUOTAROOT), SELECT, FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE, the mailbox seeing mail the MX
delivers (NOOP), state errors and per-account isolation, with imaplib as the client."""

from __future__ import annotations

import contextlib
import imaplib
import re
from collections.abc import Iterator

import pytest

from tests.harness import Harness, unique

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: someone@example.test\r\n"
           b"Subject: %s\r\nMessage-ID: <%s@example.test>\r\n"
           b"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nBody text.\r\n")


def message(subject: str) -> bytes:
    return MESSAGE % (subject.encode(), unique("id").encode())


@pytest.fixture
def user(harness: Harness) -> str:
    return harness.new_user("example.test", quota=1_000_000)


@pytest.fixture
def imap(harness: Harness, user: str) -> Iterator[imaplib.IMAP4_SSL]:
    client = harness.imaps(user)
    yield client
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        client.logout()


def ok(result: tuple[str, list]) -> list:
    typ, data = result
    assert typ == "OK", data
    return data


def test_login_and_capabilities(harness: Harness, user: str) -> None:
    client = harness.imaps()
    assert "AUTH=PLAIN" in client.capabilities and "IMAP4REV2" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(user, "wrong password entirely")
    ok(client.login(user, "correct horse battery staple"))
    caps = ok(client.capability())[0].decode().split()
    assert {"IMAP4rev2", "SPECIAL-USE", "MOVE", "UIDPLUS", "QUOTA", "CONDSTORE"} <= set(caps)
    assert not any(c.startswith("AUTH=") for c in caps)  # not offered once logged in
    typ, _data = client.logout()
    assert typ == "BYE"


def test_plaintext_port_needs_starttls(harness: Harness, user: str) -> None:
    client = harness.imap_plain()
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        client.login(user, "correct horse battery staple")
    ok(client.starttls(ssl_context=harness.client_context()))
    ok(client.login(user, "correct horse battery staple"))
    client.logout()


def test_list_default_mailboxes_with_special_use(imap: imaplib.IMAP4_SSL) -> None:
    lines = [line.decode() for line in ok(imap.list('""', "*"))]
    found = {m.group(2): m.group(1) for line in lines
             if (m := re.fullmatch(r'\((.*)\) "/" "?([^"]*)"?', line))}
    assert set(found) == {"INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"}
    assert "\\Sent" in found["Sent"] and "\\Trash" in found["Trash"]
    assert "\\Sent" not in found["INBOX"]


def test_create_append_status_select_fetch(harness: Harness, imap: imaplib.IMAP4_SSL,
                                           user: str) -> None:
    box = unique("Box")
    ok(imap.create(box))
    first, second = message("first"), message("second")
    ok(imap.append(box, r"(\Flagged \Seen)", None, first))
    ok(imap.append(box, None, None, second))
    status = ok(imap.status(box, "(MESSAGES UNSEEN UIDNEXT)"))[0].decode()
    assert re.search(r"MESSAGES 2 UNSEEN 1 UIDNEXT 3", status), status
    data = ok(imap.select(box))
    assert data == [b"2"]
    assert imap.response("UNSEEN") == ("UNSEEN", [b"2"])  # the first unseen message
    fetched = ok(imap.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    meta = [part[0].decode() for part in fetched if isinstance(part, tuple)]
    headers = [part[1] for part in fetched if isinstance(part, tuple)]
    assert headers == [b"Subject: first\r\n\r\n", b"Subject: second\r\n\r\n"]
    assert "UID 1 " in meta[0] and "\\Flagged" in meta[0] and "\\Seen" in meta[0]
    assert "\\Seen" not in meta[1]
    assert f"RFC822.SIZE {len(first)}" in meta[0]
    body = ok(imap.uid("FETCH", "2", "(BODY.PEEK[])"))[0][1]
    assert body == second
    # and it is the store's copy: what the store holds for the account's mailbox
    assert harness.messages(user, box) == [first, second]


def test_store_search_copy_move_expunge(imap: imaplib.IMAP4_SSL) -> None:
    box, other = unique("Box"), unique("Other")
    ok(imap.create(box))
    ok(imap.create(other))
    for subject in ("alpha", "beta", "gamma"):
        ok(imap.append(box, None, None, message(subject)))
    ok(imap.select(box))
    ok(imap.store("2", "+FLAGS", r"(\Seen)"))
    assert ok(imap.search(None, "UNSEEN")) == [b"1 3"]
    assert ok(imap.search(None, "SUBJECT", "gamma")) == [b"3"]
    copied = ok(imap.copy("1", other))
    assert re.match(rb"\[COPYUID \d+ 1 1\]", copied[0]), copied  # UIDPLUS
    typ, data = imap.uid("MOVE", "3", other)
    assert typ == "OK", data
    ok(imap.store("1", "+FLAGS", r"(\Deleted)"))
    ok(imap.expunge())
    remaining = ok(imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert [p[1] for p in remaining if isinstance(p, tuple)] == [b"Subject: beta\r\n\r\n"]
    status = ok(imap.status(other, "(MESSAGES)"))[0].decode()
    assert "MESSAGES 2" in status


def test_mail_from_the_mx_appears_on_noop(harness: Harness, imap: imaplib.IMAP4_SSL,
                                          user: str) -> None:
    assert ok(imap.select("INBOX")) == [b"0"]
    imap.untagged_responses.pop("EXISTS", None)  # what SELECT said (imaplib keeps it)
    with harness.smtp() as mx:
        mx.sendmail("sender@remote.test", [user], message("over smtp"))
    typ, _data = imap.noop()
    assert typ == "OK"
    assert imap.untagged_responses.get("EXISTS") == [b"1"]
    fetched = b" ".join(p for p in ok(imap.fetch("1", "(ENVELOPE)")) if isinstance(p, bytes))
    assert b'"over smtp"' in fetched


def test_quota_root(imap: imaplib.IMAP4_SSL) -> None:
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK", data
    text = b" ".join(d for d in data[1] if isinstance(d, bytes)).decode()
    assert re.search(r"STORAGE \d+ 976", text), text  # 1,000,000 octets: 976 KiB


def test_state_errors_and_isolation(harness: Harness, imap: imaplib.IMAP4_SSL) -> None:
    with pytest.raises(imaplib.IMAP4.error):  # FETCH needs a selected mailbox
        imap.fetch("1", "(FLAGS)")
    typ, _ = imap.select(unique("Missing"))
    assert typ == "NO"
    private = unique("Private")
    ok(imap.create(private))
    other = harness.new_user("example.test")
    with harness.imaps(other) as second:
        assert second.select(private)[0] == "NO"  # another account's mailbox does not exist
        names = b" ".join(second.list('""', "*")[1])
        assert private.encode() not in names
