"""Unit tests of the SMTP command parser (RFC 5321 §4.1, RFC 1870, 3030, 3461, 6531)."""

from __future__ import annotations

import pytest

from postkeep.smtp.wire.parser import (
    Bdat,
    CommandError,
    Hello,
    Mail,
    Rcpt,
    is_address_literal,
    parse_command,
    parse_path,
    xtext_decode,
)


def err(line: bytes, **kw: bool) -> tuple[int, str]:
    with pytest.raises(CommandError) as e:
        parse_command(line, **kw)
    return e.value.reply.code, e.value.reply.enhanced


def test_hello() -> None:
    assert parse_command(b"ehlo client.example") == Hello(True, "client.example")
    assert parse_command(b"HELO [192.0.2.1]") == Hello(False, "[192.0.2.1]")
    assert err(b"EHLO") == (501, "5.5.2")


def test_mail_with_all_params() -> None:
    cmd = parse_command(
        b"MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1 AUTH=<>"
    )
    assert isinstance(cmd, Mail)
    assert cmd.path.address == "a@b.test"
    p = cmd.params
    assert (p.size, p.body, p.ret, p.envid, p.auth) == (1000, "8BITMIME", "HDRS", "QQ+1", "<>")


def test_mail_null_path_and_space_after_colon() -> None:
    cmd = parse_command(b"MAIL FROM: <>")
    assert isinstance(cmd, Mail) and cmd.path.is_null


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:a@b.test", (501, "5.1.3")),
        (b"MAIL FROM:<a@b.test> SIZE=x", (501, "5.5.4")),
        (b"MAIL FROM:<a@b.test> FOO=1", (555, "5.5.4")),
        (b"MAIL FROM:<a@b.test> SIZE=1 SIZE=2", (501, "5.5.4")),
        (b"MAIL FROM:<a@@b.test>", (501, "5.1.3")),
        (b"MAIL FROM:<a..b@b.test>", (501, "5.1.3")),
        (b"MAIL FROM:<a@-b.test>", (501, "5.1.3")),
        (b"MAIL FROM:<a@b.test>SIZE=1", (501, "5.5.4")),
        (b"MAIL FROM:<" + b"a" * 65 + b"@b.test>", (501, "5.1.3")),
        (b"MAIL TO:<a@b.test>", (501, "5.5.2")),
        (b"MAIL FROM:<a@b.test> ENVID=bad+zz", (501, "5.5.4")),
        (b"MAIL FROM:<a@b.test> BODY=9BIT", (501, "5.5.4")),
        (b"MAIL FROM:<a@[300.1.1.1]>", (501, "5.1.3")),
        (b"MAIL FROM:<\xff@b.test>", (500, "5.5.2")),
        (b"NOOP \x00", (500, "5.5.2")),
        (b"FROB", (500, "5.5.1")),
        (b"DATA x", (501, "5.5.2")),
        (b"BDAT", (501, "5.5.2")),
        (b"BDAT 1 MORE", (501, "5.5.2")),
        (b"BDAT -1", (501, "5.5.2")),
    ],
)
def test_bad_commands(line: bytes, expected: tuple[int, str]) -> None:
    assert err(line) == expected


def test_params_need_ehlo() -> None:
    assert err(b"MAIL FROM:<a@b.test> SIZE=1", extended=False) == (555, "5.5.4")


def test_rcpt_dsn_params() -> None:
    cmd = parse_command(b"RCPT TO:<x@y.test> NOTIFY=success,failure ORCPT=rfc822;x+40y.test")
    assert isinstance(cmd, Rcpt)
    assert cmd.notify == "SUCCESS,FAILURE"
    assert cmd.orcpt == "rfc822;x@y.test"
    assert err(b"RCPT TO:<x@y.test> NOTIFY=NEVER,SUCCESS") == (501, "5.5.4")
    assert err(b"RCPT TO:<x@y.test> ORCPT=nosemicolon") == (501, "5.5.4")


def test_rcpt_postmaster_without_domain() -> None:
    cmd = parse_command(b"RCPT TO:<Postmaster>")
    assert isinstance(cmd, Rcpt) and cmd.path.local == "Postmaster" and cmd.path.domain == ""
    assert err(b"RCPT TO:<alice>") == (501, "5.1.3")
    assert err(b"RCPT TO:<>") == (501, "5.1.3")


def test_source_route_ignored() -> None:
    path = parse_path("<@a.test,@b.test:user@c.test>", utf8=False, allow_null=False)
    assert path.address == "user@c.test"


def test_quoted_local_parts() -> None:
    path = parse_path('<"john doe"@example.test>', utf8=False, allow_null=False)
    assert path.local == '"john doe"'
    path = parse_path('<"a>b"@example.test>', utf8=False, allow_null=False)
    assert path.domain == "example.test"
    cmd = parse_command(b'RCPT TO:<"a@b"@example.test>')
    assert isinstance(cmd, Rcpt) and cmd.path.domain == "example.test"


def test_address_literals() -> None:
    assert is_address_literal("[192.0.2.1]")
    assert is_address_literal("[IPv6:2001:db8::1]")
    assert not is_address_literal("[2001:db8::1]")
    assert not is_address_literal("[example.test]")


def test_utf8_requires_smtputf8() -> None:
    assert err("MAIL FROM:<ü@b.test>".encode()) == (553, "5.6.7")
    cmd = parse_command("MAIL FROM:<ü@bü.test> SMTPUTF8".encode())
    assert isinstance(cmd, Mail) and cmd.params.smtputf8
    cmd = parse_command("RCPT TO:<ü@bü.test>".encode(), utf8=True)
    assert isinstance(cmd, Rcpt)


def test_bdat() -> None:
    assert parse_command(b"BDAT 100 last") == Bdat(100, True)
    assert parse_command(b"BDAT 0") == Bdat(0, False)


def test_xtext() -> None:
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"
