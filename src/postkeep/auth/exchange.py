"""The SASL exchange (RFC 4422 §3) of SMTP AUTH (RFC 4954) and IMAP AUTHENTICATE (RFC 9051
§6.2.2), with an outcome each protocol renders in its own replies.

Drives one `postkeep.sasl.mechanisms` mechanism per exchange: hands challenges to the driver,
feeds the client's responses back, and resolves what the mechanism needs: a password check
through the bounded argon2 verifier (`postkeep.auth.passwords`), or the account's stored
per-mechanism secrets. Server data that must reach the client with success (SCRAM's
server-final) goes as one more challenge whose answer must be empty (RFC 4954 §4, RFC 9051
§6.2.2).

Every step ends in an `AuthResult` whose `status` is one of `AuthStatus`: a challenge to send,
or ok / busy / malformed / cancelled / failed. What that looks like on the wire (`334`, `235`,
`454`, `501`, `535`; `+`, `OK`, `NO [UNAVAILABLE]`, `BAD`, `NO [AUTHENTICATIONFAILED]`), how
failures are logged and when a session is slowed down or closed belong to each driver.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from postkeep import log
from postkeep.addresses import address_key
from postkeep.auth.passwords import (
    AuthBusy,
    PasswordVerifier,
    authenticate_password,
    sasl_secrets_for,
)
from postkeep.sasl import mechanisms as sasl
from postkeep.store.api import Account, Store


class AuthStatus(enum.Enum):
    """Where an exchange stands after a step."""

    CHALLENGE = "challenge"  # send `AuthResult.challenge`, then feed the client's answer
    OK = "ok"  # authenticated as `AuthResult.account`
    BUSY = "busy"  # the password verifier is saturated: temporary, try again later
    MALFORMED = "malformed"  # the client's data is not base64: a protocol error, not a failure
    CANCELLED = "cancelled"  # the client sent "*" (RFC 4422 §3.5)
    FAILED = "failed"  # credentials refused; counts toward the session's failure limit


@dataclass(slots=True)
class AuthExchange:
    mechanism: sasl.ServerMechanism
    name: str
    user: str = ""
    account: Account | None = None
    pending: sasl.Success | None = None  # waiting for the empty answer to server-final


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One step's outcome: `challenge` (base64) to send while `status` is CHALLENGE; `account`
    when OK; `reason` for the log otherwise."""

    status: AuthStatus
    challenge: bytes = b""
    account: Account | None = None
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.status is not AuthStatus.CHALLENGE


_MALFORMED = AuthResult(AuthStatus.MALFORMED, reason="malformed base64")
_CANCELLED = AuthResult(AuthStatus.CANCELLED, reason="aborted")


class SaslAuthenticator:
    """Runs SASL exchanges for the listeners of one protocol.

    `scope` is the protocol ("smtp" or "imap"): it selects the app passwords that may log in
    and the GSSAPI service name (`smtp/HOST`, `imap/HOST`). `mechanisms`: the configured
    mechanisms, in the order they are offered.
    """

    def __init__(
        self,
        store: Store,
        verifier: PasswordVerifier,
        hostname: str,
        mechanisms: Sequence[str],
        *,
        gssapi_keytab: str | None = None,
        scope: str = "smtp",
    ) -> None:
        """`gssapi_keytab`: the resolved `gssapi_keytab` setting, None when GSSAPI is off."""
        self.store = store
        self.verifier = verifier
        self.hostname = hostname
        self.mechanisms = tuple(mechanisms)
        self.scope = scope
        self.gssapi_keytab = gssapi_keytab or None
        if sasl.GSSAPI in self.mechanisms and sasl.GSSAPI not in self.advertised(True, None):
            log.get(scope).warning(
                "GSSAPI (RFC 4752) is listed but not offered: %s",
                "the gssapi package is not installed (postkeep[gssapi])"
                if self.gssapi_keytab else f"{scope}: gssapi_keytab is not set",
            )

    def advertised(
        self,
        tls: bool,
        channel_bindings: Mapping[str, bytes] | None,
        tls_version: str | None = None,
    ) -> list[str]:
        """What to offer on a connection; no -PLUS over TLS 1.3 without tls-exporter
        (`sasl.plus_bindings`)."""
        return sasl.advertised(
            self.mechanisms, tls=tls, channel_bindings=channel_bindings,
            gssapi_keytab=self.gssapi_keytab, tls_version=tls_version,
        )

    async def start(
        self,
        mechanism: str,
        initial_response: str | None,
        channel_bindings: Mapping[str, bytes] | None,
        local_ip: str,
        tls_version: str | None = None,
    ) -> tuple[AuthExchange | None, AuthResult]:
        """Begin an exchange (`initial_response`: SASL-IR, RFC 4954 §4 / RFC 4959).

        `mechanism` must be one `advertised` on this connection (the drivers check): with
        the same `tls_version`, so that a SCRAM "y" flag is judged against what was offered.
        """
        initial: bytes | None = None
        if initial_response is not None:
            try:
                decoded = sasl.decode_response(initial_response.encode(), initial=True)
            except sasl.SaslMalformed:
                return None, _MALFORMED
            if decoded is sasl.ABORT:
                return None, _CANCELLED
            assert isinstance(decoded, bytes)
            initial = decoded
        offered = self.advertised(True, channel_bindings, tls_version)
        mech = sasl.create(
            mechanism,
            hostname=self.hostname,
            channel_bindings=channel_bindings,
            plus_offered=any(m.endswith("-PLUS") for m in offered),
            hosts=(local_ip,),
            gssapi_keytab=self.gssapi_keytab,
            gssapi_service=self.scope,
        )
        exchange = AuthExchange(mech, mechanism)
        return exchange, await self._advance(exchange, mech.start(initial))

    async def respond(self, exchange: AuthExchange, line: bytes) -> AuthResult:
        """Feed the client's answer to the last challenge."""
        try:
            decoded = sasl.decode_response(line)
        except sasl.SaslMalformed:
            return _MALFORMED
        if decoded is sasl.ABORT:
            return _CANCELLED
        assert isinstance(decoded, bytes)
        if exchange.pending is not None:
            if decoded:
                return _failed("unexpected data after server-final")
            return await self._succeeded(exchange, exchange.pending)
        return await self._advance(exchange, exchange.mechanism.respond(decoded))

    async def _advance(self, exchange: AuthExchange, step: sasl.Step) -> AuthResult:
        mech = exchange.mechanism
        while True:
            match step:
                case sasl.Challenge(data=data):
                    return AuthResult(AuthStatus.CHALLENGE, base64.b64encode(data))
                case sasl.NeedPassword(authcid=authcid, password=password):
                    exchange.user = authcid
                    try:
                        outcome = await authenticate_password(
                            self.store, authcid, password, self.scope, self.verifier
                        )
                    except AuthBusy:
                        return AuthResult(AuthStatus.BUSY, reason="verifier busy")
                    exchange.account = outcome.account if outcome.ok else None
                    step = mech.password_checked(outcome.ok)
                    if not outcome.ok and isinstance(step, sasl.Failure):
                        step = sasl.Failure(outcome.reason or step.reason)
                case sasl.NeedSecrets(authcid=authcid):
                    exchange.user = authcid
                    secrets = await sasl_secrets_for(self.store, authcid, self.scope)
                    step = mech.provide(secrets)
                case sasl.Success(final=final) as success:
                    if final is not None and exchange.pending is None:
                        exchange.pending = success
                        return AuthResult(AuthStatus.CHALLENGE, base64.b64encode(final))
                    return await self._succeeded(exchange, success)
                case sasl.Failure(reason=reason):
                    return _failed(reason)

    async def _succeeded(self, exchange: AuthExchange, success: sasl.Success) -> AuthResult:
        authcid = success.authcid
        exchange.user = exchange.user or authcid  # GSSAPI names the user only at success
        if success.authzid and address_key(success.authzid) != address_key(authcid):
            return _failed(f"may not act as {success.authzid!r}")
        account = exchange.account or await self.store.get_account(authcid)
        if account is None or account.disabled:
            return _failed("account vanished or disabled")
        return AuthResult(AuthStatus.OK, account=account)


def _failed(reason: str) -> AuthResult:
    return AuthResult(AuthStatus.FAILED, reason=reason)
