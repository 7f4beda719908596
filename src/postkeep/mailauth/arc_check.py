"""ARC chain validation over DNS (RFC 8617 §5.2): `mailauth.arc.verify` does the work, this
driver fetches the AMS and AS keys (DKIM key records) as `dkim_check` does, through the shared
resolver (`dkim_check.lookup_key`: NXDOMAIN, NODATA and invalid names are permanent, a
`TempFail` temporary).

`ArcCheck.start` begins the lookups at once (at most `concurrency` in flight), `update` takes
the body a chunk at a time (the same chunks DKIM reads, so the body is read once), `result`
waits for the lookups, all within one `timeout` for the message (a lookup still under way
then fails the signature it is for, as temporary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from postkeep.mailauth.arc.verify import ArcResult, ChainVerifier
from postkeep.mailauth.dkim.canon import split_message
from postkeep.mailauth.dkim.verify import KeyLookup, KeyUnavailable
from postkeep.mailauth.dkim_check import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TIMEOUT,
    TxtResolver,
    lookup_key,
)


class ArcCheck:
    """One message's chain validation under way (see the module docstring)."""

    def __init__(self, verifier: ChainVerifier, tasks: dict[str, asyncio.Task[KeyLookup]],
                 timeout: float) -> None:
        self._verifier = verifier
        self._tasks = tasks
        self._timeout = timeout

    @classmethod
    def start(cls, resolver: TxtResolver, header_block: bytes, *,
              timeout: float = DEFAULT_TIMEOUT,
              concurrency: int = DEFAULT_CONCURRENCY) -> ArcCheck:
        """Parse the chain and start its key lookups (call from a running event loop)."""
        if timeout <= 0 or concurrency < 1:
            raise ValueError("timeout must be positive and concurrency at least 1")
        verifier = ChainVerifier(header_block)
        gate = asyncio.Semaphore(concurrency)

        async def fetch(name: str) -> KeyLookup:
            async with gate:
                return await lookup_key(resolver, name)

        tasks = {name: asyncio.ensure_future(fetch(name)) for name in verifier.key_names()}
        return cls(verifier, tasks, timeout)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._verifier.update(chunk)

    async def result(self) -> ArcResult:
        """The chain's status, once the whole body went through `update`."""
        tasks = self._tasks
        try:
            if tasks:
                await asyncio.wait(tasks.values(), timeout=self._timeout)
        finally:
            for task in tasks.values():
                task.cancel()
        keys: dict[str, KeyLookup] = {}
        for name, task in tasks.items():
            if task.done() and not task.cancelled():
                keys[name] = task.result()
            else:
                keys[name] = KeyUnavailable(
                    True, f"lookup of {name} took more than {self._timeout:g} s")
        return self._verifier.result(keys)


async def check_arc_parts(resolver: TxtResolver, header_block: bytes, body: Iterable[bytes],
                          *, timeout: float = DEFAULT_TIMEOUT,
                          concurrency: int = DEFAULT_CONCURRENCY) -> ArcResult:
    """Validates the ARC chain of a message given as its header block and body chunks."""
    check = ArcCheck.start(resolver, header_block, timeout=timeout, concurrency=concurrency)
    for chunk in body:
        await asyncio.sleep(0)
        check.update(chunk)
    return await check.result()


async def check_arc(resolver: TxtResolver, message: bytes, *,
                    timeout: float = DEFAULT_TIMEOUT) -> ArcResult:
    """Validates the ARC chain of a message held whole."""
    header_block, body = split_message(message)
    return await check_arc_parts(resolver, header_block, [body], timeout=timeout)
