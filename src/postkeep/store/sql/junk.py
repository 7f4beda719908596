"""The junk filter's state (`postkeep.filters.junk`) in the SQL store.

Part of `postkeep.store.sql.store.SqlStore`. Tokens are stored as keyed hashes: BLAKE2b-64
under the instance's junk key (``meta`` row ``junk_token_key``, wrapped by the master key),
so the table holds counts of numbers, not the words of anyone's mail (bogofilter and
SpamAssassin keep their tokens hashed too, unkeyed). The caller passes and gets back tokens
as text; the hashing stays here.

Learning (`junk_learn`) is one transaction: the account's record of the message (by blob:
COPY and MOVE keep it) says whether it was learnt, and as what; learnt already as the same
class, nothing is done; as the other, that class is un-learnt first (its counts decremented,
never below zero, rows at zero removed); then the message and each of its tokens count once
more in the account's scope and in the instance's (scope 0). Each token counts once per
message: the caller passes distinct tokens.

Correspondents are one upsert per address, not durable (`_write(durable=False)`).

Pruning (`postkeep.filters.junk.pruning` drives it, in bounded batches): each token row
keeps the day it was last learnt (``seen``); `junk_prune_hapaxes` walks the table in key
order, a batch a transaction, deleting the tokens of a single message not learnt since a
day; `junk_trim` deletes a scope's least informative tokens past its cap (in fewest
messages first: Robinson's f of a rare token stays near 0.5 and is rarely a clue; the
longest unseen of those first). Neither is durable: a prune lost in a crash is done again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Connection, and_, bindparam, case, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from postkeep.addresses import address_key, canonical_domain
from postkeep.store.api import JunkCounts, JunkListEntry, JunkLookup
from postkeep.store.sql.base import SqlStoreBase
from postkeep.store.sql.prepared import BySize, Cursor, Prepared, id_list, id_params
from postkeep.store.sql.rows import chunks
from postkeep.store.sql.schema import (
    junk_correspondents,
    junk_lists,
    junk_messages,
    junk_tokens,
    junk_trained,
)

GLOBAL = 0  # the instance-wide classifier's scope
DAY = 86400


def day(when: float | None = None) -> int:
    """`when` (now if None) as a day number: days since the epoch, UTC (``junk_tokens.seen``)."""
    return int((time.time() if when is None else when) // DAY)

KINDS = ("allow", "block")
_MAX_LABELS = 16  # parent domains of a sender's domain looked up


def list_entry(text: str) -> str:
    """An allow/block entry in its stored form: an address key, or a canonical domain."""
    text = text.strip()
    if "@" in text.lstrip("@"):
        return address_key(text)
    return canonical_domain(text.lstrip("@"))

T = TypeVar("T")


def _candidates(address: str) -> list[str]:
    """The entries that cover `address`: itself, its domain and the domain's parents."""
    key = address_key(address)
    domain = key.rpartition("@")[2]
    labels = domain.split(".")[-_MAX_LABELS:]
    return [key] + [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _padded(items: Sequence[T]) -> tuple[int, list[T]]:
    """`items` padded with its last one to a power of two (see `prepared.BySize`)."""
    size = 1 << (len(items) - 1).bit_length()
    return size, [*items, *[items[-1]] * (size - len(items))]


class JunkStatements:
    """The junk filter's per-message reads (`JunkMixin.junk_lookup`), compiled once per kind
    of dialect, as the hot path's are (`postkeep.store.sql.hotpath`): building and compiling
    them with SQLAlchemy each time cost more than running them."""

    def __init__(self, d: Dialect) -> None:
        t, m, cor = junk_tokens.c, junk_messages.c, junk_correspondents.c
        self._dialect = d
        self.messages = BySize(
            lambda n: select(m.scope, m.spam, m.ham).where(id_list(m.scope, n)), d, id_params)
        self.tokens = BySize(
            lambda n: select(t.token, t.spam, t.ham).where(
                t.scope == bindparam("scope"), id_list(t.token, n)), d, id_params)
        self.correspondents = BySize(
            lambda n: select(cor.account_id).where(
                id_list(cor.account_id, n), cor.address == bindparam("address")), d, id_params)
        self._lists: dict[tuple[int, int], Prepared] = {}

    def lists(self, owners: Sequence[str], names: Sequence[str]
              ) -> tuple[Prepared, dict[str, str]]:
        """The list entries of `owners` naming one of `names`, and its parameters."""
        n_owners, owners = _padded(owners)
        n_names, names = _padded(names)
        stmt = self._lists.get((n_owners, n_names))
        if stmt is None:
            lists = junk_lists.c
            stmt = self._lists[(n_owners, n_names)] = Prepared(
                select(lists.owner, lists.entry, lists.kind).where(
                    lists.owner.in_([bindparam(f"o{i}") for i in range(n_owners)]),
                    lists.entry.in_([bindparam(f"e{i}") for i in range(n_names)])),
                self._dialect)
        return stmt, {**{f"o{i}": v for i, v in enumerate(owners)},
                      **{f"e{i}": v for i, v in enumerate(names)}}


_STATEMENTS: dict[tuple[str, str, str], JunkStatements] = {}


def junk_statements(d: Dialect) -> JunkStatements:
    """The statements compiled for `d`'s kind of dialect."""
    key = (d.name, d.driver, d.paramstyle)
    st = _STATEMENTS.get(key)
    if st is None:
        st = _STATEMENTS[key] = JunkStatements(d)
    return st


class JunkMixin(SqlStoreBase):
    """The junk filter's methods of `SqlStore` (see the module docstring)."""

    def _token_id(self, token: str) -> int:
        digest = hashlib.blake2b(token.encode("utf-8", "surrogateescape"), digest_size=8,
                                 key=self._junk_key).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def junk_counts(self, scopes: Sequence[int], tokens: Sequence[str],
                          min_messages: int = 0) -> dict[int, JunkCounts]:
        return dict((await self.junk_lookup(scopes, tokens, min_messages, [], [], "")).counts)

    async def junk_lookup(self, scopes: Sequence[int], tokens: Sequence[str],
                          min_messages: int, owners: Sequence[str],
                          account_ids: Sequence[int], address: str) -> JunkLookup:
        """One read on the driver's cursor with statements compiled once (`JunkStatements`);
        on SQLite on the event loop's thread, as the hot path's reads (`_read_raw`)."""
        assert self._reader is not None
        st = junk_statements(self._reader.dialect)
        scopes = list(dict.fromkeys(scopes))
        owners, account_ids = list(owners), list(dict.fromkeys(account_ids))
        names = _candidates(address) if owners or account_ids else []

        def fn(cur: Cursor) -> JunkLookup:
            messages: dict[int, tuple[int, int]] = {}
            if scopes:
                stmt, params = st.messages(scopes)
                messages = {row[0]: (row[1], row[2]) for row in cur.all(stmt, **params)}
            # a scope that has not learnt enough of both classes is not asked for tokens
            ready = [s for s in scopes if min(messages.get(s, (0, 0))) >= min_messages]
            found: dict[int, dict[str, tuple[int, int]]] = {s: {} for s in scopes}
            if ready and tokens:
                ids = {self._token_id(tok): tok for tok in tokens}
                for scope in ready:
                    for chunk in chunks(list(ids)):
                        stmt, params = st.tokens(chunk)
                        for token, spam, ham in cur.all(stmt, scope=scope, **params):
                            found[scope][ids[token]] = (spam, ham)
            counts = {s: JunkCounts(*messages.get(s, (0, 0)), found[s]) for s in scopes}
            entries: list[JunkListEntry] = []
            if owners:
                stmt, params = st.lists(owners, names)
                entries = [JunkListEntry(*row) for row in cur.all(stmt, **params)]
            wrote: frozenset[int] = frozenset()
            if account_ids:
                stmt, params = st.correspondents(account_ids)
                wrote = frozenset(cur.column(stmt, address=names[0], **params))
            return JunkLookup(counts, entries, wrote)

        return await self._read_raw(fn)

    async def junk_learn(self, account_id: int, blob_id: str, spam: bool,
                         tokens: Sequence[str], now: float | None = None) -> str:
        cls = "spam" if spam else "ham"
        ids = list(dict.fromkeys(self._token_id(t) for t in tokens))
        today = day(now)
        dialect = sqlite if self._sqlite else postgresql
        scopes = (account_id, GLOBAL)
        tr = junk_trained.c

        def count(conn: Connection, column: str, delta: int) -> None:
            if delta > 0:
                ins = dialect.insert(junk_messages).values(spam=int(column == "spam"),
                                                           ham=int(column == "ham"))
                conn.execute(ins.on_conflict_do_update(
                    index_elements=["scope"], set_={column: junk_messages.c[column] + 1}),
                    [{"scope": s} for s in scopes])
                if ids:
                    ins = dialect.insert(junk_tokens).values(spam=int(column == "spam"),
                                                             ham=int(column == "ham"),
                                                             seen=today)
                    conn.execute(ins.on_conflict_do_update(
                        index_elements=["scope", "token"],
                        set_={column: junk_tokens.c[column] + 1, "seen": today}),
                        [{"scope": s, "token": i} for s in scopes for i in ids])
                return
            col_m, col_t = junk_messages.c[column], junk_tokens.c[column]
            conn.execute(update(junk_messages).where(junk_messages.c.scope.in_(scopes))
                         .values({column: case((col_m > 0, col_m - 1), else_=0)}))
            for chunk in chunks(ids):
                where = and_(junk_tokens.c.scope.in_(scopes), junk_tokens.c.token.in_(chunk))
                conn.execute(update(junk_tokens).where(where)
                             .values({column: case((col_t > 0, col_t - 1), else_=0)}))
                conn.execute(delete(junk_tokens).where(
                    where, junk_tokens.c.spam == 0, junk_tokens.c.ham == 0))

        def fn(conn: Connection) -> str:
            before = conn.execute(select(tr["class"]).where(
                tr.account_id == account_id, tr.blob_id == blob_id).with_for_update()).scalar()
            if before == cls:
                return "already"
            if before is not None:
                count(conn, before, -1)
                conn.execute(update(junk_trained).where(
                    tr.account_id == account_id, tr.blob_id == blob_id).values({"class": cls}))
            else:
                conn.execute(junk_trained.insert().values(
                    {"account_id": account_id, "blob_id": blob_id, "class": cls}))
            count(conn, cls, +1)
            return "learnt" if before is None else "relearnt"

        return await self._write(fn)

    async def junk_prune_hapaxes(self, before_day: int, after: tuple[int, int] | None,
                                 limit: int) -> tuple[int, int, tuple[int, int] | None]:
        t = junk_tokens.c
        q = select(t.scope, t.token, t.spam + t.ham, t.seen).order_by(t.scope, t.token)
        if after is not None:
            q = q.where(tuple_(t.scope, t.token) > tuple_(*after))
        q = q.limit(limit)

        def fn(conn: Connection) -> tuple[int, int, tuple[int, int] | None]:
            rows = conn.execute(q).all()
            doomed: dict[int, list[int]] = {}
            for scope, token, n, seen in rows:
                if n <= 1 and seen < before_day:
                    doomed.setdefault(scope, []).append(token)
            deleted = 0
            for scope, tokens in doomed.items():
                for chunk in chunks(tokens):  # counted again: a learning meanwhile keeps it
                    deleted += conn.execute(delete(junk_tokens).where(
                        t.scope == scope, t.token.in_(chunk), t.spam + t.ham <= 1,
                        t.seen < before_day)).rowcount
            last = (int(rows[-1][0]), int(rows[-1][1])) if len(rows) == limit else None
            return len(rows), deleted, last

        return await self._write(fn, durable=False)  # lost in a crash: done again next time

    async def junk_token_counts(self) -> dict[int, int]:
        t = junk_tokens.c
        q = select(t.scope, func.count()).group_by(t.scope)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return {int(scope): int(n) for scope, n in rows}

    async def junk_trim(self, scope: int, count: int) -> int:
        if count <= 0:
            return 0
        t = junk_tokens.c
        weakest = (select(t.token).where(t.scope == scope)
                   .order_by(t.spam + t.ham, t.seen, t.token).limit(count))
        stmt = delete(junk_tokens).where(t.scope == scope, t.token.in_(weakest))
        return int(await self._write(lambda conn: conn.execute(stmt).rowcount, durable=False))

    async def set_junk_entry(self, owner: str, entry: str, kind: str | None) -> bool:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        entry = list_entry(entry)
        dialect = sqlite if self._sqlite else postgresql
        lists = junk_lists.c

        def fn(conn: Connection) -> bool:
            if kind is None:
                return conn.execute(delete(junk_lists).where(
                    lists.owner == owner, lists.entry == entry)).rowcount > 0
            ins = dialect.insert(junk_lists).values(owner=owner, entry=entry, kind=kind)
            conn.execute(ins.on_conflict_do_update(index_elements=["owner", "entry"],
                                                   set_={"kind": kind}))
            return True

        return await self._write(fn)

    async def junk_entries(self, owner: str | None = None) -> list[JunkListEntry]:
        lists = junk_lists.c
        q = select(lists.owner, lists.entry, lists.kind).order_by(lists.owner, lists.entry)
        if owner is not None:
            q = q.where(lists.owner == owner)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [JunkListEntry(*row) for row in rows]

    async def junk_sender(self, owners: Sequence[str], account_ids: Sequence[int],
                          address: str) -> tuple[list[JunkListEntry], frozenset[int]]:
        found = await self.junk_lookup([], [], 0, owners, account_ids, address)
        return found.entries, found.wrote

    async def add_correspondents(self, account_id: int, addresses: Sequence[str],
                                 now: float) -> None:
        keys = list(dict.fromkeys(address_key(a) for a in addresses if "@" in a))
        if not keys:
            return
        dialect = sqlite if self._sqlite else postgresql

        def fn(conn: Connection) -> None:
            ins = dialect.insert(junk_correspondents).values(account_id=account_id, seen=now)
            conn.execute(ins.on_conflict_do_update(index_elements=["account_id", "address"],
                                                   set_={"seen": now}),
                         [{"address": k} for k in keys])

        await self._write(fn, durable=False)

    def _forget_junk(self, conn: Connection, account_id: int) -> None:
        """The account's junk rows removed (in `remove_account`'s transaction)."""
        conn.execute(delete(junk_trained).where(junk_trained.c.account_id == account_id))
        conn.execute(delete(junk_correspondents).where(
            junk_correspondents.c.account_id == account_id))
        conn.execute(delete(junk_lists).where(junk_lists.c.owner == f"a:{account_id}"))
        conn.execute(delete(junk_tokens).where(junk_tokens.c.scope == account_id))
        conn.execute(delete(junk_messages).where(junk_messages.c.scope == account_id))
