"""Statements compiled once and run on the driver's own cursor: the store's hot path.

SQLAlchemy Core builds every statement here, so the SQL stays dialect-correct and checked
against `postkeep.store.sql.schema`; but executing even a prebuilt statement through a SQLAlchemy
``Connection`` costs ~0.2 ms of Python per call (cache key, execution context, result
wrapping), against ~0.03 ms for the same SQL on the DB-API cursor (measured on the IMAP
workload: docs/architecture.md, "Store hot path"). The IMAP session reads the store several
times per command, so its statements are compiled once per store (`Prepared`) and executed with
`Cursor`, which only maps the named parameters to the driver's parameter style.

Rules for statements compiled here: parameters are named ``bindparam``s (or literal values
SQLAlchemy turns into bound defaults); no "expanding" IN lists (their SQL depends on the list
length: see `BySize`); result rows are plain
tuples in the order of the selected columns, with no type processing (booleans arrive as 0/1
on SQLite).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, or_
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement


class Prepared:
    """One statement compiled for one dialect: its SQL text and how to pass its parameters."""

    __slots__ = ("_defaults", "_names", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self._defaults = {k: v for k, v in compiled.params.items() if v is not None}
        self._names = tuple(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """`params` (plus the statement's literal values) in the driver's parameter style."""
        merged = {**self._defaults, **params} if self._defaults else params
        if self._names is None:
            return dict(merged)
        return tuple(merged[n] for n in self._names)


class Cursor:
    """A DB-API cursor that executes `Prepared` statements."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, stmt: Prepared, **params: Any) -> Any:
        self.raw.execute(stmt.sql, stmt.args(params))
        return self.raw

    def executemany(self, stmt: Prepared, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.raw.executemany(stmt.sql, [stmt.args(r) for r in rows])

    def first(self, stmt: Prepared, **params: Any) -> Any:
        """The first row, or None."""
        return self.execute(stmt, **params).fetchone()

    def scalar(self, stmt: Prepared, **params: Any) -> Any:
        """The first column of the first row, or None."""
        row = self.execute(stmt, **params).fetchone()
        return None if row is None else row[0]

    def all(self, stmt: Prepared, **params: Any) -> list[Any]:
        return list(self.execute(stmt, **params).fetchall())

    def column(self, stmt: Prepared, **params: Any) -> list[Any]:
        """The first column of every row."""
        return [r[0] for r in self.execute(stmt, **params).fetchall()]


class BySize:
    """`Prepared` variants of one statement that differ only in how many items (ranges, ids)
    they test: ``build(n)`` makes the one for ``n`` items, `params` names the items' values
    (`range_params` or `id_params`). Sizes are rounded up to a power of two, so at most a
    dozen variants are ever compiled; the last item is repeated to fill the rest (a repeated
    range or id changes nothing in an OR or IN)."""

    def __init__(
        self,
        build: Callable[[int], ClauseElement],
        dialect: Dialect,
        params: Callable[[Sequence[Any]], dict[str, Any]],
    ) -> None:
        self._build = build
        self._dialect = dialect
        self._params = params
        self._cache: dict[int, Prepared] = {}

    def __call__(self, items: Sequence[Any]) -> tuple[Prepared, dict[str, Any]]:
        """The statement for `items` (not empty) and its parameters."""
        size = 1 << (len(items) - 1).bit_length()
        stmt = self._cache.get(size)
        if stmt is None:
            stmt = self._cache[size] = Prepared(self._build(size), self._dialect)
        return stmt, self._params([*items, *[items[-1]] * (size - len(items))])


def range_params(ranges: Sequence[tuple[int, int]]) -> dict[str, int]:
    """Parameters ``lo0, hi0, lo1, hi1 ...`` for a statement built with `uid_ranges`."""
    out: dict[str, int] = {}
    for i, (lo, hi) in enumerate(ranges):
        out[f"lo{i}"] = lo
        out[f"hi{i}"] = hi
    return out


def id_params(ids: Sequence[Any]) -> dict[str, Any]:
    """Parameters ``id0, id1 ...`` for a statement built with `id_list`."""
    return {f"id{i}": v for i, v in enumerate(ids)}


def uid_ranges(column: ColumnElement[Any], n: int) -> ColumnElement[bool]:
    """``column BETWEEN :lo0 AND :hi0 OR ...`` for `n` ranges."""
    return or_(*(column.between(bindparam(f"lo{i}"), bindparam(f"hi{i}")) for i in range(n)))


def id_list(column: ColumnElement[Any], n: int) -> ColumnElement[bool]:
    """``column IN (:id0, :id1 ...)`` for `n` values."""
    return column.in_([bindparam(f"id{i}") for i in range(n)])
