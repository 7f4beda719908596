"""Numbered schema migrations and the runner that applies them.

Each migration is a module ``mNNNN_<name>.py`` exposing ``MIGRATION = Migration(N, description,
upgrade)`` where ``upgrade(conn)`` runs inside the runner's transaction and must only use what it
defines itself (tables frozen at that version, or plain DDL), never `postkeep.store.sql.schema`,
which describes the *latest* schema. To add migration N: write ``mNNNN_<name>.py``, append it to
`MIGRATIONS`, update `postkeep.store.sql.schema` to match. A migration that must re-wrap keys
(`needs_master_key`) is called as ``upgrade(conn, master_key)`` with the key the store was opened
with; without one the runner refuses to apply it.

The runner (`migrate`) records applied versions in ``schema_version``. It applies all pending
migrations in order in ONE transaction (both SQLite and PostgreSQL have transactional DDL), so a
failure leaves the database at its old version. Pending means "not recorded", not "above the
highest recorded": numbers are handed out to work done side by side, so a number may be missing
for a while and be merged after a higher one; a database that has applied the higher one
applies the lower one when it arrives. A recorded version the code does not know (the database
was opened by a newer postkeep, or one built with a migration this one lacks) is refused.
Concurrent openers are serialised: on PostgreSQL with a transaction-level advisory lock, on
SQLite by the writer engine's ``BEGIN IMMEDIATE``. Opening an already migrated database is a
no-op; a database newer than the code is refused.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, text

from postkeep.errors import StoreError
from postkeep.store.sql.schema import schema_version


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    upgrade: Callable[..., None]  # (conn), or (conn, master_key) if `needs_master_key`
    needs_master_key: bool = False


def _load() -> tuple[Migration, ...]:
    from postkeep.store.sql.migrations import (
        m0001_initial,
        m0002_account_security,
        m0003_send_as,
        m0004_imap,
        m0005_address_forms,
        m0006_inline_blobs,
        m0007_delivery_state,
        m0008_dkim_keys,
        m0009_sending_quotas,
        m0010_tls_reports,
        m0011_inline_queue,
        m0012_dmarc_reports,
        m0013_bans,
        m0014_junk,
        m0015_quarantine,
        m0016_web,
        m0017_two_factor,
        m0018_filter_results,
        m0019_webmail,
    )

    return (
        m0001_initial.MIGRATION,
        m0002_account_security.MIGRATION,
        m0003_send_as.MIGRATION,
        m0004_imap.MIGRATION,
        m0005_address_forms.MIGRATION,
        m0006_inline_blobs.MIGRATION,
        m0007_delivery_state.MIGRATION,
        m0008_dkim_keys.MIGRATION,
        m0009_sending_quotas.MIGRATION,
        m0010_tls_reports.MIGRATION,
        m0011_inline_queue.MIGRATION,
        m0012_dmarc_reports.MIGRATION,
        m0013_bans.MIGRATION,
        m0014_junk.MIGRATION,
        m0015_quarantine.MIGRATION,
        m0016_web.MIGRATION,
        m0017_two_factor.MIGRATION,
        m0018_filter_results.MIGRATION,
        m0019_webmail.MIGRATION,
    )


MIGRATIONS: tuple[Migration, ...] = _load()

#: Key of the PostgreSQL advisory lock held while migrating ("pkmigr" in ASCII).
_PG_LOCK_KEY = 0x706B6D696772


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def migrate(
    engine: Engine, migrations: Sequence[Migration] = MIGRATIONS, master_key: bytes | None = None
) -> list[int]:
    """Apply pending migrations in order, in one transaction; return the versions applied."""
    for before, m in itertools.pairwise(migrations):
        if m.version <= before.version:
            raise StoreError(f"migration {m.version} is out of order: after {before.version}")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        recorded = set(conn.execute(select(schema_version.c.version)).scalars())
        latest = latest_version(migrations)
        unknown = sorted(recorded - {m.version for m in migrations})
        if unknown and unknown[-1] > latest:
            raise StoreError(
                f"database schema version {unknown[-1]} is newer than this postkeep supports "
                f"({latest})"
            )
        if unknown:
            raise StoreError(
                f"database has schema migration {unknown[0]}, which this postkeep does not have"
            )
        applied: list[int] = []
        for m in (m for m in migrations if m.version not in recorded):
            args: tuple[Any, ...] = (conn,)
            if m.needs_master_key:
                if master_key is None:
                    raise StoreError(f"migration {m.version} needs the master key")
                args = (conn, master_key)
            m.upgrade(*args)
            conn.execute(
                schema_version.insert().values(
                    version=m.version, description=m.description, applied_at=time.time()
                )
            )
            applied.append(m.version)
        return applied
