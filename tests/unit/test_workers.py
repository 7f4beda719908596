"""The main process's side of the IMAP worker channel (postkeep.server.imap_workers), on real
sockets and a real child process standing in for a worker (`sleep`), where the wire tests cannot
reach: a worker that stops reading its channel (hung) must not make the main process queue events
for it without bound."""

from __future__ import annotations

import asyncio
import signal
import socket

from postkeep.auth.passwords import PasswordVerifier
from postkeep.config import Config
from postkeep.net.slots import LocalSlots
from postkeep.server.imap_workers import WorkerPool, _frame, _Outbox, _read_frame
from postkeep.store.events import EventBus


def test_a_worker_that_stops_reading_its_channel_is_killed() -> None:
    async def go() -> None:
        ours, theirs = socket.socketpair()
        _reader, writer = await asyncio.open_unix_connection(sock=ours)
        peer_reader, _peer_writer = await asyncio.open_unix_connection(sock=theirs)
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        verifier = PasswordVerifier()
        pool = WorkerPool(Config(), EventBus(), LocalSlots(10, 10, 10), verifier, [], 1)
        pool.max_backlog = 256 * 1024
        worker = pool.workers[0]
        outbox = _Outbox(writer)
        worker.proc, worker.outbox = proc, outbox
        message = {"t": "ev", "e": [[1, 2, "flags", 3, 4]]}
        try:
            for _ in range(10):  # a worker that reads keeps its channel
                pool._forward(message, exclude=None)
            for _ in range(10):
                got = await asyncio.wait_for(_read_frame(peer_reader), 5)
                assert got == message
            assert worker.outbox is outbox and proc.returncode is None
            frames = 0
            while worker.outbox is not None:  # ... one that stops reading is killed
                pool._forward(message, exclude=None)
                frames += 1
                assert frames < 100_000, "never killed"
            assert frames * len(_frame(message)) > pool.max_backlog  # killed past it, not before
            assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGKILL
            assert writer.transport.is_closing()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            verifier.close()

    asyncio.run(go())
