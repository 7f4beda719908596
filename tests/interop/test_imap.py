"""IMAP over the wire: Python's imaplib (STARTTLS and implicit TLS), raw sockets for bad input,
SMTP delivery seen by IMAP (IDLE included), and curl's imaps client."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance, require_tool

ALICE = "alice@example.test"
BOB = "bob@example.test"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("imap"))
    inst.cli(
        "user",
        "add",
        "quota@example.test",
        "--quota",
        "4000",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    inst.start()
    yield inst
    inst.stop()


def ctx() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def imaps(inst: Instance, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=ctx(), timeout=20)
    client.login(user, PASSWORD)
    return client


def deliver(inst: Instance, to: str, subject: str, body: str = "Hello there.\r\n") -> None:
    msg = (
        f"From: Sender <sender@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@remote.test>\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n{body}"
    )
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as smtp:
        smtp.sendmail("sender@remote.test", [to], msg.encode())


def fresh_box(client: imaplib.IMAP4, name: str | None = None) -> str:
    name = name or "T" + uuid.uuid4().hex[:8]
    assert client.create(name)[0] == "OK"
    return name


def append(
    client: imaplib.IMAP4, box: str, subject: str, flags: str = "", body: str = "Body text.\r\n"
) -> int:
    msg = (
        f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
        f"\r\n{body}"
    ).encode()
    typ, data = client.append(box, flags, None, msg)
    assert typ == "OK", data
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    assert m is not None, data
    return int(m.group(2))


class Raw:
    """A line-oriented raw IMAP client over (optionally) TLS."""

    def __init__(self, port: int, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock: socket.socket = ctx().wrap_socket(sock) if tls else sock
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def close(self) -> None:
        self.sock.close()


# -- connection, TLS, login ------------------------------------------------------------------------


def test_plaintext_port_requires_starttls(srv: Instance) -> None:
    raw = Raw(srv.imap_port)
    assert b"STARTTLS" in raw.greeting and b"LOGINDISABLED" in raw.greeting
    assert b"AUTH=" not in raw.greeting
    reply = raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    assert reply[-1].startswith(b"a1 NO [PRIVACYREQUIRED]")
    assert raw.cmd(b"a2", b"SELECT INBOX")[-1].startswith(b"a2 BAD")
    raw.close()


def test_starttls_then_login(srv: Instance) -> None:
    client = imaplib.IMAP4("127.0.0.1", srv.imap_port, timeout=20)
    client.starttls(ctx())
    caps = client.capability()[1][0]
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    assert b"IMAP4rev2" in client.capability()[1][0]
    client.logout()


@pytest.fixture(scope="module")
def plus_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("imap-plus"))
    inst.set_config("imap", sasl_mechanisms=["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256",
                                             "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"])
    inst.start()
    yield inst
    inst.stop()


def _plus_caps(port: int, starttls: bool, version: ssl.TLSVersion) -> tuple[
        imaplib.IMAP4, list[bytes]]:
    context = ctx()
    context.maximum_version = version
    client: imaplib.IMAP4
    if starttls:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
        client.starttls(context)
    else:
        client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=20)
    caps = client.capability()[1][0].split()
    return client, [c for c in caps if c.endswith(b"-PLUS")]


@pytest.mark.parametrize("starttls", [False, True])
def test_scram_plus_not_offered_by_default(srv: Instance, starttls: bool) -> None:
    """GNU SASL clients pick a -PLUS mechanism when offered and bind with tls-exporter (RFC 9266),
    which we cannot give, over TLS 1.2 and 1.3 alike: by default no -PLUS on either."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        client, plus = _plus_caps(srv.imaps_port if not starttls else srv.imap_port,
                                  starttls, version)
        assert plus == []
        client.logout()


@pytest.mark.parametrize("starttls", [False, True])
def test_scram_plus_offered_over_tls12_only(plus_srv: Instance, starttls: bool) -> None:
    """Listed in `imap.sasl_mechanisms`, -PLUS is offered over TLS 1.2 (tls-server-end-point).
    Over TLS 1.3 clients bind with tls-exporter (RFC 9266), which we cannot give: no -PLUS
    there, and AUTHENTICATE with one is refused like any unknown mechanism."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        port = plus_srv.imap_port if starttls else plus_srv.imaps_port
        client, plus = _plus_caps(port, starttls, version)
        if version is ssl.TLSVersion.TLSv1_2:
            assert plus == [b"AUTH=SCRAM-SHA-256-PLUS", b"AUTH=SCRAM-SHA-1-PLUS"]
        else:
            assert plus == []
            typ, data = client._simple_command("AUTHENTICATE", "SCRAM-SHA-256-PLUS", "=")
            assert (typ, data[-1][:8]) == ("NO", b"[CANNOT]")
        client.logout()


def test_starttls_discards_pipelined_plaintext(srv: Instance) -> None:
    raw = Raw(srv.imap_port)
    raw.send(b"a1 STARTTLS\r\na2 LOGIN x y\r\n")
    assert raw.line().startswith(b"a1 OK")
    tls = ctx().wrap_socket(raw.sock)
    tls.sendall(b"a3 NOOP\r\n")
    data = b""
    while b"a3 " not in data:
        data += tls.recv(4096)
    assert b"a2" not in data and b"a3 OK" in data
    tls.close()
    srv.wait_log(r"discarded ip=127\.0\.0\.1 bytes=\d+")


def test_wrong_password_and_lockout(srv: Instance) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", srv.imaps_port, ssl_context=ctx(), timeout=20)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "wrong password")
    srv.wait_log(r"auth failure ip=127\.0\.0\.1 user=alice@example\.test mechanism=LOGIN")
    raw = Raw(srv.imaps_port, tls=True)
    closed = False
    for i in range(6):
        try:
            raw.cmd(b"x%d" % i, b'LOGIN alice@example.test "bad"')
        except (EOFError, OSError):
            closed = True
            break
    assert closed or b"BYE" in raw.buf


def test_authenticate_plain_with_sasl_ir(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    reply = raw.cmd(b"a1", b"AUTHENTICATE PLAIN " + token)
    assert reply[-1].startswith(b"a1 OK [CAPABILITY")
    reply = raw.cmd(b"a2", b"AUTHENTICATE PLAIN")
    assert reply[-1].startswith(b"a2 BAD")
    raw.close()
    raw = Raw(srv.imaps_port, tls=True)
    raw.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(token + b"\r\n")
    assert raw.until(b"a1")[-1].startswith(b"a1 OK")
    raw.close()


def test_authenticate_cancel(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"*\r\n")
    assert raw.until(b"a1")[-1].startswith(b"a1 BAD")
    assert raw.cmd(b"a2", b"NOOP")[-1].startswith(b"a2 OK")
    raw.close()


# -- bad input -------------------------------------------------------------------------------------


def test_bad_input_gets_bad_and_connection_survives(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    assert raw.cmd(b"a1", b"FROBNICATE")[-1].startswith(b"a1 BAD")
    raw.send(b"\x00\xff garbage\r\n")
    assert raw.line().startswith(b"* BAD")
    raw.send(b"a2 NOOP " + b"x" * 20000 + b"\r\n")
    assert raw.line().startswith(b"a2 BAD")
    raw.send(b"a3 LOGIN {5000}\r\n")  # a literal bigger than allowed before login
    assert raw.line().startswith(b"a3 NO [TOOBIG]")
    assert raw.cmd(b"a4", b"NOOP")[-1].startswith(b"a4 OK")
    raw.close()


def test_rfc_maximal_id_before_login(srv: Instance) -> None:
    """RFC 2971 §3.3: up to 30 pairs, fields of 30 octets, values of 1024; nothing more."""
    raw = Raw(srv.imap_port)  # before STARTTLS even
    pairs = [((b"f%02d" % i).ljust(30, b"x"), (b"v%02d" % i).ljust(1024, b"y")) for i in range(30)]
    quoted = b" ".join(b'"%s" "%s"' % pair for pair in pairs)
    lines = raw.cmd(b"a1", b"ID (" + quoted + b")")
    assert lines[0].startswith(b'* ID ("name" "postkeep"') and lines[-1].startswith(b"a1 OK")
    literals = b" ".join(b"{30+}\r\n%s {1024+}\r\n%s" % pair for pair in pairs)
    lines = raw.cmd(b"a2", b"ID (" + literals + b")")
    assert lines[0].startswith(b"* ID ") and lines[-1].startswith(b"a2 OK")
    raw.send(b"a3 ID ({30}\r\n")  # synchronizing literals: a "+" for each
    for field, value in pairs:
        assert raw.line().startswith(b"+ ")
        raw.send(field + b" {1024}\r\n")
        assert raw.line().startswith(b"+ ")
        raw.send(value + (b")\r\n" if field == pairs[-1][0] else b" {30}\r\n"))
    assert raw.until(b"a3")[-1].startswith(b"a3 OK")
    # RFC 2971's own limits
    assert raw.cmd(b"a4", b"ID (" + quoted + b' "k" "v")')[-1] == (
        b"a4 BAD Too many ID fields (more than 30, RFC 2971 3.3)"
    )
    assert raw.cmd(b"a5", b'ID ("k" "' + b"v" * 1025 + b'")')[-1] == (
        b"a5 BAD ID value longer than 1024 octets (RFC 2971 3.3)"
    )
    assert raw.cmd(b"a6", b'ID ("' + b"k" * 31 + b'" "v")')[-1].startswith(
        b"a6 BAD ID field longer than 30 octets"
    )
    # the pre-auth bound: 32 KiB for an ID line, 8 KiB for any other
    filler = b"v" * (32768 - len(b'a7 ID ("k" "")\r\n') + 1)
    assert raw.cmd(b"a7", b'ID ("k" "' + filler + b'")') == [b"a7 BAD Line too long"]
    assert raw.cmd(b"a8", b"NOOP " + b"x" * 9000) == [b"a8 BAD Line too long"]
    assert raw.cmd(b"a9", b"NOOP")[-1].startswith(b"a9 OK")
    raw.close()


def test_bad_commands_after_login(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a0", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    assert raw.cmd(b"a1", b"FETCH 1 FLAGS")[-1].startswith(b"a1 BAD")  # nothing selected
    assert raw.cmd(b"a2", b"SELECT INBOX")[-1].startswith(b"a2 OK [READ-WRITE]")
    assert raw.cmd(b"a3", b"FETCH 99999 FLAGS")[-1].startswith(b"a3 BAD")
    assert raw.cmd(b"a4", b"STORE 1 +FLAGS (\\Bogus)")[-1].startswith(b"a4 BAD")
    assert raw.cmd(
        b"a5", b"SEARCH (((((((((((((((((((((((((((((((((((ALL)))))))))))))))))))))))))))))))))))"
    )[-1].startswith(b"a5 BAD")
    assert raw.cmd(b"a6", b"SELECT NoSuchBox")[-1].startswith(b"a6 NO [NONEXISTENT]")
    assert raw.cmd(b"a7", b"LOGOUT")[-1].startswith(b"a7 OK")
    raw.close()


# -- mailbox operations ----------------------------------------------------------------------------


def test_smtp_delivery_visible_and_fetch_items(srv: Instance) -> None:
    subject = "imap-" + uuid.uuid4().hex[:8]
    deliver(srv, BOB, subject, "Line one.\r\nLine two.\r\n")
    client = imaps(srv, BOB)
    typ, data = client.select("INBOX")
    assert typ == "OK"
    typ, found = client.search(None, "SUBJECT", subject)
    assert typ == "OK" and found[0]
    seq = found[0].split()[-1]
    typ, data = client.fetch(seq, "(FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)")
    head = data[0] if isinstance(data[0], bytes) else data[0][0]
    assert b"ENVELOPE" in head and subject.encode() in head
    assert b'("text" "plain" ("charset" "us-ascii")' in head.lower() or b"TEXT" in head.upper()
    assert b"\\Seen" not in head
    typ, data = client.fetch(seq, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1].strip() == f"Subject: {subject}".encode()
    typ, data = client.fetch(seq, "(BODY[TEXT])")
    assert data[0][1] == b"Line one.\r\nLine two.\r\n"
    typ, data = client.fetch(seq, "(FLAGS)")
    assert b"\\Seen" in data[0]
    typ, data = client.fetch(seq, "(BODY.PEEK[]<0.4>)")
    assert data[0][1] == b"Retu"  # Return-Path: is the first header of a delivered message
    client.logout()


def test_fetch_served_again_from_the_cache_is_the_same(srv: Instance) -> None:
    """The second FETCH of the same items in one session comes from the process's message
    cache (summaries, headers): the same octets as the first, which read the store; the
    message's other account (COPY makes a new message) and an expunge are seen as usual."""
    client = imaps(srv)
    box = fresh_box(client)
    for i in range(3):
        append(client, box, f"cached {i}", body=f"Body {i}.\r\n")
    client.select(box)
    items = (
        "(UID ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE RFC822.HEADER "
        "BODY.PEEK[HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER])"
    )
    first = client.fetch("1:3", items)
    text = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in first[1])
    assert first[0] == "OK" and text.count(b"Subject: cached 2") == 3  # three header items
    assert b'"cached 0"' in text and b'("text" "plain"' in text.lower()
    second = client.fetch("1:3", items)
    assert second == first
    assert client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1] == (
        b"Subject: cached 1\r\n\r\n"
    )
    client.store("2", "+FLAGS", "\\Deleted")
    client.expunge()
    typ, data = client.fetch("1:*", "(ENVELOPE)")
    assert typ == "OK" and len(data) == 2 and b"cached 1" not in b"".join(data)
    client.logout()


def test_flags_only_fetch_matches_the_general_path(srv: Instance) -> None:
    """FETCH of only UID/FLAGS/MODSEQ (a resync) takes a path of its own: its responses are
    those of the general path (here forced by an extra item, then cut out), keywords, \\Recent,
    MODSEQ and CHANGEDSINCE included."""
    client = imaps(srv)
    box = fresh_box(client)
    for i in range(6):
        append(client, box, f"flags {i}", flags="\\Seen $Label1" if i % 2 else "")
    client.select(box)
    client.store("2", "+FLAGS", "(\\Flagged custom)")
    client.store("3", "+FLAGS", "(\\Deleted)")

    def cut(data: list[bytes], item: bytes) -> list[bytes]:
        return [re.sub(rb" " + item + rb' (\d+|"[^"]*")', b"", d) for d in data]

    for items in ("(FLAGS)", "(UID FLAGS)", "(FLAGS UID MODSEQ FLAGS)"):
        typ, fast = client.fetch("1:*", items)
        assert typ == "OK" and len(fast) == 6
        typ, general = client.fetch("1:*", items[:-1] + " RFC822.SIZE)")
        assert fast == cut(general, b"RFC822.SIZE")
    assert b"\\Recent" in b"".join(fast) and b"custom" in b"".join(fast)
    typ, fast = client.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 1)")
    typ, general = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE) (CHANGEDSINCE 1)")
    assert typ == "OK" and b"MODSEQ" in fast[0] and fast == cut(general, b"INTERNALDATE")
    client.logout()


def test_flags_search_copy_move_expunge(srv: Instance) -> None:
    client = imaps(srv)
    box = fresh_box(client)
    other = fresh_box(client)
    uids = [append(client, box, f"msg {i}") for i in range(5)]
    assert uids == sorted(uids)
    client.select(box)
    typ, data = client.uid("STORE", f"{uids[1]}", "+FLAGS", "(\\Flagged $Important)")
    assert typ == "OK" and b"$Important" in data[0]
    assert client.uid("SEARCH", None, "FLAGGED")[1][0] == str(uids[1]).encode()
    assert client.search(None, "KEYWORD", "$important")[1][0] == b"2"
    assert client.search(None, "NOT", "FLAGGED")[1][0] == b"1 3 4 5"
    assert client.search(None, "OR", "SUBJECT", '"msg 0"', "SUBJECT", '"msg 4"')[1][0] == b"1 5"
    typ, data = client.uid("COPY", f"{uids[0]}:{uids[1]}", other)
    assert typ == "OK" and client.response("COPYUID")[1][0] is not None
    typ, data = client.uid("MOVE", f"{uids[2]}", other)
    assert typ == "OK"
    assert client.select(box)[1][0] == b"4"
    client.store("1", "+FLAGS", "\\Deleted")
    typ, data = client.expunge()
    assert typ == "OK" and data[0] == b"1"
    typ, data = client.status(other, "(MESSAGES UIDNEXT UNSEEN SIZE)")
    assert b"MESSAGES 3" in data[0] and b"UNSEEN 3" in data[0]
    client.select(other)
    typ, data = client.fetch("1:*", "(FLAGS)")
    assert b"\\Flagged" in data[1] and b"$Important" in data[1]
    client.logout()


def test_mailbox_management_and_list(srv: Instance) -> None:
    client = imaps(srv)
    base = "Proj" + uuid.uuid4().hex[:6]
    assert client.create(f"{base}/a/b")[0] == "OK"  # creates the superior names too
    _, data = client.list('""', f"{base}*")
    names = [line.decode() for line in data]
    assert any(n.endswith(f'"{base}"') and "\\HasChildren" in n for n in names)
    assert any(n.endswith(f'"{base}/a/b"') and "\\HasNoChildren" in n for n in names)
    assert client.create(base)[0] == "NO"
    assert client.delete(base)[0] == "NO"  # has children (as Dovecot)
    assert client.rename(f"{base}/a", f"{base}/z")[0] == "OK"
    _, data = client.list('""', f"{base}/%")
    assert [d.split(b'"/" ')[1] for d in data] == [f'"{base}/z"'.encode()]
    _, data = client.list('""', f"{base}/z/%")
    assert data[0].endswith(f'"{base}/z/b"'.encode())
    assert client.subscribe(f"{base}/z")[0] == "OK"
    _, data = client.lsub('""', f"{base}*")
    assert data == [f'() "/" "{base}/z"'.encode()]
    for name in (f"{base}/z/b", f"{base}/z", base):
        assert client.delete(name)[0] == "OK", name
    _typ, data = client.list('""', "*")
    assert b"\\Sent" in b" ".join(data) and b"\\Trash" in b" ".join(data)
    client.logout()


def test_international_mailbox_names(srv: Instance) -> None:
    client = imaps(srv)
    name = "Entw&APw-rfe"  # modified UTF-7 for "Entwürfe"
    assert client.create(name)[0] == "OK"
    _, data = client.list('""', "Entw*")
    assert data[0].endswith(b'"Entw&APw-rfe"')
    client._simple_command("ENABLE", "UTF8=ACCEPT")
    _typ, data = client.list('""', "Entw*")
    assert "Entwürfe".encode() in data[0]
    client.logout()


def test_append_limits_and_quota(srv: Instance) -> None:
    client = imaps(srv, "quota@example.test")
    typ, data = client.append("INBOX", "", None, b"Subject: x\r\n\r\n" + b"y" * 5000)
    assert typ == "NO" and b"OVERQUOTA" in data[0]
    typ, data = client.append("NoSuchBox", "", None, b"Subject: x\r\n\r\nsmall\r\n")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    append(client, "INBOX", "fits")
    typ, data = client.getquotaroot("INBOX")
    assert b'"" (STORAGE 1 3)' in data[1][0]
    client.logout()


def test_multiappend_is_all_or_nothing(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    box = "M" + uuid.uuid4().hex[:6]
    raw.cmd(b"a2", f"CREATE {box}".encode())
    one, two = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"
    raw.send(
        b"a3 APPEND %s (\\Seen) {%d+}\r\n%s (\\Flagged) {%d+}\r\n%s\r\n"
        % (box.encode(), len(one), one, len(two), two)
    )
    done = raw.until(b"a3")[-1]
    m = re.match(rb"a3 OK \[APPENDUID \d+ (\d+):(\d+)\]", done)
    assert m is not None and int(m.group(2)) == int(m.group(1)) + 1, done
    # a bad flag in the second message: refused before anything is stored
    raw.send(
        b"a4 APPEND %s {%d+}\r\n%s (\\Bogus) {%d+}\r\n%s\r\n"
        % (box.encode(), len(one), one, len(two), two)
    )
    assert raw.until(b"a4")[-1].startswith(b"a4 BAD")
    lines = raw.cmd(b"a5", f"STATUS {box} (MESSAGES)".encode())
    assert b"(MESSAGES 2)" in b"".join(lines)
    raw.close()


def test_two_sessions_see_consistent_state(srv: Instance) -> None:
    one, two = imaps(srv), imaps(srv)
    box = fresh_box(one)
    for i in range(3):
        append(one, box, f"shared {i}")
    one.select(box)
    two.select(box)
    one.store("2", "+FLAGS", "\\Seen")
    two.noop()
    assert any(b"\\Seen" in d for d in two.untagged_responses.get("FETCH", []))
    one.store("1", "+FLAGS", "\\Deleted")
    one.expunge()
    append(one, box, "shared 3")
    two.noop()
    assert two.untagged_responses.get("EXPUNGE") == [b"1"]
    assert two.untagged_responses.get("EXISTS")[-1] == b"3"
    two.untagged_responses.pop("FETCH", None)
    _typ, data = two.fetch("1:*", "(UID)")
    assert len(data) == 3
    one.logout()
    two.logout()


def test_idle_woken_by_smtp_delivery(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", b'LOGIN bob@example.test "' + PASSWORD.encode() + b'"')
    raw.cmd(b"a2", b"SELECT INBOX")
    raw.send(b"a3 IDLE\r\n")
    assert raw.line().startswith(b"+")
    subject = "idle-" + uuid.uuid4().hex[:6]
    thread = threading.Thread(target=deliver, args=(srv, BOB, subject))
    thread.start()
    # IDLE polls only as it starts: nothing but the delivery's event can send this line, and
    # without it the read ends in the socket's timeout
    line = raw.line()
    thread.join()
    assert re.fullmatch(rb"\* \d+ EXISTS", line), line
    raw.send(b"DONE\r\n")
    assert raw.until(b"a3")[-1] == b"a3 OK IDLE terminated"
    raw.close()


def test_condstore_and_qresync(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    box = "Q" + uuid.uuid4().hex[:6]
    raw.cmd(b"a2", f"CREATE {box}".encode())
    for i in range(3):
        msg = b"Subject: %d\r\n\r\nbody....\r\n" % i
        raw.send(b"a3 APPEND %s {%d}\r\n" % (box.encode(), len(msg)))
        assert raw.line().startswith(b"+")
        raw.send(msg + b"\r\n")
        assert raw.until(b"a3")[-1].startswith(b"a3 OK [APPENDUID")
    assert b"ENABLED QRESYNC" in b"".join(raw.cmd(b"a4", b"ENABLE QRESYNC"))
    lines = raw.cmd(b"a5", f"SELECT {box}".encode())
    validity = int(re.search(rb"UIDVALIDITY (\d+)", b"".join(lines)).group(1))
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"".join(lines)).group(1))
    lines = raw.cmd(b"a6", b"UID STORE 1 +FLAGS.SILENT (\\Answered)")
    raw.cmd(b"a7", b"STORE 2 +FLAGS (\\Deleted)")
    raw.cmd(b"a8", b"EXPUNGE")
    lines = raw.cmd(b"a9", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % modseq)
    joined = b"\n".join(lines)
    assert b"VANISHED (EARLIER) 2" in joined and b"\\Answered" in joined
    raw.cmd(b"b1", b"UNSELECT")
    lines = raw.cmd(b"b2", b"SELECT %s (QRESYNC (%d %d))" % (box.encode(), validity, modseq))
    joined = b"\n".join(lines)
    assert b"VANISHED (EARLIER) 2" in joined and b"MODSEQ" in joined
    lines = raw.cmd(b"b3", b"UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)")
    assert lines[-1].startswith(b"b3 OK [MODIFIED 1]")
    raw.close()


def test_esearch_sort_thread(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    box = "S" + uuid.uuid4().hex[:6]
    raw.cmd(b"a2", f"CREATE {box}".encode())
    for subject in ("b", "Re: a", "a", "c"):
        msg = f"Subject: {subject}\r\nFrom: x@example.test\r\n\r\nbody\r\n".encode()
        raw.send(b"a3 APPEND %s {%d+}\r\n" % (box.encode(), len(msg)) + msg + b"\r\n")
        raw.until(b"a3")
    raw.cmd(b"a4", f"SELECT {box}".encode())
    lines = raw.cmd(b"a5", b"SEARCH RETURN (MIN MAX COUNT) ALL")
    assert b'* ESEARCH (TAG "a5") MIN 1 MAX 4 COUNT 4' in lines
    assert b"* SORT 2 3 1 4" in raw.cmd(b"a6", b"SORT (SUBJECT) UTF-8 ALL")
    lines = raw.cmd(b"a7", b"THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert lines[0].startswith(b"* THREAD ")
    raw.close()


def test_compress_deflate(srv: Instance) -> None:
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    assert raw.cmd(b"a2", b"COMPRESS DEFLATE")[-1].startswith(b"a2 OK")
    deflate, inflate = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    raw.send(deflate.compress(b"a3 SELECT INBOX\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    text = b""
    while b"a3 OK" not in text:
        text += inflate.decompress(raw.sock.recv(65536))
    assert b"EXISTS" in text
    raw.close()


def test_curl_imaps(srv: Instance, tmp_path: Path) -> None:
    curl = require_tool("curl", "curl")
    subject = "curl-" + uuid.uuid4().hex[:6]
    deliver(srv, ALICE, subject)
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--insecure",
            "--user",
            f"{ALICE}:{PASSWORD}",
            f"imaps://127.0.0.1:{srv.imaps_port}/INBOX",
            "--request",
            f"SEARCH SUBJECT {subject}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    uid = result.stdout.split()[-1]
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--insecure",
            "--user",
            f"{ALICE}:{PASSWORD}",
            f"imaps://127.0.0.1:{srv.imaps_port}/INBOX;MAILINDEX={uid}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"Subject: {subject}" in result.stdout


def test_fail2ban_filter_matches_imap_auth_failures(srv: Instance) -> None:
    """The shipped fail2ban filter matches every IMAP login failure line, with the client IP."""
    fail2ban_regex = require_tool("fail2ban-regex", "fail2ban")
    client = imaplib.IMAP4_SSL("127.0.0.1", srv.imaps_port, ssl_context=ctx(), timeout=20)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("nobody@example.test", "wrong")
    srv.wait_log(r"auth failure ip=127\.0\.0\.1 user=nobody@example\.test")
    log = srv.log()
    # IMAP workers tag their lines: postkeep.imap[w1]: ...
    failures = len(re.findall(r"postkeep\.imap(?:\[w\d+\])?: auth failure ip=127\.0\.0\.1 ", log))
    assert failures > 0
    filt = Path(__file__).parents[2] / "contrib" / "fail2ban" / "filter.d" / "postkeep.conf"
    r = subprocess.run(
        [fail2ban_regex, str(srv.log_path), str(filt)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    found = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", r.stdout)
    assert found is not None and int(found.group(1)) == failures, r.stdout


def test_mbsync_two_way(srv: Instance, tmp_path: Path) -> None:
    """A real sync client: mbsync pulls a mailbox into a Maildir, then pushes back a new
    message, a flag change and a deletion made locally."""
    binary = require_tool("mbsync", "isync")
    user = "sync@example.test"
    srv.cli("user", "add", user, "--password-stdin", input=PASSWORD + "\n")
    for i in range(2):
        deliver(srv, user, f"sync {i}")
    local = tmp_path / "mail"
    local.mkdir()
    cfg = tmp_path / "mbsyncrc"
    cfg.write_text(
        f"IMAPAccount pk\nHost 127.0.0.1\nPort {srv.imaps_port}\nUser {user}\n"
        f'Pass "{PASSWORD}"\nSSLType IMAPS\nCertificateFile {srv.ca_file}\n'
        "SystemCertificates no\n\n"
        "IMAPStore remote\nAccount pk\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX Archive\n"
        "Create Both\nExpunge Both\nSyncState *\n"
    )

    def mbsync() -> None:
        r = subprocess.run([binary, "-c", str(cfg), "sync"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    mbsync()
    cur = sorted((local / "INBOX" / "cur").iterdir()) + sorted((local / "INBOX" / "new").iterdir())
    assert len(cur) == 2
    assert b"Subject: sync 0" in b"".join(p.read_bytes() for p in cur)
    # local changes: flag one message, delete (trash + expunge) the other, add a new one
    first, second = cur
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,FS"))
    second.rename(second.parent.parent / "cur" / (second.name.split(":2,")[0] + ":2,ST"))
    (local / "INBOX" / "new" / "1700000000.local.test").write_bytes(
        b"From: sync@example.test\r\nSubject: written offline\r\n\r\nhello\r\n"
    )
    mbsync()
    client = imaps(srv, user)
    client.select("INBOX")
    _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    text = b" ".join(part[0] + part[1] if isinstance(part, tuple) else part for part in data)
    assert text.count(b"Subject:") == 2, text
    assert b"written offline" in text and b"sync 1" not in text
    assert b"\\Flagged" in text
    client.logout()


def test_subscriptions_outlive_mailboxes_and_recent(srv: Instance) -> None:
    """RFC 9051 §6.3.7 / RFC 5258: a subscription survives DELETE (LIST \\NonExistent), LSUB
    shows unsubscribed parents as \\Noselect, CHILDINFO with RECURSIVEMATCH; \\Recent goes to
    the first session that selects the mailbox."""
    raw = Raw(srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    base = "Sub" + uuid.uuid4().hex[:6]
    raw.cmd(b"a2", f"CREATE {base}/child".encode())
    raw.cmd(b"a3", f"SUBSCRIBE {base}/child".encode())
    lines = raw.cmd(b"a4", f'LSUB "" {base}/%'.encode()) + raw.cmd(b"a5", b'LSUB "" %')
    assert f'* LSUB (\\Noselect) "/" "{base}"'.encode() in lines
    lines = raw.cmd(b"a6", f'LIST (SUBSCRIBED RECURSIVEMATCH) "" {base}'.encode())
    assert lines[0].endswith(f'"{base}" ("CHILDINFO" ("SUBSCRIBED"))'.encode()), lines
    assert raw.cmd(b"a7", b'LIST (RECURSIVEMATCH) "" *')[-1].startswith(b"a7 BAD")
    raw.cmd(b"a8", f"DELETE {base}/child".encode())
    lines = raw.cmd(b"a9", f'LIST (SUBSCRIBED) "" {base}/*'.encode())
    assert lines[0] == f'* LIST (\\NonExistent \\Subscribed) "/" "{base}/child"'.encode()
    for i in range(2):
        msg = b"Subject: r%d\r\n\r\nx\r\n" % i
        raw.send(b"b%d APPEND %s {%d+}\r\n" % (i, base.encode(), len(msg)) + msg + b"\r\n")
        raw.until(b"b%d" % i)
    assert b"* 2 RECENT" in raw.cmd(b"c1", f"SELECT {base}".encode())
    assert b"\\Recent" in b"".join(raw.cmd(b"c2", b"FETCH 1 FLAGS"))
    other = Raw(srv.imaps_port, tls=True)
    other.cmd(b"d1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    assert b"* 0 RECENT" in other.cmd(b"d2", f"SELECT {base}".encode())  # claimed by raw
    other.close()
    raw.close()


def test_login_timeout_bounds_the_whole_login_phase(fresh: Instance) -> None:
    """imap.login_timeout is the time from connect to logged in (issue 12): commands sent well
    within it each do not extend it, and past it the connection gets BYE and is closed."""
    fresh.set_config("imap", login_timeout=1.0)
    fresh.start()
    with socket.create_connection(("127.0.0.1", fresh.imap_port), timeout=20) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        for i in range(100):  # 20 s of NOOPs, a fifth of the timeout apart
            time.sleep(0.2)
            try:
                sock.sendall(b"a%d NOOP\r\n" % i)
            except OSError:
                break
            line = f.readline()
            if line != b"a%d OK NOOP completed\r\n" % i:
                break
        assert line == b"* BYE Login timeout\r\n", line
        assert f.readline() == b""
    assert i < 99
    fresh.wait_log(r'reject ip=127\.0\.0\.1 user=- reason="login timeout"')
    fresh.wait_log(r'disconnect ip=127\.0\.0\.1 tls=no user=- [^\n]*reason="login timeout"')
