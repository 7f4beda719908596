"""A worker process: every listener (SMTP MX, submission, IMAP, web) served on the sockets the main
process bound, on the worker's own store connections (SQLite in WAL mode serialises the writers
of all processes; PostgreSQL is made for it), event bus and message-text budget; and a delivery
worker of the outbound queue (`postkeep.queue.runner`), woken at once by the messages its own
submission server queues.

A worker is forked by `postkeep.server.forkserver` and talks to the main process over its
channel (`postkeep.server.pool` describes what goes over it): `RemoteSlots` asks for the
connection slots of one service, `SharedRates` counts the firewall's rates here and reports
them (`postkeep.net.firewall` tells how they stay global), `WorkerChannel` relays its bus's
events out and the others' in, and answers the password verifier's shared-cache lookups;
`RemoteStrikes` sends its strikes (`postkeep.bans`), and the bans the main process pushes fill
the worker's `BanList`, which every listener looks up at accept. It stops on SIGTERM (every
session ends with 421 4.3.2 / BYE) and at once when its channel closes (the main process is
gone), so that its listening sockets are free for a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import setproctitle

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import BanList, Guard
from postkeep.bans.policy import Policy
from postkeep.config import Config
from postkeep.config.firewall import FirewallConfig
from postkeep.delivery.directory import StoreDirectory
from postkeep.delivery.submit import LocalSubmission, make_pipeline
from postkeep.dns.resolver import DnsResolver
from postkeep.filters.junk.pruning import JunkPruner
from postkeep.filters.junk.training import JunkTrainer
from postkeep.imap.server import ImapServer
from postkeep.net.budget import DataBudget
from postkeep.net.firewall import GLOBAL, REPORT_EVERY, BucketKey, Buckets, Over, refusal
from postkeep.queue.dmarcrpt import DmarcReports, reporting
from postkeep.queue.remote import RemoteTransport
from postkeep.queue.runner import QueueRunner
from postkeep.queue.tlsrpt import TlsReports
from postkeep.server import ipc
from postkeep.server.channel import EventBatch, Outbox, read_message
from postkeep.smtp.server import SmtpServer
from postkeep.store import open_store
from postkeep.store.events import EventBus
from postkeep.web.service import WebService

logger = log.get("workers")


@dataclass(frozen=True, slots=True)
class ListenSockets:
    """The listening sockets of each service, bound by the main process, in the order of their
    config entries (`listen`, then `tls_listen`)."""

    mx: list[socket.socket]
    submission: list[socket.socket]
    imap: list[socket.socket]
    https: list[socket.socket]
    http: list[socket.socket]

    def all(self) -> list[socket.socket]:
        return [*self.mx, *self.submission, *self.imap, *self.https, *self.http]


class WorkerChannel:
    """A worker's end of the channel: relays its bus's events out, takes the others' in, and
    asks the main process for connection slots (`RemoteSlots`) and cached passwords."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bus: EventBus,
        bans: BanList,
    ) -> None:
        self.reader = reader
        self.bans = bans
        self._outbox = Outbox(writer)
        self.bus = bus
        self.closed = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        # slot requests whose asker was cancelled before the answer: a yes is given back
        self._abandoned: dict[int, ipc.SlotRelease] = {}
        self._batch = EventBatch(self.send)
        bus.relay = self._batch.add
        self.rates: SharedRates | None = None  # told the main process's blocks

    def slots(self, service: str) -> RemoteSlots:
        return RemoteSlots(self, service)

    def send(self, message: ipc.Message) -> None:
        if not self.closed:
            self._outbox.send(ipc.encode(message))

    async def password_cached(self, digest: bytes) -> bool:
        return await self.ask(lambda request_id: ipc.PasswordQuery(request_id, digest))

    def password_verified(self, digest: bytes) -> None:
        self.send(ipc.PasswordLearned(digest))

    async def ask(
        self,
        request: Callable[[int], ipc.SlotRequest | ipc.PasswordQuery | ipc.Strike],
        release: ipc.SlotRelease | None = None,
    ) -> bool:
        """Send the request of a new id and wait for its answer (False once the channel is
        closed). `release`: what gives the slot back should the answer be yes after the wait
        was cancelled (a connection ended by the server's stop, say), so the main process does
        not count it as held until the worker exits."""
        if self.closed:
            return False
        request_id = next(self._ids)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.send(request(request_id))
        try:
            return await future
        except asyncio.CancelledError:
            if release is not None:
                self._abandoned[request_id] = release
            raise
        finally:
            self._waiting.pop(request_id, None)

    async def run(self) -> None:
        """Read the main process's messages until the channel closes."""
        try:
            while (message := await read_message(self.reader)) is not None:
                match message:
                    case ipc.Events(events):
                        for event in events:
                            self.bus.publish_local(event)
                    case ipc.RateBlocked(entries):
                        if self.rates is not None:
                            self.rates.block(entries)
                    case ipc.BanChange(key, until):
                        self.bans.set(key, until)
                    case ipc.Answer(request_id, ok):
                        future = self._waiting.get(request_id)
                        if future is not None and not future.done():
                            future.set_result(ok)
                        release = self._abandoned.pop(request_id, None)
                        if release is not None and ok:
                            self.send(release)
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


class RemoteStrikes:
    """`postkeep.bans.keeper.Strikes` to the main process's `BanKeeper`."""

    def __init__(self, channel: WorkerChannel) -> None:
        self.channel = channel

    async def strike(self, ip: str, kind: str, user: str = "") -> bool:
        return await self.channel.ask(lambda request_id: ipc.Strike(request_id, ip, kind, user))

    def notify(self, ip: str, kind: str) -> None:
        self.channel.send(ipc.Strike(0, ip, kind, ""))


class RemoteSlots:
    """`ConnectionSlots` of one service, kept by the main process, asked over the channel."""

    def __init__(self, channel: WorkerChannel, service: str) -> None:
        self.channel = channel
        self.service = service

    async def acquire_ip(self, key: str) -> bool:
        return await self._acquire(ipc.IpSlot(self.service, key))

    def release_ip(self, key: str) -> None:
        self.channel.send(ipc.SlotRelease(ipc.IpSlot(self.service, key)))

    async def acquire_slow(self) -> bool:
        return await self._acquire(ipc.SlowSlot(self.service))

    def release_slow(self) -> None:
        self.channel.send(ipc.SlotRelease(ipc.SlowSlot(self.service)))

    async def acquire_account(self, account_id: int) -> bool:
        return await self._acquire(ipc.AccountSlot(self.service, account_id))

    def release_account(self, account_id: int) -> None:
        self.channel.send(ipc.SlotRelease(ipc.AccountSlot(self.service, account_id)))

    async def _acquire(self, slot: ipc.Slot) -> bool:
        return await self.channel.ask(lambda request_id: ipc.SlotRequest(request_id, slot),
                                      ipc.SlotRelease(slot))


class SharedRates:
    """The firewall's `Rates` in a worker: its own buckets, exact for its own connections;
    what it lets through reported to the main process every `REPORT_EVERY` seconds at most
    (`ipc.RateUsage`); and the main process's blocks (`ipc.RateBlocked`: buckets all workers
    together emptied), which refuse until they expire."""

    def __init__(self, channel: WorkerChannel, cfg: FirewallConfig) -> None:
        self.channel = channel
        self.buckets = Buckets(cfg)
        self.blocked: dict[BucketKey, float] = {}  # until (monotonic time)
        self._usage: dict[BucketKey, int] = {}
        channel.rates = self

    def take(self, service: str, kind: str, keys: tuple[tuple[int, str], ...], n: int
             ) -> Over | None:
        buckets = self.buckets
        named = ((GLOBAL, ""), *keys) if kind == "connections" else keys
        now = time.monotonic()
        if self.blocked:
            for index, net in named:
                key = (service, kind, index, net)
                until = self.blocked.get(key)
                if until is not None:
                    if until > now:
                        return Over(refusal(kind, index, buckets.limit(kind, index)), False)
                    del self.blocked[key]
        over = buckets.take(service, kind, keys, n, now)
        if over is not None and not over.tarpit:
            return over
        if not self._usage:
            asyncio.get_running_loop().call_later(REPORT_EVERY, self._flush)
        usage = self._usage
        for index, net in named:
            if buckets.limit(kind, index):
                key = (service, kind, index, net)
                usage[key] = usage.get(key, 0) + n
        return over

    def block(self, entries: tuple[ipc.BlockEntry, ...]) -> None:
        now = time.monotonic()
        if len(self.blocked) > 4096:  # the expired ones go
            self.blocked = {k: until for k, until in self.blocked.items() if until > now}
        for service, kind, index, net, seconds in entries:
            self.blocked[(service, kind, index, net)] = now + seconds

    def _flush(self) -> None:
        rows = [(*key, n) for key, n in self._usage.items()]
        self._usage = {}
        for start in range(0, len(rows), ipc.RATES_PER_FRAME):
            self.channel.send(ipc.RateUsage(tuple(rows[start : start + ipc.RATES_PER_FRAME])))


async def serve_worker(
    cfg: Config,
    index: int,
    channel_sock: socket.socket,
    sockets: ListenSockets,
    tls_context: ssl.SSLContext | None,
    master_key: bytes,
) -> None:
    """Serve every listener on the inherited sockets until SIGTERM or until the main process's
    channel closes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # blocked since the main process's start (`postkeep.server.main`): one sent meanwhile now
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    bus = EventBus()
    store = await open_store(
        cfg.store_url, cfg.data_dir, master_key, events=bus, maintenance=False
    )
    reader, writer = await asyncio.open_unix_connection(sock=channel_sock)
    hello = await read_message(reader)
    if not isinstance(hello, ipc.Hello):
        raise RuntimeError("the main process did not say hello")
    bans = BanList(Policy(cfg.bans))
    channel = WorkerChannel(reader, writer, bus, bans)
    rates = SharedRates(channel, cfg.firewall)
    guard = Guard(cfg.bans, bans, RemoteStrikes(channel), store, cfg.web.login_history_days)
    verifier = PasswordVerifier(key=hello.password_key)
    verifier.shared_lookup = channel.password_cached
    verifier.on_remember = channel.password_verified
    budget = DataBudget(cfg.smtp.max_data_in_flight)  # message text in flight: MX + submission
    resolver = DnsResolver(cfg.dns)
    tls_reports = TlsReports(cfg, store, resolver) if cfg.delivery.tls_reports else None
    transport = RemoteTransport(cfg, resolver, tls_reports)
    dmarc_reports = DmarcReports(cfg, store, resolver) if reporting(cfg) else None
    # the junk classifier's tokens pruned by one process (each node's worker 1, the first)
    pruner = (JunkPruner(store, cfg.junk) if index == 1 and cfg.junk.classifier
              and "junk" in cfg.filters.inbound else None)
    runner = QueueRunner(cfg, store, transport, owner=f"{cfg.server.hostname}/{os.getpid()}/",
                         tls_reports=tls_reports, dmarc_reports=dmarc_reports, pruner=pruner)
    servers: list[SmtpServer | ImapServer | WebService] = []
    if sockets.mx:
        servers.append(SmtpServer(cfg, store, tls_context, budget=budget,
                                  slots=channel.slots("mx"), sockets=sockets.mx,
                                  resolver=resolver, rates=rates,
                                  on_dmarc=dmarc_reports.record if dmarc_reports else None,
                                  guard=guard))
    submission: SmtpServer | None = None
    if sockets.submission:
        verifier.warm()
        submission = SmtpServer(cfg, store, tls_context, role="submission", verifier=verifier,
                                budget=budget, slots=channel.slots("submission"),
                                sockets=sockets.submission, on_queued=runner.wake,
                                rates=rates, guard=guard)
        servers.append(submission)
    if sockets.imap:
        verifier.warm()
        servers.append(ImapServer(cfg, store, tls_context, verifier, slots=channel.slots("imap"),
                                  sockets=sockets.imap, rates=rates,
                                  guard=guard))
    if sockets.https or sockets.http:
        verifier.warm()
        # the webmail sends through the submission listener's own pipeline (the same one)
        pipeline = submission.inbound if submission is not None else make_pipeline(
            cfg, store, StoreDirectory(store), submission=True, on_queued=runner.wake)
        trainer = (JunkTrainer(store, cfg.junk)
                   if "junk" in cfg.filters.inbound and cfg.junk.classifier else None)
        servers.append(WebService(cfg, store, tls_context, verifier,
                                  submit=LocalSubmission(cfg, store, pipeline).submit,
                                  slots=channel.slots("web"), https=sockets.https,
                                  http=sockets.http, rates=rates, guard=guard, trainer=trainer))
    reading = asyncio.create_task(channel.run())
    reading.add_done_callback(lambda _task: stop.set())
    delivering: asyncio.Task[None] | None = None
    try:
        for server in servers:
            await server.start()
        delivering = asyncio.create_task(runner.run())
        channel.send(ipc.Ready(os.getpid()))
        await stop.wait()
        if channel.closed:
            logger.warning("worker=%d: the main process is gone; stopping", index)
    finally:
        if delivering is not None:  # deliveries in flight stop; their entries are retried
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
        await transport.close()  # QUIT on the connections kept open for the next message
        await asyncio.gather(*(server.stop() for server in servers))
        for sock in sockets.all():
            sock.close()
        verifier.close()
        await store.close()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        writer.close()


def run_worker(
    cfg: Config,
    sockets: ListenSockets,
    tls_context: ssl.SSLContext | None,
    master_key: bytes,
    index: int,
    channel: socket.socket,
) -> int:
    """A forked worker's whole life (`postkeep.server.forkserver.Target`): its exit code."""
    from postkeep.server.main import run

    setproctitle.setproctitle(f"postkeep: worker {index} ({cfg.base_dir})")
    log.setup(cfg.log.level, process=f"w{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when workers stop
    try:
        run(serve_worker(cfg, index, channel, sockets, tls_context, master_key))
    except Exception:
        logger.exception("worker=%d failed", index)
        return 1
    return 0
