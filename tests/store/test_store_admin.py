"""Domains, accounts, aliases, resolve_local, migrations, master key check (both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store import open_store
from postkeep.store.api import DEFAULT_MAILBOXES, SpecialUse
from postkeep.store.crypto import create_master_key
from postkeep.store.sql.migrations import MIGRATIONS, migrate
from postkeep.store.sql.schema import metadata, schema_version
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]


def test_domains(run: Run, store: SqlStore) -> None:
    d = run(store.add_domain("Example.ORG"))
    assert d.name == "example.org"
    assert run(store.get_domain("EXAMPLE.org")) == d
    assert run(store.get_domain("other.org")) is None
    with pytest.raises(AlreadyExists):
        run(store.add_domain("example.org"))
    run(store.add_domain("b.example"))
    assert [x.name for x in run(store.list_domains())] == ["b.example", "example.org"]
    with pytest.raises(NotFound):
        run(store.remove_domain("nope.example"))
    run(store.remove_domain("b.example"))
    assert run(store.get_domain("b.example")) is None
    with pytest.raises(StoreError):
        run(store.add_domain("bad domain"))


def test_remove_domain_refused_while_in_use(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    run(store.add_account("a@example.org", "h"))
    with pytest.raises(StoreError, match="account") as info:
        run(store.remove_domain("example.org"))
    assert not isinstance(info.value, NotFound)
    run(store.remove_account("a@example.org"))
    run(store.add_alias("x@example.org", ["someone@remote.example"]))
    with pytest.raises(StoreError, match="alias"):
        run(store.remove_domain("example.org"))
    run(store.remove_alias("x@example.org"))
    run(store.remove_domain("example.org"))


def test_accounts(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    run(store.add_domain("other.example"))
    acc = run(store.add_account("Alice.Smith@Example.ORG", "$argon2id$x", quota_bytes=1000))
    assert acc.address == "Alice.Smith@example.org"  # local part kept, domain lower-cased
    assert (acc.quota_bytes, acc.used_bytes, acc.disabled) == (1000, 0, False)
    assert run(store.get_account("alice.smith@EXAMPLE.org")) == acc
    assert run(store.get_account_by_id(acc.id)) == acc
    assert run(store.get_account("bob@example.org")) is None
    assert run(store.get_account_by_id(acc.id + 1000)) is None
    for dup in ("alice.smith@example.org", "ALICE.SMITH@EXAMPLE.ORG"):
        with pytest.raises(AlreadyExists):
            run(store.add_account(dup, "h"))
    with pytest.raises(NotFound):
        run(store.add_account("x@not-local.example", "h"))
    with pytest.raises(StoreError):
        run(store.add_account("no-at-sign", "h"))
    bob = run(store.add_account("bob@other.example", "h"))
    assert [a.address for a in run(store.list_accounts())] == [acc.address, bob.address]
    assert run(store.list_accounts("other.example")) == [bob]
    assert run(store.list_accounts("unknown.example")) == []

    run(store.set_password("ALICE.smith@example.org", "new-hash"))
    run(store.set_quota("alice.smith@example.org", 5000))
    got = run(store.get_account(acc.address))
    assert (got.password_hash, got.quota_bytes) == ("new-hash", 5000)
    for call in (store.set_password("nobody@example.org", "h"), store.set_quota("n@x.y", 1)):
        with pytest.raises(NotFound):
            run(call)
    with pytest.raises(NotFound):
        run(store.remove_account("nobody@example.org"))
    run(store.remove_account("Alice.Smith@example.org"))
    assert run(store.get_account(acc.address)) is None
    assert run(store.list_mailboxes(acc.id)) == []


def test_default_mailboxes(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    a = run(store.add_account("a@example.org", "h"))
    b = run(store.add_account("b@example.org", "h"))
    boxes = run(store.list_mailboxes(a.id))
    assert [(m.name, m.special_use) for m in boxes] == [
        (name, use.value if use else None) for name, use in DEFAULT_MAILBOXES
    ]
    assert {m.special_use for m in boxes} >= {s.value for s in SpecialUse}
    all_boxes = boxes + run(store.list_mailboxes(b.id))
    validities = [m.uidvalidity for m in all_boxes]
    assert len(set(validities)) == len(validities)  # distinct per mailbox
    assert all(0 < v < 2**32 for v in validities)
    assert all((m.uidnext, m.highestmodseq, m.subscribed) == (1, 1, True) for m in boxes)
    inbox = run(store.get_mailbox(a.id, "inbox"))  # INBOX is case-insensitive
    assert inbox is not None and inbox.name == "INBOX"
    assert run(store.get_mailbox(a.id, "Nope")) is None
    # a re-created account gets new UIDVALIDITY values
    run(store.remove_account("a@example.org"))
    again = run(store.add_account("a@example.org", "h"))
    assert min(m.uidvalidity for m in run(store.list_mailboxes(again.id))) > max(validities)


def test_aliases(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    run(store.add_domain("b.example"))
    run(store.add_account("a@example.org", "h"))
    targets = ["a@example.org", "x@remote.example", "a@example.org"]
    al = run(store.add_alias("Sales@Example.org", targets))
    assert al.source == "Sales@example.org"
    assert al.targets == ("a@example.org", "x@remote.example")
    with pytest.raises(AlreadyExists):
        run(store.add_alias("sales@example.org", ["a@example.org"]))
    with pytest.raises(AlreadyExists):
        run(store.add_alias("a@example.org", ["x@remote.example"]))  # an account already
    with pytest.raises(AlreadyExists):
        run(store.add_account("sales@example.org", "h"))  # an alias already
    with pytest.raises(NotFound):
        run(store.add_alias("x@remote.example", ["a@example.org"]))
    with pytest.raises(StoreError):
        run(store.add_alias("y@example.org", []))
    catch = run(store.add_alias("@b.example", ["a@example.org"]))
    assert run(store.list_aliases()) == [catch, al]
    assert run(store.list_aliases("example.org")) == [al]
    with pytest.raises(NotFound):
        run(store.remove_alias("nope@example.org"))
    run(store.remove_alias("SALES@example.org"))
    assert run(store.list_aliases("example.org")) == []


def test_resolve_local(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    run(store.add_domain("catch.example"))
    a = run(store.add_account("Alice@example.org", "h"))
    b = run(store.add_account("bob@example.org", "h"))
    c = run(store.add_account("carol@catch.example", "h"))
    run(store.add_alias("team@example.org", ["alice@example.org", "list@example.org"]))
    run(store.add_alias("list@example.org", ["BOB@example.org", "ALICE@example.org", "x@far.ex"]))
    run(store.add_alias("loop1@example.org", ["loop2@example.org"]))
    run(store.add_alias("loop2@example.org", ["loop1@example.org", "bob@example.org"]))
    run(store.add_alias("remote@example.org", ["x@far.example", "nobody@example.org"]))
    run(store.add_alias("@catch.example", ["alice@example.org"]))

    assert run(store.resolve_local("ALICE@Example.org")) == [a]
    assert run(store.resolve_local("team@example.org")) == [a, b]  # each account once
    assert run(store.resolve_local("loop1@example.org")) == [b]  # loop is cut
    assert run(store.resolve_local("remote@example.org")) == []  # local alias, no local target
    assert run(store.resolve_local("carol@catch.example")) == [c]  # account beats catch-all
    assert run(store.resolve_local("anything@catch.example")) == [a]  # catch-all
    assert run(store.resolve_local("nobody@example.org")) is None
    assert run(store.resolve_local("postmaster@example.org")) is None  # the caller's business
    assert run(store.resolve_local("alice@far.example")) is None  # domain not local
    assert run(store.resolve_local("not-an-address")) is None


def test_resolve_local_depth_is_bounded(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    target = run(store.add_account("end@example.org", "h"))
    for i in range(10):  # a0 -> a1 -> ... -> a9 -> end
        nxt = f"a{i + 1}@example.org" if i < 9 else "end@example.org"
        run(store.add_alias(f"a{i}@example.org", [nxt]))
    assert run(store.resolve_local("a3@example.org")) == [target]  # 7 levels: reached
    assert run(store.resolve_local("a0@example.org")) == []  # 10 levels: cut off


def test_migrations_idempotent_and_match_schema(
    run: Run, make_store: Callable[..., SqlStore], db_url: str
) -> None:
    first = make_store()
    run(first.add_domain("example.org"))
    run(first.close())
    second = make_store()  # opening again: nothing to migrate, data intact
    assert [d.name for d in run(second.list_domains())] == ["example.org"]
    run(second.close())
    engine = create_engine(db_url)
    try:
        assert migrate(engine) == []
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
        assert versions == [m.version for m in MIGRATIONS]
        insp = inspect(engine)
        for table in metadata.sorted_tables:  # the migrated db matches schema.py
            cols = {c["name"] for c in insp.get_columns(table.name)}
            assert cols == {c.name for c in table.columns}, table.name
    finally:
        engine.dispose()


def test_wrong_master_key_refused(
    run: Run, make_store: Callable[..., SqlStore], master_key: bytes
) -> None:
    run(make_store().close())
    with pytest.raises(StoreError, match="master key"):
        make_store(master_key=bytes(32))
    run(make_store(master_key=master_key).close())


def test_open_store_default_url(run: Run, tmp_path: Path) -> None:
    key_path = tmp_path / "master.key"
    create_master_key(key_path)
    store = run(open_store(None, tmp_path / "data", key_path))
    try:
        run(store.add_domain("example.org"))
        assert (tmp_path / "data" / "store.db").is_file()
        assert (tmp_path / "data" / "blobs" / "tmp").is_dir()
    finally:
        run(store.close())
    key_path.chmod(0o644)
    with pytest.raises(StoreError, match="0600"):
        run(open_store(None, tmp_path / "data", key_path))


def test_bad_urls(run: Run, tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", "mysql://x/y"):
        with pytest.raises(StoreError):
            run(SqlStore(url, tmp_path, bytes(32)).open())
