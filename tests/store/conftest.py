"""Fixtures for the store suite: an event loop runner and a store on SQLite or PostgreSQL.

Every store test runs twice: on SQLite (in tmp_path) and on PostgreSQL — the server named by
POSTKEEP_TEST_PG_URL (set by `make test`), else 127.0.0.1:5432 as user postgres (trust auth) — in
a fresh database per test module (dropped afterwards) whose schema is reset before each test.
When nothing listens there the PostgreSQL tests FAIL, unless POSTKEEP_SKIP_PG=1 makes them skip.
pytest-asyncio is not used: `run` drives coroutines on one event loop per test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import URL, make_url

from postkeep.store.sql import SqlStore

T = TypeVar("T")
Runner = Callable[[Awaitable[T]], T]

PG_ADMIN_URL: URL = make_url(
    os.environ.get("POSTKEEP_TEST_PG_URL")
    or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PG_HOST, PG_PORT = PG_ADMIN_URL.host or "127.0.0.1", PG_ADMIN_URL.port or 5432


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[Any]], Any]]:
    """`run(coro)` runs a coroutine to completion on this test's event loop."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _pg_listening() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            return True
    except OSError:
        return False


def _pg_connect(url: URL) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host or PG_HOST,
        port=url.port or PG_PORT,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


@pytest.fixture(scope="module")
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test module; its SQLAlchemy URL."""
    if not _pg_listening():
        msg = (
            f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT} (user postgres, trust auth "
            "expected); start it (make test does) or set POSTKEEP_SKIP_PG=1 to skip these tests"
        )
        if os.environ.get("POSTKEEP_SKIP_PG") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    module = Path(str(request.node.path)).stem.replace("-", "_")[:30]
    name = f"pk_{module}_{os.getpid()}_{secrets.token_hex(3)}".lower()
    with _pg_connect(PG_ADMIN_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg_schema(url: str) -> None:
    with _pg_connect(make_url(url)) as conn:
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
