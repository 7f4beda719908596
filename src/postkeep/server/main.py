"""`postkeep serve`: builds the listeners and services from the config and runs them.

Startup order: the open-file limit (`postkeep.server.fdlimit`: raised to what the connection
caps need, or a refusal to start naming the keys), every listening socket bound, the drop from
root to `server.user` (`postkeep.server.privileges`), TLS context (fails fast on bad
certificates), store (migrations), listeners started,
IMAP worker processes (`postkeep.server.imap_workers`, when `imap.processes` > 1: that many
workers share the IMAP listening sockets, bound here first, and this process serves no IMAP
itself).
SIGTERM/SIGINT stop the workers and the listeners, let sessions end with 421 / BYE, then close
the store, which drains pending group-committed writes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

from postkeep import log
from postkeep.auth.passwords import PasswordVerifier
from postkeep.config import Config
from postkeep.imap.server import ImapServer
from postkeep.net.budget import DataBudget
from postkeep.net.listener import bind_listeners
from postkeep.net.slots import LocalSlots, slow_slots
from postkeep.net.tls import build_tls
from postkeep.server.fdlimit import fd_need, raise_open_files
from postkeep.server.imap_workers import WorkerPool
from postkeep.server.privileges import become_service_user
from postkeep.smtp.server import SmtpServer
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key

logger = log.get("server")


async def serve(cfg: Config) -> None:
    raise_open_files(fd_need(cfg))
    imap_listen = [*cfg.imap.listen, *cfg.imap.tls_listen]
    processes = cfg.imap_processes() if imap_listen else 1
    smtp_sockets = bind_listeners(cfg.smtp.listen)
    submission_sockets = bind_listeners([*cfg.submission.listen, *cfg.submission.tls_listen])
    imap_sockets = bind_listeners(imap_listen)
    become_service_user(cfg)  # started as root: root ends here, before any key or the store
    tls_context = build_tls(cfg)
    master_key = load_master_key(cfg.data_path(cfg.store.master_key_file))
    store = await open_store(cfg.store_url, cfg.data_dir, master_key)
    verifier = PasswordVerifier()
    budget = DataBudget(cfg.smtp.max_data_in_flight)  # message text in flight: MX + submission
    smtp = SmtpServer(cfg, store, tls_context, budget=budget, sockets=smtp_sockets)
    submission = SmtpServer(cfg, store, tls_context, role="submission", verifier=verifier,
                            budget=budget, sockets=submission_sockets)
    sockets = imap_sockets if processes > 1 else None
    slots = LocalSlots(
        cfg.imap.max_connections,
        cfg.imap.max_connections_per_ip,
        cfg.imap.max_connections_per_account,
        slow_slots(cfg.imap.max_connections, cfg.imap.slow_share),
    )
    servers: list[SmtpServer | ImapServer] = [smtp] + ([submission] if submission.listen else [])
    if processes == 1 and imap_listen:
        servers.append(
            ImapServer(cfg, store, tls_context, verifier, slots=slots, sockets=imap_sockets)
        )
    # more than one: IMAP is served by that many workers only; this process keeps the slots
    # and relays events, with its event loop free to answer them at once
    workers = WorkerPool(
        cfg, store.events, slots, verifier, sockets or [], processes if sockets else 0
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for server in servers:
            await server.start()
        await workers.start()
        logger.info("ready hostname=%s imap_processes=%d", cfg.server.hostname, processes)
        await stop.wait()
        logger.info("stopping")
    finally:
        await asyncio.gather(workers.stop(), *(server.stop() for server in servers))
        for sock in sockets or ():
            sock.close()
        verifier.close()
        await store.close()
        logger.info("stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` (`serve(cfg)`, `serve_worker(...)`) on uvloop when it is installed, else on
    asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
