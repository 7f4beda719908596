"""The worker pool: the main process's side of the worker processes (the nginx model).

N identical workers (`server.processes`, default one per core) serve every listener (SMTP MX,
submission, IMAP): the main process binds the listening sockets, the workers inherit them
(forked by `postkeep.server.forkserver`), and the kernel hands each new connection to one of
the workers accepting on that socket (a busy process reaches `accept` later, so connections
drift to the idle ones). The main process serves no connection: its event loop only answers
the workers, so an answer never waits behind a session's work (with IMAP sessions on the same
loop an answer once waited ~35 ms).

What must stay global goes over one channel per worker (`postkeep.server.ipc` messages,
`postkeep.server.channel` framing), and the main process keeps it:

- connection slots (`postkeep.net.slots.LocalSlots`, one set per service: mx, submission,
  imap): a worker asks before it serves a connection, a login or a connection turned slow
  (`SlotRequest`, answered); releases need no answer. Whatever a worker held is given back
  when its channel closes, so a crashed worker leaks no slot and the limits stay exact;
- mailbox events (`Events`): every event a worker's store publishes (an SMTP delivery, a STORE
  or EXPUNGE) is forwarded to the other workers, so IDLE in any process is woken;
- password verification successes (`PasswordQuery`, `PasswordLearned`): the main process's
  `PasswordVerifier` cache is shared (its HMAC key goes in `Hello`), so a user is verified by
  argon2 once per cache lifetime, not once per worker; the main process itself never
  verifies (and so starts no verification thread);
- the firewall's rates (`postkeep.net.firewall`): each worker reports what it let through
  (`RateUsage`, no answer), the main process counts it in the global `Buckets` and tells
  every worker the buckets that went empty (`RateBlocked`), each once until it is full again
  or its block grows by more than `REBLOCK_AFTER` seconds; with `[cluster] redis_url` it
  also counts it in Redis (`postkeep.net.redis_rates`, never waited on) and tells the
  workers the blocks Redis finds, of this node's and the other nodes' traffic;
- bans (`postkeep.bans`): workers send their strikes (`Strike`; a failed login's is answered:
  is the account under attack?), the main process's `BanKeeper` counts them and pushes every
  ban that begins or ends to every worker (`BanChange`; the whole list after `Hello`), so a
  worker refuses a banned client at accept with a lookup in its own copy, no round trip;
- `Ready`: a worker's listeners are up (the main process logs "ready" after all of them).

A frame that is not a valid message (`ipc.ChannelError`) ends the channel: it is logged and
closed, so the worker stops, is restarted and its slots are given back.

A worker that dies is restarted (after 1 s, doubling up to 30 s while it keeps dying early;
it lost only the connections it held: a message is acknowledged only once durable); so is
one that stops reading its channel (killed once 16 MiB are queued for it, so a hung worker
cannot grow the main process without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import BanKeeper
from postkeep.config import Config
from postkeep.net.firewall import BucketKey, Buckets
from postkeep.net.redis_rates import Block, RedisRates
from postkeep.net.slots import LocalSlots, slow_slots
from postkeep.server import ipc
from postkeep.server.channel import Outbox, read_message
from postkeep.server.forkserver import ForkFailed, ForkServer, ForkServerGone

logger = log.get("workers")

MAX_BACKLOG = 16 << 20  # octets queued for a worker that does not read them: it is hung
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long restarts after the first delay again
REBLOCK_AFTER = 0.5  # seconds a bucket's block must grow by to be sent again


def service_slots(cfg: Config) -> dict[str, LocalSlots]:
    """The connection limits of each service, kept by the main process for all workers. The
    MX and the submission listeners each count up to the `smtp.max_connections*` keys."""
    smtp, imap = cfg.smtp, cfg.imap
    return {
        "mx": LocalSlots(smtp.max_connections, smtp.max_connections_per_ip, 0,
                         slow_slots(smtp.max_connections, smtp.slow_share)),
        "submission": LocalSlots(smtp.max_connections, smtp.max_connections_per_ip, 0,
                                 slow_slots(smtp.max_connections, smtp.slow_share)),
        "imap": LocalSlots(imap.max_connections, imap.max_connections_per_ip,
                           imap.max_connections_per_account,
                           slow_slots(imap.max_connections, imap.slow_share)),
        "web": LocalSlots(cfg.web.max_connections, cfg.web.max_connections_per_ip,
                          cfg.web.max_event_streams),
    }


class WorkerStartError(RuntimeError):
    """A worker exited before its listeners were up (its own log lines say why)."""


class _Worker:
    """One worker slot of the pool: its current process and what it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: int | None = None  # of the running process
        self.outbox: Outbox | None = None
        self.ready = asyncio.Event()
        self.held: Counter[ipc.Slot] = Counter()
        self.task: asyncio.Task[None] | None = None


class WorkerPool:
    """Starts, supervises and stops the workers (forked by `forks`) and serves their channels:
    slots against `slots`, events forwarded, password successes shared through `verifier`."""

    def __init__(
        self,
        forks: ForkServer,
        slots: dict[str, LocalSlots],
        verifier: PasswordVerifier,
        count: int,
        keeper: BanKeeper,
        rates: Buckets | None = None,
    ) -> None:
        self.forks = forks
        self.slots = slots
        self.rates = rates  # the firewall's global buckets (None: no firewall counts)
        self.shared: RedisRates | None = None  # the buckets in Redis, with a cluster
        self._blocked: dict[BucketKey, float] = {}  # until, as sent
        self.verifier = verifier
        self.keeper = keeper
        keeper.on_change = self._ban_changed
        self._striking: set[asyncio.Task[None]] = set()
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self._stopping = False
        self._stopped = asyncio.Event()  # wakes the supervisors' restart delays
        self.max_backlog = MAX_BACKLOG

    async def start(self, stop: asyncio.Event) -> bool:
        """Start every worker and wait until each has its listeners up: True; False when
        `stop` is set first (a SIGTERM while they start: not an error)."""
        for worker in self.workers:
            worker.task = asyncio.create_task(self._supervise(worker))
        ready = asyncio.ensure_future(asyncio.gather(*(w.ready.wait() for w in self.workers)))
        stopped = asyncio.ensure_future(stop.wait())
        supervisors = [w.task for w in self.workers if w.task is not None]
        try:
            done, _pending = await asyncio.wait(
                [ready, stopped, *supervisors], timeout=START_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopped.cancel()
        if ready in done:
            return True
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)  # its CancelledError, retrieved
        if stop.is_set():
            return False
        for task in done:
            task.result()  # a worker that exited before it was ready: its error
        raise WorkerStartError(f"workers not ready after {START_TIMEOUT:.0f} s")

    async def stop(self) -> None:
        """SIGTERM every worker (each ends its sessions with 421 / BYE) and wait for them."""
        self._stopping = True
        self._stopped.set()
        for worker in self.workers:
            self._signal(worker, signal.SIGTERM)
        tasks = [w.task for w in self.workers if w.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for worker in self.workers:
                self._signal(worker, signal.SIGKILL)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for strike in self._striking:  # the workers are gone: their strikes no longer matter
            strike.cancel()
        await asyncio.gather(*self._striking, return_exceptions=True)

    def _signal(self, worker: _Worker, sig: int) -> None:
        if worker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)

    # -- supervision -------------------------------------------------------------------------------

    async def _supervise(self, worker: _Worker) -> None:
        delay = RESTART_DELAY
        while not self._stopping:
            started = time.monotonic()
            try:
                code = await self._run_once(worker)
            except ForkServerGone:
                if self._stopping:
                    return
                raise
            except ForkFailed as e:  # no process now (a task limit, memory): try again later
                logger.error("worker=%d could not be forked: %s; retrying in %.0f s",
                             worker.index, os.strerror(e.errno) if e.errno else e, delay)
            else:
                if self._stopping:
                    return
                if not worker.ready.is_set():  # never came up: a startup error, not a crash
                    raise WorkerStartError(f"worker {worker.index} exited with status {code} "
                                           "while starting")
                if time.monotonic() - started >= STABLE_AFTER:
                    delay = RESTART_DELAY
                logger.error(
                    "worker=%d exited status=%s; restarting in %.0f s", worker.index, code, delay
                )
            with contextlib.suppress(TimeoutError):  # a stop ends the delay at once
                await asyncio.wait_for(self._stopped.wait(), delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    async def _run_once(self, worker: _Worker) -> int:
        """Run one process of the worker until it exits; returns its exit status."""
        pid, sock = await self.forks.spawn(worker.index)
        worker.pid = pid
        if self._stopping:  # SIGTERM came while it was being forked
            self._signal(worker, signal.SIGTERM)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        worker.outbox = outbox = Outbox(writer)
        outbox.send(ipc.encode(ipc.Hello(self.verifier.key)))
        for key, until in self.keeper.bans.until.items():
            outbox.send(ipc.encode(ipc.BanChange(key, until)))
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
        try:  # the channel is gone: the worker stops on its own; make sure of it
            try:
                return await asyncio.wait_for(self.forks.wait(pid), STOP_TIMEOUT)
            except TimeoutError:
                self._signal(worker, signal.SIGKILL)
                return await self.forks.wait(pid)
        finally:
            worker.pid = None  # never signal a pid that may be another process's by now

    async def _serve_channel(
        self, worker: _Worker, reader: asyncio.StreamReader, outbox: Outbox
    ) -> None:
        while (message := await read_message(reader)) is not None:
            match message:
                case ipc.Events():
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
                case ipc.RateUsage(entries):
                    self._count(entries)
                case ipc.PasswordQuery(request_id, digest):
                    ok = self.verifier.cached_digest(digest)
                    outbox.send(ipc.encode(ipc.Answer(request_id, ok)))
                case ipc.PasswordLearned(digest):
                    self.verifier.remember_digest(digest)
                case ipc.Strike():
                    task = asyncio.create_task(self._strike(message, outbox))
                    self._striking.add(task)
                    task.add_done_callback(self._striking.discard)
                case ipc.Ready(pid):
                    logger.info("worker=%d ready pid=%s", worker.index, pid)
                    worker.ready.set()
                case _:
                    raise ipc.ChannelError(f"a worker sent {type(message).__name__}")

    async def _strike(self, message: ipc.Strike, outbox: Outbox) -> None:
        try:
            under_attack = await self.keeper.strike(message.ip, message.kind, message.user)
        except Exception as e:  # the store or Redis: the strike is lost, the worker goes on
            logger.warning("bans: strike not counted ip=%s reason=%s", message.ip,
                           log.quote(str(e) or repr(e)))
            under_attack = False
        if message.request_id:
            outbox.send(ipc.encode(ipc.Answer(message.request_id, under_attack)))

    def _ban_changed(self, key: str, until: float) -> None:
        frame = ipc.encode(ipc.BanChange(key, until))
        for worker in self.workers:
            if worker.outbox is not None:
                worker.outbox.send(frame)

    def _take(self, slot: ipc.Slot) -> bool:
        match slot:
            case ipc.IpSlot(service, ip_class):
                return self.slots[service].take_ip(ip_class)
            case ipc.AccountSlot(service, account_id):
                return self.slots[service].take_account(account_id)
            case ipc.SlowSlot(service):
                return self.slots[service].take_slow()

    def _release(self, slot: ipc.Slot) -> None:
        match slot:
            case ipc.IpSlot(service, ip_class):
                self.slots[service].release_ip(ip_class)
            case ipc.AccountSlot(service, account_id):
                self.slots[service].release_account(account_id)
            case ipc.SlowSlot(service):
                self.slots[service].release_slow()

    def _release_all(self, worker: _Worker) -> None:
        for slot, n in worker.held.items():
            for _ in range(n):
                self._release(slot)
        worker.held.clear()

    # -- rates -------------------------------------------------------------------------------------

    def _count(self, entries: tuple[ipc.RateEntry, ...]) -> None:
        """A worker's usage, into the global buckets; the new blocks to every worker."""
        if self.rates is None:
            return
        now = time.monotonic()
        blocks: list[ipc.BlockEntry] = []
        shared = self.shared
        for service, kind, index, net, n in entries:
            key = (service, kind, index, net)
            if shared is not None:
                shared.add(key, n)
            self._block(key, self.rates.add(key, n, now), now, blocks)
        self._send_blocks(blocks)

    def blocked_in_cluster(self, found: list[Block]) -> None:
        """Blocks of the buckets in Redis (`RedisRates`: this node's, or another's), to
        every worker."""
        now = time.monotonic()
        blocks: list[ipc.BlockEntry] = []
        for key, seconds in found:
            self._block(key, seconds, now, blocks)
        self._send_blocks(blocks)

    def _block(self, key: BucketKey, seconds: float, now: float,
               blocks: list[ipc.BlockEntry]) -> None:
        """Add the block of a bucket that holds no token for `seconds` unless the workers know
        it already (or a block that ends less than `REBLOCK_AFTER` earlier)."""
        if seconds > 0 and self._blocked.get(key, 0.0) + REBLOCK_AFTER < now + seconds:
            if len(self._blocked) > 4096:  # the expired ones go
                self._blocked = {k: until for k, until in self._blocked.items() if until > now}
            self._blocked[key] = now + seconds
            blocks.append((*key, seconds))

    def _send_blocks(self, blocks: list[ipc.BlockEntry]) -> None:
        for start in range(0, len(blocks), ipc.RATES_PER_FRAME):
            frame = ipc.RateBlocked(tuple(blocks[start : start + ipc.RATES_PER_FRAME]))
            self._forward(frame, exclude=None)

    # -- events ------------------------------------------------------------------------------------

    def _forward(self, message: ipc.Events | ipc.RateBlocked, exclude: _Worker | None
                 ) -> None:
        frame = ipc.encode(message)
        for worker in self.workers:
            if worker is not exclude and worker.outbox is not None:
                worker.outbox.send(frame)
                self._check_backlog(worker, worker.outbox)

    def _check_backlog(self, worker: _Worker, outbox: Outbox) -> None:
        """A worker that stops reading its channel (hung) would make this process queue its
        events without bound: past `max_backlog` octets it is killed, and restarted."""
        queued = outbox.queued()
        if queued <= self.max_backlog or worker.pid is None:
            return
        logger.error(
            "worker=%d does not read its channel (%d octets queued); killing it",
            worker.index,
            queued,
        )
        self._signal(worker, signal.SIGKILL)
        outbox.writer.transport.abort()
        worker.outbox = None
