"""The recipient directory over the store: local domains, address resolution, postmaster.

Local domains are cached for a short TTL (the CLI changes them from another process; a new
domain is seen within `DOMAIN_TTL` seconds). Addresses are looked up on every RCPT.
"""

from __future__ import annotations

import time

from postkeep.store.api import Account, Store

DOMAIN_TTL = 2.0


class StoreDirectory:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._domains: frozenset[str] = frozenset()
        self._domains_at = 0.0

    async def local_domains(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._domains_at > DOMAIN_TTL:
            self._domains = frozenset(d.name for d in await self._store.list_domains())
            self._domains_at = now
        return self._domains

    async def is_local_domain(self, domain: str) -> bool:
        return domain in await self.local_domains()

    async def resolve(self, address: str) -> list[Account] | None:
        return await self._store.resolve_local(address)

    async def postmaster(self, domain: str | None) -> list[Account]:
        """postmaster@domain, else that of the first local domain created (RFC 5321 §4.5.1)."""
        candidates = [domain] if domain else []
        candidates += [d.name for d in sorted(await self._store.list_domains(), key=lambda d: d.id)]
        for name in candidates:
            accounts = await self._store.resolve_local(f"postmaster@{name}")
            if accounts:
                return accounts
        return []
