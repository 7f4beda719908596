"""The open-file limit (RLIMIT_NOFILE) a process needs for its configured connection caps.

Every connection is a descriptor from accept on, TLS handshake included, so a process that may
hold `max_connections` of each of its listeners' roles needs that many descriptors plus a margin
(`FD_MARGIN`) for the store (SQLite and its journal, or a PostgreSQL pool), blob files being
read and written, the listening sockets, the log and the workers' channels. At start the
soft limit is raised to that need (never lowered); when even the hard limit is below it the
process refuses to start with a `ConfigError` naming the keys behind the need: the alternative
is a server that stops accepting (MX delivery included) once one client holds the descriptors.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from postkeep import log
from postkeep.config import Config
from postkeep.errors import ConfigError

FD_MARGIN = 256
FD_PER_WORKER = 2  # the main process's end of a worker's channel, and a spare

logger = log.get("server")


@dataclass(frozen=True, slots=True)
class FdNeed:
    """Descriptors a process needs, and the config keys that make up the need."""

    total: int
    keys: tuple[str, ...]


def fd_need(cfg: Config) -> FdNeed:
    """What the main process and every worker process (which inherit its limit) need.

    A worker may hold every connection of every service: the limits are global, and the
    kernel may hand all of them to one worker. The MX and the submission each count
    `smtp.max_connections` (each role has its own limits), IMAP `imap.max_connections`; the
    main process needs a channel per worker on top.
    """
    total = FD_MARGIN + FD_PER_WORKER * cfg.processes()
    keys: list[str] = []
    if cfg.smtp.listen:
        total += cfg.smtp.max_connections
        keys.append("smtp.max_connections")
    if cfg.submission.listen or cfg.submission.tls_listen:
        total += cfg.smtp.max_connections
        keys.append("smtp.max_connections (submission)")
    if cfg.imap.listen or cfg.imap.tls_listen:
        total += cfg.imap.max_connections
        keys.append("imap.max_connections")
    if cfg.web.listen or cfg.web.http_listen:
        total += cfg.web.max_connections
        keys.append("web.max_connections")
    keys.append("server.processes")
    return FdNeed(total, tuple(keys))


def choose_soft_limit(need: int, soft: int, hard: int) -> int | None:
    """The soft limit to set for `need` descriptors: `soft` itself when it is enough, else
    `need`; None when the hard limit is below the need. `resource.RLIM_INFINITY` (any
    negative value) is unlimited."""
    if soft < 0 or soft >= need:
        return soft
    if 0 <= hard < need:
        return None
    return need


def raise_open_files(need: FdNeed, *, process: str = "server") -> int:
    """Raise RLIMIT_NOFILE's soft limit to `need` (see `choose_soft_limit`), log the result,
    and return it; a hard limit too low is a `ConfigError` naming the keys."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    chosen = choose_soft_limit(need.total, soft, hard)
    if chosen is None:
        keys = ", ".join(need.keys) or "the connection limits"
        raise ConfigError(
            keys,
            f"need {need.total} open files ({keys} plus {FD_MARGIN} for the store and blobs) "
            f"but the hard limit (RLIMIT_NOFILE) is {hard}: raise it (ulimit -Hn, systemd "
            "LimitNOFILE=) or lower these keys",
        )
    if chosen != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (chosen, hard))
    shown = "unlimited" if chosen < 0 else str(chosen)
    logger.info("open files limit=%s need=%d hard=%s process=%s", shown, need.total,
                "unlimited" if hard < 0 else hard, process)
    return chosen
