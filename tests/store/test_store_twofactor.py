"""Second factors in the store (migration 17, `postkeep.store.sql.twofactor`) on both backends:
the TOTP secret sealed and its steps accepted once, recovery codes once each, WebAuthn
credentials with compare-and-set counters, challenges single use per session and in time,
enforcement of app passwords only, rows gone with the account; and the migration itself, onto
a version-15 database and alongside a number not merged yet (16)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import MAX_WEBAUTHN_CREDENTIALS, WebAuthnChallenge
from postkeep.store.sql.migrations import migrate
from postkeep.store.sql.schema import schema_version, two_factor
from postkeep.store.sql.store import SqlStore
from postkeep.store.sql.twofactor import MAX_SESSION_CHALLENGES

Run = Callable[[Awaitable[Any]], Any]
A = "alice@example.org"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SESSION = bytes(32)


@pytest.fixture
def store(make_store: Callable[..., SqlStore], run: Run) -> SqlStore:
    s = make_store()
    run(s.add_domain("example.org"))
    run(s.add_account(A, "x"))
    run(s.add_account("bob@example.org", "x"))
    return s


def flag(run: Run, store: SqlStore, address: str = A) -> bool:
    account = run(store.get_account(address))
    assert account is not None
    return account.app_passwords_only


def test_totp_rows(run: Run, store: SqlStore, db_url: str) -> None:
    assert run(store.get_totp(A)) is None
    run(store.begin_totp(A, SECRET, 100.0))
    state = run(store.get_totp(A))
    assert (state.secret, state.confirmed, state.last_step) == (SECRET, False, None)
    engine = create_engine(db_url)
    try:  # sealed: the column holds no trace of the secret
        with engine.connect() as conn:
            sealed = bytes(conn.execute(select(two_factor.c.totp_secret)).scalar_one())
        assert SECRET.encode() not in sealed and len(sealed) > len(SECRET)
    finally:
        engine.dispose()
    assert not run(store.accept_totp_step(A, 5, 100.0))  # not confirmed: no plain use
    assert run(store.accept_totp_step(A, 5, 100.0, recovery_codes=["a", "b"]))
    assert flag(run, store) and not flag(run, store, "bob@example.org")
    assert not run(store.accept_totp_step(A, 5, 100.0))  # the same step again
    assert not run(store.accept_totp_step(A, 4, 100.0))  # an earlier one
    assert run(store.accept_totp_step(A, 6, 100.0))
    assert run(store.get_totp(A)).last_step == 6
    with pytest.raises(AlreadyExists):
        run(store.begin_totp(A, SECRET, 100.0))
    status = run(store.two_factor_status(A))
    assert (status.totp, status.totp_created, status.enforced, status.recovery_codes_left) == (
        "on", 100.0, True, 2)
    assert run(store.use_recovery_code(A, "a", 101.0))
    assert not run(store.use_recovery_code(A, "a", 102.0))
    assert not run(store.use_recovery_code("bob@example.org", "b", 102.0))
    assert run(store.two_factor_status(A)).recovery_codes_left == 1
    run(store.set_recovery_codes(A, ["c"], 103.0))
    assert not run(store.use_recovery_code(A, "b", 104.0))
    with pytest.raises(StoreError):
        run(store.set_recovery_codes(A, ["d", "d"], 104.0))
    assert run(store.disable_totp(A))
    assert not flag(run, store)
    assert run(store.two_factor_status(A)).totp == "off"
    with pytest.raises(NotFound):
        run(store.two_factor_status("nobody@example.org"))


def credential(run: Run, store: SqlStore, address: str = A, count: int = 0) -> Any:
    return run(store.add_webauthn_credential(
        address, os.urandom(16), b"\xa5cose", count, ["usb", "nfc", "usb", "bad char"], " key ",
        200.0))


def test_webauthn_credentials(run: Run, store: SqlStore) -> None:
    handle = run(store.webauthn_user_handle(A))
    assert len(handle) == 32 and run(store.webauthn_user_handle(A)) == handle
    assert run(store.webauthn_user_handle("bob@example.org")) != handle
    first = credential(run, store, count=7)
    assert (first.name, first.transports, first.sign_count) == ("key", ("usb", "nfc"), 7)
    assert flag(run, store)
    with pytest.raises(AlreadyExists):
        run(store.add_webauthn_credential(A, first.credential_id, b"k", 0, [], "again", 1.0))
    found = run(store.find_webauthn_credential(first.credential_id))
    assert found is not None
    assert found[0] == first and found[1].address == A and found[2] == handle
    assert run(store.find_webauthn_credential(os.urandom(16))) is None
    assert run(store.record_webauthn_use(first.id, 7, 9, 300.0))
    assert not run(store.record_webauthn_use(first.id, 7, 8, 301.0))  # moved meanwhile
    [stored] = run(store.list_webauthn_credentials(A))
    assert (stored.sign_count, stored.last_used) == (9, 300.0)
    with pytest.raises(NotFound):
        run(store.remove_webauthn_credential("bob@example.org", first.id))
    for _ in range(MAX_WEBAUTHN_CREDENTIALS - 1):
        credential(run, store)
    with pytest.raises(StoreError, match="passkeys already"):
        credential(run, store)
    run(store.set_recovery_codes(A, ["r"], 1.0))
    assert run(store.disable_two_factor(A))
    assert run(store.list_webauthn_credentials(A)) == []
    assert not flag(run, store)
    assert run(store.two_factor_status(A)).recovery_codes_left == 0
    assert not run(store.disable_two_factor(A))


def test_webauthn_challenges(run: Run, store: SqlStore) -> None:
    bob = run(store.get_account("bob@example.org"))
    made = [WebAuthnChallenge(os.urandom(32), "authenticate", bob.id, 1000.0 + i)
            for i in range(MAX_SESSION_CHALLENGES + 1)]
    for challenge in made:
        run(store.put_webauthn_challenge(challenge, SESSION, 900.0))
    # the session's oldest beyond MAX_SESSION_CHALLENGES went
    assert run(store.take_webauthn_challenge(made[0].challenge, "authenticate", SESSION,
                                             900.0)) is None
    second = made[1].challenge
    assert run(store.take_webauthn_challenge(second, "register", SESSION, 900.0)) is None
    assert run(store.take_webauthn_challenge(second, "authenticate", b"\1" * 32, 900.0)) is None
    assert run(store.take_webauthn_challenge(second, "authenticate", SESSION, 900.0)) == made[1]
    assert run(store.take_webauthn_challenge(second, "authenticate", SESSION, 900.0)) is None
    late = made[2]
    assert run(store.take_webauthn_challenge(late.challenge, "authenticate", SESSION,
                                             late.expires)) is None  # expired (and gone)
    passwordless = WebAuthnChallenge(os.urandom(32), "authenticate", None, 2000.0)
    run(store.put_webauthn_challenge(passwordless, b"\2" * 32, 1500.0))  # drops expired ones
    assert run(store.take_webauthn_challenge(made[3].challenge, "authenticate", SESSION,
                                             0.0)) is None
    assert run(store.take_webauthn_challenge(passwordless.challenge, "authenticate",
                                             b"\2" * 32, 1500.0)) == passwordless
    with pytest.raises(StoreError):
        run(store.put_webauthn_challenge(passwordless, b"short", 1.0))


def test_rows_go_with_the_account(run: Run, store: SqlStore) -> None:
    run(store.begin_totp(A, SECRET, 1.0))
    run(store.accept_totp_step(A, 1, 1.0, recovery_codes=["x"]))
    cred = credential(run, store)
    account = run(store.get_account(A))
    run(store.put_webauthn_challenge(
        WebAuthnChallenge(os.urandom(32), "register", account.id, 99.0), SESSION, 1.0))
    run(store.remove_account(A))
    assert run(store.find_webauthn_credential(cred.credential_id)) is None
    run(store.add_account(A, "x"))
    assert run(store.two_factor_status(A)).totp == "off"
    assert run(store.get_totp(A)) is None


def test_migration_17_and_a_late_16(
    run: Run, make_store: Callable[..., SqlStore], db_url: str
) -> None:
    old = make_store()
    run(old.add_domain("example.org"))
    run(old.add_account(A, "x"))
    run(old.close())
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for table in ("webauthn_challenges", "webauthn_credentials", "recovery_codes",
                          "two_factor"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(schema_version.delete().where(schema_version.c.version == 17))
        assert migrate(engine) == [17]  # onto a version-16 database
        # a migration numbered lower, merged later (16 landed after 17 on another branch),
        # is applied when it arrives
        with engine.begin() as conn:
            for table in ("web_sessions", "login_history"):
                conn.execute(text(f"DROP TABLE {table}"))
            conn.execute(schema_version.delete().where(schema_version.c.version == 16))
        assert migrate(engine) == [16]
        assert migrate(engine) == []
        with engine.begin() as conn:  # a database newer than the code: refused
            conn.execute(schema_version.insert().values(version=99, description="x",
                                                        applied_at=0.0))
        with pytest.raises(StoreError, match="newer than this postkeep"):
            migrate(engine)
        with engine.begin() as conn:
            conn.execute(schema_version.delete().where(schema_version.c.version == 99))
    finally:
        engine.dispose()
    store = make_store()
    run(store.begin_totp(A, SECRET, 1.0))
    assert run(store.get_totp(A)).secret == SECRET
