"""Outbound delivery over the wire: a postkeep instance submits, its queue delivers through
real DNS (NSD, tests/dnsserver.py) to real receivers on loopback: a second postkeep instance
(STARTTLS, its certificate verified with `delivery.tls_ca_file`), Postfix's `smtp-sink`, and
addresses where nothing listens or where a server accepts the connection and never speaks.

Every receiver listens on `delivery.remote_port` (one port for all, as port 25 in real life),
each on its own loopback address: 127.0.0.1 the second instance, 127.0.0.3 smtp-sink,
127.0.0.4 nothing, 127.0.0.5 a silent server.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from tests.dnsserver import AuthServer, auth_server
from tests.interop.conftest import PASSWORD, Instance, make_instance, reachable, require_tool
from tests.queue.wire import ALICE, submit, txt_lookup, wait_for


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    with auth_server(tmp_path_factory.mktemp("nsd")) as server:
        yield server


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("receiver"), domain="remote.test",
                         hostname="mx.remote.test")
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def sender(tmp_path_factory: pytest.TempPathFactory, nsd: AuthServer,
           receiver: Instance) -> Iterator[Instance]:
    port = receiver.smtp_port
    nsd.add_zone("remote.test", ["@ MX 10 mx", "mx A 127.0.0.1"])
    nsd.add_zone("sink.test", ["@ MX 10 mx", "mx A 127.0.0.3"])
    nsd.add_zone("down.test", ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.4",
                               "mx2 A 127.0.0.4"])
    nsd.add_zone("silent.test", ["@ MX 10 mx", "mx A 127.0.0.5"])
    nsd.add_zone("null.test", ["@ MX 0 ."])
    nsd.add_zone("moving.test", ["@ MX 10 mx", "mx A 127.0.0.5"])
    inst = make_instance(tmp_path_factory.mktemp("sender"))  # `init` made its DKIM keys
    records = [line for line in inst.cli("dkim", "show", "example.test").stdout.splitlines()
               if line and not line.startswith(";")]
    assert len(records) == 2  # Ed25519 and RSA
    nsd.add_zone("example.test", records)
    ca = inst.dir / "receiver-ca.pem"
    ca.write_bytes((receiver.dir / "tls" / "cert.pem").read_bytes())
    inst.hand_over(ca)
    inst.set_config("server", processes=1)  # one delivery worker: its kept connections
    inst.set_config("dns", nameservers=[nsd.nameserver], timeout=2.0, attempts=1)
    inst.set_config("delivery", remote_port=port, tls_ca_file=str(ca), poll_interval=0.5,
                    retry_schedule=[1], connect_timeout=5.0, greeting_timeout=600.0)
    inst.start()
    yield inst
    inst.stop()






def notice(inst: Instance, subject: str) -> tuple[email.message.EmailMessage, list[dict[str, str]]]:
    """The DSN in alice's inbox about the message `subject`: the message, its status groups."""
    def find() -> bytes | None:
        for m in inst.messages(ALICE):
            if b"multipart/report" in m and f"Subject: {subject}".encode() in m:
                return m
        return None

    raw = wait_for(f"a notice about {subject}", find)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    _text, status, _original = parsed.iter_parts()
    return parsed, [dict(part.items()) for part in status.get_payload()]


def queued(inst: Instance) -> str:
    return inst.cli("queue", "list").stdout


def test_delivered_over_verified_starttls_with_a_bounce_for_the_unknown(
    sender: Instance, receiver: Instance, nsd: AuthServer
) -> None:
    qid = submit(sender, ["bob@remote.test", "nobody@remote.test"], "to-remote",
                 rcpt_options=["NOTIFY=FAILURE"])
    [got] = wait_for("the message at the receiver", lambda: [
        m for m in receiver.messages("bob@remote.test") if b"Subject: to-remote" in m])
    assert re.search(rb"Received: from localhost \(\[127\.0\.0\.1\]\)\r\n"
                     rb"\t\(using TLSv1\.3 with cipher", got), got[:600]
    assert got.startswith(b"Return-Path: <alice@example.test>")
    assert got.count(b"Return-Path:") == 1  # the relayed copy had none of ours
    # dual-signed, and both signatures verify where the mail arrived (dkimpy, keys from NSD)
    signed = got[got.index(b"DKIM-Signature:"):]  # the receiver's Return-Path and Received off
    assert signed.count(b"DKIM-Signature:") == 2
    assert b" a=ed25519-sha256;" in signed and b" a=rsa-sha256;" in signed
    for index in (0, 1):
        assert dkim.DKIM(signed).verify(index, dnsfunc=txt_lookup(nsd)), index
    _dsn, groups = notice(sender, "to-remote")
    assert groups[1]["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert (groups[1]["Action"], groups[1]["Status"]) == ("failed", "5.1.1")
    assert groups[1]["Remote-MTA"] == "dns; mx.remote.test"
    assert groups[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1 ")
    log = sender.log()
    assert re.search(rf"queue: sent qid={qid} to=<bob@remote.test> relay=mx.remote.test "
                     rf"\[127\.0\.0\.1\] status=2\.0\.0", log), log[-3000:]
    assert re.search(rf"queue: qid={qid} relay=mx.remote.test \[127\.0\.0\.1\] "
                     rf"tls=TLSv1\.3/verified", log)
    assert f"queue: bounced qid={qid} to=<nobody@remote.test>" in log
    wait_for("an empty queue", lambda: "the queue is empty" in queued(sender))


def test_null_mx_and_missing_domains_bounce_at_once(sender: Instance) -> None:
    submit(sender, ["a@null.test"], "to-null")
    _dsn, groups = notice(sender, "to-null")
    assert (groups[1]["Action"], groups[1]["Status"]) == ("failed", "5.1.10")
    assert "Remote-MTA" not in groups[1]
    submit(sender, ["a@nowhere.remote.test"], "to-nxdomain")
    _dsn, groups = notice(sender, "to-nxdomain")
    assert groups[1]["Status"] == "5.1.2"


def test_smtp_sink_receives_the_message(sender: Instance, tmp_path: Path,
                                        receiver: Instance) -> None:
    sink = require_tool("smtp-sink", "postfix", path="/usr/sbin:/usr/bin")
    dumps = tmp_path / "sink"
    dumps.mkdir()
    reachable(dumps).chmod(0o777)  # smtp-sink, run by root, writes as nobody
    dump = dumps / "all"
    with (tmp_path / "sink.log").open("ab") as log:
        proc = subprocess.Popen([sink, "-u", "nobody", "-D", str(dump),
                                 f"127.0.0.3:{receiver.smtp_port}", "16"],
                                stdin=subprocess.DEVNULL, stderr=log)
    try:
        wait_for("smtp-sink", lambda: proc.poll() is None and _listening(
            "127.0.0.3", receiver.smtp_port))
        qid = submit(sender, ["x@sink.test", "y@sink.test"], "to-sink",
                     mail_options=["RET=HDRS", "ENVID=sink-1"])
        wait_for("both sent", lambda: len(re.findall(rf"queue: sent qid={qid} ",
                                                     sender.log())) == 2)
        text = dump.read_bytes()
        assert b"Subject: to-sink" in text and b"Hello there." in text
        assert b"X-Mail-Args: <alice@example.test> RET=HDRS ENVID=sink-1\n" in text
        assert b"X-Rcpt-Args: <x@sink.test>\nX-Rcpt-Args: <y@sink.test>\n" in text
        assert re.search(rf"qid={qid} relay=mx.sink.test \[127\.0\.0\.3\] tls=none",
                         sender.log())
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_unreachable_is_deferred_and_the_operator_bounces_it(sender: Instance) -> None:
    qid = submit(sender, ["z@down.test"], "to-down")
    listing = wait_for("a deferral", lambda: (out := queued(sender)) and
                       "last error: 451 4.4.1" in out and out)
    assert qid in listing and "z@down.test" in listing
    shown = sender.cli("queue", "show", qid).stdout
    assert "<z@down.test> pending: 451 4.4.1 " in shown and "mx2.down.test [127.0.0.4]" in shown
    sender.cli("queue", "hold", qid)
    assert "held" in sender.cli("queue", "show", qid).stdout
    assert sender.cli("queue", "show", "NOPE", check=False).returncode == 1
    sender.cli("queue", "release", qid)
    out = wait_for("the bounce by the operator", lambda: (r := sender.cli(
        "queue", "bounce", qid, check=False)).returncode == 0 and r.stdout)
    assert "1 recipient(s) bounced" in out
    _dsn, groups = notice(sender, "to-down")
    assert (groups[1]["Action"], groups[1]["Status"]) == ("failed", "5.0.0")
    assert qid not in queued(sender)


def test_a_killed_sender_delivers_after_restart(sender: Instance, receiver: Instance,
                                                nsd: AuthServer) -> None:
    """SIGKILL while a delivery waits on a server that never answers: after the restart, the
    claim of the dead worker is released and the message is delivered, once."""
    silent = socket.socket()
    silent.bind(("127.0.0.5", receiver.smtp_port))
    silent.listen(8)  # accepts (in the kernel) and never says a word
    try:
        qid = submit(sender, ["carol@moving.test"], "to-moving")
        wait_for("the attempt in flight", lambda: "active" in sender.cli(
            "queue", "show", qid).stdout)
        sender.kill_all()
    finally:
        silent.close()
    assert "active" in sender.cli("queue", "show", qid).stdout  # still the dead worker's
    nsd.add_zone("moving.test", ["@ MX 10 mx.remote.test."])
    receiver.cli("domain", "add", "moving.test")
    receiver.cli("user", "add", "carol@moving.test", "--password-stdin", input=PASSWORD + "\n")
    sender.start()
    got = wait_for("the message after the restart", lambda: [
        m for m in receiver.messages("carol@moving.test") if b"Subject: to-moving" in m])
    assert len(got) == 1
    assert "entries claimed by workers of a previous run are due again" in sender.log()
    wait_for("an empty queue", lambda: "the queue is empty" in queued(sender))


def test_a_connection_carries_the_next_message_and_is_replaced_once_closed(
    sender: Instance, receiver: Instance
) -> None:
    def arrived(subject: str) -> bool:
        return any(f"Subject: {subject}".encode() in m
                   for m in receiver.messages("bob@remote.test"))

    submit(sender, ["bob@remote.test"], "reuse-1")
    wait_for("the first", lambda: arrived("reuse-1"))
    second = submit(sender, ["bob@remote.test"], "reuse-2")
    wait_for("the second", lambda: arrived("reuse-2"))
    log = sender.log()
    assert re.search(rf"qid={second} relay=mx.remote.test \[127\.0\.0\.1\] tls=TLSv1\.3/verified"
                     r" \(connection reused\)", log), log[-2000:]
    receiver.stop()  # the kept connection dies with it
    receiver.start()
    third = submit(sender, ["bob@remote.test"], "reuse-3")
    wait_for("the third, over a new connection", lambda: arrived("reuse-3"))
    log = sender.log()
    assert re.search(rf"queue: qid={third} relay=mx.remote.test \[127\.0\.0\.1\] the kept "
                     r"connection was closed by the server; opening a new one", log), log[-2000:]
    assert re.search(rf"queue: sent qid={third} to=<bob@remote.test>", log)
