"""The milter client end to end: a real `postkeep serve` asking real Debian milters
(`tests.milters`) over TCP and unix sockets; messages sent with smtplib to the MX and to
submission.

- OpenDKIM signing (a submitted message, local and relayed copies, gets a DKIM-Signature
  that dkimpy verifies) and verifying on the MX (Authentication-Results dkim=pass for a
  message signed with a key NSD publishes); the two chained, in both orders (the second
  reads what the first changed);
- clamav-milter in front of a real clamd (EICAR refused with clamav-milter's reply, a clean
  message accepted with its fields);
- rspamd's proxy in milter mode (GTUBE refused with rspamd's reply);
- a milter that refuses connections and one that accepts and never answers: the fail
  modes, the listener serving other clients meanwhile, and `postkeep check`;
- a scripted milter (`tests.milters.ScriptedMilter`: no Debian milter adds recipients,
  replaces a body, quarantines or discards on request) for recipient changes resolved as
  RCPT TO would be, header and body changes, discard, quarantine and a sanitised reply.
"""

from __future__ import annotations

import re
import smtplib
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from postkeep.mailauth.dkim.keys import (
    SigningKey,
    dns_record,
    generate_key,
    private_key_pem,
    zone_line,
)
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from tests.clamd import EICAR, Clamd
from tests.dnsserver import AuthServer, start_auth_server
from tests.interop.conftest import Instance, free_port, make_instance, reachable
from tests.interop.test_antivirus import Silent
from tests.interop.test_submission import login
from tests.milters import GTUBE, ClamavMilter, Daemon, OpenDkim, Rspamd, ScriptedMilter


def message(subject: str, body: str = "hello\n", sender: str = "x@remote.test",
            to: str = "alice@example.test") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = "Mon, 01 Jan 2024 00:00:00 +0000"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@remote.test>"
    msg.set_content(body)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def send_mx(inst: Instance, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as c:
        c.ehlo("client.test")
        assert c.mail("x@remote.test")[0] == 250
        assert c.rcpt("alice@example.test")[0] == 250
        return c.data(data)


def stored(inst: Instance, subject: str, address: str = "alice@example.test") -> list[bytes]:
    return [m for m in inst.messages(address) if subject.encode() in m]


def add_milter(inst: Instance, name: str, address: str, **keys: object) -> None:
    """A `[[filters.milter]]` table at the end of the instance's config."""
    lines = [f'name = "{name}"', f'address = "{address}"']
    for key, value in keys.items():
        lines.append(f"{key} = " + (("true" if value else "false") if isinstance(value, bool)
                                    else f'"{value}"' if isinstance(value, str)
                                    else str(value)))
    path = inst.dir / "postkeep.toml"
    path.write_text(path.read_text() + "\n[[filters.milter]]\n" + "\n".join(lines) + "\n")


def configure(inst: Instance, inbound: list[str], outbound: list[str],
              milters: dict[str, Daemon | str], **keys: object) -> None:
    inst.set_config("filters", inbound=inbound, outbound=outbound)
    for name, milter in milters.items():
        add_milter(inst, name, milter if isinstance(milter, str) else milter.address, **keys)


def started(daemon: Daemon) -> Daemon:
    daemon.start()
    return daemon


# -- OpenDKIM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key() -> SigningKey:
    return generate_key("rsa", bits=2048)


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory, dkim_key: SigningKey) -> Iterator[AuthServer]:
    """NSD publishing the key of selector "odk" (opendkim's) and "pk" (ours) for
    example.test."""
    server = start_auth_server(tmp_path_factory.mktemp("nsd"))
    server.add_zone("example.test", [zone_line("odk", "example.test", dkim_key),
                                     zone_line("pk", "example.test", dkim_key)])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory, dkim_key: SigningKey) -> Iterator[Daemon]:
    """opendkim signing what authenticated users submit, on a unix socket."""
    directory = reachable(tmp_path_factory.mktemp("signer"))
    key_file = directory / "odk.private"
    key_file.write_bytes(private_key_pem(dkim_key))
    daemon = started(OpenDkim(directory, sign=True, key_file=key_file, unix=True))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory, nsd: AuthServer) -> Iterator[Daemon]:
    daemon = started(OpenDkim(tmp_path_factory.mktemp("verifier"), sign=False,
                              dns=f"{nsd.address}@{nsd.port}"))
    yield daemon
    daemon.stop()


def dkim_verifies(data: bytes, key: SigningKey, selector: str = "odk") -> bool:
    """Whether the DKIM-Signature of `selector` in `data` verifies (dkimpy)."""
    d = dkim.DKIM(data)
    sigs = [i for i, (name, value) in enumerate(
        (n, v) for n, v in d.headers if n.lower() == b"dkim-signature")
        if re.search(rb"s=" + selector.encode() + rb";", value)]
    assert len(sigs) == 1, data[:2000]
    record = dns_record(key).encode()
    return bool(d.verify(idx=sigs[0], dnsfunc=lambda name, timeout=5: record))


def test_opendkim_signs_submitted_mail(tmp_path: Path, signer: Daemon,
                                       dkim_key: SigningKey) -> None:
    """Over a unix socket: the local copy and the relayed one carry opendkim's signature,
    which verifies; opendkim signed because the macros said the client logged in."""
    inst = make_instance(tmp_path)
    configure(inst, [], ["milter:signer"], {"signer": signer})
    inst.start()
    try:
        subject = f"signed {uuid.uuid4().hex}"
        with login(inst) as c:
            c.sendmail("alice@example.test", ["bob@example.test", "someone@remote.test"],
                       message(subject, sender="alice@example.test", to="bob@example.test"))
        (local,) = stored(inst, subject, "bob@example.test")
        (relayed,) = [d for _, d in inst.outbound() if subject.encode() in d]
        for copy in (local, relayed):
            assert b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; " \
                   b"s=odk;" in copy
            assert dkim_verifies(copy, dkim_key)
        inst.wait_log(r'message qid=\w+ .*scan="milter:signer=accept \(1 changes\)"')
        # the MX lists no milter: mail from outside is not signed
        assert send_mx(inst, message(f"in {subject}"))[0] == 250
        (inbound,) = stored(inst, f"in {subject}")
        assert b"s=odk;" not in inbound
    finally:
        inst.stop()


def test_opendkim_verifies_on_the_mx(tmp_path: Path, verifier: Daemon,
                                     dkim_key: SigningKey) -> None:
    inst = make_instance(tmp_path)
    configure(inst, ["milter:verifier"], [], {"verifier": verifier})
    inst.start()
    try:
        subject = f"verify {uuid.uuid4().hex}"
        text = message(subject, sender="someone@example.test")
        signed = sign_all(text, [DkimSigner("example.test", "pk", dkim_key)]) + text
        assert send_mx(inst, signed)[0] == 250
        tampered = f"tampered {uuid.uuid4().hex}"
        bad = sign_all(text, [DkimSigner("example.test", "pk", dkim_key)]) + text.replace(
            subject.encode(), tampered.encode())
        assert send_mx(inst, bad)[0] == 250
        (good,) = stored(inst, subject)
        assert re.search(rb"Authentication-Results: verifier\.test;\s+dkim=pass \(.*?\) "
                         rb"header\.d=example\.test [^;]*header\.s=pk", good), good[:1500]
        (failed,) = stored(inst, tampered)
        assert re.search(rb"Authentication-Results: verifier\.test;\s+dkim=fail", failed)
    finally:
        inst.stop()


@pytest.mark.parametrize("order", [["signer", "verifier"], ["verifier", "signer"]])
def test_a_chain_of_two_milters_runs_in_order(tmp_path: Path, signer: Daemon,
                                              verifier: Daemon, order: list[str]) -> None:
    """Signer then verifier: the verifier reads the signature the signer added (pass);
    the other way round it sees none."""
    inst = make_instance(tmp_path)
    configure(inst, [], [f"milter:{n}" for n in order],
              {"signer": signer, "verifier": verifier})
    inst.start()
    try:
        subject = f"chain {uuid.uuid4().hex}"
        with login(inst) as c:
            c.sendmail("alice@example.test", ["bob@example.test"],
                       message(subject, sender="alice@example.test", to="bob@example.test"))
        (copy,) = stored(inst, subject, "bob@example.test")
        result = re.search(rb"Authentication-Results: verifier\.test;\s+dkim=(\w+)", copy)
        assert result is not None, copy[:1500]
        assert result[1] == (b"pass" if order[0] == "signer" else b"none")
        assert b"s=odk;" in copy
        inst.wait_log(r'scan="milter:' + order[0] + r"=accept \(1 changes\) milter:"
                      + order[1] + r'=accept \(1 changes\)"')
    finally:
        inst.stop()


# -- clamav-milter ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clamav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    clamd = Clamd(reachable(tmp_path_factory.mktemp("clamd")))
    clamd.start()
    milter = ClamavMilter(tmp_path_factory.mktemp("clamav-milter"), clamd)
    try:
        milter.start()
        yield milter
    finally:
        milter.stop()
        clamd.stop()


def test_clamav_milter_refuses_eicar_and_accepts_clean_mail(tmp_path: Path,
                                                           clamav: Daemon) -> None:
    inst = make_instance(tmp_path)
    configure(inst, ["milter:clamav"], [], {"clamav": clamav})
    inst.start()
    try:
        subject = f"eicar {uuid.uuid4().hex}"
        code, text = send_mx(inst, message(subject, body=EICAR.decode() + "\n"))
        assert (code, text) == (554, b"5.7.1 Message content rejected")
        inst.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=\"milter:"
                      r"clamav: rejected at end of body qid=")
        assert stored(inst, subject) == []
        clean = f"clean {uuid.uuid4().hex}"
        assert send_mx(inst, message(clean))[0] == 250
        (msg,) = stored(inst, clean)
        assert b"X-Virus-Status: Clean\r\n" in msg
        assert "milter" not in inst.cli("check", check=False).stdout
    finally:
        inst.stop()


# -- rspamd -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One rspamd for the module (a cold start takes about 25 s)."""
    daemon = Rspamd(tmp_path_factory.mktemp("rspamd"))
    try:
        daemon.start(wait=120)
    except AssertionError as e:
        pytest.skip(f"rspamd cannot start here: {str(e)[-500:]}")
    yield daemon
    daemon.stop()


def test_rspamd_refuses_gtube(tmp_path: Path, rspamd: Daemon) -> None:
    inst = make_instance(tmp_path)
    configure(inst, ["milter:rspamd"], [], {"rspamd": rspamd}, timeout=60.0)
    inst.start()
    try:
        subject = f"gtube {uuid.uuid4().hex}"
        code, text = send_mx(inst, message(subject, body=GTUBE.decode() + "\n"))
        assert (code, text) == (554, b"5.7.1 Gtube pattern")
        inst.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=\"milter:"
                      r"rspamd: rejected at end of body: 554 Gtube pattern")
        assert stored(inst, subject) == []
        ham = f"ham {uuid.uuid4().hex}"
        assert send_mx(inst, message(ham, body="lunch tomorrow at noon?\n"))[0] == 250
        assert len(stored(inst, ham)) == 1
    finally:
        inst.stop()


# -- dead and silent milters --------------------------------------------------------------------


def test_a_dead_milter_gives_the_fail_modes(fresh: Instance) -> None:
    """Connection refused: the MX answers 451 (fail closed, the default), submission sends
    the message unfiltered (fail open, the default); both logged; `check` reports it."""
    dead = f"127.0.0.1:{free_port()}"
    configure(fresh, ["milter:dead"], ["milter:dead"], {"dead": dead})
    fresh.start()
    subject = f"dead {uuid.uuid4().hex}"
    assert send_mx(fresh, message(subject)) == (
        451, b"4.7.1 Message could not be scanned, try again later")
    fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=milter:dead mode=closed "
                   r"reason=")
    assert stored(fresh, subject) == []
    with login(fresh) as c:
        c.sendmail("alice@example.test", ["bob@example.test"],
                   message(subject, sender="alice@example.test"))
    assert len(stored(fresh, subject, "bob@example.test")) == 1
    fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=milter:dead mode=open")
    r = fresh.cli("check", check=False)
    assert r.returncode == 1
    assert f"filters.milter[0].address: milter dead at {dead} does not answer" in r.stdout


def test_a_silent_milter_times_out(fresh: Instance) -> None:
    silent = Silent()
    try:
        configure(fresh, ["milter:silent"], [], {"silent": silent.address}, timeout=1.0)
        fresh.start()
        subject = f"silent {uuid.uuid4().hex}"
        assert send_mx(fresh, message(subject))[0] == 451
        fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=milter:silent "
                       r"mode=closed reason=\"no answer within 1s\"")
        assert silent.received > 0  # our negotiation, unanswered
    finally:
        silent.close()


def test_a_silent_milter_holds_only_its_own_session(fresh: Instance) -> None:
    """While one message waits on a milter that never answers, another client is served
    from connect to QUIT; the milter then closing its end is a failure (fail open here)."""
    silent = Silent()
    try:
        configure(fresh, ["milter:silent"], [], {"silent": silent.address}, timeout=300.0,
                  fail_open_inbound=True)
        fresh.start()
        subject = f"held {uuid.uuid4().hex}"
        result: list[tuple[int, bytes]] = []
        sender = threading.Thread(target=lambda: result.append(send_mx(fresh,
                                                                       message(subject))))
        sender.start()
        while not silent.conns:  # the scan is waiting on the milter now
            sender.join(0.05)
        with smtplib.SMTP("127.0.0.1", fresh.smtp_port, timeout=30) as c:
            assert c.ehlo("other.test")[0] == 250
            assert c.noop()[0] == 250
        assert result == [] and sender.is_alive()
        for conn in silent.conns:  # the milter hangs up
            conn.shutdown(socket.SHUT_RDWR)
        sender.join(60)
        assert result and result[0][0] == 250
        fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=milter:silent mode=open "
                       r"reason=\"milter silent: the milter closed the connection\"")
        assert len(stored(fresh, subject)) == 1
    finally:
        silent.close()


# -- what no Debian milter does on request: a scripted one ---------------------------------------


def scripted(fresh: Instance, script: list[tuple[bytes, bytes]],
             inbound: bool = True) -> ScriptedMilter:
    milter = ScriptedMilter(script)
    configure(fresh, ["milter:scripted"] if inbound else [],
              [] if inbound else ["milter:scripted"], {"scripted": milter.address})
    fresh.start()
    return milter


def test_recipient_changes_are_resolved_as_rcpt_to(fresh: Instance) -> None:
    """On the MX: bob added (a local account), a remote address refused (the MX relays for
    nobody), alice removed; the header and body changes applied."""
    milter = scripted(fresh, [
        (b"+", b"<bob@example.test>\0"), (b"+", b"<someone@remote.test>\0"),
        (b"-", b"<alice@example.test>\0"),
        (b"h", b"X-Scripted\0 yes\0"), (b"i", struct.pack(">I", 0) + b"X-First\0 top\0"),
        (b"m", struct.pack(">I", 1) + b"Subject\0\0"),
        (b"b", b"new body\r\n"), (b"a", b"")])
    try:
        subject = f"rcpts {uuid.uuid4().hex}"
        assert send_mx(fresh, message(subject))[0] == 250, fresh.log()[-3000:]
        fresh.wait_log(r"recipient refused qid=\w+ ip=127\.0\.0\.1 filter=milter:scripted "
                       r"rcpt=someone@remote\.test reason=\"relay denied to someone@remote\.test")
        fresh.wait_log(r"recipient added qid=\w+ ip=127\.0\.0\.1 filter=milter:scripted "
                       r"rcpt=bob@example\.test")
        fresh.wait_log(r"recipient removed qid=\w+ .* rcpt=alice@example\.test")
        assert fresh.messages("alice@example.test") == []
        (copy,) = [m for m in fresh.messages("bob@example.test") if b"X-Scripted" in m]
        head, _, body = copy.partition(b"\r\n\r\n")
        assert body == b"new body\r\n"
        assert b"Subject:" not in head  # deleted
        fields = [line.split(b":")[0] for line in head.split(b"\r\n") if b":" in line
                  and not line.startswith((b" ", b"\t"))]
        first = fields.index(b"X-First")  # inserted at the top of what the milter saw
        assert fields[first - 1] == b"Received" and fields[-1] == b"X-Scripted"
        mail = [d for c, d in milter.commands if c == b"M"]
        assert mail and mail[0].startswith(b"<x@remote.test>\0")
        macros = b"".join(d for c, d in milter.commands if c == b"D")
        assert b"j\0localhost\0" in macros and b"{client_addr}\x00127.0.0.1\x00" in macros
    finally:
        milter.close()


def test_removing_every_recipient_refuses_the_message(fresh: Instance) -> None:
    milter = scripted(fresh, [(b"-", b"<alice@example.test>\0"), (b"c", b"")])
    try:
        assert send_mx(fresh, message(f"none {uuid.uuid4().hex}")) == (
            554, b"5.7.1 Message refused by content filter: no recipients left")
    finally:
        milter.close()


def test_discard_is_refused_not_dropped(fresh: Instance) -> None:
    milter = scripted(fresh, [(b"d", b"")])
    try:
        subject = f"discard {uuid.uuid4().hex}"
        assert send_mx(fresh, message(subject)) == (554, b"5.7.1 Message content rejected")
        fresh.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=\"milter:"
                       r"scripted: discard asked at end of body: refused, never dropped")
        assert stored(fresh, subject) == []
    finally:
        milter.close()


def test_quarantine_holds_and_a_reply_code_is_sanitised(fresh: Instance) -> None:
    milter = scripted(fresh, [(b"q", b"looks odd\0"), (b"a", b"")])
    try:
        subject = f"quarantine {uuid.uuid4().hex}"
        assert send_mx(fresh, message(subject))[0] == 250  # durable, in the quarantine
        fresh.wait_log(r"held in quarantine qid=\w+ ip=127\.0\.0\.1 filter=milter:scripted "
                       r"accounts=1 reason=\"quarantine asked: looks odd\"")
        assert stored(fresh, subject) == []  # not in the INBOX
        (held,) = [m for m in fresh.messages("alice@example.test", "Quarantine")
                   if subject.encode() in m]
        assert b"tests=MILTER_QUARANTINE at localhost" in held
        listing = fresh.cli("quarantine", "list").stdout
        assert "milter:scripted" in listing and "looks odd" in listing
        milter.script = [(b"y", "451-4.7.0 Greylisted\r\n451 4.7.0 ça va\0".encode())]
        assert send_mx(fresh, message(f"reply {uuid.uuid4().hex}")) == (
            451, b"4.7.0 Greylisted ?a va")
    finally:
        milter.close()
