"""DKIM signing keys in the SQL store (RFC 6376 §3.6: the private half signs, the public half
is published in DNS under ``selector._domainkey.domain``).

Part of `postkeep.store.sql.store.SqlStore` (a mixin over `postkeep.store.sql.base.SqlStoreBase`).
Private keys are sealed (AES-256-GCM, `postkeep.store.crypto.seal`) under the instance's DKIM
data key, itself wrapped by the master key in the ``meta`` table, with the domain and selector
as AAD: a key copied to another row does not unseal. Which keys sign when is decided above the
store (`postkeep.mailauth.dkim.keyring`), from ``active_from``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy import exc as sa_exc

from postkeep.addresses import canonical_domain
from postkeep.errors import AlreadyExists, NotFound
from postkeep.store.api import DkimKey
from postkeep.store.crypto import dkim_private_context, seal, unseal
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.schema import dkim_keys

_COLS = (
    dkim_keys.c.id, dkim_keys.c.domain, dkim_keys.c.selector, dkim_keys.c.algorithm,
    dkim_keys.c.public_key, dkim_keys.c.created, dkim_keys.c.active_from,
)


def _key(r: Sequence[Any]) -> DkimKey:
    return DkimKey(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


class DkimKeysMixin(SqlStoreBase):
    """DKIM key methods of `SqlStore` (see the module docstring)."""

    async def add_dkim_key(
        self, domain: str, selector: str, algorithm: str, private_pem: bytes, public_key: str,
        active_from: float,
    ) -> DkimKey:
        self._check_open()
        domain = canonical_domain(domain)
        selector = selector.lower()
        sealed = seal(self._dkim_key, private_pem, dkim_private_context(domain, selector))
        row = {"domain": domain, "selector": selector, "algorithm": algorithm,
               "private_key": sealed, "public_key": public_key, "created": time.time(),
               "active_from": active_from}

        def fn(conn: Connection) -> DkimKey:
            try:
                new_id = conn.execute(insert(dkim_keys).values(**row)).inserted_primary_key[0]
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"{domain} has a key with selector {selector}") from None
            return DkimKey(new_id, domain, selector, algorithm, public_key, row["created"],
                           active_from)

        return await self._write(fn)

    async def list_dkim_keys(self, domain: str | None = None) -> list[DkimKey]:
        q = select(*_COLS).order_by(dkim_keys.c.domain, dkim_keys.c.active_from, dkim_keys.c.id)
        if domain is not None:
            q = q.where(dkim_keys.c.domain == canonical_domain(domain))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [_key(r) for r in rows]

    async def dkim_private_key(self, domain: str, selector: str) -> bytes:
        domain, selector = canonical_domain(domain), selector.lower()
        q = select(dkim_keys.c.private_key).where(
            dkim_keys.c.domain == domain, dkim_keys.c.selector == selector)
        sealed = await self._read(lambda conn: conn.execute(q).scalar())
        if sealed is None:
            raise NotFound(f"{domain} has no key with selector {selector}")
        return unseal(self._dkim_key, bytes(sealed), dkim_private_context(domain, selector))

    async def remove_dkim_key(self, domain: str, selector: str) -> None:
        domain, selector = canonical_domain(domain), selector.lower()
        q = delete(dkim_keys).where(dkim_keys.c.domain == domain, dkim_keys.c.selector == selector)
        if not await self._write(lambda conn: conn.execute(q).rowcount):
            raise NotFound(f"{domain} has no key with selector {selector}")
