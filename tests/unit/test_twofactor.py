"""auth.totp and auth.webauthn against a real SQLite store: TOTP codes made by pyotp at given
times (the skew window, replays, enrolment, recovery codes once each), and WebAuthn ceremonies
with a software authenticator (`tests.softauthn`: real ES256 keys, real CBOR, the spec's byte
layouts) through py_webauthn's verification, refusals included (origin, RP ID, replayed
challenge, another session, counter regression, user handle)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from postkeep.auth import totp, webauthn
from postkeep.auth.webauthn import RelyingParty, WebAuthnRefused
from postkeep.errors import AlreadyExists, StoreError
from postkeep.store.sql.store import SqlStore
from tests.softauthn import UP, SoftAuthenticator, b64url

Run = Callable[[Awaitable[Any]], Any]
ADDRESS = "alice@example.test"
T0 = 1_800_000_000.0  # a step boundary: 60_000_000 * 30
RP = RelyingParty.for_host("mail.example.test", 8443)


@pytest.fixture
def run() -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


@pytest.fixture
def store(run: Run, tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(url=f"sqlite:///{tmp_path / 'store.db'}", data_dir=tmp_path / "data",
                 master_key=secrets.token_bytes(32))
    run(s.open())
    run(s.add_domain("example.test"))
    run(s.add_account(ADDRESS, "x"))
    run(s.add_account("bob@example.test", "x"))
    yield s
    run(s.close())


def app_only(run: Run, store: SqlStore, address: str = ADDRESS) -> bool:
    account = run(store.get_account(address))
    assert account is not None
    return account.app_passwords_only


# -- TOTP ------------------------------------------------------------------------------------------


def enrolled(run: Run, store: SqlStore) -> pyotp.TOTP:
    enrolment = run(totp.begin_enrolment(store, ADDRESS, "mail.example.test", T0))
    assert enrolment.uri.startswith("otpauth://totp/mail.example.test:alice%40example.test?")
    assert f"secret={enrolment.secret}" in enrolment.uri
    assert enrolment.qr_svg.startswith("<svg") and "<script" not in enrolment.qr_svg
    return pyotp.TOTP(enrolment.secret)


def test_totp_enrolment_confirmation_and_enforcement(run: Run, store: SqlStore) -> None:
    otp = enrolled(run, store)
    assert run(store.two_factor_status(ADDRESS)).totp == "pending"
    assert not app_only(run, store)
    verdict, codes = run(totp.confirm_enrolment(store, ADDRESS, "000000"
                                                if otp.at(T0) != "000000" else "111111", T0))
    assert not verdict.ok and verdict.reason == "wrong TOTP code" and codes == []
    verdict, codes = run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))
    assert verdict.ok and len(codes) == totp.RECOVERY_CODES == len(set(codes))
    status = run(store.two_factor_status(ADDRESS))
    assert (status.totp, status.enforced, status.recovery_codes_left) == ("on", True, 10)
    assert app_only(run, store) and not app_only(run, store, "bob@example.test")
    # the confirming code was a use of its step: not accepted again
    assert run(totp.verify_code(store, ADDRESS, otp.at(T0), T0 + 5)).reason == (
        "TOTP code used already")
    with pytest.raises(AlreadyExists):  # no re-enrolment over a confirmed TOTP
        run(totp.begin_enrolment(store, ADDRESS, "mail.example.test", T0))
    # the secret is sealed: the database holds no base32 of it
    state = run(store.get_totp(ADDRESS))
    raw = (Path(store.url.removeprefix("sqlite:///"))).read_bytes()
    assert state is not None and state.secret.encode() not in raw
    assert run(totp.disable(store, ADDRESS)) is True
    assert not app_only(run, store)
    status = run(store.two_factor_status(ADDRESS))
    assert (status.totp, status.enforced, status.recovery_codes_left) == ("off", False, 0)
    assert run(totp.disable(store, ADDRESS)) is False


def test_totp_window_and_replay(run: Run, store: SqlStore) -> None:
    otp = enrolled(run, store)
    assert run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))[0].ok
    now = T0 + 3000
    assert not run(totp.verify_code(store, ADDRESS, otp.at(now - 60), now)).ok  # 2 steps back
    assert not run(totp.verify_code(store, ADDRESS, otp.at(now + 60), now)).ok  # 2 ahead
    assert run(totp.verify_code(store, ADDRESS, otp.at(now - 30), now)).ok  # 1 back: skew
    replay = run(totp.verify_code(store, ADDRESS, otp.at(now - 30), now))
    assert not replay.ok and replay.reason == "TOTP code used already"
    assert run(totp.verify_code(store, ADDRESS, otp.at(now + 30), now)).ok  # 1 ahead
    # the step now is before the last accepted one: refused too (RFC 6238 §5.2)
    assert not run(totp.verify_code(store, ADDRESS, otp.at(now), now)).ok
    later = now + 90
    assert run(totp.verify_second_factor(store, ADDRESS, otp.at(later)[:3] + " "
                                         + otp.at(later)[3:], later)).method == "totp"
    assert not run(totp.verify_code(store, ADDRESS, "12345", later)).ok  # malformed
    assert not run(totp.verify_code(store, ADDRESS, "1" * 10_000, later)).ok


def test_totp_concurrent_uses_of_one_code(run: Run, store: SqlStore) -> None:
    otp = enrolled(run, store)
    assert run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))[0].ok
    now = T0 + 600

    async def both() -> list[totp.Verdict]:
        return list(await asyncio.gather(*(totp.verify_code(store, ADDRESS, otp.at(now), now)
                                           for _ in range(4))))

    assert sorted(v.ok for v in run(both())) == [False, False, False, True]


def test_recovery_codes(run: Run, store: SqlStore) -> None:
    otp = enrolled(run, store)
    _, codes = run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))
    first = codes[0]
    typed = first.upper().replace("-", " ")
    assert run(totp.verify_second_factor(store, ADDRESS, typed, T0)).method == "recovery-code"
    again = run(totp.use_recovery_code(store, ADDRESS, first, T0))
    assert not again.ok and again.reason == "unknown or used recovery code"
    assert not run(totp.use_recovery_code(store, "bob@example.test", codes[1], T0)).ok
    assert run(store.two_factor_status(ADDRESS)).recovery_codes_left == 9
    fresh = run(totp.regenerate_recovery_codes(store, ADDRESS, T0))
    assert not run(totp.use_recovery_code(store, ADDRESS, codes[1], T0)).ok  # old ones gone
    assert run(totp.use_recovery_code(store, ADDRESS, fresh[1], T0)).ok
    assert totp.normalize_recovery_code("ABCDE-FGHJK") == "abcde-fghjk"
    assert totp.normalize_recovery_code("iloab-cdefg") == "110ab-cdefg"
    assert totp.normalize_recovery_code("abcde-fghu1") is None  # u is not in the alphabet
    with pytest.raises(StoreError):
        run(totp.regenerate_recovery_codes(store, "bob@example.test", T0))  # 2FA is off


def test_app_passwords_only_flag_is_kept_and_locked(run: Run, store: SqlStore) -> None:
    run(store.set_app_passwords_only(ADDRESS, True))  # the operator's choice, before 2FA
    otp = enrolled(run, store)
    assert run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))[0].ok
    with pytest.raises(StoreError, match="two-factor"):
        run(store.set_app_passwords_only(ADDRESS, False))
    assert run(totp.disable(store, ADDRESS))
    assert app_only(run, store)  # restored as it was
    run(store.set_app_passwords_only(ADDRESS, False))
    otp = enrolled(run, store)
    assert run(totp.confirm_enrolment(store, ADDRESS, otp.at(T0), T0))[0].ok
    run(store.set_app_passwords_only(ADDRESS, True))  # set while 2FA is on: stays after it
    assert run(store.disable_two_factor(ADDRESS)) is True
    assert app_only(run, store)


# -- WebAuthn --------------------------------------------------------------------------------------


def register(run: Run, store: SqlStore, auth: SoftAuthenticator, session: str = "s1",
             address: str = ADDRESS, name: str = "laptop", **kw: Any) -> webauthn.Registered:
    options = run(webauthn.registration_options(store, RP, address, session, T0))
    response = auth.create(options, kw.pop("origin", RP.origin), **kw)
    return run(webauthn.verify_registration(store, RP, address, session, response, name, T0))


def test_registration_and_second_factor(run: Run, store: SqlStore) -> None:
    auth = SoftAuthenticator()
    options = json.loads(run(webauthn.registration_options(store, RP, ADDRESS, "s1", T0)))
    handle = run(store.webauthn_user_handle(ADDRESS))
    assert options["rp"] == {"id": "mail.example.test", "name": "mail.example.test"}
    assert options["user"]["id"] == b64url(handle) and len(handle) == 32
    assert options["authenticatorSelection"]["residentKey"] == "required"
    registered = register(run, store, auth)
    assert registered.credential.name == "laptop"
    assert registered.credential.transports == ("internal",)
    assert len(registered.recovery_codes) == 10  # the first factor brings recovery codes
    assert app_only(run, store) and run(store.two_factor_status(ADDRESS)).passkeys == 1
    again = json.loads(run(webauthn.registration_options(store, RP, ADDRESS, "s1", T0)))
    assert [c["id"] for c in again["excludeCredentials"]] == [
        b64url(registered.credential.credential_id)]
    second = register(run, store, auth, name="phone")
    assert second.recovery_codes == []  # it has codes already

    options = run(webauthn.authentication_options(store, RP, "s2", T0, ADDRESS))
    assert len(json.loads(options)["allowCredentials"]) == 2
    done = run(webauthn.verify_authentication(store, RP, "s2", auth.get(options, RP.origin),
                                              T0 + 1))
    assert done.account.address == ADDRESS and not done.passwordless
    stored = run(store.list_webauthn_credentials(ADDRESS))
    assert stored[0].sign_count == 1 and stored[0].last_used == T0 + 1

    run(store.remove_webauthn_credential(ADDRESS, stored[0].id))
    assert app_only(run, store)  # one passkey left
    run(store.remove_webauthn_credential(ADDRESS, stored[1].id))
    assert not app_only(run, store)
    assert run(store.two_factor_status(ADDRESS)).recovery_codes_left == 0


def test_passwordless_login(run: Run, store: SqlStore) -> None:
    auth = SoftAuthenticator(counts=False)  # a synced passkey: signCount stays 0
    register(run, store, auth)
    for n in range(2):
        options = run(webauthn.authentication_options(store, RP, f"p{n}", T0))
        assert json.loads(options)["allowCredentials"] == []
        assert json.loads(options)["userVerification"] == "required"
        done = run(webauthn.verify_authentication(store, RP, f"p{n}",
                                                  auth.get(options, RP.origin), T0))
        assert done.account.address == ADDRESS and done.passwordless
    options = run(webauthn.authentication_options(store, RP, "p3", T0))
    with pytest.raises(WebAuthnRefused, match="User verification is required"):
        run(webauthn.verify_authentication(store, RP, "p3",
                                           auth.get(options, RP.origin, flags=UP), T0))
    options = run(webauthn.authentication_options(store, RP, "p4", T0))
    with pytest.raises(WebAuthnRefused, match="no user handle"):
        run(webauthn.verify_authentication(
            store, RP, "p4", auth.get(options, RP.origin, user_handle=False), T0))


def refused(run: Run, store: SqlStore, session: str, response: str, match: str) -> None:
    with pytest.raises(WebAuthnRefused, match=match):
        run(webauthn.verify_authentication(store, RP, session, response, T0))


def test_refusals(run: Run, store: SqlStore) -> None:
    auth = SoftAuthenticator()
    with pytest.raises(WebAuthnRefused, match="origin"):
        register(run, store, auth, origin="https://evil.example")
    with pytest.raises(WebAuthnRefused, match="RP ID"):
        register(run, store, auth, rp_id="example.test")
    with pytest.raises(WebAuthnRefused, match="challenge"):
        register(run, store, auth, challenge=b64url(secrets.token_bytes(32)))
    mine = register(run, store, auth).credential.credential_id
    bob = SoftAuthenticator()
    register(run, store, bob, address="bob@example.test")

    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    refused(run, store, "s", auth.get(options, "https://mail.example.test"), "origin")
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    refused(run, store, "s", auth.get(options, RP.origin, rp_id="example.test"), "RP ID")
    # a challenge works once, from its session only, before it expires
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    response = auth.get(options, RP.origin)
    refused(run, store, "other", response, "unknown, used or expired challenge")
    assert run(webauthn.verify_authentication(store, RP, "s", response, T0)).account.id
    refused(run, store, "s", response, "unknown, used or expired challenge")
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    with pytest.raises(WebAuthnRefused, match="expired"):
        run(webauthn.verify_authentication(store, RP, "s", auth.get(options, RP.origin),
                                           T0 + webauthn.CEREMONY_TIMEOUT + 1))
    # the counter went back (a cloned authenticator)
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    refused(run, store, "s", auth.get(options, RP.origin, sign_count=1), "sign count")
    # bob's passkey for a challenge issued to alice
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    bob_id = next(iter(bob.credentials))
    refused(run, store, "s", bob.get(options, RP.origin, credential_id=bob_id),
            "another account")
    # a forged signature (the key is not the registered one)
    options = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    cred = auth.credentials[mine]
    cred.key, real = bob.credentials[bob_id].key, cred.key
    refused(run, store, "s", auth.get(options, RP.origin, sign_count=1000), "signature")
    cred.key = real
    refused(run, store, "s", "{" * 100_000, "too large")
    refused(run, store, "s", '{"id": 1}', "malformed")


def test_challenges_bounded_per_session(run: Run, store: SqlStore) -> None:
    auth = SoftAuthenticator()
    register(run, store, auth)
    first = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    for _ in range(4):
        last = run(webauthn.authentication_options(store, RP, "s", T0, ADDRESS))
    refused(run, store, "s", auth.get(first, RP.origin), "unknown, used or expired")
    assert run(webauthn.verify_authentication(store, RP, "s", auth.get(last, RP.origin), T0))
