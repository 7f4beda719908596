"""`postkeep serve`: the main process, which binds the listeners, starts the worker processes
that serve them, supervises them and serves no connection itself (`postkeep.server.pool`).

Start-up, in this order, and why:

1. the open-file limit (`postkeep.server.fdlimit`: raised to what a worker's connection caps
   need, or a refusal naming the keys; the workers inherit it);
2. every listening socket bound (ports below 1024 need root), in the config's order;
3. the drop from root to `server.user` (`postkeep.server.privileges`): nothing after this runs
   as root, and no file of the instance but postkeep.toml was opened by root;
4. the TLS context (fails fast on bad certificates; built once here and inherited by the
   workers) and the master key, read as that user;
5. the store opened once (migrations, stale blobs removed) and closed: the workers open their
   own; everything a worker runs imported, then `gc.freeze()`, then the fork server forked
   (`postkeep.server.forkserver`): while this process still has one thread and no event
   loop, so that the workers it forks share the imported pages;
6. on the event loop: a store connection of its own for the bans (`postkeep.bans`: the
   `BanKeeper`, its ledger, the bans in force loaded for the workers' first messages and
   reloaded every `bans.sync_interval`), opened only now, after the fork server was forked;
   with `[cluster] redis_url`, the firewall's rates shared in Redis (`postkeep.net.redis_rates`);
   then the workers started, and "ready" logged once all are up.

SIGTERM/SIGINT stop the workers (each ends its sessions with 421 4.3.2 / BYE and closes its
store, which drains pending writes), then the fork server. Both signals are blocked from the
first step until the event loop's handlers are installed (`STOP_SIGNALS`), and so in each
worker until its own are: one that arrives during start-up waits for them, and the start-up
ends as a clean stop instead of a traceback or a worker "exited with status -15".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Coroutine
from functools import partial
from typing import Any

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier, prepare_dummy_hash
from postkeep.bans.keeper import BanKeeper
from postkeep.bans.ledger import open_ledger
from postkeep.config import Config
from postkeep.dns.resolver import DnsResolver
from postkeep.net.firewall import Buckets
from postkeep.net.listener import bind_listeners
from postkeep.net.redis_rates import RedisRates
from postkeep.net.tls import build_tls
from postkeep.queue.smarthost import load_relays
from postkeep.server.fdlimit import fd_need, raise_open_files
from postkeep.server.forkserver import ForkServer, ForkServerGone
from postkeep.server.pool import WorkerPool, service_slots
from postkeep.server.privileges import become_service_user
from postkeep.server.worker import ListenSockets, run_worker
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key

logger = log.get("server")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def bind_all(cfg: Config) -> ListenSockets:
    """Every listening socket of the config, per service (closed again if one fails)."""
    bound: list[socket.socket] = []
    try:
        groups = []
        for entries in (
            cfg.smtp.listen,
            [*cfg.submission.listen, *cfg.submission.tls_listen],
            [*cfg.imap.listen, *cfg.imap.tls_listen],
            cfg.web.listen,
            cfg.web.http_listen,
        ):
            group = bind_listeners(entries)
            bound += group
            groups.append(group)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return ListenSockets(*groups)


def serve(cfg: Config) -> None:
    """Run the server until SIGTERM or SIGINT (see the module's docstring for the order)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    raise_open_files(fd_need(cfg))
    sockets = bind_all(cfg)
    try:
        become_service_user(cfg)  # started as root: root ends here, before any key or the store
        tls_context = build_tls(cfg)
        master_key = load_master_key(cfg.data_path(cfg.store.master_key_file))
        _preload(cfg)
        prepare_dummy_hash()  # the workers' unknown-user verifications, made once for all
        run(_prepare_store(cfg, master_key))
        gc.freeze()  # what is imported and built so far stays shared with the workers
        forks = ForkServer.start(partial(run_worker, cfg, sockets, tls_context, master_key),
                                 f"postkeep: fork server ({cfg.base_dir})")
        try:
            run(_supervise(cfg, forks, master_key))
        finally:
            forks.close()
    finally:
        for sock in sockets.all():
            sock.close()


def _preload(cfg: Config) -> None:
    """Import what the workers import only once they run (the event loop, the store's database
    driver), so that it is imported once, here, for all of them."""
    import importlib

    with contextlib.suppress(ImportError):
        importlib.import_module("uvloop")
    url = cfg.store_url
    for module in (
        ("sqlalchemy.dialects.postgresql.psycopg", "psycopg") if url.startswith("postgresql")
        else ("sqlalchemy.dialects.sqlite.pysqlite", "sqlite3")
    ):
        importlib.import_module(module)


async def _prepare_store(cfg: Config, master_key: bytes) -> None:
    """Open the store once (migrations, stale blobs removed) and close it: the workers open
    their own."""
    store = await open_store(cfg.store_url, cfg.data_dir, master_key)
    try:  # this node's delivery workers of before are gone: their claims with them
        released = await store.release_outbound_claims(f"{cfg.server.hostname}/")
        if released:
            logger.info("queue: %d entries claimed by workers of a previous run are due again",
                        released)
    finally:
        await store.close()
    DnsResolver(cfg.dns)  # fails here, not in every worker, if no nameserver is known
    load_relays(cfg)  # and here if a smart host's login or certificate file is not right


async def _supervise(cfg: Config, forks: ForkServer, master_key: bytes) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile: now
    verifier = PasswordVerifier()  # its cache only: the workers verify
    processes = cfg.processes()
    store = await open_store(cfg.store_url, cfg.data_dir, master_key, read_workers=1,
                             maintenance=False)
    bans = cfg.bans
    ledger = open_ledger(store, cfg.cluster.redis_url, bans.window, bans.max_tracked,
                         bans.forget_after)
    keeper = BanKeeper(bans, ledger)
    syncing: asyncio.Task[None] | None = None
    buckets = Buckets(cfg.firewall) if cfg.firewall.enabled else None
    pool = WorkerPool(forks, service_slots(cfg), verifier, processes, keeper, buckets)
    if buckets is not None and cfg.cluster.redis_url:  # one budget with the other nodes
        pool.shared = RedisRates(cfg.cluster.redis_url, buckets, pool.blocked_in_cluster)
        pool.shared.start()
    forks.on_gone = stop.set
    try:
        await keeper.sync()  # the bans of before the restart, for the workers' first Hello
        syncing = asyncio.create_task(keeper.run())
        if await pool.start(stop):
            logger.info("ready hostname=%s processes=%d", cfg.server.hostname, processes)
            await stop.wait()
        logger.info("stopping")
    finally:
        await pool.stop()
        if syncing is not None:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncing
        if pool.shared is not None:
            await pool.shared.close()
        await ledger.close()
        await store.close()
        verifier.close()
        logger.info("stopped")
    if forks.gone:
        raise ForkServerGone("the fork server exited: no worker could be restarted")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
