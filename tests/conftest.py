"""Fixtures shared by every test directory: the in-process server harness (`tests.harness`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Harness, running_harness
from tests.pg import new_database

#: Store backends the harness tests run on: SQLite always; PostgreSQL too when the suite is
#: given one (`make test` sets POSTKEEP_TEST_PG_URL).
HARNESS_BACKENDS: list[Any] = ["sqlite"] + (
    [pytest.param("postgresql", marks=pytest.mark.postgres)]
    if os.environ.get("POSTKEEP_TEST_PG_URL") else []
)

HarnessFactory = Callable[..., Harness]


@pytest.fixture(scope="module")
def harness_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HarnessFactory]:
    """`make(backend="sqlite", config={...}, ...)`: a started Harness (see `tests.harness`),
    stopped (and its PostgreSQL database dropped) when the module's tests are done."""
    module = Path(str(request.node.path)).stem
    with contextlib.ExitStack() as stack:

        def make(backend: str = "sqlite", **kwargs: Any) -> Harness:
            if backend == "postgresql":
                kwargs["store_url"] = stack.enter_context(new_database(f"h_{module}"))
            root = tmp_path_factory.mktemp("harness") / "instance"
            return stack.enter_context(running_harness(root, **kwargs))

        yield make
