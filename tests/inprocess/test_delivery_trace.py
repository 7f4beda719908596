"""postkeep.delivery.trace: the Return-Path and Received headers (RFC 5321 §4.4) the servers
put on each message, read back from the store: client and server names, the TLS details, the
"with" protocol names of RFC 3848 and RFC 6531 §3.7.3, the queue id, `for` with a single
recipient, the date; then the header functions directly."""

from __future__ import annotations

import re
import ssl
import time
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from postkeep.delivery import trace
from postkeep.delivery.trace import TlsInfo, protocol_name, received_header, return_path_header
from tests.harness import HOSTNAME, Harness, SmtpClient, codes, queue_id
from tests.inprocess.conftest import ALICE, BOB, TEAM

BODY = b"Subject: trace\r\n\r\nHello.\r\n"


def trace_of(stored: bytes) -> tuple[str, list[str]]:
    """(the Return-Path line, the lines of the first Received field), CRLFs removed."""
    text = stored.decode()
    return_path, _, rest = text.partition("\r\n")
    lines = [rest.split("\r\n")[0]]
    for line in rest.split("\r\n")[1:]:
        if not line.startswith("\t"):
            break
        lines.append(line)
    return return_path, lines


def check_date(last_line: str, before: float, after: float) -> str:
    """The date after the `;` of the Received field: RFC 5322, the time of receipt."""
    head, _, date = last_line.rpartition("; ")
    when = parsedate_to_datetime(date)
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # UTC
    assert int(before) <= when.timestamp() <= after
    assert date == format_datetime(when)
    return head


def transaction(c: SmtpClient, to: list[str], sender: str = "sender@remote.test",
                params: str = "", data: bytes = BODY) -> str:
    """MAIL, RCPTs, DATA and the message on a raw session: the queue id."""
    out = c.feed(f"MAIL FROM:<{sender}>{params}\r\n".encode(), 1)
    assert codes(out) == ["250"], out
    for address in to:
        assert codes(c.feed(f"RCPT TO:<{address}>\r\n".encode(), 1)) == ["250"]
    assert codes(c.feed(b"DATA\r\n", 1)) == ["354"]
    out = c.feed(data + b".\r\n", 1)
    assert codes(out) == ["250"], out
    return queue_id(out)


def test_plain_esmtp_single_recipient(harness: Harness) -> None:
    with harness.smtp() as client:
        before = time.time()
        client.ehlo()
        client.mail("Sender@Remote.test")
        client.rcpt(ALICE)
        code, reply = client.data(BODY)
        after = time.time()
    assert code == 250
    qid = queue_id(reply)
    stored = harness.message(ALICE, qid)
    return_path, received = trace_of(stored)
    assert return_path == "Return-Path: <Sender@Remote.test>"
    assert received[:2] == [
        "Received: from client.example.net ([127.0.0.1])",
        f"\tby {HOSTNAME} (postkeep) with ESMTP id {qid}",
    ]
    assert check_date(received[2], before, after) == f"\tfor <{ALICE}>"
    assert len(received) == 3
    assert stored.endswith(b"\r\n" + BODY)


def test_helo_is_smtp_and_several_recipients_have_no_for(harness: Harness) -> None:
    with harness.raw() as c:
        c.feed(b"HELO old.client.test\r\n", 1)
        before = time.time()
        qid = transaction(c, [ALICE, BOB])
        after = time.time()
        c.quit()
    for address in (ALICE, BOB):
        _rp, received = trace_of(harness.message(address, qid))
        assert received[0] == "Received: from old.client.test ([127.0.0.1])"
        head = check_date(received[1], before, after)
        assert head == f"\tby {HOSTNAME} (postkeep) with SMTP id {qid}"
        assert len(received) == 2  # no "for": the message went to more than one recipient


def test_an_alias_is_one_recipient(harness: Harness) -> None:
    """`for` names the envelope recipient, the alias, not the accounts it expands to."""
    with harness.raw() as c:
        c.feed(b"EHLO c.test\r\n", 1)
        qid = transaction(c, [TEAM])
        c.quit()
    _rp, received = trace_of(harness.message(BOB, qid))
    assert received[2].startswith(f"\tfor <{TEAM}>; ")


def test_null_sender_and_helo_sanitised(harness: Harness) -> None:
    with harness.raw() as c:
        c.feed(b"EHLO evil(name)[x];y\\z\r\n", 1)
        qid = transaction(c, [ALICE], sender="")
        c.quit()
    return_path, received = trace_of(harness.message(ALICE, qid))
    assert return_path == "Return-Path: <>"
    assert received[0] == "Received: from evil?name??x??y?z ([127.0.0.1])"


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_starttls_is_esmtps_with_the_negotiated_cipher(harness: Harness,
                                                       maximum: ssl.TLSVersion) -> None:
    context = harness.client_context()
    context.maximum_version = maximum
    with harness.smtp() as client:
        client.starttls(context=context)
        name, version, bits = client.sock.cipher()  # type: ignore[union-attr]
        client.ehlo()
        client.mail("sender@remote.test")
        client.rcpt(ALICE)
        code, reply = client.data(BODY)
    assert code == 250
    _rp, received = trace_of(harness.message(ALICE, queue_id(reply)))
    assert version == {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                       ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[maximum]
    assert received[1] == f"\t(using {version} with cipher {name} ({bits}/{bits} bits))"
    assert re.fullmatch(rf"\tby {re.escape(HOSTNAME)} \(postkeep\) with ESMTPS id [0-9A-F]+",
                        received[2])


def test_submission_is_esmtpsa(harness: Harness) -> None:
    for implicit in (False, True):
        with harness.submit(ALICE, implicit=implicit) as client:
            name, version, bits = client.sock.cipher()  # type: ignore[union-attr]
            client.sendmail(ALICE, [BOB], b"From: " + ALICE.encode() + b"\r\n" + BODY)
        _rp, received = trace_of(harness.messages(BOB)[-1])
        assert received[0] == "Received: from client.example.net ([127.0.0.1])"
        assert received[1] == f"\t(using {version} with cipher {name} ({bits}/{bits} bits))"
        assert " with ESMTPSA id " in received[2]


def test_smtputf8_protocol_names(harness: Harness) -> None:
    """RFC 6531 §3.7.3: UTF8SMTP, UTF8SMTPS, UTF8SMTPSA."""
    with harness.raw() as c:
        c.feed(b"EHLO c.test\r\n", 1)
        qid = transaction(c, [ALICE], params=" SMTPUTF8")
        assert codes(c.feed(b"STARTTLS\r\n", 1)) == ["220"]
        c.starttls(harness.client_context())
        c.feed(b"EHLO c.test\r\n", 1)
        qid_tls = transaction(c, [ALICE], sender="jöran@bücher.test", params=" SMTPUTF8")
        c.quit()
    assert " with UTF8SMTP id " in trace_of(harness.message(ALICE, qid))[1][1]
    return_path, received = trace_of(harness.message(ALICE, qid_tls))
    assert return_path == "Return-Path: <jöran@bücher.test>"
    assert " with UTF8SMTPS id " in received[2]
    with harness.submit(ALICE) as client:
        client.sendmail(ALICE, [BOB], b"From: " + ALICE.encode() + b"\r\n" + BODY,
                        mail_options=["SMTPUTF8"])
    assert " with UTF8SMTPSA id " in trace_of(harness.messages(BOB)[-1])[1][2]


def test_ipv6_client(harness: Harness) -> None:
    if not harness.ipv6:
        pytest.fail("no IPv6 loopback here: the harness serves the MX on ::1 when it can")
    with harness.smtp("::1") as client:
        client.sendmail("sender@remote.test", [ALICE], BODY)
    _rp, received = trace_of(harness.messages(ALICE)[-1])
    assert received[0] == "Received: from client.example.net ([IPv6:::1])"


# -- the functions directly ------------------------------------------------------------------------


@pytest.mark.parametrize(("esmtp", "tls", "auth", "utf8", "name"), [
    (False, False, False, False, "SMTP"),
    (False, True, True, True, "SMTP"),  # HELO: none of the extensions apply
    (True, False, False, False, "ESMTP"),
    (True, True, False, False, "ESMTPS"),
    (True, False, True, False, "ESMTPA"),
    (True, True, True, False, "ESMTPSA"),
    (True, False, False, True, "UTF8SMTP"),
    (True, True, False, True, "UTF8SMTPS"),
    (True, False, True, True, "UTF8SMTPA"),
    (True, True, True, True, "UTF8SMTPSA"),
])
def test_protocol_names(esmtp: bool, tls: bool, auth: bool, utf8: bool, name: str) -> None:
    assert protocol_name(esmtp, tls, auth, utf8) == name


def test_received_header_fields() -> None:
    when = 1_700_000_000.75
    header = received_header(
        helo="x" * 300 + "\r\nInjected: yes", client_ip="2001:db8::1", client_name="ptr(x).test",
        hostname="mx.example.test", protocol="ESMTPS", queue_id="ABC",
        tls=TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128), recipient=None, when=when,
    )
    lines = header.decode().split("\r\n")
    assert lines[0] == "Received: from " + "x" * 255 + " (ptr?x?.test [IPv6:2001:db8::1])"
    assert lines[1] == "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))"
    assert lines[2] == "\tby mx.example.test (postkeep) with ESMTPS id ABC; " + format_datetime(
        parsedate_to_datetime("Tue, 14 Nov 2023 22:13:20 +0000"))
    assert lines[3:] == [""] and header.endswith(b"\r\n")
    empty = received_header(helo="", client_ip="192.0.2.1", client_name=None, hostname="h",
                            protocol="SMTP", queue_id="Q", tls=None, recipient="a@b", when=when)
    assert empty.startswith(b"Received: from unknown ([192.0.2.1])\r\n\tby h ")


def test_date_cached_per_second_only() -> None:
    first = received_header(helo="a", client_ip="192.0.2.1", client_name=None, hostname="h",
                            protocol="SMTP", queue_id="Q", tls=None, recipient=None, when=100.2)
    assert trace._date_cache[0] == 100
    again = received_header(helo="a", client_ip="192.0.2.1", client_name=None, hostname="h",
                            protocol="SMTP", queue_id="Q", tls=None, recipient=None, when=100.9)
    later = received_header(helo="a", client_ip="192.0.2.1", client_name=None, hostname="h",
                            protocol="SMTP", queue_id="Q", tls=None, recipient=None, when=101.0)
    assert first == again and b"00:01:40 +0000" in first
    assert b"00:01:41 +0000" in later


def test_return_path() -> None:
    assert return_path_header("a@b.test") == b"Return-Path: <a@b.test>\r\n"
    assert return_path_header("") == b"Return-Path: <>\r\n"
