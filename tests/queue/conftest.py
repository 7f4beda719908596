"""Fixtures of the queue's in-process tests: an event loop runner, and a real SQLite store
with the local domain example.test (tests that need accounts add them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]


@pytest.fixture
def run() -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


@pytest.fixture
def store(run: Run, tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(url=f"sqlite:///{tmp_path / 'store.db'}", data_dir=tmp_path / "data",
                 master_key=b"k" * 32)
    run(s.open())
    run(s.add_domain("example.test"))
    yield s
    run(s.close())
