"""Import boundaries between postkeep's packages, read from the source (every import statement,
those under ``if TYPE_CHECKING:`` and inside functions included).

- The sans-IO protocol cores, `postkeep.imap.wire` and `postkeep.smtp.wire`, never import
  asyncio, sockets, the store, config, net or policy.
- `postkeep.imap` reaches the store through its interface (`postkeep.store.api`, the event bus),
  never through the SQL implementation, `postkeep.store.sql`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from importlib.util import resolve_name
from pathlib import Path

import pytest

import postkeep

SRC = Path(postkeep.__file__).parent
SANS_IO_FORBIDDEN = (
    "asyncio",
    "socket",
    "postkeep.store",
    "postkeep.config",
    "postkeep.net",
    "postkeep.policy",
)


def imported(package: str) -> Iterator[tuple[str, str]]:
    """(module path, module it imports) for every import in `package` and its subpackages."""
    for path in sorted(SRC.joinpath(*package.split(".")[1:]).rglob("*.py")):
        name = str(path.relative_to(SRC.parent))
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        here = ".".join(parts[:-1])  # the package a relative import starts from
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), name)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield name, alias.name
            elif isinstance(node, ast.ImportFrom):
                yield name, resolve_name("." * node.level + (node.module or ""), here)


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("postkeep.imap.wire", SANS_IO_FORBIDDEN),
        ("postkeep.smtp.wire", SANS_IO_FORBIDDEN),
        ("postkeep.imap", ("postkeep.store.sql",)),
    ],
)
def test_package_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    found = list(imported(package))
    assert found  # the package was read
    bad = [f"{path}: {module}" for path, module in found if within(module, forbidden)]
    assert not bad
