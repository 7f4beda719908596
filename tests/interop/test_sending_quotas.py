"""Sending quotas on submission, over the wire with smtplib, and the operator's CLI."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("quotas"))
    inst.set_config("sending", account_messages_per_hour=3, account_recipients_per_hour=5)
    inst.cli("user", "add", "carol@example.test", "--password-stdin", input=PASSWORD + "\n")
    inst.cli("user", "limits", "carol@example.test", "--recipients-per-hour", "2")
    inst.start()
    yield inst
    inst.stop()


def words(text: str) -> str:
    return " ".join(text.split())


def send(inst: Instance, user: str, rcpts: list[str]) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20) as c:
        c.starttls(context=ctx)
        c.login(user, PASSWORD)
        c.mail(user)
        for rcpt in rcpts:
            assert c.rcpt(rcpt)[0] == 250
        return c.data(f"From: {user}\r\nSubject: quota\r\n\r\nhi\r\n".encode())


def test_a_limit_refuses_with_451_and_an_exception_lifts_it(inst: Instance) -> None:
    alice, bob = "alice@example.test", "bob@example.test"
    for _ in range(3):
        assert send(inst, alice, [bob])[0] == 250
    code, text = send(inst, alice, [bob])
    assert code == 451 and text.startswith(b"4.7.1 Sending limit reached: this account may "
                                           b"send 3 messages per hour")
    line = re.search(r".*sending quota a:\d+ messages_per_hour=3 login=alice@example.test.*",
                     inst.log())
    assert line and "ip=127.0.0.1" in line[0] and "4.7.1" in line[0], inst.log()[-2000:]
    assert send(inst, "carol@example.test", [bob])[0] == 250  # another account is not counted
    code, text = send(inst, "carol@example.test", [alice, bob])  # 1 + 2 recipients > 2
    assert code == 451 and b"may send 2 recipients per hour" in text
    shown = words(inst.cli("user", "show", alice).stdout)
    assert "messages per hour 3 sent of 3" in shown, shown
    assert "configured in [sending]" in shown
    inst.cli("user", "limits", alice, "--unlimited")
    assert send(inst, alice, [bob])[0] == 250
    assert "messages per hour 4 sent of unlimited" in words(inst.cli("user", "show", alice).stdout)
    inst.cli("user", "limits", alice, "--default")
    inst.cli("user", "limits", alice, "--messages-per-hour", "10")
    out = words(inst.cli("user", "limits", alice).stdout)
    assert "messages per hour 4 sent of 10" in out and "(exception)" in out
    assert "recipients per hour 4 sent of 5" in out  # the rest kept from [sending]
    inst.cli("user", "limits", alice, "--default")
    assert send(inst, alice, [bob])[0] == 451
    bad = inst.cli("user", "limits", alice, "--unlimited", "--default", check=False)
    assert bad.returncode == 1 and "not several" in bad.stderr
    assert inst.cli("user", "show", "nobody@example.test", check=False).returncode == 1
    inst.cli("domain", "limits", "example.test", "--messages-per-day", "1")
    code, text = send(inst, "bob@example.test", [alice])  # the domain's day is used up
    assert code == 451 and b"the domain example.test may send 1 messages per day" in text
