"""The recipient directory over the store: local domains, address resolution, postmaster.

Addresses and domains are looked up in canonical form (`postkeep.addresses`), so the cache has one
entry per mailbox whatever Unicode form a client wrote it in. Lookups are cached for `TTL` seconds
(positive and negative answers alike, at most `MAX_ENTRIES` addresses): the MX asks the same few
addresses thousands of times a minute, while the CLI changes accounts from another process rarely,
and a change is seen within `TTL`. Deliveries made by this process update the cached quota usage at
once (`note_delivery`), so quota is enforced from the next RCPT on; usage changed elsewhere is seen
within `TTL`.
"""

from __future__ import annotations

import dataclasses
import time

from postkeep.addresses import address_key, canonical_domain
from postkeep.store.api import Account, Store

TTL = 2.0
MAX_ENTRIES = 10_000


class StoreDirectory:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._domains: frozenset[str] = frozenset()
        self._domains_at = -TTL
        self._cache: dict[str, tuple[float, list[Account] | None]] = {}
        self._keys_of: dict[int, set[str]] = {}  # account id -> cache keys naming it

    async def local_domains(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._domains_at > TTL:
            self._domains = frozenset(d.name for d in await self._store.list_domains())
            self._domains_at = now
        return self._domains

    async def is_local_domain(self, domain: str) -> bool:
        return canonical_domain(domain) in await self.local_domains()

    async def resolve(self, address: str) -> list[Account] | None:
        key = address_key(address)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] <= TTL:
            return hit[1]
        accounts = await self._store.resolve_local(address)
        if len(self._cache) >= MAX_ENTRIES:
            for stale in list(self._cache)[: MAX_ENTRIES // 4]:  # oldest first (insertion order)
                self._forget(stale)
        self._forget(key)
        self._cache[key] = (now, accounts)
        for account in accounts or ():
            self._keys_of.setdefault(account.id, set()).add(key)
        return accounts

    def _forget(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        for account in (entry[1] or ()) if entry else ():
            keys = self._keys_of.get(account.id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of[account.id]

    def note_delivery(self, account_ids: list[int], size: int) -> None:
        """Add a delivered message's size to the cached usage of its accounts."""
        for account_id in account_ids:
            for key in self._keys_of.get(account_id, ()):
                at, accounts = self._cache[key]
                self._cache[key] = (at, [
                    dataclasses.replace(a, used_bytes=a.used_bytes + size)
                    if a.id == account_id else a
                    for a in accounts or ()
                ])

    async def postmaster(self, domain: str | None) -> list[Account]:
        """postmaster@domain, else that of the first local domain created (RFC 5321 §4.5.1)."""
        candidates = [domain] if domain else []
        domains = sorted(await self._store.list_domains(), key=lambda d: d.id)
        candidates += [d.name for d in domains]
        for name in candidates:
            accounts = await self.resolve(f"postmaster@{name}")
            if accounts:
                return accounts
        return []
