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
