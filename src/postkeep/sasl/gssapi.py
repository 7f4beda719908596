"""SASL GSSAPI (RFC 4752): Kerberos V5 single sign-on, server side, sans-IO.

An optional mechanism: it needs the `gssapi` package (`pip install postkeep[gssapi]`, built
against MIT Kerberos) and a keytab holding the key of the service principal
`<service>/<hostname>` (for submission `smtp/<server.hostname>`). `sasl.create()` and
`sasl.advertised()` only offer it when both are there (`available()`).

The exchange (RFC 4752 §3.2, the server side; §3.1 is the client's):

1. The client's GSS-API tokens (the first may be the SASL initial response; without one the
   server sends an empty challenge) go to GSS_Accept_sec_context with acceptor credentials
   for `<service>@<hostname>` from the keytab, restricted to the Kerberos V5 mechanism
   (RFC 4121). While the context needs more, each output token is a challenge.
2. Once established: a final output token (the AP-REP of mutual authentication) is one more
   challenge, whose answer should carry no data (RFC 4752 §3.2); whatever it carries is
   ignored, as Dovecot and Cyrus SASL do.
3. The server sends GSS_Wrap (conf_flag FALSE) of 4 octets: the security layers it supports,
   only "no security layer" (bit mask 1), and its maximum buffer size, 0 since it supports no
   layer (RFC 4752 §3.2, §3.3).
4. The client answers GSS_Wrap of: its chosen layer (must be exactly 1, "no security layer"),
   its maximum buffer size (meaningless without a layer, so ignored) and the authorization
   identity (UTF-8, may be empty). Then `Success`; no server data follows (no `final`).

Principal to account (the mapping rule): the initiator's Kerberos principal `name@REALM` logs
in as the account `name@realm`, the realm lower-cased and the name kept as it is (the store
looks addresses up as for every other mechanism). So `alice@EXAMPLE.TEST` is the account
`alice@example.test`: each mail domain needs a Kerberos realm of the same name. Refused are
principals with more than one component (`alice/admin@…`, `host/x@…`: not users), names the
GSS-API displays with escapes (`\\@`, `\\/`), the anonymous principal and control
characters. Whether the account exists and is enabled is the driver's check, as for every
mechanism (an unknown one is a 535 like a wrong password); a non-empty authzid other than the
account itself is refused there too (RFC 4752 §3.2 lets the server decide who may act as whom).

Every GSS-API error (a bad or replayed token, a ticket for another service, an unreadable
keytab) ends the exchange with `Failure` carrying the library's message. The GSS-API calls
are local (keytab, replay cache), never network round trips, so they are made inline.
"""

from __future__ import annotations

import functools
from typing import Any

from postkeep.sasl.mechanisms import (
    GSSAPI,
    MAX_FIELD,
    Challenge,
    ServerMechanism,
    Step,
    Success,
    _checked,
    _Fail,
    _text,
)

try:  # the optional extra: postkeep[gssapi]
    import gssapi as _gssapi
    import gssapi.exceptions as _gss_errors
except ImportError:  # pragma: no cover - depends on the installation
    _gssapi = None
    _gss_errors = None

LAYER_NONE = 0x01  # RFC 4752 §3.1, §3.3 bit masks: 1 none, 2 integrity, 4 confidentiality
LAYERS_OFFERED = bytes([LAYER_NONE, 0, 0, 0])  # no layer, maximum buffer size 0 (§3.2)


@functools.cache
def available() -> bool:
    """Whether the `gssapi` package imports and can handle Kerberos V5 (RFC 4121)."""
    if _gssapi is None:
        return False
    try:
        return _gssapi.MechType.kerberos in _gssapi.raw.indicate_mechs()
    except Exception:  # a broken GSS-API library: treat it as absent
        return False


def principal_to_address(principal: str) -> str:
    """The account address of a Kerberos principal `name@REALM`: `name@realm` (see above).

    Raises ValueError (with the reason) for a principal that does not map to an account.
    """
    if "\\" in principal:
        raise ValueError("principal with escaped characters")
    name, at, realm = principal.rpartition("@")
    if not at or not name or not realm or "@" in name:
        raise ValueError("principal is not name@REALM")
    if "/" in name:
        raise ValueError("principal with more than one component is not a user")
    address = f"{name}@{realm.lower()}"
    if len(address.encode()) > MAX_FIELD:
        raise ValueError("principal too long")
    return address


class Gssapi(ServerMechanism):
    """The GSSAPI mechanism (RFC 4752 §3.2) for one exchange, accepting as `service@hostname`.

    `keytab`: path of the keytab with the service principal's keys (MIT credential store,
    gss_acquire_cred_from); the acceptor credentials are restricted to that one principal, so
    a ticket for any other service, even one in the same keytab, fails.
    """

    name = GSSAPI

    def __init__(self, hostname: str, keytab: str, *, service: str = "smtp") -> None:
        super().__init__()
        if _gssapi is None:
            raise ValueError("GSSAPI needs the 'gssapi' package (postkeep[gssapi])")
        self.acceptor = f"{service}@{hostname}"
        self._keytab = keytab
        self._ctx: Any = None
        self._phase = "context"  # context | ack | layer
        self._authcid = ""

    def _start(self, initial: bytes | None) -> Step:
        return Challenge(b"") if initial is None else self._respond(initial)

    def _respond(self, data: bytes) -> Step:
        assert _gssapi is not None and _gss_errors is not None
        try:
            if self._phase == "context":
                return self._accept(data)
            if self._phase == "ack":
                return self._offer_layers()
            return self._choose_layer(data)
        except (_gss_errors.GSSError, _gss_errors.GeneralError) as e:
            raise _Fail(f"GSS-API: {' '.join(str(e).split())}") from None

    def _accept(self, token: bytes) -> Step:
        """RFC 4752 §3.2: one GSS_Accept_sec_context call per client token."""
        assert _gssapi is not None
        if not token:
            raise _Fail("empty GSS-API token")
        if self._ctx is None:
            creds = _gssapi.Credentials(
                name=_gssapi.Name(self.acceptor, _gssapi.NameType.hostbased_service),
                usage="accept",
                mechs=[_gssapi.MechType.kerberos],
                store={"keytab": self._keytab},
            )
            self._ctx = _gssapi.SecurityContext(creds=creds, usage="accept")
        ctx = self._ctx
        out = ctx.step(token)
        if not ctx.complete:  # also raises the error `step` deferred (python-gssapi)
            if not out:
                raise _Fail("GSS-API context incomplete without a token to send")
            return Challenge(out)
        self._authcid = self._account(ctx)
        if out:
            self._phase = "ack"
            return Challenge(out)
        return self._offer_layers()

    def _account(self, ctx: Any) -> str:
        assert _gssapi is not None
        if ctx.mech != _gssapi.MechType.kerberos:
            raise _Fail("not a Kerberos V5 context")
        if _gssapi.RequirementFlag.anonymity in ctx.actual_flags:
            raise _Fail("anonymous initiator")
        principal = _checked(str(ctx.initiator_name), "principal")
        try:
            return principal_to_address(principal)
        except ValueError as e:
            raise _Fail(f"{e}: {principal!r}") from None

    def _offer_layers(self) -> Step:
        """RFC 4752 §3.2, §3.3: wrapped bit mask "no security layer", maximum size 0."""
        self._phase = "layer"
        return Challenge(self._ctx.wrap(LAYERS_OFFERED, False).message)

    def _choose_layer(self, data: bytes) -> Step:
        """RFC 4752 §3.2: the client's wrapped choice, maximum size and authzid."""
        message = self._ctx.unwrap(data).message
        if len(message) < 4:
            raise _Fail("security layer choice shorter than 4 octets")
        if message[0] != LAYER_NONE:
            raise _Fail(f"client chose security layer {message[0]:#04x}, only none offered")
        authzid = _text(message[4:], "authzid")
        self._phase = "done"
        return Success(self._authcid, authzid, None)
