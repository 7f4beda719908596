"""IMAP over the wire with the store on PostgreSQL: the hot path's statements are compiled for
psycopg and its reads go through the read pool (REPEATABLE READ for the login read), so the
SQLite runs of tests/interop/test_imap.py do not cover them."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest

from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_imap import Raw, deliver, imaps
from tests.pg import new_database

pytestmark = pytest.mark.postgres
ALICE = "alice@example.test"


@pytest.fixture(scope="module")
def pg_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    with new_database("imap_wire") as url:
        inst = make_instance(tmp_path_factory.mktemp("imap-pg"))  # users made on SQLite...
        inst.set_config("store", url=url)  # ...then the instance moves to PostgreSQL
        inst.cli("domain", "add", "example.test")
        inst.cli("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
        inst.start()
        try:
            yield inst
        finally:
            inst.stop()


def test_imap_session_on_postgresql(pg_srv: Instance) -> None:
    for i in range(3):
        deliver(pg_srv, ALICE, f"pg-{i}")
    a = imaps(pg_srv)
    b = imaps(pg_srv)
    assert a.select("INBOX")[1] == [b"3"]
    assert b.select("INBOX")[1] == [b"3"]
    typ, data = a.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    headers = b"".join(x[1] for x in data if isinstance(x, tuple))
    subjects = re.findall(rb"Subject: (pg-\d)", headers)
    assert typ == "OK" and subjects == [b"pg-0", b"pg-1", b"pg-2"]
    typ, data = a.fetch("1", "(BODY[])")  # sets \Seen
    assert typ == "OK" and b"Hello there." in data[0][1]
    assert b"\\Seen" in a.fetch("1", "(FLAGS)")[1][0]
    assert a.store("2", "+FLAGS", "(\\Deleted $Done)")[0] == "OK"
    assert a.expunge()[1] == [b"2"]
    assert b.noop()[0] == "OK"  # the other session learns of the flags and the expunge
    assert b.response("EXPUNGE")[1] == [b"2"]
    assert any(b"\\Seen" in f for f in b.response("FETCH")[1] if f)
    assert b.search(None, "ALL")[1] == [b"1 2"]
    a.logout()
    b.logout()


def test_multiappend_and_idle_on_postgresql(pg_srv: Instance) -> None:
    raw = Raw(pg_srv.imaps_port, tls=True)
    raw.cmd(b"a1", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
    one, two = b"Subject: m1\r\n\r\n1\r\n", b"Subject: m2\r\n\r\n2\r\n"
    raw.send(
        b"a2 APPEND Drafts (\\Draft) {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(one), one, len(two), two)
    )
    done = raw.until(b"a2")[-1]
    m = re.match(rb"a2 OK \[APPENDUID \d+ (\d+):(\d+)\]", done)
    assert m is not None and int(m.group(2)) == int(m.group(1)) + 1, done
    lines = raw.cmd(b"a3", b"SELECT INBOX")
    exists = int(re.search(rb"\* (\d+) EXISTS", b"\n".join(lines)).group(1))
    raw.send(b"a4 IDLE\r\n")
    assert raw.line().startswith(b"+")
    sender = threading.Thread(target=deliver, args=(pg_srv, ALICE, "wake-up"))
    sender.start()
    assert raw.line() == b"* %d EXISTS" % (exists + 1)
    sender.join()
    raw.send(b"DONE\r\n")
    assert raw.until(b"a4")[-1].startswith(b"a4 OK")
    raw.close()


def test_concurrent_writers_in_two_workers_on_postgresql(pg_srv: Instance) -> None:
    """The two IMAP workers' writers run at once on PostgreSQL (no shared lock as on SQLite):
    flag changes to the same messages from many sessions are all kept (no lost update from a
    read-then-write race), and expunges of the same mailbox from several sessions at once all
    succeed, each message expunged once (a race logged it twice: NO, unique violation);
    a deadlock between two workers' batches is retried, not reported."""
    admin = imaps(pg_srv)
    box = "Race"
    assert admin.create(box)[0] == "OK"
    for i in range(20):
        msg = f"Subject: race {i}\r\n\r\nx\r\n".encode()
        assert admin.append(box, "", None, msg)[0] == "OK"
    errors: list[str] = []

    def tag(n: int) -> None:
        try:
            client = imaps(pg_srv)
            client.select(box)
            for seq in range(1, 21):  # one keyword per session, message by message
                typ, data = client.store(str(seq), "+FLAGS", f"(k{n})")
                if typ != "OK":
                    errors.append(f"store {n}: {typ} {data}")
            client.logout()
        except Exception as e:
            errors.append(f"session {n}: {e!r}")

    threads = [threading.Thread(target=tag, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    admin.select(box)
    typ, data = admin.fetch("1:*", "(FLAGS)")
    assert typ == "OK" and len(data) == 20
    for line in data:
        assert all(f"k{n}".encode() in line for n in range(8)), line
    admin.store("1:*", "+FLAGS", "(\\Deleted)")
    results: list[tuple[str, list[bytes]]] = []

    def expunge() -> None:
        client = imaps(pg_srv)
        client.select(box)
        results.append(client.expunge())
        client.logout()

    threads = [threading.Thread(target=expunge) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [typ for typ, _ in results] == ["OK"] * 6, results
    assert admin.noop()[0] == "OK" and admin.select(box)[1] == [b"0"]
    admin.logout()
    assert "unexpected error in the store writer" not in pg_srv.log()
