"""WebAuthn (W3C Web Authentication Level 3) passkeys and security keys: the stronger second
factor of the web login and a passwordless login of its own. The ceremonies' checks are
py_webauthn's (`webauthn`: §7.1 registration, §7.2 authentication); this module keeps the
state around them in the store and adds what the library leaves to the relying party.

* Relying party (§5.1.3, §5.4.2): id = the server's hostname, origin = ``https://HOST[:PORT]``
  (`RelyingParty.for_host`); the web listener builds one and passes it to every call.
* Challenges (§13.4.3): 32 random bytes, kept in the store (every worker process sees them)
  bound to the web session (its id hashed) and to the account, for CEREMONY_TIMEOUT seconds,
  and taken by the response that names them: a challenge works once, only from its session,
  and only for its ceremony.
* Registration (`registration_options`, `verify_registration`): attestation "none" asked for
  (the library still verifies a "packed" self-attestation if one comes), the account's
  credentials excluded; with `passwordless` a discoverable credential ("resident key") with
  user verification is required. The user handle (§5.4.3) is an opaque random per-account id
  (`Store.webauthn_user_handle`), never the address. The first passkey turns 2FA on (IMAP and
  SMTP take app passwords only) and brings recovery codes if the account has none left.
* Authentication (`authentication_options`, `verify_authentication`): as a second factor the
  account's credentials are listed (allowCredentials); passwordless, none are and the
  authenticator picks a discoverable one, whose user handle must be its account's (§7.2 step
  6) and which must have verified the user (UV). The signature counter must grow when either
  side counts (§6.1.1; the library refuses a regression) and is stored compare-and-set, so
  two logins racing with the same counter cannot both pass.

Responses are parsed only up to MAX_RESPONSE octets; every refusal raises `WebAuthnRefused`
with a reason for the caller's log line (the user learns only that it failed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from postkeep.auth.totp import new_recovery_codes
from postkeep.errors import AlreadyExists, StoreError
from postkeep.store.api import Account, Store, WebAuthnChallenge, WebAuthnCredential

CEREMONY_TIMEOUT = 300  # seconds a challenge stays valid (and the browser's timeout hint)
CHALLENGE_SIZE = 32  # §13.4.3: at least 16 random bytes
MAX_RESPONSE = 64 << 10  # octets of a credential response (JSON) we parse at all
_PARSE_ERRORS = (WebAuthnException, ValueError, TypeError, KeyError, RecursionError)


class WebAuthnRefused(Exception):
    """A ceremony failed; `reason` is for the log (tell the user only that it failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the credentials are for: `id` the RP ID (a hostname), `origin` the web origin the
    browser reports in clientDataJSON, `name` what authenticators show."""

    id: str
    origin: str
    name: str

    @classmethod
    def for_host(cls, hostname: str, port: int = 443, name: str | None = None) -> RelyingParty:
        """The RP of the web listener at https://`hostname`:`port` (443 left out)."""
        host = hostname.rstrip(".").lower()
        origin = f"https://{host}" if port == 443 else f"https://{host}:{port}"
        return cls(host, origin, name or host)


@dataclass(frozen=True, slots=True)
class Registered:
    """A credential registered; `recovery_codes` are new ones to show once (the account had
    none left), else empty."""

    credential: WebAuthnCredential
    recovery_codes: list[str]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A successful assertion: the account, the credential used, and whether it was a
    passwordless login (no account was named beforehand)."""

    account: Account
    credential: WebAuthnCredential
    passwordless: bool


def session_hash(session: str) -> bytes:
    """What the store keeps of a web session id (32 bytes)."""
    return hashlib.sha256(b"webauthn-session\x00" + session.encode()).digest()


def _transports(names: list[AuthenticatorTransport] | None) -> list[str]:
    return [t.value for t in names or ()]


def _descriptors(creds: list[WebAuthnCredential]) -> list[PublicKeyCredentialDescriptor]:
    out = []
    for c in creds:
        kinds = [AuthenticatorTransport(t) for t in c.transports
                 if t in AuthenticatorTransport._value2member_map_]
        out.append(PublicKeyCredentialDescriptor(id=c.credential_id, transports=kinds or None))
    return out


async def _account(store: Store, address: str) -> Account:
    account = await store.get_account(address)
    if account is None or account.disabled:
        raise WebAuthnRefused("unknown or disabled account")
    return account


async def _challenge(store: Store, session: str, purpose: str, client_data_json: bytes,
                     now: float) -> WebAuthnChallenge:
    try:
        challenge = parse_client_data_json(client_data_json).challenge
    except _PARSE_ERRORS:
        raise WebAuthnRefused("malformed clientDataJSON") from None
    taken = await store.take_webauthn_challenge(challenge, purpose, session_hash(session), now)
    if taken is None:
        raise WebAuthnRefused("unknown, used or expired challenge")
    return taken


async def registration_options(store: Store, rp: RelyingParty, address: str, session: str,
                               now: float, *, passwordless: bool = True) -> str:
    """The PublicKeyCredentialCreationOptions (JSON) for `navigator.credentials.create()`."""
    account = await _account(store, address)
    handle = await store.webauthn_user_handle(address)
    existing = await store.list_webauthn_credentials(address)
    selection = AuthenticatorSelectionCriteria(
        resident_key=ResidentKeyRequirement.REQUIRED if passwordless
        else ResidentKeyRequirement.DISCOURAGED,
        user_verification=UserVerificationRequirement.REQUIRED if passwordless
        else UserVerificationRequirement.PREFERRED,
    )
    options = generate_registration_options(
        rp_id=rp.id, rp_name=rp.name, user_name=account.address, user_id=handle,
        user_display_name=account.address, challenge=os.urandom(CHALLENGE_SIZE),
        timeout=CEREMONY_TIMEOUT * 1000, attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=selection, exclude_credentials=_descriptors(existing),
    )
    await store.put_webauthn_challenge(
        WebAuthnChallenge(options.challenge, "register", account.id, now + CEREMONY_TIMEOUT),
        session_hash(session), now)
    return options_to_json(options)


async def verify_registration(store: Store, rp: RelyingParty, address: str, session: str,
                              response: str, name: str, now: float) -> Registered:
    """Check the browser's answer to `registration_options` and keep the credential."""
    if len(response) > MAX_RESPONSE:
        raise WebAuthnRefused("response too large")
    try:
        credential: RegistrationCredential = parse_registration_credential_json(response)
    except _PARSE_ERRORS:
        raise WebAuthnRefused("malformed registration response") from None
    account = await _account(store, address)
    taken = await _challenge(store, session, "register",
                             credential.response.client_data_json, now)
    if taken.account_id != account.id:
        raise WebAuthnRefused("challenge issued to another account")
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=taken.challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin)
    except _PARSE_ERRORS as exc:
        raise WebAuthnRefused(f"registration refused: {exc}") from None
    try:
        stored = await store.add_webauthn_credential(
            address, verified.credential_id, verified.credential_public_key,
            verified.sign_count, _transports(credential.response.transports), name, now)
    except AlreadyExists:
        raise WebAuthnRefused("credential registered already") from None
    except StoreError as exc:
        raise WebAuthnRefused(str(exc)) from None
    codes: list[str] = []
    if not (await store.two_factor_status(address)).recovery_codes_left:
        codes = new_recovery_codes()
        await store.set_recovery_codes(address, codes, now)
    return Registered(stored, codes)


async def authentication_options(store: Store, rp: RelyingParty, session: str, now: float,
                                 address: str | None = None) -> str:
    """The PublicKeyCredentialRequestOptions (JSON) for `navigator.credentials.get()`: for
    `address`'s credentials (second factor), or for any discoverable one (passwordless)."""
    allow: list[PublicKeyCredentialDescriptor] = []
    account_id = None
    if address is not None:
        account = await _account(store, address)
        creds = await store.list_webauthn_credentials(address)
        if not creds:
            raise WebAuthnRefused("the account has no passkey")
        allow, account_id = _descriptors(creds), account.id
    options = generate_authentication_options(
        rp_id=rp.id, challenge=os.urandom(CHALLENGE_SIZE), timeout=CEREMONY_TIMEOUT * 1000,
        allow_credentials=allow,
        user_verification=UserVerificationRequirement.PREFERRED if address is not None
        else UserVerificationRequirement.REQUIRED,
    )
    await store.put_webauthn_challenge(
        WebAuthnChallenge(options.challenge, "authenticate", account_id,
                          now + CEREMONY_TIMEOUT),
        session_hash(session), now)
    return options_to_json(options)


async def verify_authentication(store: Store, rp: RelyingParty, session: str, response: str,
                                now: float) -> Authenticated:
    """Check the browser's answer to `authentication_options`; the account it proves."""
    if len(response) > MAX_RESPONSE:
        raise WebAuthnRefused("response too large")
    try:
        credential: AuthenticationCredential = parse_authentication_credential_json(response)
    except _PARSE_ERRORS:
        raise WebAuthnRefused("malformed authentication response") from None
    taken = await _challenge(store, session, "authenticate",
                             credential.response.client_data_json, now)
    found = await store.find_webauthn_credential(credential.raw_id)
    if found is None:
        raise WebAuthnRefused("unknown credential")
    stored, account, handle = found
    passwordless = taken.account_id is None
    if not passwordless and taken.account_id != account.id:
        raise WebAuthnRefused("credential of another account")
    user_handle = credential.response.user_handle
    if passwordless and user_handle is None:
        raise WebAuthnRefused("no user handle (not a discoverable credential)")
    if user_handle is not None and not hmac.compare_digest(user_handle, handle):
        raise WebAuthnRefused("user handle is not the credential's account")
    if account.disabled:
        raise WebAuthnRefused("account disabled")
    try:
        verified = verify_authentication_response(
            credential=credential, expected_challenge=taken.challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin, credential_public_key=stored.public_key,
            credential_current_sign_count=stored.sign_count,
            require_user_verification=passwordless)
    except _PARSE_ERRORS as exc:
        raise WebAuthnRefused(f"assertion refused: {exc}") from None
    if not await store.record_webauthn_use(stored.id, stored.sign_count,
                                           verified.new_sign_count, now):
        raise WebAuthnRefused("signature counter moved meanwhile (a concurrent login)")
    return Authenticated(account, stored, passwordless)

