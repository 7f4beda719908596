"""DKIM signing of submitted mail (RFC 6376 §5, RFC 8463): which keys sign, and the signing.

Keys live sealed in the store (`Store.add_dkim_key`), per domain and selector, each with the
time it starts signing (`active_from`). For each algorithm the newest key whose time has come
signs; an older one of the same algorithm is *retired*: it signs no more, but its record must
stay published `dkim.retire_after` seconds more (mail in transit, or verified again later, still
names it), after which `postkeep dkim show` leaves it out and it may be removed. A key whose
time has not come is *next*: publish it now, it signs from `active_from` (`postkeep dkim rotate`
sets that `dkim.activate_after` ahead).

The signing domain (d=) is the domain of the message's From: address (RFC 7489 §3.1: what
DMARC aligns with); a message whose From: domain has no key is sent unsigned. Signers are
cached per domain for `REFRESH` seconds, so a rotation takes effect within that time in every
process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from postkeep import log
from postkeep.config import DkimConfig
from postkeep.dns.names import query_name
from postkeep.mailauth.dkim.canon import BodyHasher
from postkeep.mailauth.dkim.keys import load_private_key
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from postkeep.store.api import DkimKey, Store
from postkeep.store.spool import MessageData, SpooledText

logger = log.get("smtp")

REFRESH = 60.0
_PIECE = 1 << 20


@dataclass(frozen=True, slots=True)
class KeyState:
    key: DkimKey
    state: str  # "signing", "next", "retired", "expired"
    until: float | None = None  # retired: published until then


def key_states(keys: Sequence[DkimKey], now: float, retire_after: int) -> list[KeyState]:
    """The state of each of one domain's keys at `now` (see the module docstring)."""
    states = []
    for key in keys:
        if key.active_from > now:
            states.append(KeyState(key, "next"))
            continue
        newer = [k.active_from for k in keys if k.algorithm == key.algorithm
                 and key.active_from < k.active_from <= now]
        if not newer:
            states.append(KeyState(key, "signing"))
            continue
        until = min(newer) + retire_after
        states.append(KeyState(key, "retired" if until > now else "expired", until))
    return states


class DkimKeyring:
    """The signers of each domain, from the store's keys (cached `REFRESH` seconds)."""

    def __init__(self, store: Store, cfg: DkimConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self._cache: dict[str, tuple[float, list[DkimSigner]]] = {}

    async def signers(self, domain: str) -> list[DkimSigner]:
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            keys = await self.store.list_dkim_keys(domain)
        except ValueError:  # not a domain name the store takes: no keys either
            keys = []
        signers = []
        for state in key_states(keys, now, self.cfg.retire_after):
            if state.state != "signing":
                continue
            key = state.key
            try:
                private = load_private_key(await self.store.dkim_private_key(domain, key.selector))
            except Exception as e:  # a broken key must not stop mail: it is sent unsigned
                logger.error("dkim: key %s of %s cannot be used: %s", key.selector, domain, e)
                continue
            signers.append(DkimSigner(
                query_name(key.domain), key.selector, private, clock=self.clock,
                expire_after=self.cfg.signature_lifetime or None))
        # Ed25519 first: a verifier stopping at the first good signature checks the cheap one
        signers.sort(key=lambda s: s.algorithm != "ed25519-sha256")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now + REFRESH, signers)
        return signers


def signature_fields(data: MessageData, header_block: bytes,
                     signers: Sequence[DkimSigner]) -> bytes:
    """The DKIM-Signature fields for a message; a spooled one is read a piece at a time
    (blocking: run in a thread)."""
    if not isinstance(data, SpooledText):
        return sign_all(bytes(data), signers)
    start = len(header_block) + 2  # the body begins after the empty line
    hashes = {}
    for canon in {s.body_canon for s in signers}:
        hasher = BodyHasher(canon)
        for offset in range(start, len(data), _PIECE):
            hasher.update(data[offset : offset + _PIECE])
        hashes[canon] = hasher.digest()
    return b"".join(s.sign_headers(header_block, hashes[s.body_canon]) for s in signers)


async def sign_message(data: MessageData, header_block: bytes,
                       signers: Sequence[DkimSigner]) -> bytes:
    if isinstance(data, SpooledText):
        return await asyncio.to_thread(signature_fields, data, header_block, signers)
    return signature_fields(data, header_block, signers)
