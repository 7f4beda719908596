"""Fixtures shared by every test directory: the in-process server harness (`tests.harness`),
and real DNS servers (`tests.dnsserver`: `dns_server`, NSD; `validating_resolver`, Unbound)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dnsserver import dns_server, validating_resolver  # noqa: F401 (fixtures)
from tests.harness import Harness, running_harness
from tests.pg import new_database

#: Run as root, the session's temporary directories live in a directory of its own in here.
ROOT_TMP = Path("/var/tmp")
_session_tmp: list[Path] = []


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Run as root (without --basetemp), the session's temporary directories go to a directory
    of its own in /var/tmp, removed at the end: postkeep run by root drops to its service user,
    which must reach the instances in them (`tests.interop.conftest.reachable`), and pytest's
    /tmp/pytest-of-root is 0700, put back to 0700 by every session that starts."""
    if os.geteuid() == 0 and config.option.basetemp is None:
        path = Path(tempfile.mkdtemp(prefix="postkeep-tests-", dir=ROOT_TMP))
        _session_tmp.append(path)
        config.option.basetemp = str(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _session_tmp:
        shutil.rmtree(path, ignore_errors=True)

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
