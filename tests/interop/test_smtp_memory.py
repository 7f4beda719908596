"""What message data costs the server, measured on a real `postkeep serve` with one worker
process (`server.processes = 1`: every session runs in it) by the worker's memory
(/proc/PID/status VmHWM after resetting it) and open files (/proc/PID/fd): large messages are
spooled to encrypted, nameless files instead of held; the long-line check does not split a
message into lines; a process-wide budget refuses message data past it with 451 4.3.1; spooled
messages arrive byte for byte, and an aborted one leaves no file behind."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

from postkeep.mime.structure import bodystructure, parse_structure
from tests.harness import strip_trace
from tests.interop.conftest import PASSWORD, Instance

MiB = 1024 * 1024
ALICE, BOB = "alice@example.test", "bob@example.test"


# -- the server process ---------------------------------------------------------------------------


def pid(inst: Instance) -> int:
    """The worker process, where the sessions run."""
    return inst.worker()


def start(inst: Instance) -> None:
    inst.set_config("server", processes=1)
    inst.start()


def reset_peak(inst: Instance) -> int:
    """Reset the server's peak RSS to its current RSS (clear_refs, Linux >= 4.0); that RSS."""
    with open(f"/proc/{pid(inst)}/clear_refs", "w") as f:
        f.write("5")
    return peak(inst)


def peak(inst: Instance) -> int:
    """The server's peak RSS (VmHWM) since the last reset, in bytes."""
    with open(f"/proc/{pid(inst)}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def spool_files(inst: Instance) -> list[str]:
    """The server's open files in blobs/tmp: its spools (nameless: "#123 (deleted)")."""
    tmp = f"{(inst.dir / 'blobs' / 'tmp').resolve()}/"
    found = []
    for fd in os.listdir(f"/proc/{pid(inst)}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid(inst)}/fd/{fd}")
            if target.startswith(tmp):
                found.append(target)
    return found


def wait_for(condition: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        time.sleep(0.025)
    raise AssertionError(f"never: {what}")


# -- SMTP over a raw socket -----------------------------------------------------------------------


class Smtp:
    def __init__(self, inst: Instance) -> None:
        self.sock = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=60)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220 ")
        self.send(b"EHLO client.test\r\n")
        assert self.reply().startswith(b"250 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """The last line of the next reply."""
        while (line := self.file.readline()) and line[3:4] == b"-":
            pass
        return line

    def begin(self, rcpt: str = ALICE) -> bytes:
        """MAIL, RCPT, DATA: the reply to DATA."""
        self.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode())
        assert self.reply().startswith(b"250 ") and self.reply().startswith(b"250 ")
        return self.reply()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()  # (the socket stays open while its file is)
            self.sock.close()


@contextlib.contextmanager
def smtp(inst: Instance) -> Iterator[Smtp]:
    client = Smtp(inst)
    try:
        yield client
    finally:
        client.close()


def stuffed(text: bytes) -> bytes:
    """`text` (ending in CRLF) dot-stuffed and terminated for DATA (RFC 5321 §4.5.2)."""
    return (b"\r\n" + text).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def send_message(inst: Instance, text: bytes, rcpt: str = ALICE) -> bytes:
    with smtp(inst) as c:
        assert c.begin(rcpt).startswith(b"354 ")
        c.send(stuffed(text))
        return c.reply()


def body(size: int, line: bytes = b"x" * 76 + b"\r\n") -> bytes:
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


# -- memory -------------------------------------------------------------------------------------


def test_concurrent_large_messages_cost_what_a_session_holds_not_their_size(
    fresh: Instance,
) -> None:
    """8 messages of 8 MB at once (64 MB): past the spool threshold each goes to an encrypted
    file; the server's memory grows by a few MB per session, far below the data (held in
    memory, each such message cost 2.5-3 times its size)."""
    fresh.set_config("smtp", spool_threshold=256 * 1024)
    start(fresh)
    text = body(8 * MiB)
    before = reset_peak(fresh)
    replies: list[bytes] = []
    threads = [threading.Thread(target=lambda: replies.append(send_message(fresh, text)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown = peak(fresh) - before
    assert [r[:4] for r in replies] == [b"250 "] * 8
    assert grown < 40 * MiB, f"the server grew by {grown / MiB:.0f} MiB for 8 x 8 MB"
    assert all(strip_trace(m) == text for m in fresh.messages(ALICE))


def test_a_message_of_short_lines_is_not_split_into_lines(fresh: Instance) -> None:
    """8 MB of 2-octet lines: the line checks cost nothing per line (a split of the whole
    message into 2 million lines cost the server about 120 MB)."""
    fresh.set_config("smtp", spool_threshold=256 * 1024)
    start(fresh)
    text = body(8 * MiB, b"ab\r\n")
    before = reset_peak(fresh)
    assert send_message(fresh, text).startswith(b"250 ")
    grown = peak(fresh) - before
    assert grown < 24 * MiB, f"the server grew by {grown / MiB:.0f} MiB"


# -- the budget ---------------------------------------------------------------------------------


def test_data_in_flight_past_the_budget_gets_451_and_later_mail_goes_through(
    fresh: Instance,
) -> None:
    """max_data_in_flight 1 MiB: a session holds 900 KB in memory; another's 200 KB does not
    fit (451 4.3.1 after its text), and once 1000 KB are held DATA itself is refused; the
    transaction is reset; when the first is done, all of the budget is there again."""
    fresh.set_config("smtp", spool_threshold=MiB, max_data_in_flight=MiB)
    start(fresh)
    holder = Smtp(fresh)
    assert holder.begin().startswith(b"354 ")
    holder.send(b"Subject: held\r\n\r\n" + b"h" * 78 + b"\r\n" + b"h\r\n" * (900_000 // 3))
    small = b"Subject: small\r\n\r\n" + (b"s" * 78 + b"\r\n") * (200_000 // 80)
    refused = b""
    for _ in range(200):  # until the holder's text is in (counted) on the server
        with smtp(fresh) as c:
            assert c.begin(BOB).startswith(b"354 ")
            c.send(stuffed(small))
            refused = c.reply()
        if not refused.startswith(b"250 "):
            break
        time.sleep(0.025)
    assert refused.startswith(b"451 4.3.1 "), refused
    fresh.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=451 4\.3\.1 "
                   r"reason=\"message data in flight past smtp.max_data_in_flight\"")

    holder.send(b"h\r\n" * (100_000 // 3))  # 1000 KB held: less than 64 KiB of room
    with smtp(fresh) as c:
        for _ in range(200):
            got = c.begin(BOB)
            if not got.startswith(b"354 "):
                break
            c.send(b".\r\n")  # an empty message, until the 100 KB are in
            assert c.reply().startswith(b"250 ")
        assert got.startswith(b"451 4.3.1 "), got
        c.send(b"DATA\r\n")  # the transaction was reset
        assert c.reply().startswith(b"503 5.5.1 ")
    fresh.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=451 4\.3\.1 "
                   r"reason=\"no room in smtp.max_data_in_flight\"")

    holder.send(b".\r\n")
    assert holder.reply().startswith(b"250 ")
    holder.close()
    assert send_message(fresh, small, BOB).startswith(b"250 ")
    # everything was given back: a message that needs all but a little of the budget fits
    whole = b"Subject: whole\r\n\r\n" + (b"w" * 78 + b"\r\n") * ((MiB - 40_000) // 80)
    assert send_message(fresh, whole, BOB).startswith(b"250 ")


# -- spooled messages ---------------------------------------------------------------------------


def mime_message() -> bytes:
    """A multipart message of about 2.5 MB: lines that need dot-stuffing, 8-bit text, a
    base64 attachment, a nested message."""
    attachment = base64.encodebytes(os.urandom(1_500_000)).replace(b"\n", b"\r\n")
    text = "".join(f".line {i} with a leading dot, ünïcödé\r\n" for i in range(20_000)).encode()
    return (
        b"From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\n"
        b"Subject: spooled\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\npreamble\r\n'
        b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text
        + b"--outer\r\nContent-Type: application/octet-stream; name=r.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment
        + b"--outer\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n"
        b"--outer--\r\n"
    )


def imap_fetch(inst: Instance, user: str) -> list[tuple[bytes, bytes]]:
    """(BODY[], BODYSTRUCTURE) of every message in the user's INBOX, over IMAP."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=context, timeout=60)
    try:
        client.login(user, PASSWORD)
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(BODYSTRUCTURE BODY.PEEK[])")
    finally:
        client.logout()
    out = []
    for item in data:
        if isinstance(item, tuple):
            m = re.search(rb"BODYSTRUCTURE (\(.*\)) BODY\[\]", item[0])
            assert m is not None, item[0][:300]
            out.append((item[1], m.group(1)))
    return out


def test_spooled_messages_arrive_byte_for_byte_with_their_structure(fresh: Instance) -> None:
    """Past a 64 KiB threshold the text goes to a nameless file in blobs/tmp while it
    arrives (DATA and BDAT); read back over IMAP, each message is what was sent, its
    BODYSTRUCTURE that of the stored octets; and no spool is left."""
    fresh.set_config("smtp", spool_threshold=64 * 1024)
    start(fresh)
    text = mime_message()
    wire = stuffed(text)
    with smtp(fresh) as c:
        assert c.begin().startswith(b"354 ")
        c.send(wire[: len(wire) // 2])
        wait_for(lambda: len(spool_files(fresh)) == 1, "a spool while DATA arrives")
        c.send(wire[len(wire) // 2 :])
        assert c.reply().startswith(b"250 ")
        c.send(b"MAIL FROM:<sender@remote.test> BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\n")
        assert c.reply().startswith(b"250 ") and c.reply().startswith(b"250 ")
        half = len(text) // 2
        c.send(b"BDAT %d\r\n" % half + text[:half])
        assert c.reply().startswith(b"250 ")
        assert len(spool_files(fresh)) == 1  # between the chunks
        c.send(b"BDAT %d LAST\r\n" % (len(text) - half) + text[half:])
        assert c.reply().startswith(b"250 ")
    wait_for(lambda: spool_files(fresh) == [], "the spools closed")
    fetched = imap_fetch(fresh, ALICE)
    assert len(fetched) == 2
    for stored, structure in fetched:
        assert strip_trace(stored) == text
        assert structure == bodystructure(parse_structure(stored)).encode()


# -- aborted transactions ------------------------------------------------------------------------


def test_an_aborted_spooled_transaction_leaves_nothing_behind(fresh: Instance) -> None:
    """RSET between BDAT chunks, QUIT, a disconnect in DATA, a message too big, a 554 from a
    pipeline stage: each spooled transaction's file is removed."""
    fresh.set_config("smtp", spool_threshold=64 * 1024, max_message_size=2 * MiB)
    start(fresh)
    piece = b"Subject: aborted\r\n\r\n" + (b"a" * 78 + b"\r\n") * 5000  # 400 KB

    def spooling() -> None:
        wait_for(lambda: len(spool_files(fresh)) == 1, "a spool")

    def gone() -> None:
        wait_for(lambda: spool_files(fresh) == [], "no spool left")

    with smtp(fresh) as c:  # RSET between BDAT chunks
        c.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert c.reply().startswith(b"250 ") and c.reply().startswith(b"250 ")
        c.send(b"BDAT %d\r\n" % len(piece) + piece)
        assert c.reply().startswith(b"250 ")
        spooling()
        c.send(b"RSET\r\n")
        assert c.reply().startswith(b"250 ")
        gone()
        c.send(b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert c.reply().startswith(b"250 ") and c.reply().startswith(b"250 ")
        c.send(b"BDAT %d\r\n" % len(piece) + piece)  # QUIT between chunks
        assert c.reply().startswith(b"250 ")
        spooling()
        c.send(b"QUIT\r\n")
        assert c.reply().startswith(b"221 ")
    gone()
    with smtp(fresh) as c:  # the client goes away in the middle of DATA
        assert c.begin().startswith(b"354 ")
        c.send(piece)
        spooling()
    gone()
    with smtp(fresh) as c:  # too big: 552 at the end, the spool gone as soon as it is known
        assert c.begin().startswith(b"354 ")
        c.send(piece * 5)  # 2,000,100 octets: under the limit, spooled
        spooling()
        c.send(piece)  # past it: the rest is read and dropped, the spool removed before "."
        gone()
        c.send(b".\r\n")
        assert c.reply().startswith(b"552 5.3.4 ")
    hops = b"".join(b"Received: from h%d by h%d; x\r\n" % (i, i + 1) for i in range(51))
    reply = send_message(fresh, hops + piece)  # the limits stage: a mail loop
    assert reply.startswith(b"554 5.4.6 "), reply
    gone()
    assert fresh.messages(ALICE) == []
    assert os.listdir(fresh.dir / "blobs" / "tmp") == []
