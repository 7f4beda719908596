"""Fixtures for the store suite: an event loop runner and a store on SQLite or PostgreSQL.

Every store test runs twice: on SQLite (in tmp_path) and on PostgreSQL (`tests.pg`) in a fresh
database per test module (dropped afterwards) whose schema is reset before each test.
pytest-asyncio is not used: `run` drives coroutines on one event loop per test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from postkeep.store.sql.store import SqlStore
from tests.pg import new_database, pg_connect

T = TypeVar("T")
Runner = Callable[[Awaitable[T]], T]

@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """`run(coro)` runs a coroutine to completion on this test's event loop."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(scope="module")
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test module; its SQLAlchemy URL."""
    module = Path(str(request.node.path)).stem.replace("-", "_")
    with new_database(module) as url:
        yield url


def _reset_pg_schema(url: str) -> None:
    with pg_connect(make_url(url)) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL of one test: a new SQLite file, or the module's PG db, emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'store.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg_schema(url)
    return url


@pytest.fixture
def master_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_store(
    run: Runner[Any], db_url: str, data_dir: Path, master_key: bytes
) -> Iterator[Callable[..., SqlStore]]:
    """Factory: `make_store(**kwargs)` opens a SqlStore on this test's database and data dir."""
    opened: list[SqlStore] = []

    def make(**kwargs: Any) -> SqlStore:
        params: dict[str, Any] = {"url": db_url, "data_dir": data_dir, "master_key": master_key}
        params.update(kwargs)
        store = SqlStore(**params)
        run(store.open())
        opened.append(store)
        return store

    yield make
    for store in opened:
        run(store.close())


@pytest.fixture
def store(make_store: Callable[..., SqlStore]) -> SqlStore:
    return make_store()
