"""`postkeep serve`: builds the listeners and services from the config and runs them.

Startup order: TLS context (fails fast on bad certificates), store (migrations), listeners.
SIGTERM/SIGINT stop the listeners, let sessions end with 421, then close the store, which
drains pending group-committed writes.
"""

from __future__ import annotations

import asyncio
import signal

from postkeep import log
from postkeep.config import Config
from postkeep.imap_server import ImapServer
from postkeep.net.tls import build_tls
from postkeep.policy.auth import PasswordVerifier
from postkeep.smtp_server import SmtpServer
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key

logger = log.get("server")


async def serve(cfg: Config) -> None:
    tls_context = build_tls(cfg)
    master_key = load_master_key(cfg.data_path(cfg.store.master_key_file))
    store = await open_store(cfg.store_url, cfg.data_dir, master_key)
    verifier = PasswordVerifier()
    smtp = SmtpServer(cfg, store, tls_context)
    submission = SmtpServer(cfg, store, tls_context, role="submission", verifier=verifier)
    imap = ImapServer(cfg, store, tls_context, verifier)
    servers = [smtp] + ([submission] if submission.listen else []) + ([imap] if imap.listen else [])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for server in servers:
            await server.start()
        logger.info("ready hostname=%s", cfg.server.hostname)
        await stop.wait()
        logger.info("stopping")
    finally:
        for server in servers:
            await server.stop()
        verifier.close()
        await store.close()
        logger.info("stopped")


def run(cfg: Config) -> None:
    """Run `serve` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))
