"""The filter runners `[filters]` configures, one per direction, and `postkeep check`'s probe
of the scanners they use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from postkeep.config import Config
from postkeep.config.filters import MILTER_PREFIX
from postkeep.filters.base import Direction, Filter, FilterRunner
from postkeep.filters.clamav import ClamavFilter, ClamdClient
from postkeep.filters.clamd_protocol import ProtocolError
from postkeep.filters.junk.filter import JunkFilter
from postkeep.filters.milter import wire
from postkeep.filters.milter.client import MilterClient
from postkeep.filters.milter.filter import MilterFilter
from postkeep.store.api import Store

PROBE_TIMEOUT = 10.0

#: Each built-in name `[filters]` may list (`config.filters.FILTER_NAMES`) and how it is
#: made; "milter:NAME" names are made from their `[[filters.milter]]` (`make`).
FILTERS: dict[str, Callable[[Config, Store], Filter]] = {
    "antivirus": lambda cfg, store: ClamavFilter(cfg.antivirus),
    "junk": lambda cfg, store: JunkFilter(cfg.junk, store),
}


def head_limit(cfg: Config) -> int:
    """The header section's size at most, MX or submission (the ``limits`` stage's)."""
    return max(cfg.smtp.max_header_size, cfg.submission.max_header_size)


def make(cfg: Config, name: str, store: Store) -> Filter:
    """The filter `name` (as `[filters]` lists it)."""
    if name.startswith(MILTER_PREFIX):
        milter = next(m for m in cfg.filters.milter if MILTER_PREFIX + m.name == name)
        return MilterFilter(milter, cfg.server.hostname, head_limit(cfg),
                            max(cfg.smtp.max_message_size, cfg.submission.max_message_size))
    return FILTERS[name](cfg, store)


def runner(cfg: Config, direction: Direction, store: Store) -> FilterRunner | None:
    """The filters `[filters]` lists for `direction`, in order; None when it lists none."""
    names = cfg.filters.inbound if direction is Direction.INBOUND else cfg.filters.outbound
    if not names:
        return None
    return FilterRunner([make(cfg, name, store) for name in names], direction,
                        head_limit(cfg))


async def _answers(ask: Callable[[], Awaitable[object]], wait: float, answer: str) -> str:
    """Why `ask` failed ("" when it did not), within `wait` seconds."""
    try:
        async with asyncio.timeout(wait):
            await ask()
    except TimeoutError:
        return f"no {answer} within {wait:g}s"
    except (OSError, ProtocolError, wire.ProtocolError) as e:
        return str(e.strerror if isinstance(e, OSError) and e.strerror else e)
    return ""


async def probe(cfg: Config) -> list[str]:
    """A problem for each configured scanner that does not answer (for `postkeep check`):
    clamd PINGed, each milter listed negotiated with (and quit)."""
    used = {*cfg.filters.inbound, *cfg.filters.outbound}
    problems = []
    if "antivirus" in used:
        problem = await _answers(ClamdClient(cfg.antivirus.address).ping,
                                 min(cfg.antivirus.timeout, PROBE_TIMEOUT), "PONG")
        if problem:
            problems.append(f"antivirus.address: clamd at {cfg.antivirus.address} does not "
                            f"answer: {problem}")
    for i, milter in enumerate(cfg.filters.milter):
        if MILTER_PREFIX + milter.name not in used:
            continue
        problem = await _answers(MilterClient(milter.address).negotiate,
                                 min(milter.timeout, PROBE_TIMEOUT), "negotiation")
        if problem:
            problems.append(f"filters.milter[{i}].address: milter {milter.name} at "
                            f"{milter.address} does not answer: {problem}")
    return problems
