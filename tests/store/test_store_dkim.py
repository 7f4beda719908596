"""DKIM keys in the store: sealed at rest, bound to their domain and selector (both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.sql.schema import dkim_keys
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
PEM = (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDKIM-PRIVATE-MARKER\n"
       b"-----END PRIVATE KEY-----\n")


def test_keys_kept_sealed_and_listed(run: Run, make_store: Callable[..., SqlStore],
                                     store: SqlStore, db_url: str, tmp_path: Path) -> None:
    a = run(store.add_dkim_key("Example.ORG", "PK2026A", "ed25519-sha256", PEM, "pub-a", 10.0))
    assert (a.domain, a.selector, a.active_from) == ("example.org", "pk2026a", 10.0)
    run(store.add_dkim_key("example.org", "pk2026b", "rsa-sha256", PEM + b"2", "pub-b", 5.0))
    run(store.add_dkim_key("other.test", "s1", "rsa-sha256", PEM, "pub-c", 1.0))
    with pytest.raises(AlreadyExists):
        run(store.add_dkim_key("example.org", "pk2026a", "rsa-sha256", PEM, "x", 1.0))
    assert [k.selector for k in run(store.list_dkim_keys("example.org"))] == ["pk2026b", "pk2026a"]
    assert len(run(store.list_dkim_keys())) == 3
    assert run(store.dkim_private_key("example.org", "PK2026A")) == PEM
    run(store.close())
    if db_url.startswith("sqlite"):
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert b"DKIM-PRIVATE-MARKER" not in path.read_bytes(), path
    again = make_store()
    engine = create_engine(db_url)
    try:  # a sealed key moved to another selector's row does not unseal
        with engine.begin() as conn:
            sealed = conn.execute(dkim_keys.select().where(dkim_keys.c.selector == "s1")).first()
            assert sealed is not None
            conn.execute(update(dkim_keys).where(dkim_keys.c.selector == "pk2026a")
                         .values(private_key=sealed.private_key))
    finally:
        engine.dispose()
    with pytest.raises(StoreError):
        run(again.dkim_private_key("example.org", "pk2026a"))
    run(again.remove_dkim_key("example.org", "pk2026a"))
    with pytest.raises(NotFound):
        run(again.remove_dkim_key("example.org", "pk2026a"))
    with pytest.raises(NotFound):
        run(again.dkim_private_key("example.org", "pk2026a"))
