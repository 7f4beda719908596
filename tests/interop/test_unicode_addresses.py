"""One address, one mailbox, whatever its Unicode form; no invisible addresses (issue 12).

Over the wire against a real `postkeep serve`: SMTP RCPT TO the NFD form of an NFC account reaches
that account's mailbox (read back over IMAP), IMAP LOGIN and AUTHENTICATE with the NFD form of the
username work, the submission sender checks take any form of the login's address (MAIL FROM and a
UTF-8 From: header, RFC 6532), and an RCPT with a zero-width space or a bidi override gets 553 5.1.3
and a log line.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
import unicodedata
import uuid
from collections.abc import Iterator

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_imap import Raw

NFC = "üser@example.test"
NFD = unicodedata.normalize("NFD", NFC)


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    instance = make_instance(tmp_path_factory.mktemp("unicode"))
    instance.cli("user", "add", NFC, "--password-stdin", input=PASSWORD + "\n")
    instance.start()
    yield instance
    instance.stop()


def _rcpt(inst: Instance, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as c:
        c.ehlo("client.test")
        assert c.mail("sender@remote.test", ["SMTPUTF8"])[0] == 250
        return c.rcpt(address)


def _login(inst: Instance, username: str) -> list[bytes]:
    raw = Raw(inst.imaps_port, tls=True)
    try:
        return raw.cmd(b"a1", b'LOGIN "' + username.encode() + b'" "' + PASSWORD.encode() + b'"')
    finally:
        raw.close()


def test_rcpt_to_the_nfd_form_reaches_the_nfc_mailbox(inst: Instance) -> None:
    marker = uuid.uuid4().hex
    message = (f"From: sender@remote.test\r\nTo: {NFD}\r\nSubject: {marker}\r\n\r\n"
               "hello\r\n").encode()
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as c:
        c.ehlo("client.test")
        assert c.mail("sender@remote.test", ["SMTPUTF8"])[0] == 250
        assert c.rcpt(NFD)[0] == 250
        assert c.data(message)[0] == 250
    raw = Raw(inst.imaps_port, tls=True)
    try:
        assert raw.cmd(b"a1", f'LOGIN "{NFC}" "{PASSWORD}"'.encode())[-1].startswith(b"a1 OK")
        assert raw.cmd(b"a2", b"SELECT INBOX")[-1].startswith(b"a2 OK")
        found = raw.cmd(b"a3", f'SEARCH SUBJECT "{marker}"'.encode())
        assert found[0].startswith(b"* SEARCH ") and len(found[0].split()) == 3, found
    finally:
        raw.close()
    assert [a for a in inst.cli("user", "list").stdout.splitlines() if "ser@" in a] == [
        f"{NFC}\tused={len(inst.messages(NFC)[0])}\tquota=unlimited"
    ]


def test_imap_login_and_authenticate_with_the_nfd_username(inst: Instance) -> None:
    assert _login(inst, NFD)[-1].startswith(b"a1 OK"), "LOGIN with the NFD username"
    raw = Raw(inst.imaps_port, tls=True)
    try:  # SASL PLAIN: authzid in NFC, authcid in NFD: the same identity
        plain = base64.b64encode(f"{NFC}\0{NFD}\0{PASSWORD}".encode())
        assert raw.cmd(b"a1", b"AUTHENTICATE PLAIN " + plain)[-1].startswith(b"a1 OK")
    finally:
        raw.close()


def test_submission_sender_in_any_form_is_the_login(inst: Instance) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    markers = [uuid.uuid4().hex, uuid.uuid4().hex]
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20) as c:
        c.starttls(context=context)
        c.ehlo("client.test")
        plain = base64.b64encode(f"\0{NFC}\0{PASSWORD}".encode()).decode()
        assert c.docmd("AUTH", f"PLAIN {plain}")[0] == 235
        for sender, marker in zip((NFC, NFD), markers, strict=True):
            assert c.mail(sender, ["SMTPUTF8"])[0] == 250, sender.encode()
            assert c.rcpt("alice@example.test")[0] == 250
            message = (f"From: Üser <{sender}>\r\nTo: alice@example.test\r\n"
                       f"Subject: {marker}\r\n\r\nhello\r\n").encode()
            code, text = c.data(message)
            assert code == 250, text
    stored = inst.messages("alice@example.test")
    assert all(any(m.encode() in x for x in stored) for m in markers)


@pytest.mark.parametrize("invisible", ["\u200b", "\u202e"], ids=["zwsp", "rlo"])
def test_rcpt_with_an_invisible_character_is_refused(inst: Instance, invisible: str) -> None:
    for address in (f"b{invisible}ob@example.test", f"b{invisible}ob@remote.test"):
        code, text = _rcpt(inst, address)
        assert (code, text.split()[0]) == (553, b"5.1.3"), (address, code, text)
        assert b"invisible or control character" in text
    name = {"\u200b": "ZERO WIDTH SPACE", "\u202e": "RIGHT-TO-LEFT OVERRIDE"}[invisible]
    inst.wait_log(rf"reject ip=127\.0\.0\.1 cmd=RCPT code=553 5\.1\.3 reason=.*U\+"
                  rf"{ord(invisible):04X} {name}")


@pytest.mark.parametrize("invisible", ["\u200b", "\u202e"], ids=["zwsp", "rlo"])
def test_mail_from_with_an_invisible_character_is_refused(inst: Instance, invisible: str) -> None:
    """A sender that only looks like another (zero-width space, bidi override) is refused at
    MAIL FROM on the MX, 553 5.1.7, and the session goes on."""
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as c:
        c.ehlo("client.test")
        code, text = c.mail(f"pay{invisible}pal@remote.test", ["SMTPUTF8"])
        assert (code, text.split()[0]) == (553, b"5.1.7"), (code, text)
        assert b"invisible or control character" in text
        assert c.mail("sender@remote.test", ["SMTPUTF8"])[0] == 250
    inst.wait_log(rf"reject ip=127\.0\.0\.1 cmd=MAIL code=553 5\.1\.7 reason=.*U\+"
                  rf"{ord(invisible):04X} ")
