"""The store protocols of `postkeep.store.api` against their implementation, `SqlStore`.

Nothing checks types when the suite runs, and a protocol method nobody calls yet would not
show a mismatch anyway: each method `Store` and `MailStore` declare is compared here with
SqlStore's (present, coroutine or not, same parameters: names, kinds, defaults and annotations,
same return annotation), so a change on either side that the other does not follow fails.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from postkeep.store.api import MailStore, Store
from postkeep.store.sql.store import SqlStore

PROTOCOLS: tuple[type, ...] = (Store, MailStore)


def declared(protocol: type) -> list[str]:
    """The methods `protocol` itself declares (those of the protocols it extends are not)."""
    return sorted(
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def shape(function: Any) -> tuple[object, ...]:
    """What a caller relies on: coroutine or not, the parameters and the return annotation
    (annotations are compared as written: both modules postpone their evaluation)."""
    sig = inspect.signature(function)
    params = tuple((p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values())
    return inspect.iscoroutinefunction(function), params, sig.return_annotation


def test_mail_store_extends_store() -> None:
    assert Store in MailStore.__mro__
    assert declared(Store) and declared(MailStore)
    assert not set(declared(Store)) & set(declared(MailStore))


@pytest.mark.parametrize(
    ("protocol", "name"),
    [(protocol, name) for protocol in PROTOCOLS for name in declared(protocol)],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_sql_store_implements(protocol: type, name: str) -> None:
    implementation = getattr(SqlStore, name, None)
    assert implementation is not None, f"SqlStore has no {name}, {protocol.__name__} declares it"
    assert shape(implementation) == shape(getattr(protocol, name))
