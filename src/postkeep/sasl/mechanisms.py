"""SASL server mechanisms (RFC 4422), sans-IO, shared by SMTP submission, IMAP and the web.

One `ServerMechanism` per authentication exchange. The driver feeds it the client's (already
base64-decoded) data and acts on each `Step` it returns:

- `Challenge`: send it to the client (`encode_challenge`, e.g. SMTP "334 <b64>", IMAP "+ <b64>")
  and pass the client's next response to `respond()`;
- `NeedPassword` (PLAIN, LOGIN): verify the password itself, then call `password_checked(ok)`;
- `NeedSecrets` (CRAM-MD5, DIGEST-MD5, SCRAM-*): look up the account's stored secrets (the dict
  of `sasl.secrets.derive_secrets`, None for an unknown or disabled account), call `provide()`;
- `Success`: authenticated. When `final` is not None (SCRAM's server-final-message, DIGEST-MD5's
  rspauth) it must reach the client *before* success: send it as one more challenge and accept
  only an empty response, then report success (RFC 4422 §5 item 7, RFC 4954 §4 "334", IMAP "+");
- `Failure`: authentication failed; `reason` is for the log, never for the client.

Mechanisms: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login-00), CRAM-MD5 (RFC 2195),
DIGEST-MD5 (RFC 2831, qop=auth only; deprecated by RFC 6331, off unless configured),
SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) with their -PLUS variants over the channel
bindings tls-server-end-point (RFC 5929 §4) and tls-exporter (RFC 9266). GSSAPI (RFC 4752,
Kerberos V5) lives in `sasl.gssapi`: optional, only with a keytab and the `gssapi` package.

Every exchange uses fresh random nonces; an instance refuses to be driven further once it has
returned `Success` or `Failure`, and any out-of-sequence call fails the exchange. No method
raises on client data, however malformed. An empty initial response is treated as no initial
response (every mechanism here either needs data or is server-first).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as _random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from postkeep.sasl import secrets as ss

# -- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `data` to the client (the protocol base64-encodes it) and await its response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedPassword:
    """PLAIN/LOGIN: verify `password` for `authcid`, then call `password_checked(ok)`."""

    authcid: str
    authzid: str
    password: str


@dataclass(frozen=True, slots=True)
class NeedSecrets:
    """Look up `authcid`'s stored secrets (None if unknown/disabled) and call `provide()`."""

    authcid: str


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as `authcid`, acting as `authzid` ("" if none was asked for).

    `final`, when not None, must reach the client before success is reported.
    """

    authcid: str
    authzid: str
    final: bytes | None


@dataclass(frozen=True, slots=True)
class Failure:
    """Authentication failed; `reason` is for the log, never sent to the client verbatim."""

    reason: str


Step = Challenge | NeedPassword | NeedSecrets | Success | Failure

ALL_MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "DIGEST-MD5",
    "PLAIN",
    "LOGIN",
)
GSSAPI: Final = "GSSAPI"
"""RFC 4752. Not in `ALL_MECHANISMS` (the mechanisms that need no setup): created and offered
only with a keytab (`gssapi_keytab`) and the `gssapi` package. When offered it comes first:
it is the strongest (no password on the wire, mutual authentication), an administrator who
configured a keytab wants it used, and clients use it only while they hold a ticket."""
CLEARTEXT_MECHANISMS: frozenset[str] = frozenset({"PLAIN", "LOGIN"})  # only over TLS
CHANNEL_BINDING_TYPES: frozenset[str] = frozenset({"tls-server-end-point", "tls-exporter"})
DIGEST_SERV_TYPES: frozenset[str] = frozenset({"smtp", "imap"})

MAX_FIELD = 255  # octets of an authcid, authzid or password (RFC 4616 §2)
MAX_MESSAGE = 4096  # octets of one client message (RFC 2831 §2.1.2: under 4096)

# -- framing (RFC 4954 §4, RFC 9051 §6.2.2, RFC 4959) -----------------------------------------

ABORT: Final = object()
"""`decode_response` result for the client's "*": the client cancelled the exchange."""


class SaslMalformed(ValueError):
    """A client response that is not strict base64 (or is too long)."""


def _b64decode(data: bytes) -> bytes:
    """Strict, canonical base64 (RFC 4648 §4): alphabet, padding and unused bits checked."""
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SaslMalformed("not base64") from None
    if base64.b64encode(decoded) != data:
        raise SaslMalformed("not canonical base64")
    return decoded


def decode_response(
    line: bytes, *, max_length: int = 12288, initial: bool = False
) -> bytes | object:
    """Decode one client response line (CRLF already removed).

    b"*" is `ABORT` (RFC 4954 §4, RFC 9051 §6.2.2); with `initial` (an SMTP AUTH or IMAP SASL-IR
    initial response), b"=" is an empty response (RFC 4954 §4, RFC 4959 §3). Anything else
    must be strict base64 no longer than `max_length`, else `SaslMalformed`.
    """
    if len(line) > max_length:
        raise SaslMalformed("response too long")
    if line == b"*":
        return ABORT
    if initial and line == b"=":
        return b""
    return _b64decode(line)


def encode_challenge(data: bytes) -> bytes:
    """Base64 of a challenge; b"" stays b"" (SMTP then sends "334 ", IMAP "+ ")."""
    return base64.b64encode(data)


# -- the mechanism base ---------------------------------------------------------------------


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NEXT_STATE: dict[type, str] = {
    Challenge: "response",
    NeedPassword: "password",
    NeedSecrets: "secrets",
}


class ServerMechanism:
    """One server side of one SASL exchange (RFC 4422 §3). Subclasses implement the `_` hooks."""

    name: str = ""

    def __init__(self) -> None:
        self._state = "start"  # start | response | secrets | password | done

    @property
    def finished(self) -> bool:
        """Whether the exchange has ended (after `Success` or `Failure`)."""
        return self._state == "done"

    def start(self, initial: bytes | None) -> Step:
        """Begin; `initial` is the decoded initial response, or None if none was sent."""
        return self._run("start", self._start, initial or None)

    def respond(self, data: bytes) -> Step:
        """The client's next response (already base64-decoded)."""
        return self._run("response", self._respond, data)

    def provide(self, secrets: Mapping[str, str] | None) -> Step:
        """The account's stored secrets (`derive_secrets`), or None for an unknown account."""
        return self._run("secrets", self._provide, secrets)

    def password_checked(self, ok: bool) -> Step:
        """The driver's verdict on the password of `NeedPassword`."""
        return self._run("password", self._password_checked, ok)

    def _run(self, call: str, method: Callable[[Any], Step], arg: Any) -> Step:
        if self._state == "done":
            return Failure("exchange finished")
        if self._state != call:
            waiting = self._state
            self._state = "done"
            return Failure(f"unexpected {call} while waiting for {waiting}")
        try:
            step = method(arg)
        except _Fail as e:
            step = Failure(e.reason)
        self._state = _NEXT_STATE.get(type(step), "done")
        return step

    def _start(self, initial: bytes | None) -> Step:
        raise _Fail("not implemented")

    def _respond(self, data: bytes) -> Step:
        raise _Fail("no response expected")

    def _provide(self, secrets: Mapping[str, str] | None) -> Step:
        raise _Fail("no secrets expected")

    def _password_checked(self, ok: bool) -> Step:
        raise _Fail("no password check expected")


def _text(data: bytes, what: str, *, limit: int = MAX_FIELD, controls: bool = False) -> str:
    """UTF-8 text of at most `limit` octets, never with NUL; other controls only if allowed."""
    if len(data) > limit:
        raise _Fail(f"{what} too long")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail(f"{what} is not UTF-8") from None
    return _checked(text, what, controls=controls)


def _checked(text: str, what: str, *, controls: bool = False) -> str:
    if "\x00" in text or (not controls and any(c < " " or "\x7f" <= c <= "\x9f" for c in text)):
        raise _Fail(f"control character in {what}")
    return text


def _secret(secrets: Mapping[str, str] | None, key: str) -> str | None:
    value = secrets.get(key) if secrets is not None else None
    return value if isinstance(value, str) else None


# -- PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) --------------------------------


class Plain(ServerMechanism):
    """PLAIN (RFC 4616 §2): message = [authzid] NUL authcid NUL passwd."""

    name = "PLAIN"

    def __init__(self) -> None:
        super().__init__()
        self._authcid = self._authzid = ""

    def _start(self, initial: bytes | None) -> Step:
        return Challenge(b"") if initial is None else self._respond(initial)

    def _respond(self, data: bytes) -> Step:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            raise _Fail("PLAIN message must have exactly two NULs")
        authzid, authcid, passwd = parts
        if not authcid or not passwd:
            raise _Fail("empty authcid or password")
        self._authzid = _text(authzid, "authzid")
        self._authcid = _text(authcid, "authcid")
        return NeedPassword(self._authcid, self._authzid, _text(passwd, "password", controls=True))

    def _password_checked(self, ok: bool) -> Step:
        if ok is not True:
            return Failure("invalid credentials")
        return Success(self._authcid, self._authzid, None)


class Login(ServerMechanism):
    """LOGIN: challenges "Username:" then "Password:"; an initial response is the username."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._user: str | None = None

    def _start(self, initial: bytes | None) -> Step:
        return Challenge(b"Username:") if initial is None else self._respond(initial)

    def _respond(self, data: bytes) -> Step:
        if self._user is None:
            self._user = _text(data, "username")
            if not self._user:
                raise _Fail("empty username")
            return Challenge(b"Password:")
        password = _text(data, "password", controls=True)
        if not password:
            raise _Fail("empty password")
        return NeedPassword(self._user, "", password)

    def _password_checked(self, ok: bool) -> Step:
        if ok is not True or self._user is None:
            return Failure("invalid credentials")
        return Success(self._user, "", None)


# -- CRAM-MD5 (RFC 2195) ----------------------------------------------------------------------


def _is_hex(text: bytes | str, length: int) -> bool:
    digits = "0123456789abcdefABCDEF"
    s = text.decode("latin-1") if isinstance(text, bytes) else text
    return len(s) == length and all(c in digits for c in s)


class CramMd5(ServerMechanism):
    """CRAM-MD5 (RFC 2195 §2): challenge "<random.timestamp@hostname>", answer "user hexdigest".

    The digest is HMAC-MD5 (RFC 2104) keyed with the password; it is checked against the stored
    HMAC contexts (`sasl.secrets.verify_cram_md5`), in constant time, with a dummy secret when
    the account is unknown so that both paths do the same work.
    """

    name = "CRAM-MD5"

    def __init__(self, hostname: str, *, challenge: bytes | None = None) -> None:
        super().__init__()
        if challenge is None:
            rnd = _random.randbelow(10**20)
            challenge = f"<{rnd}.{int(time.time())}@{hostname}>".encode()
        self.challenge = challenge
        self._user = ""
        self._digest = ""

    def _start(self, initial: bytes | None) -> Step:
        if initial is not None:
            raise _Fail("CRAM-MD5 takes no initial response")
        return Challenge(self.challenge)

    def _respond(self, data: bytes) -> Step:
        if len(data) > MAX_FIELD + 33:
            raise _Fail("CRAM-MD5 response too long")
        user, sp, digest = data.rpartition(b" ")  # the username may contain spaces
        if not sp or not user:
            raise _Fail("CRAM-MD5 response is not 'user digest'")
        if not _is_hex(digest, 32):
            raise _Fail("CRAM-MD5 digest is not 32 hex digits")
        self._user = _text(user, "username")
        self._digest = digest.decode("ascii")
        return NeedSecrets(self._user)

    def _provide(self, secrets: Mapping[str, str] | None) -> Step:
        secret = _secret(secrets, "CRAM-MD5")
        ok = ss.verify_cram_md5(secret or "", self.challenge, self._digest)
        if secret is None:
            return Failure("unknown user or no CRAM-MD5 secret")
        if not ok:
            return Failure("invalid credentials")
        return Success(self._user, "", None)


# -- DIGEST-MD5 (RFC 2831) --------------------------------------------------------------------

_SEPARATORS = frozenset('()<>@,;:\\"/[]?={} \t')


def _token_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] not in _SEPARATORS and " " < text[i] < "\x7f":
        i += 1
    return i


def _skip_lws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def parse_directives(text: str) -> dict[str, str]:
    """Parse a DIGEST-MD5 directive list (RFC 2831 §7.1 #rule, §7.2 LWS).

    `key=token` or `key="quoted\\"string"`; keys lower-cased; empty list elements allowed;
    a repeated directive is an error (ValueError), as is anything unparseable.
    """
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and (text[i] in " \t\r\n,"):
            i += 1
        if i >= n:
            return out
        end = _token_end(text, i)
        if end == i:
            raise ValueError("directive name expected")
        key = text[i:end].lower()
        i = _skip_lws(text, end)
        if i >= n or text[i] != "=":
            raise ValueError("'=' expected")
        i = _skip_lws(text, i + 1)
        if i < n and text[i] == '"':
            chars: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    i += 1
                    if i >= n:
                        raise ValueError("unterminated quoted string")
                    c = text[i]
                chars.append(c)
                i += 1
            value = "".join(chars)
        else:
            end = _token_end(text, i)
            value = text[i:end]
            i = end
        if key in out:
            raise ValueError(f"directive {key!r} repeated")
        out[key] = value
        i = _skip_lws(text, i)
        if i < n and text[i] != ",":
            raise ValueError("',' expected")


class DigestMd5(ServerMechanism):
    """DIGEST-MD5 (RFC 2831 §2.1), server side, qop=auth, no subsequent authentication.

    The challenge offers no realm: the stored H(A1) base uses realm = the address's domain, so
    the client's realm must equal the domain (lower case) of its username ("" for a username
    without "@", which is also what an omitted realm means). Checked too: our nonce echoed,
    nc=00000001, qop=auth, digest-uri "<serv-type>/<host>[/<serv-name>]" with serv-type in
    `serv_types` and host one of `hosts` (default: the hostname). On success `final` is
    "rspauth=<hex>" (§2.1.3), to be answered by an empty response.
    """

    name = "DIGEST-MD5"

    def __init__(
        self,
        hostname: str,
        *,
        nonce: str | None = None,
        serv_types: Collection[str] = DIGEST_SERV_TYPES,
        hosts: Collection[str] = (),
    ) -> None:
        super().__init__()
        self.nonce = nonce if nonce is not None else _random.token_urlsafe(24)
        self._serv_types = frozenset(serv_types)
        self._hosts = frozenset(h.lower() for h in (hostname, *hosts))
        self._fields: dict[str, str] = {}
        self._user = self._authzid = ""

    def challenge(self) -> bytes:
        return f'nonce="{self.nonce}",qop="auth",charset=utf-8,algorithm=md5-sess'.encode()

    def _start(self, initial: bytes | None) -> Step:
        if initial is not None:
            raise _Fail("DIGEST-MD5 subsequent authentication is not supported")
        return Challenge(self.challenge())

    def _respond(self, data: bytes) -> Step:
        if len(data) >= MAX_MESSAGE:
            raise _Fail("digest-response too long")
        try:
            d = parse_directives(data.decode("latin-1"))  # byte-transparent; see _decode
        except ValueError as e:
            raise _Fail(f"malformed digest-response: {e}") from None
        utf8 = "charset" in d
        if utf8 and d["charset"].lower() != "utf-8":
            raise _Fail("charset must be utf-8")
        for key in ("username", "nonce", "cnonce", "nc", "digest-uri", "response"):
            if key not in d:
                raise _Fail(f"{key} missing")
        user = self._decode(d["username"], "username", utf8)
        realm = self._decode(d.get("realm", ""), "realm", utf8)
        if not user:
            raise _Fail("empty username")
        if not hmac.compare_digest(d["nonce"].encode("latin-1"), self.nonce.encode()):
            raise _Fail("nonce mismatch")
        for key in ("cnonce", "digest-uri"):
            value = d[key]
            if not value or not value.isascii() or not value.isprintable():
                raise _Fail(f"malformed {key}")
        if not _is_hex(d["nc"], 8) or int(d["nc"], 16) != 1:
            raise _Fail("nc must be 00000001")
        if d.setdefault("qop", "auth") != "auth":
            raise _Fail("qop must be auth")
        if not _is_hex(d["response"], 32):
            raise _Fail("malformed response")
        uri = d["digest-uri"].split("/")
        if len(uri) not in (2, 3) or uri[0] not in self._serv_types or not all(uri):
            raise _Fail("digest-uri not for a service of ours")
        if uri[1].lower() not in self._hosts:
            raise _Fail("digest-uri not for this host")
        if realm != ss.address_domain(user):
            raise _Fail("realm is not the domain of the username")
        authzid = d.get("authzid")
        if authzid is not None:
            authzid = self._decode(authzid, "authzid", True)
            if not authzid:
                raise _Fail("empty authzid")  # RFC 2831 §2.1.2: MUST NOT be empty
        self._fields = d
        self._user, self._authzid = user, authzid or ""
        return NeedSecrets(user)

    @staticmethod
    def _decode(value: str, what: str, utf8: bool) -> str:
        """A value parsed from latin-1: back to its bytes, then UTF-8 if the charset says so."""
        if utf8:
            return _text(value.encode("latin-1"), what)
        if len(value) > MAX_FIELD:
            raise _Fail(f"{what} too long")
        return _checked(value, what)

    def _provide(self, secrets: Mapping[str, str] | None) -> Step:
        secret = _secret(secrets, "DIGEST-MD5")
        try:
            base = ss.parse_digest_md5_secret(secret or "")
            known = True
        except ValueError:
            base, known = os.urandom(16), False
        d = self._fields

        def value(rspauth: bool) -> bytes:
            return ss.digest_md5_response(
                base, nonce=self.nonce, cnonce=d["cnonce"], nc=d["nc"], qop="auth",
                digest_uri=d["digest-uri"], authzid=self._authzid or None, rspauth=rspauth,
            ).encode()

        ok = hmac.compare_digest(value(False), d["response"].lower().encode())
        if not known:
            return Failure("unknown user or no DIGEST-MD5 secret")
        if not ok:
            return Failure("invalid credentials")
        return Success(self._user, self._authzid, b"rspauth=" + value(True))


# -- SCRAM (RFC 5802, RFC 7677) -----------------------------------------------------------------

_FAKE_SALT_KEY = os.urandom(32)  # unknown users get a stable per-process fake salt (RFC 5802 §5.1)


def _saslname(value: str, what: str) -> str:
    """Unescape a saslname (RFC 5802 §5.1: "=2C" is ",", "=3D" is "=", no other "=")."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            esc = value[i + 1 : i + 3]
            if esc not in ("2C", "3D"):
                raise _Fail(f"bad escape in {what}")
            out.append("," if esc == "2C" else "=")
            i += 3
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    if not text or len(text.encode()) > MAX_FIELD:
        raise _Fail(f"empty or too long {what}")
    return text


def _check_extensions(attrs: Sequence[str]) -> None:
    for attr in attrs:
        if len(attr) < 2 or attr[1] != "=" or not ("a" <= attr[0].lower() <= "z"):
            raise _Fail("malformed SCRAM attribute")


def _scram_b64(value: str, what: str) -> bytes:
    try:
        return _b64decode(value.encode("ascii"))
    except (SaslMalformed, UnicodeEncodeError):
        raise _Fail(f"{what} is not base64") from None


class Scram(ServerMechanism):
    """SCRAM-SHA-1 / SCRAM-SHA-256 and their -PLUS variants, server side (RFC 5802 §5, §6).

    gs2 header (§7): "p=<type>" needs a -PLUS mechanism and that binding in `channel_bindings`;
    "y" fails on -PLUS, and on any SCRAM when we offered a -PLUS mechanism (downgrade, §6);
    "n" is refused on -PLUS. "a=<authzid>" becomes `Success.authzid`. The username is unescaped
    and SASLprep'd as a query string (RFC 4013) and is the `authcid`. An unknown account gets a
    plausible server-first-message (stable fake salt) and fails at the proof. `nonce` (the
    server's part) is injectable for tests only.
    """

    def __init__(
        self,
        name: str,
        *,
        channel_bindings: Mapping[str, bytes] | None = None,
        plus_offered: bool | None = None,
        nonce: str | None = None,
        fake_iterations: int = ss.SCRAM_MIN_ITERATIONS,
    ) -> None:
        super().__init__()
        self._base = name.removesuffix("-PLUS")
        if self._base not in ss.SCRAM_HASHES:
            raise ValueError(f"not a SCRAM mechanism: {name!r}")
        self.name = name
        self._plus = name.endswith("-PLUS")
        self._hash = ss.SCRAM_HASHES[self._base]
        self._cb = _usable_bindings(channel_bindings)
        self._plus_offered = bool(self._cb) if plus_offered is None else plus_offered
        self._snonce = nonce if nonce is not None else _random.token_urlsafe(24)
        self._fake_iterations = fake_iterations
        self._final_expected = False
        self._cbind_input = b""
        self._bare = self._server_first = self._nonce = ""
        self._user = self._authzid = ""
        self._secret: ss.ScramSecret | None = None

    def _start(self, initial: bytes | None) -> Step:
        return Challenge(b"") if initial is None else self._respond(initial)

    def _respond(self, data: bytes) -> Step:
        text = _text(data, "SCRAM message", limit=MAX_MESSAGE)
        return self._client_final(text) if self._final_expected else self._client_first(text)

    def _client_first(self, text: str) -> Step:
        header = text.split(",", 2)
        if len(header) != 3:
            raise _Fail("malformed gs2 header")
        flag, authz, bare = header
        cb_name: str | None = None
        if flag == "n":
            if self._plus:
                raise _Fail("-PLUS mechanism without channel binding")
        elif flag == "y":
            if self._plus:
                raise _Fail("-PLUS mechanism without channel binding")
            if self._plus_offered:
                raise _Fail("client believes we lack channel binding: possible downgrade")
        elif flag.startswith("p="):
            cb_name = flag[2:]
            if not self._plus:
                raise _Fail("channel binding requested with a non-PLUS mechanism")
            if cb_name not in self._cb:
                raise _Fail("unsupported or unavailable channel binding type")
        else:
            raise _Fail("malformed gs2 flag")
        if authz:
            if not authz.startswith("a="):
                raise _Fail("malformed gs2 authzid")
            self._authzid = _saslname(authz[2:], "authzid")
        self._cbind_input = f"{flag},{authz},".encode() + (self._cb[cb_name] if cb_name else b"")
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise _Fail("mandatory SCRAM extension not supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise _Fail("malformed client-first-message")
        _check_extensions(attrs[2:])
        try:
            self._user = ss.saslprep(_saslname(attrs[0][2:], "username"), allow_unassigned=True)
        except ValueError as e:
            raise _Fail(f"username refused by SASLprep: {e}") from None
        if not self._user:
            raise _Fail("empty username")
        cnonce = attrs[1][2:]
        if not cnonce or not all("!" <= c <= "~" for c in cnonce):
            raise _Fail("malformed client nonce")
        self._bare = bare
        self._nonce = cnonce + self._snonce
        return NeedSecrets(self._user)

    def _provide(self, secrets: Mapping[str, str] | None) -> Step:
        value = _secret(secrets, self._base)
        try:
            self._secret = ss.parse_scram_secret(value, self._base) if value else None
        except ValueError:
            self._secret = None
        secret = self._secret or self._fake_secret()
        salt = base64.b64encode(secret.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={secret.iterations}"
        self._final_expected = True
        return Challenge(self._server_first.encode())

    def _fake_secret(self) -> ss.ScramSecret:
        size = hashlib.new(self._hash).digest_size
        label = f"{self._base}\x00{self._user}".encode()
        salt = hmac.digest(_FAKE_SALT_KEY, label, "sha256")[: ss.SALT_SIZE]
        return ss.ScramSecret(self._fake_iterations, salt, os.urandom(size), os.urandom(size))

    def _client_final(self, text: str) -> Step:
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise _Fail("client proof missing")
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise _Fail("malformed client-final-message")
        _check_extensions(attrs[2:])
        cbind = _scram_b64(attrs[0][2:], "channel binding")
        if not hmac.compare_digest(cbind, self._cbind_input):
            raise _Fail("channel binding mismatch")
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            raise _Fail("nonce mismatch")
        proof = _scram_b64(proof_b64, "client proof")
        secret = self._secret or self._fake_secret()
        if len(proof) != len(secret.stored_key):
            raise _Fail("client proof of the wrong size")
        auth_message = f"{self._bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(secret.stored_key, auth_message, self._hash)
        client_key = bytes(p ^ s for p, s in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), secret.stored_key)
        if self._secret is None:
            return Failure(f"unknown user or no {self._base} secret")
        if not ok:
            return Failure("invalid credentials")
        server_signature = hmac.digest(secret.server_key, auth_message, self._hash)
        return Success(self._user, self._authzid, b"v=" + base64.b64encode(server_signature))


def _usable_bindings(channel_bindings: Mapping[str, bytes] | None) -> dict[str, bytes]:
    if not channel_bindings:
        return {}
    return {
        k: v for k, v in channel_bindings.items()
        if k in CHANNEL_BINDING_TYPES and isinstance(v, bytes) and v
    }


# -- choosing ---------------------------------------------------------------------------------


def create(
    name: str,
    *,
    hostname: str,
    channel_bindings: Mapping[str, bytes] | None = None,
    plus_offered: bool | None = None,
    hosts: Sequence[str] = (),
    gssapi_keytab: str | None = None,
    gssapi_service: str = "smtp",
) -> ServerMechanism:
    """A fresh server mechanism for one exchange; ValueError for an unknown name.

    GSSAPI (RFC 4752) only with `gssapi_keytab` (the keytab of `<gssapi_service>/<hostname>`)
    and the `gssapi` package installed; otherwise it is an unknown name too.

    `hosts`: further names or addresses the server answers to (e.g. the IP the client
    connected to), accepted as the host of a DIGEST-MD5 digest-uri besides `hostname`.

    `plus_offered`: whether a -PLUS mechanism was advertised on this connection (decides
    whether a SCRAM "y" flag is a downgrade); by default, whether `channel_bindings` holds a
    supported binding, which is right when the -PLUS mechanisms are enabled.
    """
    key = name.upper()
    if key == "PLAIN":
        return Plain()
    if key == "LOGIN":
        return Login()
    if key == "CRAM-MD5":
        return CramMd5(hostname)
    if key == "DIGEST-MD5":
        return DigestMd5(hostname, hosts=hosts)
    if key in ALL_MECHANISMS and key.startswith("SCRAM-"):
        return Scram(key, channel_bindings=channel_bindings, plus_offered=plus_offered)
    if key == GSSAPI and gssapi_keytab:
        from postkeep.sasl import gssapi as sasl_gssapi  # optional; imports this module

        if sasl_gssapi.available():
            return sasl_gssapi.Gssapi(hostname, gssapi_keytab, service=gssapi_service)
    raise ValueError(f"unknown SASL mechanism {name!r}")


def plus_bindings(
    channel_bindings: Mapping[str, bytes] | None, tls_version: str | None = None
) -> dict[str, bytes]:
    """The channel bindings worth offering -PLUS mechanisms for on a connection.

    Over TLS 1.3 (`tls_version` "TLSv1.3", as `ssl.SSLObject.version()` names it) clients
    use tls-exporter (RFC 9266 §3: the default binding for TLS 1.3) and many, GNU SASL among
    them, no other: a -PLUS mechanism chosen there and then failing for want of that binding
    leaves them unable to log in, so there only tls-exporter counts. Over TLS 1.2 and
    earlier, tls-server-end-point (RFC 5929 §4) is used as well.
    """
    usable = _usable_bindings(channel_bindings)
    if tls_version == "TLSv1.3":
        return {k: v for k, v in usable.items() if k == "tls-exporter"}
    return usable


def advertised(
    enabled: Sequence[str],
    *,
    tls: bool,
    channel_bindings: Mapping[str, bytes] | None,
    gssapi_keytab: str | None = None,
    tls_version: str | None = None,
) -> list[str]:
    """The mechanisms to offer, in `ALL_MECHANISMS` order, filtered by `enabled`.

    PLAIN and LOGIN only with `tls` (RFC 4954 §4, RFC 8314); -PLUS only with TLS and a
    channel binding its clients will use on this connection's `tls_version` (see
    `plus_bindings`; RFC 5802 §6). GSSAPI (RFC 4752) first, when enabled, with a
    `gssapi_keytab` and the `gssapi` package importable (see `GSSAPI`).
    """
    wanted = {m.upper() for m in enabled}
    have_cb = tls and bool(plus_bindings(channel_bindings, tls_version))
    offered = [
        m for m in ALL_MECHANISMS
        if m in wanted
        and (tls or m not in CLEARTEXT_MECHANISMS)
        and (have_cb or not m.endswith("-PLUS"))
    ]
    if GSSAPI in wanted and gssapi_keytab:
        from postkeep.sasl import gssapi as sasl_gssapi  # optional; imports this module

        if sasl_gssapi.available():
            offered.insert(0, GSSAPI)
    return offered
