"""The filter runners `[filters]` configures, one per direction, and `postkeep check`'s probe
of the scanners they use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from postkeep.config import Config
from postkeep.filters.base import Direction, Filter, FilterRunner
from postkeep.filters.clamav import ClamavFilter, ClamdClient
from postkeep.filters.clamd_protocol import ProtocolError
from postkeep.filters.junk.filter import JunkFilter
from postkeep.store.api import Store

PROBE_TIMEOUT = 10.0

#: Each name `[filters]` may list (`config.filters.FILTER_NAMES`) and how it is made.
FILTERS: dict[str, Callable[[Config, Store], Filter]] = {
    "antivirus": lambda cfg, store: ClamavFilter(cfg.antivirus),
    "junk": lambda cfg, store: JunkFilter(cfg.junk, store),
}


def runner(cfg: Config, direction: Direction, store: Store) -> FilterRunner | None:
    """The filters `[filters]` lists for `direction`, in order; None when it lists none."""
    names = cfg.filters.inbound if direction is Direction.INBOUND else cfg.filters.outbound
    if not names:
        return None
    return FilterRunner([FILTERS[name](cfg, store) for name in names], direction)


async def probe(cfg: Config) -> list[str]:
    """A problem for each configured scanner that does not answer (for `postkeep check`)."""
    if "antivirus" not in (*cfg.filters.inbound, *cfg.filters.outbound):
        return []
    wait = min(cfg.antivirus.timeout, PROBE_TIMEOUT)
    try:
        async with asyncio.timeout(wait):
            await ClamdClient(cfg.antivirus.address).ping()
    except TimeoutError:
        problem = f"no PONG within {wait:g}s"
    except (OSError, ProtocolError) as e:
        problem = str(e.strerror if isinstance(e, OSError) and e.strerror else e)
    else:
        return []
    return [f"antivirus.address: clamd at {cfg.antivirus.address} does not answer: {problem}"]
