"""Crash test: SIGKILL the server while clients stream messages; every `250` must survive.

Four client threads send messages (each with a unique id and a body derived from it) over real
SMTP connections while the server is killed with SIGKILL at random moments: the whole process
tree at once, then restarted; or one worker process, which the main process restarts while
the other keeps serving. Three clients send small messages, whose blobs are stored inline in
the database (durable with the commit alone), one sends messages past INLINE_MAX, stored as
files. At the end, every message whose DATA got `250` is in the store, exactly as sent, in
the form its size says, and decrypts.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import smtplib
import threading
import time
from collections.abc import Callable

from postkeep.store.blobs import INLINE_MAX
from tests.interop.conftest import Instance

KILLS = 5


LARGE_LINES = INLINE_MAX // 68 + 100  # a blob file, not inline


def body_for(mid: str) -> str:
    """~4.5 KB, or past INLINE_MAX for the messages of client c3 ("c3-...")."""
    digest = hashlib.sha256(mid.encode()).hexdigest()
    count = LARGE_LINES if mid.startswith("c3-") else 60
    lines = [f"{digest}{i:04d}" for i in range(count)]
    return f"Subject: crash {mid}\r\nMessage-ID: <{mid}@crash.test>\r\n\r\n" + "\r\n".join(lines)


def client(inst: Instance, name: str, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=10) as c:
                while not stop.is_set():
                    mid = f"{name}-{n}"
                    n += 1
                    c.sendmail("load@remote.test", ["alice@example.test"], body_for(mid))
                    acked.append(mid)  # only after the 250
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)  # server down: retry until it is back


def _streaming(fresh: Instance, kill: Callable[[random.Random], None]) -> list[str]:
    """Stream messages from four clients while `kill` strikes KILLS times; what got 250."""
    rng = random.Random(1234)
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=client, args=(fresh, f"c{i}", acked, stop), daemon=True)
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for _ in range(KILLS):
        before = len(acked)
        deadline = time.monotonic() + 20
        while len(acked) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        kill(rng)
    stop.set()
    for t in threads:
        t.join(20)
    fresh.stop()
    return acked


def _check_stored(fresh: Instance, acked: list[str]) -> None:
    assert len(acked) >= KILLS * 20, "clients made too little progress to test anything"
    assert len(set(acked)) == len(acked)
    stored: dict[str, bytes] = {}
    files: dict[str, bool] = {}  # whether the message's blob is a file (else inline)
    for blob_id, msg in fresh.stored("alice@example.test"):
        _, _, rest = msg.partition(b"Subject: crash ")
        mid = rest.split(b"\r\n", 1)[0].decode()
        stored[mid] = b"Subject: crash " + rest
        files[mid] = (fresh.dir / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id).is_file()
    missing = [m for m in acked if m not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost: {missing[:5]}"
    for mid in acked:
        assert stored[mid] == body_for(mid).encode() + b"\r\n", f"{mid} corrupted"
        assert files[mid] == mid.startswith("c3-"), f"{mid} stored as the wrong kind of blob"
    assert any(files[m] for m in acked) and not all(files[m] for m in acked)


def test_sigkill_of_the_whole_server_loses_nothing_acknowledged(fresh: Instance) -> None:
    fresh.start()

    def crash(_rng: random.Random) -> None:
        fresh.kill_all()
        fresh.start()

    _check_stored(fresh, _streaming(fresh, crash))


def test_sigkill_of_a_worker_loses_nothing_acknowledged(fresh: Instance) -> None:
    """A worker killed mid-DATA costs the connections it held, nothing acknowledged; the main
    process restarts it (and the other worker serves meanwhile)."""
    fresh.set_config("server", processes=2)
    fresh.start()
    kills: list[int] = []

    def kill_one(rng: random.Random) -> None:
        pid = rng.choice(fresh.workers())
        os.kill(pid, signal.SIGKILL)
        kills.append(pid)
        deadline = time.monotonic() + 30
        while pid in fresh.workers():  # until its replacement is up
            assert time.monotonic() < deadline, "worker not restarted"
            time.sleep(0.05)

    _check_stored(fresh, _streaming(fresh, kill_one))
    assert fresh.log().count("exited status=-9; restarting") == KILLS
    assert not set(kills) & set(fresh.workers())  # each replaced by a new process
