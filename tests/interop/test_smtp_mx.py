"""The MX listener driven over real sockets and real TLS by real clients (swaks, smtplib)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import uuid
from email.message import EmailMessage

import pytest

from tests.interop.conftest import Instance, require_tool


def marker() -> str:
    return uuid.uuid4().hex


def swaks(inst: Instance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("swaks", "swaks"), "--server", "127.0.0.1", "--port", str(inst.smtp_port),
         "--timeout", "20",
         *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


def tls_context(inst: Instance) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = True
    return ctx


class Raw:
    """A raw SMTP client over a socket, for what libraries will not send."""

    def __init__(self, inst: Instance) -> None:
        self.sock = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=10)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """Read one whole (possibly multi-line) reply."""
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line[3:4] == b" ":
                    out = b"\r\n".join(lines[: i + 1]) + b"\r\n"
                    self.buf = b"\r\n".join(lines[i + 1 :])
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


# -- happy paths --------------------------------------------------------------------------------


def test_swaks_plain(server: Instance) -> None:
    m = marker()
    r = swaks(server, "-f", "sender@remote.test", "-t", "alice@example.test",
              "--header", f"Subject: {m}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "250 2.0.0 Ok: queued as" in r.stdout
    msgs = [x for x in server.messages("alice@example.test") if m.encode() in x]
    assert len(msgs) == 1
    assert msgs[0].startswith(b"Return-Path: <sender@remote.test>\r\nReceived: from ")
    assert b"with ESMTP id" in msgs[0] and b"for <alice@example.test>" in msgs[0]


def test_swaks_starttls_pipelining(server: Instance) -> None:
    m = marker()
    r = swaks(server, "-f", "sender@remote.test", "-t", "bob@example.test", "--tls",
              "--pipeline", "--header", f"Subject: {m}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout
    (msg,) = [x for x in server.messages("bob@example.test") if m.encode() in x]
    assert b"with ESMTPS id" in msg
    assert b"(using TLSv1.3 with cipher TLS_" in msg


def test_swaks_tls_is_1_2_or_better(server: Instance) -> None:
    for proto in ("tlsv1", "tlsv1_1"):
        r = swaks(server, "-f", "a@remote.test", "-t", "alice@example.test", "--tls",
                  "--tls-protocol", proto)
        assert r.returncode != 0, f"{proto} accepted: {r.stdout}"


def test_smtplib_starttls_8bit_smtputf8(server: Instance) -> None:
    m = marker()
    msg = EmailMessage()
    msg["From"] = "jörg@exämple.remote"
    msg["To"] = "alice@example.test"
    msg["Subject"] = f"grüße {m}"
    msg.set_content("Größe: 8bit body ✓\n", cte="8bit")
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test") as c:
        c.starttls(context=_noverify())
        c.ehlo()
        assert c.has_extn("smtputf8") and c.has_extn("8bitmime")
        # smtplib adds SMTPUTF8 and BODY=8BITMIME itself for an internationalised message.
        refused = c.send_message(msg, "jörg@exämple.remote", ["alice@example.test"])
        assert refused == {}
    (stored,) = [x for x in server.messages("alice@example.test") if m.encode() in x]
    assert "Größe: 8bit body ✓".encode() in stored
    assert b"with UTF8SMTPS id" in stored


def _noverify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_certificate_verifies_for_hostname(server: Instance) -> None:
    with smtplib.SMTP("localhost", server.smtp_port) as c:
        c.starttls(context=tls_context(server))
        assert c.noop()[0] == 250


def test_alias_catch_all_and_postmaster(server: Instance) -> None:
    m = marker()
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as c:
        c.sendmail("x@remote.test", ["team@example.test"], f"Subject: {m}\r\n\r\nteam\r\n")
        c.sendmail("x@remote.test", ["anything@catchall.test"], f"Subject: {m}\r\n\r\nca\r\n")
        c.sendmail("x@remote.test", ["Postmaster"], f"Subject: {m}\r\n\r\npm\r\n")
        c.sendmail("x@remote.test", ["POSTMASTER@EXAMPLE.TEST"], f"Subject: {m}\r\n\r\npm2\r\n")
    assert sum(m.encode() in x for x in server.messages("alice@example.test")) == 1
    assert sum(m.encode() in x for x in server.messages("bob@example.test")) == 1
    assert sum(m.encode() in x for x in server.messages("carol@catchall.test")) == 1
    assert sum(m.encode() in x for x in server.messages("postmaster@example.test")) == 2


def test_one_message_many_recipients_shares_one_copy(server: Instance) -> None:
    m = marker()
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as c:
        c.sendmail("", ["alice@example.test", "bob@example.test", "ALICE@example.test"],
                   f"Subject: {m}\r\n\r\nshared\r\n")
    a = [x for x in server.messages("alice@example.test") if m.encode() in x]
    b = [x for x in server.messages("bob@example.test") if m.encode() in x]
    assert len(a) == 1 and a == b
    assert b"Return-Path: <>" in a[0] and b"\tfor <" not in a[0]


def test_bdat_over_the_wire(server: Instance) -> None:
    m = marker().encode()
    body = b"Subject: " + m + b"\r\n\r\nchunked\r\n"
    c = Raw(server)
    assert b"CHUNKING" in c.cmd(b"EHLO raw.test")
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
           b"BDAT " + str(len(body) - 5).encode() + b"\r\n" + body[:-5])
    assert c.reply().startswith(b"250 2.1.0")
    assert c.reply().startswith(b"250 2.1.5")
    assert c.reply().startswith(b"250 2.0.0")
    assert c.cmd(b"BDAT 5 LAST\r\n" + body[-5:]).startswith(b"250 2.0.0 Ok: queued")
    c.close()
    assert any(x.endswith(body) for x in server.messages("alice@example.test"))


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rcpt", "code"),
    [
        (b"<victim@remote.test>", b"554 5.7.1"),
        (b"<victim@REMOTE.TEST>", b"554 5.7.1"),
        (b"<victim@remote.test.>", b"501 5.1.3"),
        (b"<victim@[IPv6:::1]>", b"554 5.7.1"),
        (b"<@example.test,@remote.test:victim@remote.test>", b"554 5.7.1"),
        (b"<remote.test!victim@example.test>", b"550 5.1.1"),
        (b'<"victim%remote.test"@example.test>', b"550 5.1.1"),
        (b"<victim@remote.test@example.test>", b"501 5.1.3"),
        (b"<victim@example.test.remote.test>", b"554 5.7.1"),
        (b"<alice@[127.0.0.1]>", b"554 5.7.1"),
        (b"<@example.test:victim@remote.test>", b"554 5.7.1"),
        (b"<victim%remote.test@example.test>", b"550 5.1.1"),
        (b'<"victim@remote.test"@example.test>', b"550 5.1.1"),
        (b"<nobody@example.test>", b"550 5.1.1"),
        (b"<alice@EXAMPLE.TEST>", b"250 2.1.5"),
        (b'<"alice"@example.test>', b"250 2.1.5"),
    ],
)
def test_relay_and_unknown_users(server: Instance, rcpt: bytes, code: bytes) -> None:
    c = Raw(server)
    c.cmd(b"EHLO raw.test")
    c.cmd(b"MAIL FROM:<a@remote.test>")
    assert c.cmd(b"RCPT TO:" + rcpt).startswith(code)
    c.close()


def test_rejection_is_logged_with_ip_and_code(server: Instance) -> None:
    c = Raw(server)
    c.cmd(b"EHLO raw.test")
    c.cmd(b"MAIL FROM:<a@remote.test>")
    c.cmd(b"RCPT TO:<logged-nobody@example.test>")
    c.close()
    server.wait_log(r"reject ip=127\.0\.0\.1 cmd=RCPT code=550 5\.1\.1 reason=.*logged-nobody")


def test_smuggling_is_refused_over_the_wire(server: Instance) -> None:
    m = marker().encode()
    c = Raw(server)
    c.cmd(b"EHLO raw.test")
    c.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    for _ in range(3):
        c.reply()
    c.send(b"Subject: " + m + b"\r\n\r\nfirst\r\n\n.\n"
           b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
           b"Subject: smuggled " + m + b"\r\n\r\n.\r\n")
    assert c.reply().startswith(b"550 5.6.0")
    assert c.cmd(b"QUIT").startswith(b"221")
    c.close()
    assert not any(m in x for x in server.messages("alice@example.test"))
    assert not any(m in x for x in server.messages("bob@example.test"))


def test_starttls_pipelined_plaintext_discarded(server: Instance) -> None:
    c = Raw(server)
    c.cmd(b"EHLO raw.test")
    c.send(b"STARTTLS\r\nRSET\r\n")
    assert c.reply().startswith(b"220 2.0.0")
    tls = _noverify().wrap_socket(c.sock, server_hostname="localhost")
    tls.sendall(b"NOOP\r\n")
    # If "RSET" had survived, the first reply inside TLS would answer it; instead it's NOOP's.
    data = tls.recv(4096)
    assert data == b"250 2.0.0 Ok\r\n"
    tls.close()
    server.wait_log(r"discarded ip=127\.0\.0\.1 bytes=6")


def test_quota_full_account_refused(server: Instance) -> None:
    # 2880 bytes: fits the 3000-byte quota as sent; the trace headers push it over (grace).
    big = ("x" * 70 + "\r\n") * 40
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as c:
        c.ehlo()
        code, text = c.mail("a@remote.test", ["SIZE=5000"])
        assert code == 250
        code, text = c.rcpt("tiny@example.test")
        assert (code, text[:5]) == (552, b"5.2.2")
        c.rset()
        # First message fits the quota check (used 0 < 3000), and may overshoot it (grace).
        c.sendmail("a@remote.test", ["tiny@example.test"], f"Subject: q\r\n\r\n{big}\r\n")
        c.mail("a@remote.test")
        code, text = c.rcpt("tiny@example.test")
        assert (code, text[:5]) == (452, b"4.2.2")


def test_mail_loop_refused(server: Instance) -> None:
    hops = "".join(f"Received: from h{i} by h{i + 1}; x\r\n" for i in range(51))
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as c:
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@remote.test", ["alice@example.test"], hops + "Subject: loop\r\n\r\nx\r\n")
        assert e.value.smtp_code == 554 and e.value.smtp_error.startswith(b"5.4.6")


def test_message_too_big(server: Instance) -> None:
    c = Raw(server)
    ehlo = c.cmd(b"EHLO raw.test")
    assert b"250-SIZE 26214400" in ehlo
    assert c.cmd(b"MAIL FROM:<a@remote.test> SIZE=26214401").startswith(b"552 5.3.4")
    c.close()


def test_ehlo_reply_arrives_in_one_segment(server: Instance) -> None:
    sock = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10)
    sock.recv(1024)
    sock.sendall(b"EHLO one.test\r\n")
    data = sock.recv(65536)  # one recv: the whole multi-line reply was one write
    assert data.startswith(b"250-") and data.endswith(b"\r\n")
    assert b"\r\n250 " in data
    sock.close()
