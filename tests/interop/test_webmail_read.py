"""The webmail's read side over the wire (`postkeep.web.mail`), on a real `postkeep serve`:
HTTPS with the instance's own certificate (`tests/interop/web_client.py`), mail put in by
IMAP APPEND (imaplib over implicit TLS), and read back by IMAP for what reading changes.

Covered: the sidebar (special-use order, unread counts, quota), the list (paging 50 a page,
each sort both ways, search by FROM/SUBJECT/TEXT, RFC 5256 threads), the reading view
(header fields RFC 2047 decoded, plain text escaped), the HTML frame (the sanitiser strips
script, handlers and javascript: links, drops remote images unless asked, embeds cid:
images; the frame's own CSP), attachment downloads (RFC 6266 filename*, nosniff, HTML
served as octets), \\Seen set by reading as IMAP sees it, one account never reaching
another's mailbox, message, frame or part by id (404 as a missing id, logged), malformed MIME
and a 6 MB message read without harm.
"""

from __future__ import annotations

import imaplib
import re
import ssl
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.web_client import Browser, Reply

ALICE = "alice@example.test"
BOB = "bob@example.test"
QUOTA_USER = "dave@example.test"
BULK = 120


def imap(inst: Instance, user: str) -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False
    conn = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx, timeout=60)
    conn.login(user, PASSWORD)
    return conn


def message(subject: str, body: str = "Hello.\r\n", *, sender: str = "Carol <carol@example.org>",
            extra: str = "", date: str = "Mon, 01 Jun 2026 10:00:00 +0000",
            msgid: str = "") -> bytes:
    msgid = msgid or f"{subject.replace(' ', '.')}@example.org"
    return (f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{msgid}>\r\n{extra}\r\n{body}").encode()


HTML = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>\r\nTo: alice@example.test\r\n"
    b"Cc: Dora <dora@example.org>\r\nSubject: =?utf-8?b?SFRNTCDinJM=?= newsletter\r\n"
    b"Date: Tue, 02 Jun 2026 09:30:00 +0200\r\nMessage-ID: <html1@example.org>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"--outer\r\nContent-Type: multipart/related; boundary=rel\r\n\r\n"
    b"--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><style>body{color:red}</style><script>parent.stolen=1</script></head>"
    b"<body><p onclick=\"alert(1)\" style=\"color:blue\">Hello <b>reader</b></p>"
    b"<a href=\"javascript:alert(2)\">bad link</a> <a href=\"https://example.org/x\">good link</a>"
    b"<img src=\"https://tracker.example.net/pixel.gif\" onerror=\"alert(3)\">"
    b"<img src=\"cid:logo@example.org\" alt=\"logo\"><iframe src=\"https://x.test/\"></iframe>"
    b"<form action=\"https://x.test/\"><input name=q></form></body></html>\r\n"
    b"--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@example.org>\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--rel--\r\n"
    b"--outer\r\nContent-Type: text/html; name=evil.html\r\n"
    b"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.html\r\n\r\n"
    b"<script>alert('from an attachment')</script>\r\n"
    b"--outer\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n"
    b"Content-Disposition: attachment; filename=\"notes.txt\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nc29tZSBub3Rlcw==\r\n--outer--\r\n"
)
MALFORMED = [
    b"Subject: no boundary\r\nContent-Type: multipart/mixed\r\n\r\nbody without parts\r\n",
    b"Subject: unclosed\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n",
    b"Subject: =?bogus?q?broken?= \xff\xfe\r\nFrom: <<<>>>\r\nDate: yesterday\r\n"
    b"Content-Type: text/html; charset=nonsense\r\n\r\n<p>\xff\xfe</p><scr<script>ipt>",
    b"no header at all, just text",
]


def append(conn: imaplib.IMAP4_SSL, data: bytes, mailbox: str = "INBOX",
           flags: str = "") -> int:
    typ, answer = conn.append(mailbox, flags or None, None, data)  # type: ignore[arg-type]
    assert typ == "OK", answer
    m = re.search(rb"APPENDUID \d+ (\d+)", answer[0] or b"")
    assert m is not None, answer
    return int(m[1])


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("webmail"))
    inst.cli("user", "add", QUOTA_USER, "--quota", "50000000", "--password-stdin",
             input=PASSWORD + "\n")
    inst.start()
    conn = imap(inst, ALICE)
    try:
        for i in range(BULK):
            append(conn, message(f"Bulk {i:03d}", f"Body of bulk message {i}.\r\n",
                                 sender=f"Sender{i % 7} <s{i % 7}@example.org>",
                                 date=f"Mon, 01 Jun 2026 {i // 60:02d}:{i % 60:02d}:00 +0000"),
                   flags="\\Seen")
        append(conn, message("Thread root", msgid="root@t"), flags="\\Seen")
        append(conn, message("Re: Thread root", msgid="r1@t",
                             extra="In-Reply-To: <root@t>\r\nReferences: <root@t>\r\n"),
               flags="\\Seen")
        append(conn, message("Plain hello", "Hi <b>not bold</b> & <script>x</script>\r\n"
                             "Second line needle-word.\r\n"))
        append(conn, HTML)
        for data in MALFORMED:
            append(conn, data)
        append(conn, message("Huge one", ("A" * 1000 + "\r\n") * 6000 + "tail-word\r\n"))
        append(conn, message("In the archive"), mailbox="Archive")
    finally:
        conn.logout()
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def alice(inst: Instance) -> Browser:
    browser = Browser(inst)
    assert browser.login(ALICE, PASSWORD).status == 303
    return browser


def inbox_path(browser: Browser) -> str:
    reply = browser.get("/mail")
    assert reply.status == 303, reply
    location = reply.header("Location")
    assert location is not None and re.fullmatch(r"/mail/m/\d+", location)
    return location


def subjects(reply: Reply) -> list[str]:
    return re.findall(r'<span class="subject">([^<]*)</span>', reply.body)


def uid_of(browser: Browser, subject: str) -> str:
    page = browser.get(inbox_path(browser) + "?q=" + urllib.parse.quote(f'subject:"{subject}"'))
    m = re.search(r'data-uid="(\d+)"[^>]*>\s*<input type="checkbox" name="uid" value="\d+"'
                  r'[^>]*>\s*<a href="[^"]+"[^>]*>\s*<span class="from">[^<]*</span>\s*'
                  rf'<span class="subject">{re.escape(subject)}</span>', page.body)
    assert m is not None, page.body[-3000:]
    return m[1]


def test_layout_sidebar_and_first_page(inst: Instance, alice: Browser) -> None:
    path = inbox_path(alice)
    page = alice.get(path)
    assert page.status == 200 and page.header("Cache-Control") == "no-store"
    names = re.findall(r'data-mailbox="\d+">([^<]+)</a>', page.body)
    assert names == ["Inbox", "Drafts", "Sent", "Archive", "Junk", "Trash"]
    unread = re.search(r'>Inbox</a>\s*<span class="unseen[^"]*" data-unseen="\d+"'
                       r'[^>]*>(\d+)</span>',
                       page.body)
    assert unread is not None and int(unread[1]) == 3 + len(MALFORMED)
    assert re.search(r'<p class="quota">[\d.]+ MB used</p>', page.body), page.body[:3000]
    dave = Browser(inst)
    assert dave.login(QUOTA_USER, PASSWORD).status == 303
    assert '<p class="quota">0 B used of 47.7 MB</p>' in dave.get(inbox_path(dave)).body
    assert 'href="/mail/compose"' in page.body
    assert 'action="/mail/actions"' in page.body
    rows = subjects(page)
    assert len(rows) == 50 and rows[0] == "Huge one"
    assert len(re.findall(r'<input type="checkbox" name="uid" value="\d+"', page.body)) == 50
    assert "<script>" not in page.body and " style=" not in page.body
    assert 'href="/static/mail.css"' in page.body
    css = alice.get("/static/mail.css")
    assert css.status == 200 and "@media (max-width: 700px)" in css.body


def test_paging_and_sorting(alice: Browser) -> None:
    path = inbox_path(alice)
    total = BULK + 4 + len(MALFORMED) + 1
    pages = [subjects(alice.get(f"{path}?page={n}")) for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [50, 50, total - 100]
    assert pages[2][-1] == "Bulk 000"  # arrival order, newest first: the first append last
    assert len({s for p in pages for s in p}) == total
    oldest = subjects(alice.get(f"{path}?rev=1"))
    assert oldest[:2] == ["Bulk 000", "Bulk 001"]
    by_subject = subjects(alice.get(f"{path}?sort=subject"))
    assert by_subject[:3] == ["(no subject)", "broken ÿþ", "Bulk 000"]  # case ignored
    reverse = subjects(alice.get(f"{path}?sort=subject&rev=1"))
    assert reverse[:3] == ["unclosed", "Re: Thread root", "Thread root"]  # base subject
    by_size = alice.get(f"{path}?sort=size")
    assert subjects(by_size)[0] == "Huge one"
    by_date = subjects(alice.get(f"{path}?sort=date&rev=1"))
    assert by_date[0] in ("Bulk 000", "Plain hello", "Thread root", "Re: Thread root")
    by_from = alice.get(f"{path}?sort=from")
    senders = re.findall(r'<span class="from">([^<]*)</span>', by_from.body)
    assert senders == sorted(senders, key=str.upper)
    assert alice.get(f"{path}?page=999").status == 200  # past the end: an empty page
    assert alice.get(f"{path}?sort=bogus&page=-3").status == 200  # ignored, not an error


def test_search_from_subject_text(inst: Instance, alice: Browser) -> None:
    path = inbox_path(alice)
    by_from = alice.get(f"{path}?q=from:s3@example.org")
    found = subjects(by_from)
    assert found and all(int(s.split()[1]) % 7 == 3 for s in found)
    assert len(found) == len([i for i in range(BULK) if i % 7 == 3])
    assert subjects(alice.get(f"{path}?q=subject:%22Bulk%20042%22")) == ["Bulk 042"]
    assert subjects(alice.get(f"{path}?q=needle-word")) == ["Plain hello"]
    assert subjects(alice.get(f"{path}?q=tail-word")) == ["Huge one"]  # scanned, 6 MB
    assert subjects(alice.get(f"{path}?q=J%C3%BCrgen")) == ["HTML ✓ newsletter"]  # decoded
    assert subjects(alice.get(f"{path}?q=nothing-matches-this")) == []
    assert "No message matches" in alice.get(f"{path}?q=nothing-matches-this").body
    # paging through the hits of a search
    bulk = [subjects(alice.get(f"{path}?q=subject:Bulk&page={n}")) for n in (1, 2, 3)]
    assert [len(p) for p in bulk] == [50, 50, 20]
    refused = alice.get(f"{path}?q=" + "x" * 300)
    assert refused.status == 400 and "Search refused" in refused.body
    inst.wait_log(r"reject ip=127\.0\.0\.1 user=alice@example\.test code=400 "
                  r'reason="bad search: a search is at most 200 characters"')


def test_threads(alice: Browser) -> None:
    page = alice.get(inbox_path(alice) + "?threads=1")
    assert page.status == 200
    m = re.search(r'class="msg d0" data-uid="\d+">.*?<span class="subject">Thread root</span>'
                  r'.*?class="msg d1" data-uid="\d+">.*?<span class="subject">Re: Thread root'
                  r"</span>", page.body, re.S)
    assert m is not None, page.body


def test_plain_message_and_seen_over_imap(inst: Instance, alice: Browser) -> None:
    uid = uid_of(alice, "Plain hello")
    box = inbox_path(alice)
    conn = imap(inst, ALICE)
    try:
        conn.select("INBOX")
        _typ, before = conn.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" not in before[0]
        page = alice.get(f"{box}/{uid}")
        assert page.status == 200
        assert "Hi &lt;b&gt;not bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in page.body
        assert '<dd class="from">Carol &lt;carol@example.org&gt;</dd>' in page.body
        assert '<dd class="date">2026-06-01 10:00 UTC</dd>' in page.body
        assert "<iframe" not in page.body
        conn.noop()
        _typ, after = conn.uid("FETCH", uid, "(FLAGS)")
        assert b"\\Seen" in after[0]
    finally:
        conn.logout()
    listing = alice.get(box)
    assert re.search(rf'class="msg d0" data-uid="{uid}"', listing.body)  # no longer unread


def test_html_message_frame_and_sanitiser(alice: Browser) -> None:
    uid = uid_of(alice, "HTML ✓ newsletter")
    base = f"{inbox_path(alice)}/{uid}"
    page = alice.get(base)
    assert '<dd class="from">Jürgen &lt;juergen@example.org&gt;</dd>' in page.body
    assert '<dd class="cc">Dora &lt;dora@example.org&gt;</dd>' in page.body
    assert '<h1 class="subject">HTML ✓ newsletter</h1>' in page.body
    assert (f'<iframe class="body-frame" sandbox="allow-popups allow-popups-to-escape-sandbox" '
            f'src="{base}/body"') in page.body
    assert "stolen" not in page.body
    assert f'<a href="{base}/part/2" download>résumé.html</a>' in page.body
    assert f'<a href="{base}/part/3" download>notes.txt</a>' in page.body
    frame = alice.get(f"{base}/body")
    assert frame.status == 200 and frame.header("Content-Type", ) == "text/html; charset=utf-8"
    assert frame.header("Content-Security-Policy") == (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
        "base-uri 'none'; form-action 'none'; sandbox allow-popups "
        "allow-popups-to-escape-sandbox")
    assert frame.header("X-Frame-Options") == "SAMEORIGIN"
    body = frame.body
    assert "<script" not in body and "stolen" not in body and "onclick" not in body
    assert "onerror" not in body and "javascript:" not in body and "<iframe" not in body
    assert "<form" not in body and "color:red" not in body
    assert '<p style="color:blue">Hello <b>reader</b></p>' in body
    assert ('<a href="https://example.org/x" target="_blank" rel="noopener noreferrer">'
            "good link</a>") in body
    assert "tracker.example.net" not in body  # remote image dropped
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="logo">' in body
    shown = alice.get(f"{base}/body?images=1")
    assert "img-src data: https:;" in (shown.header("Content-Security-Policy") or "")
    assert '<img src="https://tracker.example.net/pixel.gif">' in shown.body
    assert "onerror" not in shown.body
    assert 'src="' + base + '/body?images=1"' in alice.get(f"{base}?images=1").body
    # a message without an HTML part has no frame
    plain_uid = uid_of(alice, "Plain hello")
    assert alice.get(f"{inbox_path(alice)}/{plain_uid}/body").status == 404


def test_attachment_downloads(alice: Browser) -> None:
    uid = uid_of(alice, "HTML ✓ newsletter")
    base = f"{inbox_path(alice)}/{uid}"
    html = alice.get(f"{base}/part/2")
    assert html.status == 200
    assert html.header("Content-Type") == "application/octet-stream"  # never rendered
    assert html.header("Content-Disposition") == (
        "attachment; filename=\"r_sum_.html\"; filename*=UTF-8''r%C3%A9sum%C3%A9.html")
    assert html.header("X-Content-Type-Options") == "nosniff"
    assert html.body == "<script>alert('from an attachment')</script>"
    notes = alice.get(f"{base}/part/3")
    assert notes.header("Content-Type") == "text/plain"
    assert notes.body == "some notes"  # base64 undone
    assert alice.get(f"{base}/part/9").status == 404
    assert alice.get(f"{base}/part/1.1.1.1").status == 404


def test_malformed_and_huge_messages(alice: Browser) -> None:
    box = inbox_path(alice)
    listing = alice.get(box)
    for n, row in enumerate(re.findall(r'data-uid="(\d+)"', listing.body)[:12]):
        page = alice.get(f"{box}/{row}")
        assert page.status == 200, (n, page.body)
        assert alice.get(f"{box}/{row}/body").status in (200, 404)
    huge = alice.get(f"{box}/{uid_of(alice, 'Huge one')}")
    assert huge.status == 200 and "only its beginning is shown" in huge.body
    assert len(huge.body) < 1_200_000 and "tail-word" not in huge.body


def test_one_account_cannot_read_anothers_mail(inst: Instance, alice: Browser) -> None:
    uid = uid_of(alice, "HTML ✓ newsletter")
    box = inbox_path(alice)
    bob = Browser(inst)
    assert bob.login(BOB, PASSWORD).status == 303
    bob_box = inbox_path(bob)
    assert bob_box != box
    for path in (box, f"{box}/{uid}", f"{box}/{uid}/body", f"{box}/{uid}/part/2",
                 f"{box}?q=Bulk", f"{box}?threads=1", f"{box}?sort=subject"):
        reply = bob.get(path)
        assert reply.status == 404, path
        assert reply.body == "No such mailbox.\n"
        assert alice.get(path).status == 200, path
    # a mailbox that does not exist answers the same
    assert bob.get("/mail/m/999999").body == "No such mailbox.\n"
    assert bob.get(f"{bob_box}/{uid}").status == 404  # alice's UID in bob's own inbox
    inst.wait_log(r"reject ip=127\.0\.0\.1 user=bob@example\.test code=404 "
                  r'reason="no such mailbox" path=')
    # nor without a session at all
    stranger = Browser(inst)
    reply = stranger.get(f"{box}/{uid}/part/2")
    assert reply.status == 303 and reply.header("Location") == "/login"
