"""The Protocol-based SMTP driver (`smtp.connection`), over the wire: the replies to a pipelined
group go out in one write (RFC 2920 §3.1), nothing more is read from a client while its message
is being made durable, and every idle session keeps its connection without a task of its own.

The MX runs in-process (`tests.harness`); what only the server sees (its writes, whether it
reads) is taken from the connection's transport on the server's loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.conftest import HarnessFactory
from tests.harness import Harness, codes, queue_id

SINK = "sink@drv.test"
MSG = b"Subject: driver\r\n\r\nHello\r\n"


@pytest.fixture(scope="module")
def h(harness_factory: HarnessFactory) -> Harness:
    h = harness_factory()
    h.add_domain("drv.test")
    h.add_user(SINK)
    return h


class _Writes:
    """A transport that counts its writes and passes everything on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _count_writes(h: Harness, port: int) -> _Writes:
    conn = h.smtp_conn(port)

    def wrap() -> _Writes:
        conn.transport = _Writes(conn.transport)
        return conn.transport  # type: ignore[no-any-return]

    return h.on_loop(wrap)


def test_pipelined_group_is_answered_in_one_write(h: Harness) -> None:
    with h.raw() as c:
        counted = _count_writes(h, c.port)
        group = (b"EHLO client.example.net\r\nMAIL FROM:<a@remote.test>\r\n"
                 b"RCPT TO:<" + SINK.encode() + b">\r\nDATA\r\n")
        assert codes(c.feed(group, 4)) == ["250", "250", "250", "354"]
        assert codes(c.feed(MSG + b".\r\nRSET\r\nNOOP\r\n", 3)) == ["250", "250", "250"]
        writes = h.on_loop(lambda: list(counted.writes))
    # one write for the group up to DATA, one for the message's 250 with RSET's and NOOP's
    assert len(writes) == 2, writes
    assert codes(writes[0]) == ["250", "250", "250", "354"]
    assert codes(writes[1]) == ["250", "250", "250"]


def test_nothing_is_read_while_a_message_is_made_durable(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is held up: while it is, the connection does not read (the client's next
    command stays in the socket), and once it answers, the 250 and then the next reply come."""
    release = threading.Event()
    entered = threading.Event()
    deliver = h.db.deliver

    async def slow_deliver(delivery: Any) -> Any:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return await deliver(delivery)

    monkeypatch.setattr(h.db, "deliver", slow_deliver)
    with h.raw() as c:
        assert codes(c.feed(b"EHLO client.example.net\r\nMAIL FROM:<a@remote.test>\r\n"
                            b"RCPT TO:<" + SINK.encode() + b">\r\nDATA\r\n", 4)) == [
            "250", "250", "250", "354"]
        c.send(MSG + b".\r\n")
        assert entered.wait(30)
        fed = h.smtp_stats(c.port).fed
        c.send(b"NOOP\r\n")
        conn = h.smtp_conn(c.port)
        try:
            for _ in range(20):  # the NOOP had every chance to be read
                assert not h.on_loop(conn.transport.is_reading)
                assert h.smtp_stats(c.port).fed == fed
                threading.Event().wait(0.01)
        finally:
            release.set()
        replies = c.replies(2)
        assert codes(replies) == ["250", "250"]
        assert h.on_loop(conn.transport.is_reading)
    queue_id(replies)  # the first was the message's "queued as"
    assert any(b"driver" in m for m in h.messages(SINK))


def test_idle_sessions_have_no_task(h: Harness) -> None:
    def tasks() -> int:
        return len(asyncio.all_tasks())

    before = h.on_loop(tasks)
    clients = [h.raw() for _ in range(20)]
    try:
        for c in clients:
            assert codes(c.feed(b"EHLO client.example.net\r\n", 1)) == ["250"]
        assert h.on_loop(tasks) == before
    finally:
        for c in clients:
            c.quit()


class _RemoteLikeSlots:
    """The MX's slots answering a slow-slot request after `delay`, as a worker's do (a round
    trip to the main process), counting what is taken and given back."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.slow_taken = self.slow_released = 0

    async def acquire_ip(self, key: str) -> bool:
        return bool(await self.inner.acquire_ip(key))

    def release_ip(self, key: str) -> None:
        self.inner.release_ip(key)

    async def acquire_slow(self) -> bool:
        await asyncio.sleep(self.delay)
        ok = bool(await self.inner.acquire_slow())
        self.slow_taken += ok
        return ok

    def release_slow(self) -> None:
        self.slow_released += 1
        self.inner.release_slow()


def test_a_slow_slot_is_asked_for_once_while_its_answer_is_on_the_way(
    harness_factory: HarnessFactory,
) -> None:
    """A connection past `slow_after` asks for a slow slot; input that comes while the answer
    is on its way must not ask again (each grant but one leaked a slot of the global count,
    found by a review: 9 in one second of NOOPs with a 5 ms answer)."""
    h = harness_factory(config={"smtp": {"slow_after": 0.3}})
    mx = h.mx
    inner = mx.slots
    slots = _RemoteLikeSlots(inner, delay=2.0)

    def swap() -> None:
        mx.slots = slots
        mx.listeners.slots = slots

    h.on_loop(swap)
    with h.raw() as c:
        assert codes(c.feed(b"EHLO client.example.net\r\n", 1)) == ["250"]
        threading.Event().wait(1.0)  # past slow_after and a watch tick: the answer is due
        for _ in range(20):  # commands while it is on its way
            assert codes(c.feed(b"NOOP\r\n", 1)) == ["250"]
        threading.Event().wait(2.5)  # every answer in
        assert codes(c.feed(b"NOOP\r\n", 1)) == ["250"]
        c.quit()
    threading.Event().wait(0.5)
    assert slots.slow_taken == 1
    assert slots.slow_released == 1 and h.on_loop(lambda: inner.slow) == 0


def test_a_client_that_pipelines_but_does_not_read_gets_no_more_answers(h: Harness) -> None:
    """Megabytes of `NOOP` sent, the replies left unread: the server stops answering once its
    write buffer is past the high-water mark (each read of 256 KiB of commands used to queue
    all of its replies: 5 MB for one read of `EHLO x`), and answers the rest once the client
    reads."""
    import socket

    commands = 400_000  # 2.4 MB of commands, 5.6 MB of replies
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    with sock:
        sock.connect(("127.0.0.1", h.smtp_port))
        assert sock.recv(4096).startswith(b"220 ")
        conn = h.smtp_conn(sock.getsockname()[1])
        sender = threading.Thread(target=sock.sendall, args=(b"NOOP\r\n" * commands,))
        sender.start()
        peak = 0
        for _ in range(100):
            peak = max(peak, h.on_loop(conn.transport.get_write_buffer_size))
            threading.Event().wait(0.01)
        assert peak < 256 * 1024, peak
        received = bytearray()
        while received.count(b"\r\n") < commands:
            chunk = sock.recv(1 << 20)
            assert chunk, bytes(received[-200:])
            received += chunk
        sender.join(30)
        assert set(bytes(received).split(b"\r\n")[:-1]) == {b"250 2.0.0 Ok"}


def test_a_stop_lets_a_message_being_made_durable_finish(
    harness_factory: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops while a message is being made durable: that goes on, the client gets
    its 250 and then the 421 4.3.2 (cancelled, it would get only the 421 for a message the
    store may still commit, and send it again)."""
    h = harness_factory()
    h.add_domain("stop.test")
    h.add_user("sink@stop.test")
    release = threading.Event()
    entered = threading.Event()
    deliver = h.db.deliver

    async def slow_deliver(delivery: Any) -> Any:
        entered.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return await deliver(delivery)

    monkeypatch.setattr(h.db, "deliver", slow_deliver)
    with h.raw() as c:
        assert codes(c.feed(b"EHLO client.example.net\r\nMAIL FROM:<a@remote.test>\r\n"
                            b"RCPT TO:<sink@stop.test>\r\nDATA\r\n", 4)) == [
            "250", "250", "250", "354"]
        c.send(MSG + b".\r\n")
        assert entered.wait(30)
        stopping = threading.Thread(target=h.run, args=(h._stop_all(),))
        stopping.start()
        try:
            threading.Event().wait(0.2)  # the stop reached the session and waits on it
            assert stopping.is_alive()
        finally:
            release.set()
        replies = c.replies(2)
        stopping.join(30)
    assert codes(replies) == ["250", "421"]
    assert b"4.3.2" in replies
    assert any(b"driver" in m for m in h.messages("sink@stop.test"))
