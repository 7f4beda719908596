"""Persistent state: domains, accounts and their credentials (password hash, SASL mechanism
secrets, app passwords), aliases, mailboxes, messages, the outbound queue and encrypted blobs.

The contract is `postkeep.store.api.Store` (and `MailStore`, what IMAP needs besides);
`postkeep.store.sql.store.SqlStore` implements both on SQLite or PostgreSQL. Typical use::

    key = load_master_key(data_dir / "master.key")     # or create_master_key(...) once, at init
    store = await open_store(None, data_dir, key)      # None: sqlite:///<data_dir>/store.db
    ...
    await store.close()
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postkeep.store.crypto import create_master_key, load_master_key

if TYPE_CHECKING:
    from postkeep.store.events import EventBus, Subscription
    from postkeep.store.sql.store import SqlStore
    from postkeep.store.sql.writer import DeliveryStats

#: Imported when first asked for (PEP 562), not with the package: importing `store.api` for its
#: types, or `store.crypto`, does not load SQLAlchemy (`postkeep --help` starts in a tenth of
#: the time).
_LAZY = {
    "DeliveryStats": "postkeep.store.sql.writer",
    "EventBus": "postkeep.store.events",
    "SqlStore": "postkeep.store.sql.store",
    "Subscription": "postkeep.store.events",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DeliveryStats",
    "EventBus",
    "SqlStore",
    "Subscription",
    "create_master_key",
    "default_url",
    "load_master_key",
    "open_store",
]


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The default database: SQLite file ``store.db`` in the data dir."""
    return f"sqlite:///{Path(data_dir).resolve() / 'store.db'}"


async def open_store(
    url: str | None,
    data_dir: str | os.PathLike[str],
    master_key: bytes | str | os.PathLike[str],
    *,
    events: EventBus | None = None,
    read_workers: int = 4,
    maintenance: bool = True,
) -> SqlStore:
    """Construct and open a SqlStore.

    `url` is an SQLAlchemy URL (``sqlite:///path/store.db`` or ``postgresql+psycopg://...``), or
    None for `default_url(data_dir)`. `master_key` is the 32-byte key itself, or the path of the
    key file, which is loaded with `load_master_key` (refused unless mode 0600).
    `maintenance=False` for every process but the server's main one (see `SqlStoreBase`).
    """
    from postkeep.store.sql.store import SqlStore

    key = master_key if isinstance(master_key, bytes) else load_master_key(master_key)
    store = SqlStore(
        url or default_url(data_dir), data_dir, key, events=events, read_workers=read_workers,
        maintenance=maintenance,
    )
    await store.open()
    return store
