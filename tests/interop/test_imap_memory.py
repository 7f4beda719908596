"""IMAP memory and CPU bounds over the wire, measured on the real `postkeep serve` process.

The instance has one worker process (`server.processes = 1`), so that worker's
/proc/PID/status is the process every session runs in. Large messages are delivered through
the store API from the test process (another process on the same store, as the IMAP workers
are), so nothing but the command under test runs in the server meanwhile; its peak memory is
reset before the command (/proc/PID/clear_refs) and read after it (VmHWM), against the
resident size before it (VmRSS).

What must hold (issue 12): FETCH of large messages (BODY[], partial, BINARY, with COMPRESS)
costs the server about the same whatever the messages' size, and the client gets the octets
delivered; a content SEARCH over many messages does not hold the mailbox; too many search
keys or too much search work get NO [LIMIT] (RFC 9051 §7.1); a long SEARCH does not keep
another session on the same process waiting.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import select
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postkeep import config as config_mod
from postkeep.store import open_store
from postkeep.store.api import Envelope, LocalDelivery
from postkeep.store.crypto import load_master_key
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_imap import ctx

MiB = 1 << 20
BIG = 8 * MiB  # each large message
COUNT = 4  # large messages per FETCH
SMALL, SMALL_SIZE = 100, 200 << 10  # a content SEARCH reads these (read whole) ...
LARGE, LARGE_SIZE = 2, 6 * MiB  # ... and these (scanned piece by piece): 31.5 MiB in all
KEYS = 3000  # imap.max_search_keys here
WORK = 4_000_000  # imap.max_search_work here
CONTENT = 40 * MiB  # imap.max_search_content here


FETCHER = "alice@example.test"  # FETCH tests (INBOX), the content limit (mailbox "Limit")
SEARCHER = "alice@example.test"  # the content SEARCH, on a server of its own
SLOW = "bob@example.test"  # the search limits and the long SEARCH


def _instance(root: Path) -> Instance:
    inst = make_instance(root)
    inst.set_config("server", processes=1)
    inst.set_config("imap", max_search_keys=KEYS, max_search_work=WORK,
                    max_search_content=CONTENT)
    inst.start()
    return inst


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = _instance(tmp_path_factory.mktemp("imapmem"))
    yield inst
    inst.stop()


@pytest.fixture
def search_srv(tmp_path: Path) -> Iterator[Instance]:
    """A server of its own: memory the allocator keeps from earlier commands (the FETCH tests)
    would hide what a search allocates."""
    inst = _instance(tmp_path)
    yield inst
    inst.stop()


# -- the server process ----------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    return out


class Peak:
    """The server's peak resident memory during a `with` block, above its size before it."""

    def __init__(self, inst: Instance) -> None:
        self.pid = inst.worker()
        self.growth = 0

    def __enter__(self) -> Peak:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux 4.0, proc(5))
        self.before = _status(self.pid)["VmRSS"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = _status(self.pid)["VmHWM"] - self.before


# -- delivering through the store ------------------------------------------------------------


def _deliver(inst: Instance, address: str, messages: list[bytes], mailbox: str = "INBOX") -> None:
    async def run() -> None:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        key = load_master_key(cfg.data_path(cfg.store.master_key_file))
        store = await open_store(cfg.store_url, cfg.data_dir, key, maintenance=False)
        try:
            account = await store.get_account(address)
            assert account is not None
            for data in messages:
                envelope = Envelope("", "", [], "127.0.0.1", "", time.time())
                await store.deliver(LocalDelivery(envelope, [account.id], data,
                                                  mailbox_name=mailbox))
        finally:
            await store.close()

    asyncio.run(run())
    inst.hand_over()  # what this (root) process wrote goes to the server's user


def _text_lines(size: int, seed: bytes) -> bytes:
    """About `size` octets of base64 in 76-character lines (distinct per `seed`)."""
    line_count = size // 78
    stream = hashlib.shake_256(seed).digest(line_count * 57)
    return b"\r\n".join(
        base64.b64encode(stream[i * 57 : (i + 1) * 57]) for i in range(line_count)
    )


def _big_message(n: int, size: int = BIG) -> bytes:
    """A multipart message of about `size` octets: a text part, then a base64 attachment."""
    head = (
        f"From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\n"
        f"Subject: large {n}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n'
        f"--b{n}\r\nContent-Type: text/plain\r\n\r\nPart one of {n}.\r\n"
        f"--b{n}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = f"\r\n--b{n}--\r\n".encode()
    return head + _text_lines(size - len(head) - len(tail), b"%d" % n) + tail


# -- a raw client ------------------------------------------------------------------------------


@dataclass
class Response:
    """One response: its text with each literal replaced by "{n}", and the literals."""

    text: bytes
    literals: list[bytes] = field(default_factory=list)


class Client:
    """IMAP over implicit TLS, reading literals; COMPRESS=DEFLATE when `compress()` is on."""

    def __init__(self, inst: Instance, user: str) -> None:
        sock = socket.create_connection(("127.0.0.1", inst.imaps_port), timeout=60)
        self.sock = ctx().wrap_socket(sock)
        self.buf = bytearray()
        self.inflate: zlib._Decompress | None = None
        self.deflate: zlib._Compress | None = None
        self.read_line()
        assert self.command(f'LOGIN {user} "{PASSWORD}"')[-1].text.startswith(b"t OK")

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(bytes(self.buf[-200:]))
        self.buf += self.inflate.decompress(chunk) if self.inflate is not None else chunk

    def pending(self) -> bool:
        """Whether the server has sent anything not read yet (without waiting)."""
        if self.buf or self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def read_line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def read_bytes(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def response(self) -> Response:
        line = self.read_line()
        out = Response(b"")
        while (m := re.search(rb"~?\{(\d+)\}$", line)) is not None:
            out.text += line[: m.start()] + b"{%d}" % int(m.group(1))
            out.literals.append(self.read_bytes(int(m.group(1))))
            line = self.read_line()
        out.text += line
        return out

    def until(self, tag: bytes) -> list[Response]:
        responses = []
        while True:
            responses.append(self.response())
            if responses[-1].text.startswith(tag + b" "):
                return responses

    def command(self, text: str, tag: str = "t") -> list[Response]:
        self.send(f"{tag} {text}\r\n".encode())
        return self.until(tag.encode())

    def compress(self) -> None:
        assert self.command("COMPRESS DEFLATE")[-1].text.startswith(b"t OK")
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)

    def close(self) -> None:
        self.sock.close()


# -- FETCH -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large(srv: Instance) -> list[bytes]:
    messages = [_big_message(n) for n in range(COUNT)]
    _deliver(srv, FETCHER, messages)
    return messages


def _attachment(message: bytes) -> bytes:
    """BINARY[2] of `_big_message`: the attachment decoded."""
    start = message.index(b"base64\r\n\r\n") + len(b"base64\r\n\r\n")
    return base64.b64decode(message[start : message.rindex(b"\r\n--b")])


def test_fetch_many_small_messages_flushes_by_octets(srv: Instance) -> None:
    """FETCH 1:* BODY[] of 100 messages of 200 KiB (read whole, not streamed): the responses
    go to the socket every 256 KiB, not once per 200 messages (all 20 MiB were held)."""
    messages = [_haystack(n, SMALL_SIZE, False) for n in range(SMALL)]
    client = Client(srv, FETCHER)
    client.command("CREATE Small")
    _deliver(srv, FETCHER, messages, "Small")
    client.command("SELECT Small")
    with Peak(srv) as peak:
        responses = client.command("FETCH 1:* (BODY.PEEK[])")
    assert responses[-1].text == b"t OK FETCH completed"
    assert [r.literals for r in responses[:-1]] == [[m] for m in messages]
    total = sum(map(len, messages))
    print(f"FETCH of {SMALL} x {SMALL_SIZE >> 10} KiB: server grew {peak.growth / MiB:.1f} MiB")
    assert peak.growth < total / 4
    client.close()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
def test_fetch_large_messages_streams(srv: Instance, large: list[bytes], compress: bool) -> None:
    """FETCH 1:* BODY[] of 4 x 8 MiB: the client gets every octet, and the server grows by
    less than one message meanwhile (it held them all before)."""
    client = Client(srv, FETCHER)
    if compress:
        client.compress()
    client.command("SELECT INBOX")
    with Peak(srv) as peak:
        responses = client.command("FETCH 1:* (BODY.PEEK[])")
    assert responses[-1].text == b"t OK FETCH completed"
    assert [r.literals for r in responses[:-1]] == [[m] for m in large]
    print(f"FETCH of {COUNT} x {BIG >> 20} MiB (compress={compress}): "
          f"server grew {peak.growth / MiB:.1f} MiB")
    assert peak.growth < BIG
    client.close()


def test_fetch_partial_and_binary_stream(srv: Instance, large: list[bytes]) -> None:
    """Partial BODY[] (RFC 9051 §6.4.5) and BINARY (RFC 3516) of large messages: the octets
    asked for, and no message held whole."""
    client = Client(srv, FETCHER)
    client.command("SELECT INBOX")
    start, length = 3 * MiB + 12345, 2 * MiB
    with Peak(srv) as peak:
        responses = client.command(
            f"FETCH 1:* (BODY.PEEK[]<{start}.{length}> BINARY.PEEK[2] BINARY.SIZE[2])"
        )
    assert responses[-1].text == b"t OK FETCH completed"
    for message, response in zip(large, responses[:-1], strict=True):
        attachment = _attachment(message)
        assert response.literals == [message[start : start + length], attachment]
        assert b"BINARY.SIZE[2] %d" % len(attachment) in response.text
    print(f"FETCH partial + BINARY of {COUNT} x {BIG >> 20} MiB: "
          f"server grew {peak.growth / MiB:.1f} MiB")
    assert peak.growth < BIG
    client.close()


# -- SEARCH ----------------------------------------------------------------------------------


def _haystack(n: int, size: int, needle: bool) -> bytes:
    head = f"From: s@remote.test\r\nSubject: haystack {n:03d}\r\n".encode()
    if size > SMALL_SIZE:  # the text in a base64 part, after an attachment
        text = b"needle in message %d\r\n" % n if needle else b""
        text += _text_lines(size // 2, b"t%d" % n)
        return head + (
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
            b"--B\r\nContent-Type: application/octet-stream\r\n\r\n"
            + _text_lines(size // 4, b"a%d" % n)
            + b"\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(text).replace(b"\n", b"\r\n") + b"--B--\r\n"
        )
    text = b"needle in message %d\r\n" % n if needle else b""
    return head + b"\r\n" + text + _text_lines(size, b"s%d" % n) + b"\r\n"


def test_content_search_sort_thread_hold_little(search_srv: Instance) -> None:
    """SORT, SEARCH BODY and THREAD over 100 messages of 200 KiB and 2 of 6 MiB: the right
    answers, and the server holds a small share of the mailbox (SORT read each message whole,
    SEARCH and THREAD all of them at once)."""
    messages = [_haystack(n, SMALL_SIZE, n % 40 == 7) for n in range(SMALL)]
    messages += [_haystack(SMALL + n, LARGE_SIZE, n == 1) for n in range(LARGE)]
    _deliver(search_srv, SEARCHER, messages)
    total = sum(map(len, messages))
    client = Client(search_srv, SEARCHER)
    client.command("SELECT INBOX")
    growth = {}
    for command, answer in (  # the commands that grew the server least before come first
        ("SORT (REVERSE SUBJECT) UTF-8 ALL",
         b"* SORT " + b" ".join(b"%d" % n for n in range(SMALL + LARGE, 0, -1))),
        ('SEARCH BODY "needle in message"', b"* SEARCH 8 48 88 102"),
        ('SEARCH TEXT "NEEDLE IN MESSAGE 101" SUBJECT haystack', b"* SEARCH 102"),
        ("THREAD ORDEREDSUBJECT UTF-8 SUBJECT haystack",
         b"* THREAD " + b"".join(b"(%d)" % n for n in range(1, SMALL + LARGE + 1))),
    ):
        with Peak(search_srv) as peak:
            responses = client.command(command)
        assert responses[-1].text.startswith(b"t OK"), (command, responses[-1].text)
        assert responses[0].text == answer, command
        growth[command[:11]] = peak.growth
    print(f"content commands over {total / MiB:.1f} MiB: server grew "
          + ", ".join(f"{k} {v / MiB:.1f} MiB" for k, v in growth.items()))
    assert max(growth.values()) < total / 4
    client.close()


# -- SEARCH limits ---------------------------------------------------------------------------


def _unkeywords(count: int) -> str:
    """A program of `count` keys that all match (none short-circuits the others)."""
    return " ".join(f"UNKEYWORD k{i}" for i in range(count))


@pytest.fixture(scope="module")
def slow_box(srv: Instance) -> int:
    """1,600 small messages of SLOW's (50 delivered, copied five times)."""
    _deliver(srv, SLOW, [
        f"From: s@remote.test\r\nSubject: slow {n}\r\n\r\nbody\r\n".encode()
        for n in range(50)
    ])
    client = Client(srv, SLOW)
    client.command("SELECT INBOX")
    for _ in range(5):
        assert client.command("COPY 1:* INBOX")[-1].text.startswith(b"t OK")
    client.close()
    return 1600


def test_search_key_work_and_size_limits(srv: Instance, slow_box: int) -> None:
    """More keys than imap.max_search_keys, or keys x messages past imap.max_search_work:
    NO [LIMIT] (RFC 9051 §7.1) at once, one log line each; within both, the search runs. A
    search string literal past 64 KiB is refused before it is sent (APPEND's 50 MiB were
    allowed)."""
    client = Client(srv, SLOW)
    client.command("SELECT INBOX")
    client.send(b"b SEARCH SUBJECT {70000}\r\n")
    assert client.read_line() == b"b NO [TOOBIG] Literal of 70000 octets exceeds the limit of 65536"
    reply = client.command(f"SEARCH {_unkeywords(KEYS + 1)}")
    assert reply[-1].text == b"t NO [LIMIT] Too many search keys (at most 3000)"
    srv.wait_log(r'reject ip=127\.0\.0\.1 user=bob@example\.test '
                 r'reason="Too many search keys \(at most 3000\)"')
    keys = WORK // slow_box + 1
    reply = client.command(f"UID SEARCH {_unkeywords(keys)}")
    assert reply[-1].text.startswith(b"t NO [LIMIT] Search too complex")
    srv.wait_log(rf'reason="search work {keys} keys x 1600 messages, limit {WORK}"')
    reply = client.command(f"SEARCH {_unkeywords(keys - 1)}")
    assert reply[-1].text == b"t OK SEARCH completed"
    assert reply[0].text == b"* SEARCH " + b" ".join(b"%d" % n for n in range(1, 1601))
    client.close()


def test_search_content_limit(srv: Instance) -> None:
    """Past imap.max_search_content octets of content read, a text search ends NO [LIMIT]."""
    client = Client(srv, FETCHER)
    client.command("CREATE Limit")
    _deliver(srv, FETCHER, [_haystack(0, 12 * MiB, False)], "Limit")
    client.command("SELECT Limit")
    client.command("COPY 1 Limit")
    client.command("COPY 1:2 Limit")  # 4 x 12 MiB, whose text parts take 8 MiB each
    assert client.command('SEARCH BODY "needle"')[-1].text == b"t OK SEARCH completed"
    client.command("COPY 1:4 Limit")  # 8 x 8 MiB of text: past 40 MiB
    reply = client.command('SEARCH BODY "needle"')
    assert reply[-1].text.startswith(b"t NO [LIMIT] Search reads too much")
    srv.wait_log(r'user=alice@example\.test reason="search content past 41943040 octets"')
    client.close()


def test_long_search_lets_other_sessions_run(srv: Instance, slow_box: int) -> None:
    """While one session's SEARCH (2,400 keys x 1,600 messages) runs, another session on the
    same process gets its NOOP answered, before that SEARCH completes."""
    searcher = Client(srv, SLOW)
    searcher.command("SELECT INBOX")
    other = Client(srv, SLOW)
    searcher.send(f"s SEARCH {_unkeywords(WORK // slow_box)}\r\n".encode())
    time.sleep(0.3)  # the server has read the SEARCH and runs it
    other.send(b"n NOOP\r\n")
    assert other.until(b"n")[-1].text == b"n OK NOOP completed"
    assert not searcher.pending(), "the SEARCH completed before the NOOP was answered"
    assert searcher.until(b"s")[-1].text == b"s OK SEARCH completed"
    searcher.close()
    other.close()
