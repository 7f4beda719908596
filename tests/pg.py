"""PostgreSQL for the tests: the server named by POSTKEEP_TEST_PG_URL (set by `make test`), else
127.0.0.1:5432 as user postgres (trust auth); `new_database` makes a uniquely named database and
drops it afterwards. When nothing listens there the PostgreSQL tests FAIL, unless
POSTKEEP_SKIP_PG=1 makes them skip."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

PG_ADMIN_URL: URL = make_url(
    os.environ.get("POSTKEEP_TEST_PG_URL")
    or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
PG_HOST, PG_PORT = PG_ADMIN_URL.host or "127.0.0.1", PG_ADMIN_URL.port or 5432


def pg_listening() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            return True
    except OSError:
        return False


def pg_connect(url: URL) -> Any:
    import psycopg

    return psycopg.connect(
        host=url.host or PG_HOST,
        port=url.port or PG_PORT,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


@contextlib.contextmanager
def new_database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its SQLAlchemy URL), dropped on exit."""
    if not pg_listening():
        msg = (
            f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT} (user postgres, trust auth "
            "expected); start it (make test does) or set POSTKEEP_SKIP_PG=1 to skip these tests"
        )
        if os.environ.get("POSTKEEP_SKIP_PG") == "1":
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    name = f"pk_{label[:30]}_{os.getpid()}_{secrets.token_hex(3)}".lower()
    with pg_connect(PG_ADMIN_URL) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_connect(PG_ADMIN_URL) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
