"""DKIM verification of a message over DNS (RFC 6376 §6, §3.6.2): `mailauth.dkim.verify`
does the work, this driver fetches the key records (`selector._domainkey.domain` TXT, §3.6.2.1)
through the shared resolver (`postkeep.dns.DnsResolver`, or anything with its `txt`).

The lookups start first and run while the body is hashed; at most `concurrency` are in flight
at once, and all of them must be done within `timeout` seconds (one deadline for the message,
not one per lookup): a lookup still under way then is a temperror, as a `TempFail` is
(RFC 8601 §2.7.1: "a temporary inability to retrieve a public key"). NXDOMAIN, NODATA and a
name that is none (`InvalidName`) are permerrors (§6.1.2: no key). The number of signatures,
and so of lookups, is bounded by the verifier's `max_signatures`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from postkeep.dns.names import InvalidName
from postkeep.dns.results import Answer, NoData, NxDomain, Result, TempFail
from postkeep.mailauth.dkim.canon import split_message
from postkeep.mailauth.dkim.verify import (
    MAX_SIGNATURES,
    DkimResult,
    KeyLookup,
    KeyUnavailable,
    MessageVerifier,
)

DEFAULT_TIMEOUT = 10.0  # seconds for all of a message's key lookups
DEFAULT_CONCURRENCY = 4  # key lookups in flight at once, per message


class TxtResolver(Protocol):
    """What is asked of the resolver: `postkeep.dns.DnsResolver.txt`. (A protocol, so this
    module imports the outcome types and not the resolver, which reads `postkeep.config`.)"""

    async def txt(self, name: str) -> Result[bytes]: ...


@dataclass(frozen=True, slots=True)
class DkimCheck:
    """The results for a message's signatures (top down) and how many were not verified
    (beyond `max_signatures`)."""

    results: tuple[DkimResult, ...]
    ignored: int


async def check_dkim(resolver: TxtResolver, message: bytes, *,
                     timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY,
                     max_signatures: int = MAX_SIGNATURES,
                     clock: Callable[[], float] = time.time) -> DkimCheck:
    """Verifies every DKIM signature of a message held whole (see `check_dkim_parts`)."""
    header_block, body = split_message(message)
    return await check_dkim_parts(resolver, header_block, [body], timeout=timeout,
                                  concurrency=concurrency, max_signatures=max_signatures,
                                  clock=clock)


async def check_dkim_parts(resolver: TxtResolver, header_block: bytes,
                           body: Iterable[bytes], *, timeout: float = DEFAULT_TIMEOUT,
                           concurrency: int = DEFAULT_CONCURRENCY,
                           max_signatures: int = MAX_SIGNATURES,
                           clock: Callable[[], float] = time.time) -> DkimCheck:
    """Verifies every DKIM signature of a message given as its header block and its body
    in chunks (read one at a time, e.g. from a spool file)."""
    if timeout <= 0 or concurrency < 1:
        raise ValueError("timeout must be positive and concurrency at least 1")
    verifier = MessageVerifier(header_block, now=clock(), max_signatures=max_signatures)
    names = verifier.key_names()
    gate = asyncio.Semaphore(concurrency)

    async def fetch(name: str) -> KeyLookup:
        async with gate:
            return await lookup_key(resolver, name)

    tasks = {name: asyncio.ensure_future(fetch(name)) for name in names}
    try:
        for chunk in body:
            await asyncio.sleep(0)  # the lookups' sockets are served between chunks
            verifier.update(chunk)
        if tasks:
            await asyncio.wait(tasks.values(), timeout=timeout)
    finally:
        for task in tasks.values():
            task.cancel()  # those not done: no longer awaited
    keys: dict[str, KeyLookup] = {}
    for name, task in tasks.items():
        if task.done() and not task.cancelled():
            keys[name] = task.result()
        else:
            keys[name] = KeyUnavailable(True, f"lookup of {name} took more than {timeout:g} s")
    return DkimCheck(tuple(verifier.results(keys)), verifier.ignored)


async def lookup_key(resolver: TxtResolver, name: str) -> KeyLookup:
    """The TXT records at `name`, or why there are none."""
    try:
        outcome = await resolver.txt(name)
    except InvalidName as e:
        return KeyUnavailable(False, str(e))
    if isinstance(outcome, Answer):
        return outcome.records
    if isinstance(outcome, NxDomain):
        return KeyUnavailable(False, f"{name} does not exist (NXDOMAIN)")
    if isinstance(outcome, NoData):
        return KeyUnavailable(False, f"{name} has no TXT record")
    assert isinstance(outcome, TempFail)
    return KeyUnavailable(True, f"lookup of {name} failed: {outcome.reason}")
