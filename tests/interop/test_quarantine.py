"""The quarantine end to end: a real `postkeep serve` asking a real clamd (tests/clamd.py) with
`[antivirus] infected_inbound` / `infected_outbound` = "quarantine" (and "reject" on
submission, which holds too); messages sent with smtplib, the Quarantine folder read with
imaplib, the operator's `postkeep quarantine` and `postkeep check` run as commands.

Inbound: EICAR to the MX is answered 250, is in no INBOX, is listed by the CLI and in the
user's Quarantine folder; a MOVE to INBOX releases it, as does `quarantine release`; an expunge
and `quarantine delete` delete it; entries past their time go with `quarantine expire` and with
the delivery workers' hourly expiry; nothing is in clear in the store's files. Outbound: EICAR
from alice is held (not delivered, not queued), alice is paused (her next message refused with
451 4.7.1, logged), `check` says so, `quarantine release` delivers and queues it."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from postkeep import config as config_mod
from tests.clamd import EICAR, EICAR_NAME, Clamd
from tests.interop.conftest import PASSWORD, Instance, make_instance, reachable
from tests.interop.test_antivirus import message, send_mx
from tests.interop.test_submission import login

ALICE, BOB = "alice@example.test", "bob@example.test"
ENCODED = base64.b64encode(EICAR)[:60]  # the attachment as sent (base64, on one line)


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    daemon = Clamd(reachable(tmp_path_factory.mktemp("clamd")))
    daemon.start()
    yield daemon
    daemon.stop()


def start(root: Path, clamd: Clamd, outbound: str) -> Instance:
    inst = make_instance(root)
    inst.set_config("filters", inbound=["antivirus"], outbound=["antivirus"],
                    outbound_hit_pause=3600)
    inst.set_config("antivirus", address=clamd.address, timeout=10.0,
                    infected_inbound="quarantine", infected_outbound=outbound)
    inst.start()
    return inst


@pytest.fixture(scope="module")
def qi(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Instance]:
    inst = start(tmp_path_factory.mktemp("quarantine"), clamd, "quarantine")
    yield inst
    inst.stop()


def infected(subject: str, sender: str = "x@remote.test") -> bytes:
    return message(subject, ("eicar.com", EICAR), "see attached\n", sender)


def send_to_both(inst: Instance, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("x@remote.test")[0] == 250
        assert c.rcpt(ALICE)[0] == 250 and c.rcpt(BOB)[0] == 250
        return c.data(data)


def entries(inst: Instance, *args: str) -> list[dict[str, str]]:
    """`postkeep quarantine list` parsed: id, dir, queue id, account, filter, reason."""
    out = inst.cli("quarantine", "list", *args).stdout
    rows = []
    for line in out.splitlines()[1:-1]:
        f = line.split(None, 7)
        rows.append({"id": f[0], "dir": f[1], "qid": f[3], "account": f[5], "filter": f[6],
                     "reason": f[7]})
    return rows


def imaps(inst: Instance, user: str = ALICE) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=context, timeout=20)
    client.login(user, PASSWORD)
    return client


def subjects(inst: Instance, address: str, mailbox: str = "INBOX") -> list[str]:
    found = []
    for data in inst.messages(address, mailbox):
        m = re.search(rb"\r\nSubject: (.*?)\r\n", b"\r\n" + data)
        if m:
            found.append(m[1].decode())
    return found


def backdate(inst: Instance, entry_id: int | None = None) -> None:
    """Make an entry (every entry, for None) expired, in the store's database."""
    engine = create_engine(config_mod.load(inst.dir / "postkeep.toml").store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE quarantine SET expires = 0"
                              + ("" if entry_id is None else f" WHERE id = {entry_id}")))
    finally:
        engine.dispose()
    inst.hand_over()  # what the test wrote as root (SQLite's journal files) to the server user


def test_inbound_quarantine_round_trips(qi: Instance) -> None:
    subject = f"held {uuid.uuid4().hex}"
    code, reply = send_to_both(qi, infected(subject))
    assert code == 250 and reply.startswith(b"2.0.0 Ok: queued as ")
    qid = reply.split()[-1].decode()
    qi.wait_log(rf"held in quarantine qid={qid} ip=127\.0\.0\.1 filter=clamav accounts=2 "
                rf"reason=\"virus found: {re.escape(EICAR_NAME)}\"")
    assert subject not in subjects(qi, ALICE) and subject not in subjects(qi, BOB)
    held = [e for e in entries(qi, "--direction", "in") if e["qid"] == qid]
    assert sorted(e["account"] for e in held) == [ALICE, BOB]
    assert all(e["filter"] == "clamav" and EICAR_NAME in e["reason"] for e in held)
    show = qi.cli("quarantine", "show", held[0]["id"]).stdout
    assert f"Subject: {subject}" in show
    assert "X-Virus-Scanned: clamav at localhost; infected" in show
    assert re.search(r"(?m)^clamav\s+quarantine\s+0\s+infected", show)  # the filter record
    assert re.search(rf"(?m)^queue id:\s+{qid}$", show)
    raw = qi.cli("quarantine", "show", held[0]["id"], "--raw").stdout
    assert raw.startswith("Return-Path: <x@remote.test>") and ENCODED.decode() in raw
    # alice sees it in her Quarantine folder and moves it to her INBOX: released
    client = imaps(qi)
    try:
        typ, listing = client.list()
        assert typ == "OK" and any(b'"Quarantine"' in line or line.endswith(b" Quarantine")
                                   for line in listing)
        assert client.select("Quarantine")[0] == "OK"
        typ, found = client.uid("SEARCH", "SUBJECT", subject.split()[-1])
        [uid] = found[0].split()
        typ, fetched = client.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert subject.encode() in fetched[0][1]
        typ, _ = client.uid("MOVE", uid, "INBOX")
        assert typ == "OK"
    finally:
        client.logout()
    assert subject in subjects(qi, ALICE)
    assert [e["account"] for e in entries(qi) if e["qid"] == qid] == [BOB]
    # bob's copy released by the operator
    bob_entry = next(e for e in held if e["account"] == BOB)
    out = qi.cli("quarantine", "release", bob_entry["id"]).stdout
    assert f"moved to the INBOX of {BOB}" in out
    assert subject in subjects(qi, BOB) and subject not in subjects(qi, BOB, "Quarantine")
    assert not [e for e in entries(qi) if e["qid"] == qid]


def test_the_quarantine_folder_is_the_servers(qi: Instance) -> None:
    send_mx(qi, infected(f"folder {uuid.uuid4().hex}"))  # alice's Quarantine exists
    client = imaps(qi)
    try:
        typ, data = client.append("Quarantine", "", imaplib.Time2Internaldate(0),
                                  b"Subject: mine\r\n\r\nhello\r\n")
        assert typ == "NO" and b"[CANNOT]" in data[0]
        assert client.create("Quarantine/sub")[0] == "NO"
        assert client.rename("Quarantine", "Other")[0] == "NO"
        client.select("INBOX")
        client.append("INBOX", "", imaplib.Time2Internaldate(0), b"Subject: x\r\n\r\nx\r\n")
        typ, data = client.copy("1", "Quarantine")
        assert typ == "NO" and b"[CANNOT]" in data[0]
    finally:
        client.logout()


def test_user_expunge_operator_delete_and_expiry(qi: Instance) -> None:
    gone, deleted, old = (f"{word} {uuid.uuid4().hex}" for word in ("gone", "del", "old"))
    for subject in (gone, deleted, old):
        assert send_mx(qi, infected(subject))[0] == 250
    client = imaps(qi)
    try:
        client.select("Quarantine")
        _, found = client.uid("SEARCH", "SUBJECT", gone.split()[-1])
        [uid] = found[0].split()
        client.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        assert client.expunge()[0] == "OK"  # the user's delete
    finally:
        client.logout()
    left = {e["qid"]: e for e in entries(qi, "--account", ALICE)}
    held = {s: s in subjects(qi, ALICE, "Quarantine") for s in (gone, deleted, old)}
    assert held == {gone: False, deleted: True, old: True}
    by_subject = {}
    for e in left.values():
        show = qi.cli("quarantine", "show", e["id"]).stdout
        by_subject.update({s: e for s in (deleted, old) if s in show})
    qi.cli("quarantine", "delete", by_subject[deleted]["id"])
    assert deleted not in subjects(qi, ALICE, "Quarantine")
    assert qi.cli("quarantine", "delete", by_subject[deleted]["id"], check=False).returncode == 1
    # past its time (its `expires` moved back in the store): `expire` deletes it
    backdate(qi, int(by_subject[old]["id"]))
    assert "1 expired message(s) deleted" in qi.cli("quarantine", "expire").stdout
    assert old not in subjects(qi, ALICE, "Quarantine")


def test_the_delivery_workers_expire_the_quarantine(tmp_path: Path, clamd: Clamd) -> None:
    inst = start(tmp_path, clamd, "quarantine")
    try:
        assert send_mx(inst, infected("expiring"))[0] == 250
        inst.stop()
        backdate(inst)
        inst.start()  # a worker's first look expires what is due
        inst.wait_log(r"quarantine expired count=1")
        assert entries(inst) == [] and inst.messages(ALICE, "Quarantine") == []
    finally:
        inst.stop()


def test_nothing_is_in_clear_at_rest(qi: Instance) -> None:
    marker = uuid.uuid4().hex.encode()
    body = f"secret body {marker.decode()}\n"
    data = message("at rest", ("eicar.com", EICAR), body)
    assert send_mx(qi, data)[0] == 250
    data_dir = config_mod.load(qi.dir / "postkeep.toml").data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "store.db" for p in files)
    for path in files:
        content = path.read_bytes()
        assert marker not in content and ENCODED not in content, path


def test_outbound_held_paused_and_released(qi: Instance) -> None:
    subject = f"out {uuid.uuid4().hex}"
    with login(qi) as c:
        c.ehlo()
        c.mail(ALICE)
        c.rcpt(BOB)
        c.rcpt("someone@remote.test")
        code, reply = c.data(infected(subject, sender=ALICE))
    assert code == 250 and reply.startswith(b"2.0.0 Ok: held for review as ")
    qid = reply.split()[-1].decode()
    qi.wait_log(rf"outbound held qid={qid} ip=127\.0\.0\.1 account={ALICE} filter=clamav "
                rf"paused=3600s reason=\"virus found: {re.escape(EICAR_NAME)}\"")
    assert subject not in subjects(qi, BOB)
    assert not [d for _, d in qi.outbound() if subject.encode() in d]
    [entry] = [e for e in entries(qi, "--direction", "out") if e["qid"] == qid]
    assert entry["account"] == ALICE
    # alice is paused: her next (clean) message is refused, and logged
    with login(qi) as c, pytest.raises(smtplib.SMTPDataError) as refused:
        c.sendmail(ALICE, [BOB], message("clean", sender=ALICE))
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.7.1 Sending paused")
    qi.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=451 4\.7\.1 reason=\"?sending paused "
                rf"a:\d+ login={ALICE}")
    check = qi.cli("check", check=False).stdout
    assert f"warning: {ALICE}: sending paused until" in check and qid in check
    assert re.search(r"warning: [1-9]\d* outbound message\(s\) held for review", check)
    # the operator sends it: bob gets it, the remote recipient's copy is queued
    out = qi.cli("quarantine", "release", entry["id"]).stdout
    assert "delivered to 1 local account(s)" in out and f"as {qid}" in out
    [delivered] = [m for m in qi.messages(BOB) if subject.encode() in m]
    assert delivered.startswith(f"Return-Path: <{ALICE}>\r\n".encode())
    assert [r for r, d in qi.outbound() if subject.encode() in d] == [["someone@remote.test"]]
    assert not [e for e in entries(qi) if e["qid"] == qid]
    qi.cli("quarantine", "resume", ALICE)
    with login(qi) as c:
        c.sendmail(ALICE, [BOB], message(f"again {subject}", sender=ALICE))
    assert f"again {subject}" in subjects(qi, BOB)


def test_a_refused_submission_is_held_too(tmp_path: Path, clamd: Clamd) -> None:
    inst = start(tmp_path, clamd, "reject")
    try:
        subject = f"refused {uuid.uuid4().hex}"
        with login(inst) as c, pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail(ALICE, [BOB], infected(subject, sender=ALICE))
        assert (e.value.smtp_code, e.value.smtp_error) == (
            554, b"5.7.1 Message refused by content filter clamav")
        inst.wait_log(rf"outbound held qid=\w+ ip=127\.0\.0\.1 account={ALICE} filter=clamav")
        [entry] = entries(inst, "--direction", "out")
        assert subject in inst.cli("quarantine", "show", entry["id"]).stdout
        assert subject not in subjects(inst, BOB)
    finally:
        inst.stop()
