"""Migration 5: addresses and domains in canonical form (Unicode NFC, IDNA U-labels).

Before it, an address was stored as typed with only its domain lower-cased, so the NFC and NFD
forms of `üser@example.test` could be two accounts, and `xn--exmple-cua.test` was not
`exämple.test`. This rewrites every stored address and domain in the canonical form of
`postkeep.addresses` — on purpose the running code's own form, not a frozen copy: the point
is that stored keys equal the keys the code looks up — : ``domains.name``,
``accounts.address`` and ``address_key``, ``aliases.source``, ``source_key`` and ``targets``,
``send_as.address_key``.

An account's data key is wrapped with its address key as associated data
(`postkeep.store.crypto.account_key_context`): an account whose key changes gets its data key
re-wrapped under the master key, in the same transaction.

Two rows that become one address (two domains, two accounts, two aliases, or an account and an
alias) are not merged: the migration refuses, naming them, and the database stays at version
4; the operator removes or renames one with the version that created them, then upgrades.
Identical send-as grants of one account that become one grant are kept as one (nothing is
lost). A DIGEST-MD5 secret (RFC 2831) hashes the username: that of an account whose address
changed matches only the old form until `postkeep user passwd` sets the password again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)

from postkeep.addresses import address_key, canonical_address, canonical_domain
from postkeep.errors import StoreError
from postkeep.store.crypto import CryptoError, account_key_context, unwrap_key, wrap_key
from postkeep.store.sql.migrations import Migration

_md = MetaData()
_domains = Table(
    "domains", _md, Column("id", Integer, primary_key=True), Column("name", String(255))
)
_accounts = Table(
    "accounts",
    _md,
    Column("id", Integer, primary_key=True),
    Column("address", String(320)),
    Column("address_key", String(320)),
    Column("data_key", LargeBinary),
)
_aliases = Table(
    "aliases",
    _md,
    Column("id", Integer, primary_key=True),
    Column("source", String(320)),
    Column("source_key", String(320)),
    Column("targets", Text),
)
_send_as = Table(
    "send_as",
    _md,
    Column("account_id", Integer, primary_key=True),
    Column("address_key", String(320), primary_key=True),
)


def _shown(text: str) -> str:
    """`text` quoted, with its non-ASCII code points spelled out (NFC and NFD look the same)."""
    points = " ".join(f"U+{ord(c):04X}" for c in text if not c.isascii())
    return f"{text!r} ({points})" if points else repr(text)


def _refuse_collisions(rows: Iterable[tuple[str, str, str]]) -> None:
    """rows: (new key, what, old form); refuse if two old rows share a new key."""
    seen: dict[str, tuple[str, str]] = {}
    for key, what, old in rows:
        if key in seen:
            other_what, other = seen[key]
            raise StoreError(
                f"cannot put addresses in canonical Unicode form: the {other_what} "
                f"{_shown(other)} and the {what} {_shown(old)} are both {key} after "
                "normalisation (NFC, IDNA); remove or rename one of them with the postkeep "
                "version that created them, then upgrade"
            )
        seen[key] = (what, old)


def _upgrade(conn: Connection, master_key: bytes) -> None:
    domains = conn.execute(select(_domains.c.id, _domains.c.name)).all()
    _refuse_collisions((canonical_domain(name), "domain", name) for _, name in domains)
    accounts = conn.execute(
        select(_accounts.c.id, _accounts.c.address, _accounts.c.address_key, _accounts.c.data_key)
    ).all()
    aliases = conn.execute(
        select(_aliases.c.id, _aliases.c.source, _aliases.c.source_key, _aliases.c.targets)
    ).all()
    _refuse_collisions(
        [(address_key(a.address), "account", a.address) for a in accounts]
        + [(address_key(a.source), "alias", a.source) for a in aliases]
    )

    for domain_id, name in domains:
        if canonical_domain(name) != name:
            conn.execute(
                update(_domains).where(_domains.c.id == domain_id)
                .values(name=canonical_domain(name))
            )
    for a in accounts:
        stored, key = canonical_address(a.address), address_key(a.address)
        if (stored, key) == (a.address, a.address_key):
            continue
        values: dict[str, object] = {"address": stored, "address_key": key}
        if key != a.address_key:
            try:
                data_key = unwrap_key(
                    master_key, bytes(a.data_key), account_key_context(a.address_key)
                )
            except CryptoError:
                raise StoreError(
                    f"cannot re-wrap the data key of {_shown(a.address)}: is this the master "
                    "key the database was created with?"
                ) from None
            values["data_key"] = wrap_key(master_key, data_key, account_key_context(key))
        conn.execute(update(_accounts).where(_accounts.c.id == a.id).values(**values))
    for a in aliases:
        targets = json.dumps(list(dict.fromkeys(
            canonical_address(t) for t in json.loads(a.targets)
        )))
        values = {"source": canonical_address(a.source), "source_key": address_key(a.source),
                  "targets": targets}
        if values != {"source": a.source, "source_key": a.source_key, "targets": a.targets}:
            conn.execute(update(_aliases).where(_aliases.c.id == a.id).values(**values))

    grants = conn.execute(select(_send_as.c.account_id, _send_as.c.address_key)).all()
    kept: set[tuple[int, str]] = set()
    for account_id, old in sorted(grants, key=lambda g: address_key(g[1]) != g[1]):
        new = address_key(old)  # canonical ones first: an update never meets a kept row
        row = (_send_as.c.account_id == account_id) & (_send_as.c.address_key == old)
        if (account_id, new) in kept:
            conn.execute(delete(_send_as).where(row))  # the same grant as one already kept
            continue
        kept.add((account_id, new))
        if new != old:
            conn.execute(update(_send_as).where(row).values(address_key=new))

MIGRATION = Migration(5, "addresses in canonical form (NFC, IDNA)", _upgrade, needs_master_key=True)
