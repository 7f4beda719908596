"""SASL exchanges of SMTP AUTH (RFC 4954) and IMAP AUTHENTICATE (RFC 9051 §6.2.2).

Drives one `protocol.sasl` mechanism per AUTH command: sends 334 challenges, feeds the client's
responses back, resolves what the mechanism needs (a password check through the bounded argon2
verifier, or the account's stored per-mechanism secrets), and ends with 235 or 535. Server data
that must reach the client with success (SCRAM's server-final) goes as one more 334 challenge
whose answer must be empty (RFC 4954 §4).

Failures are logged in one line a fail2ban filter can match:
`auth failure ip=192.0.2.1 user=alice@example.test mechanism=PLAIN reason="..."`.
After `auth_delay_after` failures in a session each failure reply is delayed; at
`auth_close_after` the session ends with 421 4.7.0.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from postkeep import log
from postkeep.auth.passwords import (
    AuthBusy,
    PasswordVerifier,
    authenticate_password,
    sasl_secrets_for,
)
from postkeep.errors import Reply
from postkeep.net.tls import certificate_file
from postkeep.sasl import mechanisms as sasl
from postkeep.store.api import Account, Store

if TYPE_CHECKING:
    from postkeep.config import ImapConfig, SubmissionConfig

logger = log.get("smtp")

R_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R_AUTH_ABORTED = Reply(501, "5.0.0", "Authentication aborted")
R_AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data (base64 expected)")
R_AUTH_BUSY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
R_AUTH_TOO_MANY = Reply(421, "4.7.0", "Too many authentication failures, closing connection")



@dataclass(slots=True)
class AuthExchange:
    mechanism: sasl.ServerMechanism
    name: str
    user: str = ""
    account: Account | None = None
    pending: sasl.Success | None = None  # waiting for the empty answer to server-final


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What the driver must do next: `out` to send; `account` set on success; `close`."""

    out: bytes = b""
    reply: Reply | None = None
    account: Account | None = None
    identity: str | None = None
    finished: bool = True
    reason: str = ""


class SmtpAuthenticator:
    """Runs AUTH exchanges for one listener role.

    `scope` is the protocol ("smtp" or "imap"): it selects the app passwords that may log in
    and the GSSAPI service name (`smtp/HOST`, `imap/HOST`). Replies are SMTP `Reply` values;
    the IMAP driver maps them to tagged responses.
    """

    def __init__(
        self,
        store: Store,
        verifier: PasswordVerifier,
        hostname: str,
        cfg: SubmissionConfig | ImapConfig,
        *,
        gssapi_keytab: str | None = None,
        scope: str = "smtp",
    ) -> None:
        """`gssapi_keytab`: the resolved `gssapi_keytab` setting, None when GSSAPI is off."""
        self.store = store
        self.verifier = verifier
        self.hostname = hostname
        self.cfg = cfg
        self.scope = scope
        self.gssapi_keytab = gssapi_keytab or None
        if sasl.GSSAPI in cfg.sasl_mechanisms and sasl.GSSAPI not in self.advertised(True, None):
            logger.warning(
                "GSSAPI (RFC 4752) is listed but not offered: %s",
                "the gssapi package is not installed (postkeep[gssapi])"
                if self.gssapi_keytab else f"{scope}: gssapi_keytab is not set",
            )

    def advertised(self, tls: bool, channel_bindings: Mapping[str, bytes] | None) -> list[str]:
        return sasl.advertised(
            self.cfg.sasl_mechanisms, tls=tls, channel_bindings=channel_bindings,
            gssapi_keytab=self.gssapi_keytab,
        )

    async def start(
        self,
        mechanism: str,
        initial_response: str | None,
        channel_bindings: Mapping[str, bytes] | None,
        local_ip: str,
    ) -> tuple[AuthExchange | None, AuthResult]:
        initial: bytes | None = None
        if initial_response is not None:
            try:
                decoded = sasl.decode_response(initial_response.encode(), initial=True)
            except sasl.SaslMalformed:
                return None, AuthResult(reply=R_AUTH_MALFORMED, reason="malformed base64")
            if decoded is sasl.ABORT:
                return None, AuthResult(reply=R_AUTH_ABORTED, reason="aborted")
            assert isinstance(decoded, bytes)
            initial = decoded
        offered = self.advertised(True, channel_bindings)
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
        try:
            decoded = sasl.decode_response(line)
        except sasl.SaslMalformed:
            return AuthResult(reply=R_AUTH_MALFORMED, reason="malformed base64")
        if decoded is sasl.ABORT:
            return AuthResult(reply=R_AUTH_ABORTED, reason="aborted")
        assert isinstance(decoded, bytes)
        if exchange.pending is not None:
            if decoded:
                return await self._failed(exchange, "unexpected data after server-final")
            return await self._succeeded(exchange, exchange.pending)
        return await self._advance(exchange, exchange.mechanism.respond(decoded))

    async def _advance(self, exchange: AuthExchange, step: sasl.Step) -> AuthResult:
        mech = exchange.mechanism
        while True:
            match step:
                case sasl.Challenge(data=data):
                    return AuthResult(out=base64.b64encode(data), finished=False)
                case sasl.NeedPassword(authcid=authcid, password=password):
                    exchange.user = authcid
                    try:
                        outcome = await authenticate_password(
                            self.store, authcid, password, self.scope, self.verifier
                        )
                    except AuthBusy:
                        return AuthResult(reply=R_AUTH_BUSY, reason="verifier busy")
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
                        return AuthResult(out=base64.b64encode(final), finished=False)
                    return await self._succeeded(exchange, success)
                case sasl.Failure(reason=reason):
                    return await self._failed(exchange, reason)

    async def _succeeded(self, exchange: AuthExchange, success: sasl.Success) -> AuthResult:
        authcid = success.authcid
        exchange.user = exchange.user or authcid  # GSSAPI names the user only at success
        if success.authzid and success.authzid.lower() != authcid.lower():
            return await self._failed(exchange, f"may not act as {success.authzid!r}")
        account = exchange.account or await self.store.get_account(authcid)
        if account is None or account.disabled:
            return await self._failed(exchange, "account vanished or disabled")
        return AuthResult(reply=R_AUTH_OK, account=account, identity=account.address)

    async def _failed(self, exchange: AuthExchange, reason: str) -> AuthResult:
        return AuthResult(reply=R_AUTH_FAILED, reason=reason)

    def log_failure(self, ip: str, exchange: AuthExchange | None, mechanism: str,
                    reason: str) -> None:
        user = exchange.user if exchange is not None and exchange.user else "-"
        logger.warning(
            "auth failure ip=%s user=%s mechanism=%s reason=%s",
            ip, log.quote(user), mechanism, log.quote(reason),
        )

    async def failure_pause(self, failures: int) -> bool:
        """Delay after repeated failures; True when the session must be closed."""
        if failures >= self.cfg.auth_close_after:
            return True
        if failures >= self.cfg.auth_delay_after:
            await asyncio.sleep(self.cfg.auth_failure_delay)
        return False


def tls_server_end_point(cert_file: Path) -> bytes:
    """The tls-server-end-point channel binding of a certificate (RFC 5929 §4.1)."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.finalize()


class EndPointBindings:
    """The tls-server-end-point binding of each certificate a listener shows, computed once
    per certificate file (SNI can pick another than the default)."""

    def __init__(self, default_cert: Path) -> None:
        self.default = {"tls-server-end-point": tls_server_end_point(default_cert)}
        self._by_file: dict[Path, bytes] = {default_cert: self.default["tls-server-end-point"]}

    def of(self, writer: asyncio.StreamWriter) -> dict[str, bytes]:
        """The bindings of the connection behind `writer` ({} without TLS)."""
        ssl_object = writer.get_extra_info("ssl_object")
        cert = certificate_file(ssl_object.context) if ssl_object is not None else None
        if cert is None:
            return {}
        binding = self._by_file.get(cert)
        if binding is None:
            binding = self._by_file[cert] = tls_server_end_point(cert)
        return {"tls-server-end-point": binding}
