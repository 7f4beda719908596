"""The antivirus filter end to end: a real `postkeep serve` asking a real clamd
(tests/clamd.py, local signatures for EICAR and the ClamAV test file) over its unix and TCP
sockets; messages sent with smtplib to the MX and to submission. Also a clamd that is down
(fail open, fail closed), one that reads and never answers (the timeout; the server stays
responsive meanwhile), the size limits, and `postkeep check`."""

from __future__ import annotations

import io
import re
import smtplib
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.clamd import CLAM_NAME, EICAR, EICAR_NAME, TESTFILES, Clamd
from tests.interop.conftest import Instance, make_instance, reachable
from tests.interop.test_submission import login


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return out.getvalue()


def message(subject: str, attachment: tuple[str, bytes] | None = None, body: str = "hello\n",
            sender: str = "x@remote.test") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "alice@example.test", subject
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                           filename=attachment[0])
    return msg.as_bytes().replace(b"\n", b"\r\n")


#: name -> (attachment, the signature clamd names); None: EICAR in the text itself
INFECTED: dict[str, tuple[tuple[str, bytes] | None, str]] = {
    "plain": (None, EICAR_NAME),
    "base64": (("eicar.com", EICAR), EICAR_NAME),
    "zip": (("eicar.zip", zipped("eicar.com", EICAR)), EICAR_NAME),
    "nested-zip": (("outer.zip", zipped("inner.zip", zipped("eicar.com", EICAR))), EICAR_NAME),
    "clam.exe": (("clam.exe", (TESTFILES / "clam.exe").read_bytes()), CLAM_NAME),
    "clam.7z": (("clam.7z", (TESTFILES / "clam.7z").read_bytes()), CLAM_NAME),
    "clam.tar.gz": (("clam.tar.gz", (TESTFILES / "clam.tar.gz").read_bytes()), CLAM_NAME),
}


def infected(kind: str, subject: str, sender: str = "x@remote.test") -> bytes:
    attachment, _ = INFECTED[kind]
    body = EICAR.decode() + "\n" if attachment is None else "see attached\n"
    return message(subject, attachment, body, sender)


def send_mx(inst: Instance, data: bytes) -> tuple[int, bytes]:
    """The reply to the message's text on the MX: (code, text)."""
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail("x@remote.test")[0] == 250
        assert c.rcpt("alice@example.test")[0] == 250
        return c.data(data)


def stored(inst: Instance, subject: str) -> list[bytes]:
    return [m for m in inst.messages("alice@example.test") if subject.encode() in m]


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    daemon = Clamd(reachable(tmp_path_factory.mktemp("clamd")))
    daemon.start()
    yield daemon
    daemon.stop()


def own_clamd(tmp_path: Path, **kw: str) -> Clamd:
    """A clamd of the test's own (one it stops, or configures otherwise)."""
    (tmp_path / "clamd").mkdir()
    return Clamd(reachable(tmp_path / "clamd"), **kw)


def configure(inst: Instance, address: str, **antivirus: object) -> None:
    # no sending pause after a hit: these tests send infected mail as alice, then clean mail
    # (the pause and the quarantine: tests/interop/test_quarantine.py)
    inst.set_config("filters", inbound=["antivirus"], outbound=["antivirus"],
                    outbound_hit_pause=0)
    inst.set_config("antivirus", address=address, **antivirus)


@pytest.fixture(scope="module")
def av(tmp_path_factory: pytest.TempPathFactory, clamd: Clamd) -> Iterator[Instance]:
    """An instance whose MX and submission ask `clamd` over its unix socket."""
    inst = make_instance(tmp_path_factory.mktemp("av"))
    configure(inst, clamd.address, timeout=10.0)
    inst.start()
    yield inst
    inst.stop()


@pytest.mark.parametrize("kind", list(INFECTED))
def test_infected_messages_are_refused_by_the_mx(av: Instance, kind: str) -> None:
    subject = f"virus {kind} {uuid.uuid4().hex}"
    code, text = send_mx(av, infected(kind, subject))
    assert (code, text) == (554, b"5.7.1 Message content rejected")
    name = INFECTED[kind][1]
    line = av.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=.*"
                       + re.escape(name) + r".*").group(0)
    assert "clamav: virus found" in line
    assert stored(av, subject) == []


@pytest.mark.parametrize("kind", ["plain", "base64", "zip", "nested-zip", "clam.7z"])
def test_infected_messages_are_refused_by_submission(av: Instance, kind: str) -> None:
    subject = f"sub virus {kind} {uuid.uuid4().hex}"
    with login(av) as c, pytest.raises(smtplib.SMTPDataError) as e:
        c.sendmail("alice@example.test", ["bob@example.test", "someone@remote.test"],
                   infected(kind, subject, sender="alice@example.test"))
    assert (e.value.smtp_code, e.value.smtp_error) == (
        554, b"5.7.1 Message refused by content filter clamav")
    assert re.search(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=.*"
                     + re.escape(INFECTED[kind][1]), av.log())
    assert not [m for m in av.messages("bob@example.test") if subject.encode() in m]
    assert not [d for _, d in av.outbound() if subject.encode() in d]


def test_a_clean_message_is_accepted_with_the_field(av: Instance) -> None:
    subject = f"clean {uuid.uuid4().hex}"
    forged = message(subject, ("notes.zip", zipped("notes.txt", b"nothing here\n")))
    forged = b"X-Virus-Scanned: clamav at localhost; clean\r\n" + forged
    assert send_mx(av, forged)[0] == 250
    (msg,) = stored(av, subject)
    head = msg.split(b"\r\n\r\n")[0]
    assert head.count(b"X-Virus-Scanned:") == 1  # ours; the forged one was removed
    assert b"X-Virus-Scanned: clamav at localhost; clean\r\nReceived: " in head
    av.wait_log(r"filter fields removed qid=\w+ ip=127\.0\.0\.1 count=1")
    av.wait_log(r"message qid=\w+ .* result=\"250 2\.0\.0\".* scan=\"?clamav=clean")
    with login(av) as c:
        c.sendmail("alice@example.test", ["bob@example.test"],
                   message(subject, sender="alice@example.test"))
    (sent,) = [m for m in av.messages("bob@example.test") if subject.encode() in m]
    assert b"X-Virus-Scanned: clamav at localhost; clean\r\n" in sent


# -- clamd down, clamd silent -------------------------------------------------------------------


def test_clamd_down_fails_closed_on_the_mx_and_open_on_submission(
        fresh: Instance, tmp_path: Path) -> None:
    """The defaults: the MX tempfails (the sender retries), submission sends unscanned; both
    logged. Over TCP, to a clamd that was up and is stopped."""
    daemon = own_clamd(tmp_path)
    configure(fresh, daemon.tcp_address, timeout=5.0)
    daemon.start()
    try:
        fresh.start()
        subject = f"before {uuid.uuid4().hex}"
        assert send_mx(fresh, message(subject))[0] == 250
        assert send_mx(fresh, infected("zip", subject))[0] == 554
    finally:
        daemon.stop()
    subject = f"down {uuid.uuid4().hex}"
    code, text = send_mx(fresh, message(subject))
    assert (code, text) == (451, b"4.7.1 Message could not be scanned, try again later")
    fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=clamav mode=closed reason=")
    fresh.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=451 4\.7\.1 reason=\"clamav: "
                   r"unavailable: ")
    assert stored(fresh, subject) == []
    with login(fresh) as c:
        c.sendmail("alice@example.test", ["bob@example.test"],
                   message(subject, sender="alice@example.test"))
    (sent,) = [m for m in fresh.messages("bob@example.test") if subject.encode() in m]
    assert b"X-Virus-Scanned: clamav at localhost; unscanned (scanner unavailable)\r\n" in sent
    fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=clamav mode=open")
    r = fresh.cli("check", check=False)
    assert r.returncode == 1
    assert f"antivirus.address: clamd at {daemon.tcp_address} does not answer" in r.stdout


class Silent:
    """A TCP server on loopback that accepts, reads everything, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_silent_clamd_times_out_and_the_server_stays_responsive(fresh: Instance) -> None:
    silent = Silent()
    try:
        configure(fresh, silent.address, timeout=2.0, fail_open_inbound=True,
                  fail_open_outbound=False)
        fresh.start()
        subject = f"silent {uuid.uuid4().hex}"
        result: list[tuple[int, bytes]] = []
        started = time.monotonic()
        sender = threading.Thread(target=lambda: result.append(send_mx(fresh, message(subject))))
        sender.start()
        time.sleep(0.5)  # the scan is waiting on the silent socket now
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", fresh.smtp_port, timeout=5) as c:  # served meanwhile
            assert c.ehlo("other.test")[0] == 250
            assert c.noop()[0] == 250
        assert time.monotonic() - t0 < 1.0
        sender.join(30)
        assert result and result[0][0] == 250  # fail open on the MX
        assert 2.0 <= time.monotonic() - started < 10
        assert silent.received > 0
        fresh.wait_log(r"filter failed qid=\w+ ip=127\.0\.0\.1 filter=clamav mode=open "
                       r"reason=\"no answer within 2s\"")
        (msg,) = stored(fresh, subject)
        assert b"X-Virus-Scanned: clamav at localhost; unscanned (scanner unavailable)" in msg
        with login(fresh) as c, pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("alice@example.test", ["bob@example.test"],
                       message(subject, sender="alice@example.test"))
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (451, b"4.7.1")
    finally:
        silent.close()


# -- size limits --------------------------------------------------------------------------------


def padded(subject: str, pad: int, tail: bytes) -> bytes:
    """A message whose text has `pad` octets of filler before `tail`."""
    filler = ("x" * 76 + "\n") * (pad // 77 + 1)
    return message(subject, body=filler + tail.decode() + "\n")


def test_oversize_truncate_and_skip(fresh: Instance, clamd: Clamd) -> None:
    """Over `max_size`: "truncate" scans the first octets (EICAR within them is found, past
    them not), "skip" scans nothing; the field says which. Every message here arrives into
    the encrypted spool (`smtp.spool_threshold = 0`): scanned from it, its forged field
    removed from its head."""
    fresh.set_config("smtp", spool_threshold=0)
    configure(fresh, clamd.address, max_size=20000)
    fresh.start()
    early, late = f"early {uuid.uuid4().hex}", f"late {uuid.uuid4().hex}"
    assert send_mx(fresh, padded(early, 1000, EICAR + b"\n" + b"y" * 30000))[0] == 554
    forged = b"X-Virus-Scanned: clamav at localhost; clean\r\n" + padded(late, 30000, EICAR)
    assert send_mx(fresh, forged)[0] == 250
    (msg,) = stored(fresh, late)
    assert msg.count(b"X-Virus-Scanned:") == 1
    assert b"X-Virus-Scanned: clamav at localhost; clean (first 20000 octets)\r\n" in msg
    fresh.stop()
    configure(fresh, clamd.address, max_size=20000, oversize="skip")
    fresh.start()
    skipped = f"skipped {uuid.uuid4().hex}"
    assert send_mx(fresh, padded(skipped, 1000, EICAR + b"\n" + b"y" * 30000))[0] == 250
    (msg,) = stored(fresh, skipped)
    assert b"X-Virus-Scanned: clamav at localhost; unscanned (over 20000 octets)\r\n" in msg


def test_a_max_size_over_clamds_stream_limit_is_a_failure(fresh: Instance,
                                                           tmp_path: Path) -> None:
    """clamd's StreamMaxLength (1M here) below `max_size`: clamd refuses the stream; the fail
    mode applies and the log says why."""
    daemon = own_clamd(tmp_path, stream_max="1M")
    daemon.start()
    try:
        configure(fresh, daemon.address, max_size=4 * 1024 * 1024)
        fresh.start()
        subject = f"big {uuid.uuid4().hex}"
        assert send_mx(fresh, padded(subject, 1_500_000, b"end"))[0] == 451
        fresh.wait_log(r"filter failed .* filter=clamav mode=closed reason=\"clamd: INSTREAM "
                       r"size limit exceeded\. \(antivirus\.max_size 4194304 is over clamd's "
                       r"StreamMaxLength\)\"")
        assert send_mx(fresh, padded(f"small {uuid.uuid4().hex}", 100, b"end"))[0] == 250
    finally:
        daemon.stop()


def test_check_is_quiet_when_clamd_answers(av: Instance) -> None:
    r = av.cli("check", check=False)
    assert "antivirus" not in r.stdout
