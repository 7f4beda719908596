"""Addresses in canonical form in the store (NFC, IDNA U-labels): lookups of any Unicode form,
and migration 5, which rewrites the rows of an older database (or refuses to merge two)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from postkeep.errors import AlreadyExists, StoreError
from postkeep.sasl.secrets import derive_secrets
from postkeep.store.crypto import account_key_context, new_key, wrap_key
from postkeep.store.sql.migrations import MIGRATIONS, latest_version, migrate
from postkeep.store.sql.schema import schema_version
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]

NFC = "üser@example.org"
NFD = unicodedata.normalize("NFD", NFC)


def test_every_unicode_form_is_one_account(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    run(store.add_account(NFD, "h"))
    assert [a.address for a in run(store.list_accounts())] == [NFC]
    with pytest.raises(AlreadyExists):
        run(store.add_account(NFC.upper(), "h"))
    for form in (NFC, NFD, "ÜSER@EXAMPLE.ORG", "\uff55\u0308ser@example.org"):
        account = run(store.get_account(form))
        assert account is not None and account.address == NFC, form
        assert run(store.resolve_local(form)) == [account]
    run(store.add_domain("XN--EXMPLE-CUA.test."))
    assert run(store.get_domain(unicodedata.normalize("NFD", "exämple.test"))) is not None
    assert [d.name for d in run(store.list_domains())] == ["example.org", "exämple.test"]


def _version_4_database(db_url: str, master_key: bytes, addresses: list[str]) -> None:
    """A database at schema version 4 with accounts stored as typed (the old code's forms)."""
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    try:
        assert migrate(engine, MIGRATIONS[:4]) == [1, 2, 3, 4]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO domains (name, created) VALUES ('example.org', 1.0)"))
            for address in addresses:
                key = address.lower()
                conn.execute(
                    text(
                        "INSERT INTO accounts (address, address_key, domain_id, password_hash, "
                        "quota_bytes, used_bytes, data_key, disabled, created) VALUES (:a, :k, "
                        "(SELECT id FROM domains), 'old-hash', 0, 0, :w, false, 2.0)"
                    ),
                    {"a": address, "k": key,
                     "w": wrap_key(master_key, new_key(), account_key_context(key))},
                )
    finally:
        engine.dispose()


def _schema_version(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return max(conn.execute(select(schema_version.c.version)).scalars())
    finally:
        engine.dispose()


def test_migration_5_rewrites_addresses_in_canonical_form(
    run: Run, make_store: Callable[..., SqlStore], db_url: str, master_key: bytes
) -> None:
    _version_4_database(db_url, master_key, [NFD, "Bob@example.org"])
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO aliases (source, source_key, domain_id, targets, created) VALUES "
                "(:s, :s, (SELECT id FROM domains), :t, 3.0)"
            ), {"s": unicodedata.normalize("NFD", "für@example.org"), "t": json.dumps([NFD])})
            conn.execute(text(
                "INSERT INTO send_as (account_id, address_key, created) SELECT id, :g, 4.0 "
                "FROM accounts WHERE address = 'Bob@example.org'"
            ), {"g": unicodedata.normalize("NFD", "bö@other.test")})
    finally:
        engine.dispose()

    store = make_store()
    assert _schema_version(db_url) == latest_version()
    assert [a.address for a in run(store.list_accounts())] == ["Bob@example.org", NFC]
    account = run(store.get_account(NFC))
    assert account is not None and account.address == NFC
    # the data key was re-wrapped for the new key: secrets can be sealed and read under it
    run(store.set_password(NFC, "new-hash", derive_secrets(NFC, "a new password")))
    assert len(run(store.get_auth(NFD)).secrets) == 4
    [alias] = run(store.list_aliases())
    assert (alias.source, alias.targets) == ("für@example.org", (NFC,))
    assert [a.id for a in run(store.resolve_local("für@example.org"))] == [account.id]
    assert run(store.list_send_as("bob@example.org")) == ["bö@other.test"]


def test_migration_5_refuses_to_merge_two_accounts(
    run: Run, make_store: Callable[..., SqlStore], db_url: str, master_key: bytes
) -> None:
    _version_4_database(db_url, master_key, [NFC, NFD])
    with pytest.raises(StoreError) as refused:
        make_store()
    message = str(refused.value)
    assert (f"the account {NFC!r} (U+00FC) and the account {NFD!r} (U+0308) are both {NFC} "
            "after normalisation") in message
    assert "remove or rename one of them" in message
    assert _schema_version(db_url) == 4  # nothing changed
