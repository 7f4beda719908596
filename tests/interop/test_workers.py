"""Every listener served by several worker processes (`server.processes`, postkeep.server.pool),
over the wire.

Two workers accept on the same sockets (the main process serves no connection and keeps the
global state); these tests open enough connections that both workers serve some (the log tags
a worker's lines `imap[w1]`, `smtp[w2]`), then check what must hold across processes: IDLE
woken by SMTP delivery in either worker and by a session's changes in the other worker,
connection limits per IP and per account counted globally (IMAP and SMTP), a killed worker
restarted with its slots given back, a killed main process taking its workers down with it
(its ports free for a restart), and SIGTERM ending every session cleanly, also while the
workers are still starting.
"""

from __future__ import annotations

import imaplib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.interop.conftest import PASSWORD, POSTKEEP, Instance, make_instance
from tests.interop.test_imap import ALICE, BOB, append, ctx, deliver, imaps

WORKER_READY = r"worker=1 ready pid=(\d+)"
LIMIT = 30  # per account: enough logins that both processes serve some (they alternate)


def _logins(inst: Instance, user: str) -> tuple[int, int]:
    """Logins of `user` logged by worker 1 and by worker 2."""
    lines = [ln for ln in inst.log().splitlines() if f"login ip=127.0.0.1 user={user}" in ln]
    return (
        sum("postkeep.imap[w1]:" in ln for ln in lines),
        sum("postkeep.imap[w2]:" in ln for ln in lines),
    )


def _spread(inst: Instance, user: str, limit: int = 40) -> list[imaplib.IMAP4_SSL]:
    """Log in until both processes serve at least one of the connections."""
    clients: list[imaplib.IMAP4_SSL] = []
    before = _logins(inst, user)
    for _ in range(limit):
        clients.append(imaps(inst, user))
        now = _logins(inst, user)
        if now[0] > before[0] and now[1] > before[1]:
            return clients
    raise AssertionError(f"{limit} logins of {user}, all in one process: {_logins(inst, user)}")


def _idle(client: imaplib.IMAP4_SSL) -> None:
    client.select("INBOX")
    tag = client._new_tag().decode()
    client.send(f"{tag} IDLE\r\n".encode())
    assert client.readline().startswith(b"+ ")


def _wait_line(client: imaplib.IMAP4_SSL, pattern: bytes) -> bytes:
    client.sock.settimeout(10)
    while True:
        line = client.readline()
        assert line, "connection closed"
        if re.search(pattern, line):
            return line


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("workers"))
    inst.cli("user", "add", "limited@example.test", "--password-stdin", input=PASSWORD + "\n")
    inst.set_config("server", processes=2)
    inst.set_config("imap", max_connections_per_account=LIMIT)
    inst.start()
    yield inst
    inst.stop()


def _pid(inst: Instance) -> int:
    return int(re.findall(WORKER_READY, inst.log())[-1])


def test_idle_woken_across_processes(multi: Instance) -> None:
    assert "ready hostname=localhost processes=2" in multi.log()
    clients = _spread(multi, BOB)
    try:
        for client in clients:
            _idle(client)
        deliver(multi, BOB, "to every process")  # stored by one of the workers (SMTP)
        for client in clients:
            exists = _wait_line(client, rb"^\* \d+ EXISTS")
        n = int(exists.split()[1])
        # a change made in one process reaches the sessions of the other
        other = imaps(multi, BOB)
        other.select("INBOX")
        assert other.store(str(n), "+FLAGS", "\\Flagged")[0] == "OK"
        for client in clients:
            _wait_line(client, rb"FETCH \(.*\\Flagged")
        other.logout()
    finally:
        for client in clients:
            client.shutdown()


def test_noop_sees_changes_made_in_the_other_process_at_once(multi: Instance) -> None:
    """The event of a change made in one worker reaches the other a moment later; a NOOP sent
    right after the change's OK must show it anyway (it polls the mailbox's HIGHESTMODSEQ)."""
    clients = _spread(multi, ALICE)
    try:
        box = "N" + uuid.uuid4().hex[:8]
        assert clients[0].create(box)[0] == "OK"
        for i in range(2):
            append(clients[0], box, f"noop {i}")
        for client in clients:
            client.select(box)
        for flag in ("\\Flagged", "\\Seen", "\\Answered", "\\Draft"):
            assert clients[0].store("1", "+FLAGS", flag)[0] == "OK"
            for client in clients[1:]:  # at once, no waiting
                client.untagged_responses.pop("FETCH", None)
                assert client.noop()[0] == "OK"
                fetched = client.untagged_responses.get("FETCH", [])
                assert any(flag.encode() in f for f in fetched), (flag, fetched)
        assert clients[0].store("2", "+FLAGS", "\\Deleted")[0] == "OK"
        assert clients[0].expunge()[0] == "OK"
        for client in clients[1:]:
            client.noop()
            assert client.untagged_responses.get("EXPUNGE") == [b"2"]
    finally:
        for client in clients:
            client.logout()


def test_account_limit_is_global(multi: Instance) -> None:
    clients = _spread(multi, "limited@example.test", limit=LIMIT)
    while len(clients) < LIMIT:
        clients.append(imaps(multi, "limited@example.test"))
    for _ in range(3):  # refused whichever process takes the connection
        extra = imaplib.IMAP4_SSL("127.0.0.1", multi.imaps_port, ssl_context=ctx(), timeout=20)
        with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
            extra.login("limited@example.test", PASSWORD)
        extra.shutdown()
    assert "reason=\"too many connections for the account\"" in multi.log()
    clients.pop().logout()  # the slot comes back, whichever process held it
    deadline = time.monotonic() + 10
    while True:
        try:
            clients.append(imaps(multi, "limited@example.test"))
            break
        except imaplib.IMAP4.error:
            assert time.monotonic() < deadline, "slot not released"
            time.sleep(0.1)
    for client in clients:
        client.logout()


def _until_greeted(port: int, greeting: bytes) -> None:
    """Connect until the server greets instead of refusing: the slot given back, whichever
    worker held it, within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            if sock.recv(4096).startswith(greeting):
                return
        assert time.monotonic() < deadline, "slot not released"
        time.sleep(0.1)


def test_ip_limit_is_global(fresh: Instance) -> None:
    fresh.set_config("server", processes=2)
    fresh.set_config("imap", max_connections_per_ip=3)
    fresh.start()
    held = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", fresh.imap_port), timeout=10)
        assert sock.recv(4096).startswith(b"* OK")
        held.append(sock)
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", fresh.imap_port), timeout=10)
        assert sock.recv(4096).startswith(b"* BYE [UNAVAILABLE] Too many connections")
        sock.close()
    held.pop().close()
    _until_greeted(fresh.imap_port, b"* OK")
    for sock in held:
        sock.close()


def test_killed_worker_is_restarted_and_its_slots_freed(fresh: Instance) -> None:
    fresh.set_config("server", processes=2)
    fresh.set_config("imap", max_connections_per_account=LIMIT)
    fresh.start()
    clients = _spread(fresh, ALICE, limit=LIMIT)
    while len(clients) < LIMIT:
        clients.append(imaps(fresh, ALICE))
    pid = _pid(fresh)
    os.kill(pid, signal.SIGKILL)
    fresh.wait_log(r"worker=1 exited status=-9; restarting")
    deadline = time.monotonic() + 30
    while _pid(fresh) == pid:
        assert time.monotonic() < deadline, "worker not restarted"
        time.sleep(0.1)
    # the dead worker's sessions gave back their account slots: the limit holds again exactly
    survivors = []
    for client in clients:
        try:
            client.noop()
            survivors.append(client)
        except (imaplib.IMAP4.abort, OSError, ssl.SSLError):
            pass
    assert 0 < len(survivors) < len(clients)
    more = [imaps(fresh, ALICE) for _ in range(LIMIT - len(survivors))]
    with pytest.raises(imaplib.IMAP4.error, match="Too many connections"):
        imaps(fresh, ALICE)
    for client in survivors + more:
        client.logout()


def test_killed_main_process_takes_workers_down(fresh: Instance) -> None:
    fresh.set_config("server", processes=2)
    fresh.start()
    pid = _pid(fresh)
    fresh.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, "worker outlived the main process"
        time.sleep(0.1)
    fresh.start()  # the ports are free again
    client = imaps(fresh, ALICE)
    client.logout()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read().lower()
    except OSError:
        return "zombie"


def test_smtp_ip_limit_is_global(fresh: Instance) -> None:
    """The MX's per-IP limit is counted by the main process for both workers: with 3 held,
    a fourth is refused whichever worker takes it (the log shows both refusing)."""
    fresh.set_config("server", processes=2)
    fresh.set_config("smtp", max_connections_per_ip=3)
    fresh.start()
    held = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", fresh.smtp_port), timeout=10)
        assert sock.recv(4096).startswith(b"220 ")
        held.append(sock)
    refused = re.compile(r'postkeep\.smtp\[(w[12])\]: reject ip=127\.0\.0\.1 code=421 4\.7\.0 '
                         r'reason="too many connections"')
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", fresh.smtp_port), timeout=10)
        assert sock.recv(4096) == b"421 4.7.0 Too many connections, try again later\r\n"
        sock.close()
        if set(refused.findall(fresh.log())) == {"w1", "w2"}:
            break
    else:
        raise AssertionError(f"refused by one worker only: {set(refused.findall(fresh.log()))}")
    held.pop().close()
    _until_greeted(fresh.smtp_port, b"220 ")
    for sock in held:
        sock.close()


def _smtp_session(inst: Instance) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=20)
    assert sock.recv(4096).startswith(b"220 ")
    sock.sendall(b"EHLO client.test\r\n")
    while not re.search(rb"^250 ", sock.recv(4096), re.M):
        pass
    return sock


def test_sigterm_ends_every_session_cleanly(fresh: Instance) -> None:
    """SIGTERM: every worker ends its SMTP sessions with 421 4.3.2 and its IMAP sessions with
    BYE, then the whole tree exits with status 0."""
    fresh.set_config("server", processes=2)
    fresh.start()
    smtp = [_smtp_session(fresh) for _ in range(6)]
    imap = _spread(fresh, ALICE)
    for client in imap:
        _idle(client)
    tree = fresh.tree()
    assert len(tree) == 4, tree  # main, fork server, two workers
    assert fresh.proc is not None
    fresh.proc.send_signal(signal.SIGTERM)
    for sock in smtp:
        sock.settimeout(20)
        assert sock.recv(4096) == b"421 4.3.2 Service shutting down, try again later\r\n"
        assert sock.recv(4096) == b""
        sock.close()
    for client in imap:
        assert _wait_line(client, rb"^\* BYE ").startswith(b"* BYE ")
    assert fresh.proc.wait(30) == 0
    for pid in tree:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in _state(pid)
    log = fresh.log()
    assert "postkeep.server: stopped" in log and "Traceback" not in log


def test_sigterm_while_the_workers_start_is_a_clean_stop(fresh: Instance) -> None:
    """`make run` stopped during start-up used to print a traceback ("IMAP worker 1 exited with
    status -15"): a SIGTERM or SIGINT at any moment of the start (here: once the main process
    has begun, once worker 1 listens, once worker 2 does) is a clean stop, status 0."""
    fresh.set_config("server", processes=2)
    for sig, moment in ((signal.SIGTERM, r"open files limit="),
                        (signal.SIGINT, r"smtp\[w1\]: listening on"),
                        (signal.SIGTERM, r"smtp\[w2\]: listening on"),
                        (signal.SIGINT, r"open files limit=")):
        before = len(fresh.log()) if fresh.log_path.exists() else 0
        with fresh.log_path.open("ab") as log:
            proc = subprocess.Popen([*POSTKEEP, "--dir", str(fresh.dir), "serve"],
                                    stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while not re.search(moment, fresh.log()[before:]):
            assert time.monotonic() < deadline and proc.poll() is None, fresh.log()[before:]
            time.sleep(0.005)
        proc.send_signal(sig)
        assert proc.wait(30) == 0, fresh.log()[before:]
        text = fresh.log()[before:]
        assert "Traceback" not in text and "exited with status" not in text, text
        assert "postkeep.server: stopped" in text
    fresh.start()  # the ports are free again
    imaps(fresh, ALICE).logout()
