"""APPEND literals against the per-process budget `imap.max_append_in_flight`, over the wire of
a real `postkeep serve` (issue 12: memory bounded in bytes).

Every literal a logged-in session holds counts against the budget of its IMAP process from the
moment it is accepted until its command ends, however it ends. A synchronizing literal that
does not fit is answered `NO [LIMIT]` (RFC 9051 §7.1) instead of "+", so the client never
sends it; a non-synchronizing one (LITERAL+, RFC 7888) is read and dropped, then answered the
same. The budget is given back when an APPEND is stored or fails, when a MULTIAPPEND is
refused part way, and when the connection drops in the middle of a literal. Memory: N
concurrent large APPENDs grow the server by what the budget lets in, not by N messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import Instance, make_instance
from tests.interop.test_imap_memory import Client, Peak, _text_lines

MiB = 1 << 20
LIMIT = MiB  # imap.max_append_size and imap.max_append_in_flight of the budget tests
PART = 600_000  # two of them do not fit in LIMIT
USER = "alice@example.test"
REJECT = (r'reject ip=127\.0\.0\.1 user=alice@example\.test '
          r'reason="literal octets in flight past imap\.max_append_in_flight"')


def _message(size: int, seed: str) -> bytes:
    head = f"From: s@remote.test\r\nSubject: append {seed}\r\n\r\n".encode()
    body = _text_lines(size - len(head) - 200, seed.encode()) + b"\r\n"
    return head + body + b"x" * (size - len(head) - len(body) - 2) + b"\r\n"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Instance]:
    inst = make_instance(tmp_path)
    inst.set_config("server", processes=1)
    inst.set_config("imap", max_append_size=LIMIT, max_append_in_flight=LIMIT)
    inst.start()
    yield inst
    inst.stop()


def _start(client: Client, tag: str, size: int, mailbox: str = "INBOX") -> bytes:
    """Announce a synchronizing literal of `size` octets; the server's answer."""
    client.send(f"{tag} APPEND {mailbox} {{{size}}}\r\n".encode())
    return client.read_line()


def _append(client: Client, tag: str, data: bytes, mailbox: str = "INBOX") -> bytes:
    """A whole APPEND: the "+" asked for, then the tagged answer."""
    assert _start(client, tag, len(data), mailbox) == b"+ Ready for literal data"
    client.send(data + b"\r\n")
    return client.until(tag.encode())[-1].text


def _exists(client: Client) -> bytes:
    return client.command("STATUS INBOX (MESSAGES)")[0].text


def test_append_that_does_not_fit_is_refused_before_its_literal(srv: Instance) -> None:
    """A holds 600,000 octets in the middle of its literal; B's APPEND of 600,000 gets
    NO [LIMIT] at once, no "+", one reject line; once A's APPEND is stored, B's fits."""
    a, b = Client(srv, USER), Client(srv, USER)
    first, second = _message(PART, "a"), _message(PART, "b")
    assert _start(a, "a", PART) == b"+ Ready for literal data"
    a.send(first[: PART // 2])
    reply = _start(b, "b", PART)
    assert reply == (b"b NO [LIMIT] No room for a literal of 600000 octets now, "
                     b"try again later")
    srv.wait_log(REJECT)
    assert b.command("NOOP")[-1].text == b"t OK NOOP completed"  # B's literal was never sent
    a.send(first[PART // 2 :] + b"\r\n")
    assert a.until(b"a")[-1].text.startswith(b"a OK [APPENDUID ")
    assert _append(b, "b", second).startswith(b"b OK [APPENDUID ")
    assert srv.messages(USER) == [first, second]
    a.close()
    b.close()


def test_non_synchronizing_literal_that_does_not_fit_is_read_and_dropped(
    srv: Instance,
) -> None:
    """LITERAL+ (RFC 7888): B's {600000+} while A holds 600,000 is read and dropped, answered
    NO [LIMIT]; B's next command is read as a command, and nothing of B's was stored."""
    a, b = Client(srv, USER), Client(srv, USER)
    first = _message(PART, "a")
    assert _start(a, "a", PART) == b"+ Ready for literal data"
    a.send(first[:1000])
    b.send(b"b APPEND INBOX {600000+}\r\n" + _message(PART, "b") + b"\r\n")
    assert b.until(b"b")[-1].text == (b"b NO [LIMIT] No room for a literal of 600000 octets "
                                      b"now, try again later")
    srv.wait_log(REJECT)
    assert b.command("NOOP")[-1].text == b"t OK NOOP completed"
    a.send(first[1000:] + b"\r\n")
    assert a.until(b"a")[-1].text.startswith(b"a OK [APPENDUID ")
    assert srv.messages(USER) == [first]
    a.close()
    b.close()


def test_budget_given_back_on_every_exit(srv: Instance) -> None:
    """After a failed APPEND (no such mailbox), a MULTIAPPEND refused at its second literal
    (its first one dropped with it) and a connection dropped in the middle of its literal,
    an APPEND that needs the whole budget still fits."""
    a, b = Client(srv, USER), Client(srv, USER)
    whole = _message(LIMIT, "whole")
    assert _append(a, "f", whole, "Nowhere").startswith(b"f NO [TRYCREATE]")
    # MULTIAPPEND (RFC 3502): the second message does not fit beside the first
    assert _start(a, "m", PART) == b"+ Ready for literal data"
    a.send(_message(PART, "m1") + b" {%d}\r\n" % PART)
    assert a.read_line() == (b"m NO [LIMIT] No room for a literal of 600000 octets now, "
                             b"try again later")
    # a connection dropped mid-literal: while it holds its octets, nothing else fits
    assert _start(a, "d", LIMIT) == b"+ Ready for literal data"
    a.send(whole[: LIMIT // 2])
    assert _start(b, "x", 10).startswith(b"x NO [LIMIT]")
    a.close()
    srv.wait_log(r'disconnect ip=127\.0\.0\.1 tls=yes user=alice@example\.test commands=\d+ '
                 r'seconds=[0-9.]+ reason="client closed"')
    assert _append(b, "w", whole).startswith(b"w OK [APPENDUID ")
    assert srv.messages(USER) == [whole]
    b.close()


# -- memory ------------------------------------------------------------------------------------

SESSIONS = 16
BIG = 4 * MiB  # each session's message
BUDGET = 2 * BIG  # imap.max_append_in_flight of the memory test: two messages at once


@pytest.fixture
def mem_srv(tmp_path: Path) -> Iterator[Instance]:
    inst = make_instance(tmp_path)
    inst.set_config("server", processes=1)
    inst.set_config("imap", max_append_size=BIG, max_append_in_flight=BUDGET,
                    max_connections_per_ip=SESSIONS + 4,
                    max_connections_per_account=SESSIONS + 4)
    inst.start()
    yield inst
    inst.stop()


def test_concurrent_large_appends_bounded_by_budget(mem_srv: Instance) -> None:
    """16 sessions APPEND 4 MiB each at once, each sending all of its literal but its last
    octets before any completes: the server holds what the 8 MiB budget lets in (2 messages;
    the others are refused NO [LIMIT] without sending theirs), not 64 MiB."""
    clients = [Client(mem_srv, USER) for _ in range(SESSIONS)]
    messages = [_message(BIG, f"m{n}") for n in range(SESSIONS)]
    with Peak(mem_srv) as peak:
        admitted = []
        for n, (client, data) in enumerate(zip(clients, messages, strict=True)):
            reply = _start(client, f"a{n}", BIG)
            if reply == b"+ Ready for literal data":
                client.send(data[:-100])
                admitted.append(n)
            else:
                assert reply.startswith(f"a{n} NO [LIMIT]".encode()), reply

        def finish(n: int) -> None:
            clients[n].send(messages[n][-100:] + b"\r\n")
            assert clients[n].until(b"a%d" % n)[-1].text.startswith(b"a%d OK" % n)

        threads = [threading.Thread(target=finish, args=(n,)) for n in admitted]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(f"{SESSIONS} concurrent APPENDs of {BIG >> 20} MiB, budget {BUDGET >> 20} MiB: "
          f"{len(admitted)} admitted, server grew {peak.growth / MiB:.1f} MiB")
    assert peak.growth < 6 * BUDGET  # 16 messages held: 113 MiB; within the budget: 23 MiB
    assert len(admitted) == BUDGET // BIG
    assert len(mem_srv.messages(USER)) == len(admitted)
    for client in clients:
        client.close()
