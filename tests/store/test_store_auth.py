"""Credentials in the store: SASL mechanism secrets, get_auth, app passwords, app-passwords-only,
and migration 2 upgrading a version-1 database (both backends)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select, text

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.sasl.secrets import derive_secrets
from postkeep.store.api import MAX_APP_PASSWORDS, AppPassword, DsnRecipient, Envelope
from postkeep.store.crypto import account_key_context, new_key, wrap_key
from postkeep.store.sql.migrations import MIGRATIONS, migrate
from postkeep.store.sql.schema import account_secrets, app_passwords, schema_version
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
ADDRESS = "alice@example.org"


@pytest.fixture
def alice(run: Run, store: SqlStore) -> str:
    run(store.add_domain("example.org"))
    run(store.add_account(ADDRESS, "hash-1", secrets=derive_secrets(ADDRESS, "first password")))
    return ADDRESS


def _raw_secrets(db_url: str) -> list[tuple[int, str, bytes]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(account_secrets).order_by(account_secrets.c.mechanism))
            return [(r[0], r[1], bytes(r[2])) for r in rows]
    finally:
        engine.dispose()


def test_secrets_stored_sealed_and_replaced(
    run: Run, store: SqlStore, alice: str, db_url: str
) -> None:
    record = run(store.get_auth("ALICE@example.ORG"))
    assert record is not None
    assert record.account.address == ADDRESS and record.account.password_hash == "hash-1"
    first = record.secrets
    assert set(first) == {"SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5", "DIGEST-MD5"}
    raw = _raw_secrets(db_url)
    assert [m for _, m, _ in raw] == sorted(first)
    for _, mechanism, sealed in raw:  # never stored in clear
        assert first[mechanism].encode() not in sealed

    second = derive_secrets(ADDRESS, "second password")
    run(store.set_password(ADDRESS, "hash-2", second))
    record = run(store.get_auth(ADDRESS))
    assert record.account.password_hash == "hash-2"
    assert record.secrets == second and record.secrets["CRAM-MD5"] != first["CRAM-MD5"]

    run(store.set_password(ADDRESS, "hash-3", {"CRAM-MD5": second["CRAM-MD5"]}))
    assert run(store.get_auth(ADDRESS)).secrets == {"CRAM-MD5": second["CRAM-MD5"]}
    run(store.set_password(ADDRESS, "hash-4"))  # None: no derived secrets kept
    record = run(store.get_auth(ADDRESS))
    assert (record.account.password_hash, record.secrets) == ("hash-4", {})
    assert _raw_secrets(db_url) == []

    with pytest.raises(NotFound):
        run(store.set_password("nobody@example.org", "h", second))
    with pytest.raises(StoreError):
        run(store.set_password(ADDRESS, "h", {"bad mech": "x"}))
    assert run(store.get_auth("nobody@example.org")) is None
    assert run(store.get_auth("")) is None


def test_add_account_without_secrets(run: Run, store: SqlStore) -> None:
    run(store.add_domain("example.org"))
    acc = run(store.add_account("bob@example.org", "h"))
    assert acc.app_passwords_only is False
    record = run(store.get_auth("bob@example.org"))
    assert record.account == acc and record.secrets == {} and record.app_passwords == ()


def test_app_passwords_crud(run: Run, store: SqlStore, alice: str) -> None:
    before = time.time()
    phone = run(store.add_app_password(ADDRESS, " phone ", "ap-hash-1", ["smtp", "imap"]))
    assert isinstance(phone, AppPassword)
    assert (phone.name, phone.password_hash) == ("phone", "ap-hash-1")
    assert phone.scopes == ("smtp", "imap")
    assert phone.last_used is None and not phone.revoked
    assert before <= phone.created <= time.time()
    laptop = run(store.add_app_password(ADDRESS, "laptop", "ap-hash-2", "imap"))
    assert laptop.scopes == ("imap",)
    with pytest.raises(AlreadyExists):
        run(store.add_app_password("Alice@EXAMPLE.org", "phone", "x", ["smtp"]))
    with pytest.raises(NotFound):
        run(store.add_app_password("nobody@example.org", "phone", "x", ["smtp"]))
    for name, scopes in (("", ["smtp"]), ("x" * 65, ["smtp"]), ("tab\there", ["smtp"]),
                         ("ok", []), ("ok", ["SMTP POP"])):
        with pytest.raises(StoreError):
            run(store.add_app_password(ADDRESS, name, "x", scopes))

    assert run(store.list_app_passwords(ADDRESS)) == [phone, laptop]
    record = run(store.get_auth(ADDRESS))
    assert record.app_passwords == (phone, laptop)

    run(store.revoke_app_password(ADDRESS, "phone"))
    with pytest.raises(NotFound):
        run(store.revoke_app_password(ADDRESS, "phone"))
    with pytest.raises(NotFound):
        run(store.revoke_app_password(ADDRESS, "never-existed"))
    with pytest.raises(NotFound):
        run(store.revoke_app_password("nobody@example.org", "phone"))
    with pytest.raises(NotFound):
        run(store.list_app_passwords("nobody@example.org"))
    assert run(store.get_auth(ADDRESS)).app_passwords == (laptop,)  # only active ones
    assert run(store.list_app_passwords(ADDRESS)) == [laptop]
    every = run(store.list_app_passwords(ADDRESS, include_revoked=True))
    assert [(a.name, a.revoked) for a in every] == [("phone", True), ("laptop", False)]

    # a revoked name may be used again; both rows stay
    phone2 = run(store.add_app_password(ADDRESS, "phone", "ap-hash-3", ["smtp"]))
    assert phone2.id != phone.id
    names = [(a.name, a.revoked) for a in run(store.list_app_passwords(ADDRESS, True))]
    assert names == [("phone", True), ("laptop", False), ("phone", False)]


def test_app_password_limit(run: Run, store: SqlStore, alice: str) -> None:
    for i in range(MAX_APP_PASSWORDS):
        run(store.add_app_password(ADDRESS, f"d{i}", "h", ["smtp"]))
    with pytest.raises(StoreError, match="revoke one"):
        run(store.add_app_password(ADDRESS, "one-more", "h", ["smtp"]))
    run(store.revoke_app_password(ADDRESS, "d0"))
    run(store.add_app_password(ADDRESS, "one-more", "h", ["smtp"]))


def test_touch_app_password_batched(run: Run, store: SqlStore, alice: str) -> None:
    ap = run(store.add_app_password(ADDRESS, "phone", "h", ["smtp"]))
    other = run(store.add_app_password(ADDRESS, "tablet", "h", ["imap"]))
    run(store.touch_app_password(ap.id, 1000.0))
    run(store.touch_app_password(ap.id, 3000.0))
    run(store.touch_app_password(ap.id, 2000.0))  # older: never moves last_used back
    run(store.touch_app_password(other.id, 500.0))
    run(store.touch_app_password(999_999, 1.0))  # unknown: ignored
    run(store.sync())
    used = {a.name: a.last_used for a in run(store.list_app_passwords(ADDRESS))}
    assert used == {"phone": 3000.0, "tablet": 500.0}
    run(store.touch_app_password(ap.id, 2500.0))
    run(store.sync())
    assert run(store.list_app_passwords(ADDRESS))[0].last_used == 3000.0


def test_touch_survives_close(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore, alice: str
) -> None:
    ap = run(store.add_app_password(ADDRESS, "phone", "h", ["smtp"]))
    run(store.touch_app_password(ap.id, 4000.0))
    run(store.close())  # close drains the pending touch
    again = make_store()
    assert run(again.list_app_passwords(ADDRESS))[0].last_used == 4000.0


def test_app_passwords_only_flag(run: Run, store: SqlStore, alice: str) -> None:
    assert run(store.get_account(ADDRESS)).app_passwords_only is False
    run(store.set_app_passwords_only("ALICE@example.org", True))
    assert run(store.get_account(ADDRESS)).app_passwords_only is True
    assert run(store.get_auth(ADDRESS)).account.app_passwords_only is True
    assert [a.app_passwords_only for a in run(store.list_accounts())] == [True]
    run(store.set_app_passwords_only(ADDRESS, False))
    assert run(store.get_account(ADDRESS)).app_passwords_only is False
    with pytest.raises(NotFound):
        run(store.set_app_passwords_only("nobody@example.org", True))


def test_remove_account_removes_credentials(
    run: Run, store: SqlStore, alice: str, db_url: str
) -> None:
    run(store.add_app_password(ADDRESS, "phone", "h", ["smtp"]))
    run(store.remove_account(ADDRESS))
    assert run(store.get_auth(ADDRESS)) is None
    assert _raw_secrets(db_url) == []
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(app_passwords)).all() == []
    finally:
        engine.dispose()
    # the address can be created again, with fresh credentials
    run(store.add_account(ADDRESS, "h2", secrets={"CRAM-MD5": "ab" * 32}))
    record = run(store.get_auth(ADDRESS))
    assert record.secrets == {"CRAM-MD5": "ab" * 32} and record.app_passwords == ()


def test_migration_2_upgrades_a_version_1_database(
    run: Run, make_store: Callable[..., SqlStore], db_url: str, master_key: bytes
) -> None:
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_url)
    try:
        assert migrate(engine, MIGRATIONS[:1]) == [1]
        wrapped = wrap_key(master_key, new_key(), account_key_context(ADDRESS))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO domains (name, created) VALUES ('example.org', 1.0)"))
            conn.execute(
                text(
                    "INSERT INTO accounts (address, address_key, domain_id, password_hash, "
                    "quota_bytes, used_bytes, data_key, disabled, created) VALUES (:a, :a, "
                    "(SELECT id FROM domains), 'old-hash', 5000, 0, :k, false, 2.0)"
                ),
                {"a": ADDRESS, "k": wrapped},
            )
        tables = set(inspect(engine).get_table_names())
        assert "app_passwords" not in tables and "outbound_queue" not in tables
    finally:
        engine.dispose()

    store = make_store()  # opening migrates to the latest version
    acc = run(store.get_account(ADDRESS))
    assert acc is not None
    assert (acc.password_hash, acc.quota_bytes, acc.app_passwords_only) == ("old-hash", 5000, False)
    record = run(store.get_auth(ADDRESS))
    assert record.account == acc and record.secrets == {} and record.app_passwords == ()
    run(store.set_password(ADDRESS, "new-hash", derive_secrets(ADDRESS, "a new password")))
    run(store.add_app_password(ADDRESS, "phone", "h", ["smtp"]))
    env = Envelope("Q-MIG", "alice@example.org", [], "127.0.0.1", "client", time.time())
    run(store.enqueue_outbound(env, [DsnRecipient("x@remote.example")], b"hello"))
    assert run(store.read_outbound("Q-MIG")) == b"hello"
    assert len(run(store.get_auth(ADDRESS)).secrets) == 4

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
        assert versions == [m.version for m in MIGRATIONS] and versions[-1] >= 2
        tables = set(inspect(engine).get_table_names())
        assert {"account_secrets", "app_passwords", "outbound_queue"} <= tables
    finally:
        engine.dispose()


def test_send_as_grants(run: Run, store: SqlStore, alice: str) -> None:
    run(store.grant_send_as(alice, "Shared@Example.org"))
    assert run(store.list_send_as(alice)) == ["shared@example.org"]
    with pytest.raises(AlreadyExists):
        run(store.grant_send_as(alice, "shared@example.org"))
    with pytest.raises(NotFound):
        run(store.grant_send_as("nobody@example.org", "x@example.org"))
    run(store.revoke_send_as(alice, "SHARED@example.org"))
    assert run(store.list_send_as(alice)) == []
    with pytest.raises(NotFound):
        run(store.revoke_send_as(alice, "shared@example.org"))
    run(store.grant_send_as(alice, "other@example.org"))
    run(store.remove_account(alice))  # grants go with the account
