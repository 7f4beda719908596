"""IMAP worker processes: IMAP served by several processes, so that it can use every core.

One Python process executes Python on one core at a time (the GIL); IMAP's per-command work
(parsing, rendering, TLS records, decryption) is Python on the event loop's thread, so one
process caps IMAP at about one core. With `imap.processes` > 1 the server's main process binds
the IMAP listening sockets itself (`postkeep.net.listener.bind_listeners`) and starts
`processes` workers (`postkeep imap-worker`, a fresh interpreter, not a fork of a threaded
process) that inherit them: every worker accepts on the same sockets, and
the kernel hands each connection to one of them (a busy process reaches `accept` later, so
connections drift to the idle ones); the main process itself then serves no IMAP, so its event
loop is free to answer the workers at once. A worker runs only the IMAP listeners, on its own store
connections (SQLite in WAL mode serialises the writers of all processes; PostgreSQL is made for
it) and its own event bus.

What must stay global goes over one channel per worker (a socketpair) to the main process, as
the typed messages of `postkeep.server.ipc` (which defines them and their frames); each end
writes what it sends during one pass of the event loop at the end of that pass, in one write:

- connection slots (`postkeep.net.slots`): a worker asks the main process's `LocalSlots`
  before serving a connection or a login, and when a connection turns slow (`SlotRequest` of
  an `IpSlot`, an `AccountSlot` or a `SlowSlot`), which answers (`Answer`); releases
  (`SlotRelease`) need no answer. The main process gives back whatever a worker held when its
  channel closes, so a crashed worker leaks no slot;
- mailbox events (`Events`): every event a process's store publishes is relayed to the main
  process (batched: one message per pass of the event loop), which publishes it on its own bus
  and forwards it to the other workers, so IDLE in any process is woken by SMTP delivery (main
  process) and by other sessions' changes;
- password verification successes (`PasswordQuery`, `PasswordLearned`): the main process's
  `PasswordVerifier` cache is shared; a worker that misses its own cache asks it before
  spending an argon2 verification (tens to hundreds of ms of CPU) and reports its own
  successes, so a user is verified once per cache lifetime, not once per process. The main
  process sends the cache's HMAC key in its first message (`Hello`);
- `Ready`: a worker's listeners are up (the main process logs "ready" after all of them).

A frame that is not a valid message (`ipc.ChannelError`) ends the channel: the main process
logs it and closes the channel (so the worker stops, is restarted and its slots are given
back); a worker that reads one stops.

A worker that dies is restarted (after 1 s, doubling up to 30 s while it keeps dying early),
and so is one that stops reading its channel (killed once 16 MiB are queued for it); a worker
whose channel closes (the main process is gone) stops serving at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier
from postkeep.config import Config
from postkeep.net.slots import LocalSlots
from postkeep.server import ipc
from postkeep.store.api import MailboxEvent
from postkeep.store.events import EventBus

logger = log.get("workers")

MAX_BACKLOG = 16 << 20  # octets queued for a worker that does not read them: it is hung
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long restarts after the first delay again


# -- the channel ---------------------------------------------------------------------------------


async def _read_message(reader: asyncio.StreamReader) -> ipc.Message | None:
    """The next message, or None at end of stream; ipc.ChannelError for a malformed frame."""
    try:
        header = await reader.readexactly(ipc.HEADER_SIZE)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ipc.ChannelError("truncated frame") from None
        return None
    try:
        body = await reader.readexactly(ipc.frame_length(header))
    except asyncio.IncompleteReadError:
        raise ipc.ChannelError("truncated frame") from None
    return ipc.decode(body)


class _Outbox:
    """Frames for the other end of a channel, written together at the end of the event loop's
    pass: one write, and one wake-up of the other process, for everything a pass sends (the
    slot requests of several new connections, the releases of others, their events)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []
        self._pending = 0

    def send(self, frame: bytes) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(frame)
        self._pending += len(frame)

    def flush(self) -> None:
        if not self._frames:
            return
        data = b"".join(self._frames)
        self._frames.clear()
        self._pending = 0
        if not self.writer.is_closing():
            self.writer.write(data)

    def queued(self) -> int:
        """Octets not yet taken by the other end: waiting for the flush or in the transport."""
        return self._pending + self.writer.transport.get_write_buffer_size()


class _EventBatch:
    """Events published during one pass of the event loop, sent together at its end (a STORE
    on 100 messages publishes 100 events: one frame and one write, not 100), in frames of at
    most `ipc.EVENTS_PER_FRAME` (a STORE on 20,000 messages must not make a frame the other
    end refuses, which would cost the worker its channel and its sessions)."""

    def __init__(self, send: Callable[[ipc.Events], None]) -> None:
        self._send = send
        self._events: list[MailboxEvent] = []

    def add(self, event: MailboxEvent) -> None:
        if not self._events:
            asyncio.get_running_loop().call_soon(self._flush)
        self._events.append(event)

    def _flush(self) -> None:
        events, self._events = self._events, []
        for start in range(0, len(events), ipc.EVENTS_PER_FRAME):
            self._send(ipc.Events(tuple(events[start : start + ipc.EVENTS_PER_FRAME])))


# -- main process side ---------------------------------------------------------------------------


class _Worker:
    """One worker slot of the pool: its current process and what it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.outbox: _Outbox | None = None
        self.ready = asyncio.Event()
        self.held: Counter[ipc.Slot] = Counter()
        self.task: asyncio.Task[None] | None = None


class WorkerPool:
    """The main process's side: starts, supervises and stops the IMAP workers and serves their
    channels (slots against `slots`, events relayed through `bus`)."""

    def __init__(
        self,
        cfg: Config,
        bus: EventBus,
        slots: LocalSlots,
        verifier: PasswordVerifier,
        sockets: list[socket.socket],
        count: int,
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self.slots = slots
        self.verifier = verifier
        self.sockets = sockets
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self._stopping = False
        self._batch = _EventBatch(lambda message: self._forward(message, exclude=None))
        self.max_backlog = MAX_BACKLOG

    async def start(self) -> None:
        """Start every worker and wait until each has its listeners up."""
        self.bus.relay = self._relay
        for worker in self.workers:
            worker.task = asyncio.create_task(self._supervise(worker))
        ready = asyncio.ensure_future(asyncio.gather(*(w.ready.wait() for w in self.workers)))
        supervisors = [w.task for w in self.workers if w.task is not None]
        done, _pending = await asyncio.wait(
            [ready, *supervisors], timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            for task in done:
                task.result()  # a worker that exited before it was ready: its error
            raise RuntimeError(f"IMAP workers not ready after {START_TIMEOUT:.0f} s")

    async def stop(self) -> None:
        """SIGTERM every worker (each ends its sessions with BYE) and wait for them to exit."""
        self._stopping = True
        self.bus.relay = None
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        tasks = [w.task for w in self.workers if w.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- supervision -------------------------------------------------------------------------------

    async def _supervise(self, worker: _Worker) -> None:
        delay = RESTART_DELAY
        while not self._stopping:
            started = time.monotonic()
            code = await self._run_once(worker)
            if self._stopping:
                return
            if not worker.ready.is_set():  # never came up: a startup error, not a crash
                raise RuntimeError(f"IMAP worker {worker.index} exited with status {code}")
            if time.monotonic() - started >= STABLE_AFTER:
                delay = RESTART_DELAY
            logger.error(
                "worker=%d exited status=%s; restarting in %.0f s", worker.index, code, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    async def _run_once(self, worker: _Worker) -> int | None:
        """Run one process of the worker until it exits; returns its exit status."""
        ours, theirs = socket.socketpair()
        fds = [s.fileno() for s in self.sockets]
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "postkeep", "--dir", str(self.cfg.base_dir),
                "imap-worker", "--index", str(worker.index),
                "--channel-fd", str(theirs.fileno()),
                "--listen-fds", ",".join(map(str, fds)),
                pass_fds=(theirs.fileno(), *fds),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker.outbox = outbox = _Outbox(writer)
        outbox.send(ipc.encode(ipc.Hello(self.verifier.key)))
        try:
            await self._serve_channel(worker, reader, outbox)
        except ipc.ChannelError as e:
            logger.error("worker=%d bad channel message: %s", worker.index, e)
        except (ConnectionError, OSError):
            pass
        finally:
            worker.outbox = None
            writer.close()
            self._release_all(worker)
        if worker.proc.returncode is None:
            # the channel is gone: the worker stops on its own; make sure of it
            try:
                await asyncio.wait_for(worker.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                worker.proc.kill()
        return await worker.proc.wait()

    async def _serve_channel(
        self, worker: _Worker, reader: asyncio.StreamReader, outbox: _Outbox
    ) -> None:
        while (message := await _read_message(reader)) is not None:
            match message:
                case ipc.Events(events):
                    for event in events:
                        self.bus.publish_local(event)
                    self._forward(message, exclude=worker)
                case ipc.SlotRequest(request_id, slot):
                    ok = self._take(slot)
                    if ok:
                        worker.held[slot] += 1
                    outbox.send(ipc.encode(ipc.Answer(request_id, ok)))
                case ipc.SlotRelease(slot):
                    if worker.held[slot] > 0:  # never release what this worker did not take
                        worker.held[slot] -= 1
                        self._release(slot)
                case ipc.PasswordQuery(request_id, digest):
                    ok = self.verifier.cached_digest(digest)
                    outbox.send(ipc.encode(ipc.Answer(request_id, ok)))
                case ipc.PasswordLearned(digest):
                    self.verifier.remember_digest(digest)
                case ipc.Ready(pid):
                    logger.info("worker=%d ready pid=%s", worker.index, pid)
                    worker.ready.set()
                case _:
                    raise ipc.ChannelError(f"a worker sent {type(message).__name__}")

    def _take(self, slot: ipc.Slot) -> bool:
        match slot:
            case ipc.IpSlot(ip_class):
                return self.slots.take_ip(ip_class)
            case ipc.AccountSlot(account_id):
                return self.slots.take_account(account_id)
            case ipc.SlowSlot():
                return self.slots.take_slow()

    def _release(self, slot: ipc.Slot) -> None:
        match slot:
            case ipc.IpSlot(ip_class):
                self.slots.release_ip(ip_class)
            case ipc.AccountSlot(account_id):
                self.slots.release_account(account_id)
            case ipc.SlowSlot():
                self.slots.release_slow()

    def _release_all(self, worker: _Worker) -> None:
        for slot, n in worker.held.items():
            for _ in range(n):
                self._release(slot)
        worker.held.clear()

    # -- events ------------------------------------------------------------------------------------

    def _relay(self, event: MailboxEvent) -> None:
        """The main process's own events (SMTP delivery) to every worker."""
        self._batch.add(event)

    def _forward(self, message: ipc.Events, exclude: _Worker | None) -> None:
        frame = ipc.encode(message)
        for worker in self.workers:
            if worker is not exclude and worker.outbox is not None:
                worker.outbox.send(frame)
                self._check_backlog(worker, worker.outbox)

    def _check_backlog(self, worker: _Worker, outbox: _Outbox) -> None:
        """A worker that stops reading its channel (hung) would make this process queue its
        events without bound: past `max_backlog` octets it is killed, and restarted."""
        queued = outbox.queued()
        if queued <= self.max_backlog or worker.proc is None or worker.proc.returncode is not None:
            return
        logger.error(
            "worker=%d does not read its channel (%d octets queued); killing it",
            worker.index,
            queued,
        )
        with contextlib.suppress(ProcessLookupError):
            worker.proc.kill()
        outbox.writer.transport.abort()
        worker.outbox = None


# -- worker side ---------------------------------------------------------------------------------


class WorkerChannel:
    """A worker's end of the channel: relays its bus's events out, takes the others' in, and
    asks the main process for connection slots (`RemoteSlots`)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bus: EventBus
    ) -> None:
        self.reader = reader
        self._outbox = _Outbox(writer)
        self.bus = bus
        self.closed = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self.slots = RemoteSlots(self)
        self._batch = _EventBatch(self.send)
        bus.relay = self._batch.add

    def send(self, message: ipc.Message) -> None:
        if not self.closed:
            self._outbox.send(ipc.encode(message))

    async def password_cached(self, digest: bytes) -> bool:
        return await self.ask(lambda request_id: ipc.PasswordQuery(request_id, digest))

    def password_verified(self, digest: bytes) -> None:
        self.send(ipc.PasswordLearned(digest))

    async def ask(self, request: Callable[[int], ipc.SlotRequest | ipc.PasswordQuery]) -> bool:
        """Send the request of a new id and wait for its answer (False once the channel is
        closed)."""
        if self.closed:
            return False
        request_id = next(self._ids)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.send(request(request_id))
        try:
            return await future
        finally:
            self._waiting.pop(request_id, None)

    async def run(self) -> None:
        """Read the main process's messages until the channel closes."""
        try:
            while (message := await _read_message(self.reader)) is not None:
                match message:
                    case ipc.Events(events):
                        for event in events:
                            self.bus.publish_local(event)
                    case ipc.Answer(request_id, ok):
                        future = self._waiting.get(request_id)
                        if future is not None and not future.done():
                            future.set_result(ok)
                    case _:
                        raise ipc.ChannelError(f"the main process sent {type(message).__name__}")
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self.bus.relay = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_result(False)


class RemoteSlots:
    """`ConnectionSlots` kept by the main process, asked over the worker's channel."""

    def __init__(self, channel: WorkerChannel) -> None:
        self.channel = channel

    async def acquire_ip(self, key: str) -> bool:
        return await self._acquire(ipc.IpSlot(key))

    def release_ip(self, key: str) -> None:
        self.channel.send(ipc.SlotRelease(ipc.IpSlot(key)))

    async def acquire_slow(self) -> bool:
        return await self._acquire(ipc.SlowSlot())

    def release_slow(self) -> None:
        self.channel.send(ipc.SlotRelease(ipc.SlowSlot()))

    async def acquire_account(self, account_id: int) -> bool:
        return await self._acquire(ipc.AccountSlot(account_id))

    def release_account(self, account_id: int) -> None:
        self.channel.send(ipc.SlotRelease(ipc.AccountSlot(account_id)))

    async def _acquire(self, slot: ipc.Slot) -> bool:
        return await self.channel.ask(lambda request_id: ipc.SlotRequest(request_id, slot))


async def serve_worker(cfg: Config, index: int, channel_fd: int, listen_fds: list[int]) -> None:
    """`postkeep imap-worker`: serve IMAP on the inherited sockets until SIGTERM or until the
    main process's channel closes."""
    from postkeep.imap.server import ImapServer
    from postkeep.net.tls import build_tls
    from postkeep.server.fdlimit import fd_need, raise_open_files
    from postkeep.store import open_store
    from postkeep.store.crypto import load_master_key

    tls_context = build_tls(cfg)
    raise_open_files(fd_need(cfg, imap_worker=True), process=f"imap-worker-{index}")
    master_key = load_master_key(cfg.data_path(cfg.store.master_key_file))
    bus = EventBus()
    store = await open_store(
        cfg.store_url, cfg.data_dir, master_key, events=bus, maintenance=False
    )
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=channel_fd))
    hello = await _read_message(reader)
    if not isinstance(hello, ipc.Hello):
        raise RuntimeError("the main process did not say hello")
    channel = WorkerChannel(reader, writer, bus)
    verifier = PasswordVerifier(key=hello.password_key)
    verifier.shared_lookup = channel.password_cached
    verifier.on_remember = channel.password_verified
    sockets = [socket.socket(fileno=fd) for fd in listen_fds]
    imap = ImapServer(cfg, store, tls_context, verifier, slots=channel.slots, sockets=sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reading = asyncio.create_task(channel.run())
    reading.add_done_callback(lambda _task: stop.set())
    try:
        await imap.start()
        channel.send(ipc.Ready(os.getpid()))
        await stop.wait()
        if channel.closed:
            logger.warning("worker=%d: the main process is gone; stopping", index)
    finally:
        await imap.stop()
        for sock in sockets:
            sock.close()
        verifier.close()
        await store.close()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        writer.close()
