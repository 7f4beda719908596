"""The driver's intake of message text (`smtp.intake`), over real sockets into the in-process
servers: what the budget counts is given back on every way a transaction ends, each spool is
closed (its file gone) with it, and spooled messages go through every pipeline stage (the
submission sender checks, local delivery and the outbound queue) byte for byte."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from postkeep.store.spool import Spool
from tests.conftest import HarnessFactory
from tests.harness import TIMEOUT, Harness, SmtpClient, codes, strip_trace

MAX_PART = 300_000
CONFIG = {
    "smtp": {"spool_threshold": 64 * 1024, "max_data_in_flight": 1024 * 1024,
             "max_message_size": 2_000_000},
    "submission": {"max_part_size": MAX_PART},
}
TEXT = b"Subject: spooled\r\n\r\n" + (b"t" * 78 + b"\r\n") * 5000  # 400 KB: spooled


@pytest.fixture(scope="module")
def h(harness_factory: HarnessFactory) -> Harness:
    h = harness_factory(config=CONFIG)
    h.add_domain("example.test")
    h.add_user("alice@example.test")
    h.add_user("bob@example.test")
    return h


def spools(h: Harness) -> list[str]:
    """The open files of this process (which runs the servers) in blobs/tmp: the spools."""
    tmp = f"{(h.root / 'blobs' / 'tmp').resolve()}/"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tmp):
            found.append(target)
    return found


def used(h: Harness) -> int:
    assert h.mx is not None and h.submission is not None and h.mx.budget is h.submission.budget
    return h.on_loop(lambda: h.mx.budget.used)  # type: ignore[union-attr]


def settled(h: Harness, check: Callable[[], bool]) -> None:
    """Wait (on the servers' loop) until `check()` holds: the server caught up."""

    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.01)

    h.run(wait(), timeout=TIMEOUT)


def nothing_held(h: Harness) -> None:
    settled(h, lambda: h.mx.budget.used == 0 and not spools(h))  # type: ignore[union-attr]


def begin(c: SmtpClient, rcpt: str = "alice@example.test") -> None:
    out = c.feed(b"EHLO c\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<%s>\r\n" % rcpt.encode(), 3)
    assert codes(out) == ["250", "250", "250"]


def spooling(h: Harness, c: SmtpClient, octets: int) -> None:
    """Wait until the server read `octets` of this connection and holds a spool."""
    h.wait_fed(c.port, octets)
    settled(h, lambda: len(spools(h)) == 1)


@pytest.mark.parametrize("end", ["RSET", "EHLO", "QUIT", "close", "too big", "bare LF",
                                 "loop", "bdat too big"])
def test_every_end_of_a_spooled_transaction_gives_everything_back(h: Harness, end: str) -> None:
    c = h.raw()
    begin(c)
    head = b"".join(b"Received: from h%d by h%d; x\r\n" % (i, i + 1) for i in range(51))
    if end in ("RSET", "EHLO", "QUIT", "bdat too big"):
        chunk = b"BDAT %d\r\n" % len(TEXT) + TEXT
        assert codes(c.feed(chunk, 1)) == ["250"]
        spooling(h, c, 0)
        assert used(h) < 64 * 1024  # a spooled text keeps less than a chunk in memory
        if end == "bdat too big":
            assert codes(c.feed(b"BDAT %d\r\n" % (5 * len(TEXT)) + TEXT * 5, 1)) == ["552"]
            nothing_held(h)
            assert codes(c.feed(b"RSET\r\n", 1)) == ["250"]
        else:
            c.send({"RSET": b"RSET\r\n", "EHLO": b"EHLO c\r\n", "QUIT": b"QUIT\r\n"}[end])
    else:
        assert codes(c.feed(b"DATA\r\n", 1)) == ["354"]
        text = {"too big": TEXT * 6, "bare LF": TEXT + b"a\nb\r\n" + TEXT, "loop": head + TEXT,
                "close": TEXT}[end]
        c.send(text)
        if end == "close":
            spooling(h, c, 0)
            c.close()
        else:
            expected = {"too big": "552", "bare LF": "550", "loop": "554"}[end]
            assert codes(c.feed(b".\r\n", 1)) == [expected]
    nothing_held(h)
    c.close()


def test_a_delivered_message_gives_everything_back(h: Harness) -> None:
    for text in (b"Subject: small\r\n\r\nin memory\r\n", TEXT):
        with h.raw() as c:
            begin(c, "bob@example.test")
            assert codes(c.feed(b"DATA\r\n", 1)) == ["354"]
            assert codes(c.feed(text + b".\r\n", 1)) == ["250"]
        nothing_held(h)
    assert [strip_trace(m) for m in h.messages("bob@example.test")[-2:]] == [
        b"Subject: small\r\n\r\nin memory\r\n", TEXT]


def submitted(parts: list[bytes]) -> bytes:
    mime = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n" + p + b"\r\n" for p in parts)
    return (b"From: alice@example.test\r\nTo: x@remote.test\r\nSubject: big\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + mime + b"--b--\r\n")


def test_spooled_submission_checks_parts_and_queues_byte_for_byte(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spooled submitted message: its parts are checked from the spool (one over
    submission.max_part_size: 552), and it is stored for a local recipient and queued for a
    remote one, each exactly as sent."""
    made: list[Spool] = []
    new_spool = h.db.new_spool

    def counted() -> Spool:
        made.append(new_spool())
        return made[-1]

    monkeypatch.setattr(h.db, "new_spool", counted)
    line = b"p" * 78 + b"\r\n"
    too_big = submitted([line * 100, line * 4000])  # a part of 320 KB
    fits = submitted([line * 3000, line * 3000])  # 480 KB in parts of 240 KB
    with h.submit("alice@example.test") as client:
        assert client.mail("alice@example.test")[0] == 250
        assert client.rcpt("x@remote.test")[0] == 250
        code, text = client.data(too_big)
        assert (code, text) == (552, f"5.3.4 A MIME part exceeds {MAX_PART} bytes".encode())
        client.rset()
        assert client.mail("alice@example.test")[0] == 250
        assert client.rcpt("x@remote.test")[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        code, text = client.data(fits)
        assert code == 250, text
    assert len(made) == 2  # both were spooled
    nothing_held(h)
    assert strip_trace(h.messages("bob@example.test")[-1]) == fits
    assert [(rcpts, strip_trace(data)) for rcpts, data in h.outbound()] == [
        (["x@remote.test"], fits)]
