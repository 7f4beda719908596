"""TLS contexts for every listener, per-host certificates (SNI), certificate checks, and the
log reason of a failed TLS connection (`network_error`).

Policy (BCP 195 = RFC 9325 §3-§4; every listener, STARTTLS and implicit TLS alike):

- TLS 1.2 and 1.3 only (RFC 9325 §3.1.1; RFC 8996 deprecates 1.0 and 1.1).
- TLS 1.2: ECDHE key exchange with AEAD ciphers only, AES-GCM first, then ChaCha20-Poly1305
  (RFC 9325 §4.1-§4.2): no CBC, static RSA, DHE, 3DES, RC4, export, NULL or anonymous suites.
  TLS 1.3 suites are all AEAD with (EC)DHE; OpenSSL's defaults stay.
- Server cipher preference (RFC 9325 §4.2).
- Key-exchange groups X25519, P-256, P-384, in that order (RFC 9325 §4.2.1; RFC 8446 §9.1
  makes P-256 mandatory, X25519 recommended). Python before 3.15 has no `set_groups` and its
  `set_ecdh_curve` pins a single group for TLS 1.2 *and* 1.3 on OpenSSL 3; so the list is set
  with OpenSSL's `SSL_CTX_set1_groups_list` (see `_set_groups`), falling back to P-256 alone,
  which every TLS 1.3 client must support.
- No compression (RFC 9325 §3.3, CRIME), no renegotiation (§3.5; TLS 1.3 has none).
- No session tickets (RFC 9325 §3.4): TLS 1.2 tickets (RFC 5077) are encrypted with one key kept
  in memory for the life of the process, so whoever gets that key can decrypt every recorded
  session that used a ticket: no forward secrecy. `OP_NO_TICKET` turns them off; TLS 1.2 then
  resumes by session ID from OpenSSL's server-side cache (300 s). TLS 1.3 tickets are off too
  (`num_tickets = 0`): OpenSSL's stateful ones would resume with a fresh (EC)DHE (psk_dhe_ke,
  RFC 8446 §4.2.9) and keep forward secrecy, but they arrive after the handshake and make
  scanners' resumption checks (testssl 3.0.8) vary from run to run, while a full TLS 1.3
  handshake with X25519 and ECDSA costs well under a millisecond: mail sessions gain little.

Certificates: the default pair `[tls] cert_file/key_file`, and per-host pairs
`[[tls.certificates]]` chosen by the client's SNI (RFC 6066 §3); exact names win over wildcards
`*.example.org` (one left-most label, RFC 6125 §6.4.3); no or unknown SNI gets the default.
Expired, not yet valid, mismatched or encrypted keys are refused at startup (`ConfigError`
with the config key path); `check_tls` reports also what only warrants a warning.

Channel bindings: `EndPointBindings` gives each connection the tls-server-end-point binding
(RFC 5929 §4.1) of the certificate it was shown, for the SCRAM-*-PLUS mechanisms of every
protocol that authenticates (RFC 5802 §6, RFC 7677).
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import ipaddress
import os
import ssl
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postkeep import log
from postkeep.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    from postkeep.config import Config

TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
])
KEY_EXCHANGE_GROUPS = "X25519:P-256:P-384"
FALLBACK_GROUP = "prime256v1"  # P-256: what `set_ecdh_curve` can pin when nothing else works
EXPIRY_WARNING = datetime.timedelta(days=14)
MIN_RSA_BITS = 2048  # RFC 9325 §4.5
MIN_EC_BITS = 256

# The certificate file behind each context `server_context` made (see `certificate_file`).
_CERT_FILES: weakref.WeakKeyDictionary[ssl.SSLContext, Path] = weakref.WeakKeyDictionary()


# -- the policy ---------------------------------------------------------------------------------


def policy_context() -> ssl.SSLContext:
    """A server context with the policy above and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET | ssl.OP_SINGLE_ECDH_USE
    ctx.num_tickets = 0
    _set_groups(ctx)
    return ctx


def _set_groups(ctx: ssl.SSLContext) -> str:
    """Limit key exchange to `KEY_EXCHANGE_GROUPS`; returns the groups now in effect.

    Python 3.15 adds `SSLContext.set_groups`. Before it, CPython's `_ssl` exposes only
    `set_ecdh_curve`, which on OpenSSL 3 calls `SSL_CTX_set1_groups` with one group, for both
    TLS versions. So on CPython this calls `SSL_CTX_set1_groups_list` (a macro for
    `SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0, list)`) from the libssl `_ssl` is linked
    against, on the `SSL_CTX *` that follows the object header in CPython's `PySSLContext`.
    That pointer is checked first: `SSL_CTX_get_options` on it must equal `ctx.options`.
    """
    setter = getattr(ctx, "set_groups", None)
    if setter is not None:
        setter(KEY_EXCHANGE_GROUPS)
        return KEY_EXCHANGE_GROUPS
    if _ctypes_set_groups(ctx, KEY_EXCHANGE_GROUPS):
        return KEY_EXCHANGE_GROUPS
    ctx.set_ecdh_curve(FALLBACK_GROUP)
    return "P-256"


_SSL_CTRL_SET_GROUPS_LIST = 92  # openssl/ssl.h, 1.1.1 and 3.x


@functools.cache
def _libssl() -> ctypes.CDLL | None:
    """The libssl/libcrypto that CPython's `_ssl` uses, with the three functions typed."""
    if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (1, 1, 1):
        return None
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # dlsym also searches its libssl and libcrypto
        get_options, ctrl = lib.SSL_CTX_get_options, lib.SSL_CTX_ctrl
        lib.ERR_clear_error.restype = None
    except (AttributeError, OSError):  # _ssl built in, or the symbols not reachable
        return None
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    return lib


def _ctypes_set_groups(ctx: ssl.SSLContext, groups: str) -> bool:
    lib = _libssl()
    if lib is None:
        return False
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or lib.SSL_CTX_get_options(pointer) != ctx.options:
        return False
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) == 1:
        return True
    lib.ERR_clear_error()  # leave no stale error for the next `ssl` call to misreport
    return False


def server_context(cert_file: Path, key_file: Path, *, prefix: str = "tls") -> ssl.SSLContext:
    """A policy context serving `cert_file`/`key_file`; ConfigError if they are unusable.

    `prefix` is the config key path the files came from (`tls`, `tls.certificates[1]`), for
    error messages. Refuses expired and not yet valid certificates (RFC 5280 §4.1.2.5).
    """
    leaf = load_pair(cert_file, key_file, prefix)
    problem = _validity_problem(leaf, _now())
    if problem:
        raise ConfigError(f"{prefix}.cert_file", f"{problem} ({cert_file})")
    ctx = policy_context()

    def no_password() -> str:  # OpenSSL must never prompt on a terminal
        raise ConfigError(f"{prefix}.key_file", f"{key_file} is encrypted")

    try:
        ctx.load_cert_chain(cert_file, key_file, password=no_password)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{prefix}.cert_file", f"OpenSSL cannot load it: {e}") from None
    _CERT_FILES[ctx] = cert_file
    return ctx


def certificate_file(ctx: ssl.SSLContext) -> Path | None:
    """The certificate file a context from `server_context` serves.

    After the handshake `ssl_object.context` is the context SNI chose, so this gives the
    certificate actually presented, e.g. for tls-server-end-point (RFC 5929 §4.1).
    """
    return _CERT_FILES.get(ctx)


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

    def of(self, writer: asyncio.StreamWriter | asyncio.BaseTransport) -> dict[str, bytes]:
        """The bindings of the connection behind `writer` (or a transport; {} without TLS)."""
        ssl_object = writer.get_extra_info("ssl_object")
        cert = certificate_file(ssl_object.context) if ssl_object is not None else None
        if cert is None:
            return {}
        binding = self._by_file.get(cert)
        if binding is None:
            binding = self._by_file[cert] = tls_server_end_point(cert)
        return {"tls-server-end-point": binding}


# -- per-host certificates (SNI) ----------------------------------------------------------------


@dataclass(frozen=True)
class CertPair:
    """One certificate and key from the config, with the host names it must serve."""

    prefix: str
    cert_file: Path
    key_file: Path
    names: tuple[str, ...]


def cert_pairs(cfg: Config) -> list[CertPair]:
    """The default pair (for `server.hostname`) and each `[[tls.certificates]]` pair."""
    pairs = [
        CertPair("tls", cfg.data_path(cfg.tls.cert_file), cfg.data_path(cfg.tls.key_file),
                 (cfg.server.hostname,))
    ]
    for i, item in enumerate(cfg.tls.certificates):
        pairs.append(CertPair(f"tls.certificates[{i}]", cfg.data_path(item.cert_file),
                              cfg.data_path(item.key_file), tuple(item.names)))
    return pairs


class SniSelector:
    """An `sni_callback` (RFC 6066 §3) switching to the context configured for the name."""

    def __init__(self) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}  # "example.org" for "*.example.org"

    def add(self, name: str, ctx: ssl.SSLContext) -> None:
        name = name.lower()
        if name.startswith("*."):
            self.wildcard[name[2:]] = ctx
        else:
            self.exact[name] = ctx

    def select(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a client's SNI, None for the default (no or unknown name)."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        if name in self.exact:
            return self.exact[name]
        return self.wildcard.get(name.partition(".")[2])

    def __call__(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                 default: ssl.SSLContext) -> None:
        ctx = self.select(server_name)
        if ctx is not None:
            conn.context = ctx


def build_tls(cfg: Config) -> ssl.SSLContext:
    """The listeners' context: the default certificate, per-host ones chosen by SNI.

    Every per-host context gets the same policy (OpenSSL keeps the first context's protocol
    settings after an SNI switch anyway, and swaps only certificate and key). Raises
    ConfigError, naming the config key, for the first unusable certificate.
    """
    default, *hosts = cert_pairs(cfg)
    ctx = server_context(default.cert_file, default.key_file, prefix=default.prefix)
    if hosts:
        selector = SniSelector()
        for pair in hosts:
            host_ctx = server_context(pair.cert_file, pair.key_file, prefix=pair.prefix)
            for name in pair.names:
                selector.add(name, host_ctx)
        ctx.sni_callback = selector
    return ctx


# -- loading and checking certificate files -----------------------------------------------------


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, f"missing file {path}") from None
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None


def load_pair(cert_file: Path, key_file: Path, prefix: str = "tls") -> x509.Certificate:
    """The leaf certificate, once chain and key are readable and match; else ConfigError."""
    cert_key, key_key = f"{prefix}.cert_file", f"{prefix}.key_file"
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_file, cert_key))
    except ValueError:
        raise ConfigError(cert_key, f"{cert_file} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(_read(key_file, key_key), password=None)
    except TypeError:
        raise ConfigError(key_key, f"{key_file} is encrypted: give an unencrypted key "
                                   "(mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(key_key, f"{key_file} holds no PEM private key") from None
    leaf = chain[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError(key_key, f"certificate and key do not match ({cert_file}, {key_file}; "
                                   "the leaf certificate must come first)")
    weak = _weak_key(key)
    if weak:
        raise ConfigError(key_key, weak)
    return leaf


def _weak_key(key: object) -> str | None:
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size < MIN_EC_BITS:
        return f"EC key on {key.curve.name} is too weak (P-256 or larger)"
    return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _validity_problem(leaf: x509.Certificate, now: datetime.datetime) -> str | None:
    if leaf.not_valid_after_utc < now:
        return f"certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
    if leaf.not_valid_before_utc > now:
        return f"certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


def covers(leaf: x509.Certificate, name: str) -> bool:
    """Whether the certificate's DNS names cover a configured name (RFC 6125 §6.4).

    A configured wildcard is covered only by the same wildcard in the certificate.
    """
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    name = name.lower()
    for pattern in (p.lower() for p in san.get_values_for_type(x509.DNSName)):
        one_label = pattern.startswith("*.") and not name.startswith("*.")
        if pattern == name or (one_label and name.partition(".")[2] == pattern[2:]):
            return True
    return False


def check_certificate(cert_file: Path, key_file: Path, hostname: str, *, prefix: str = "tls",
                      names: tuple[str, ...] = ()) -> list[str]:
    """Problems with one certificate pair, for `postkeep check` (empty when all is well).

    Reports missing or unreadable files, a key readable by others, a certificate that does not
    load or match its key, expiry (past, or within `EXPIRY_WARNING`), not yet valid, and every
    host name (`hostname` and `names`) it does not cover.
    """
    problems: list[str] = []
    for what, path in (("cert_file", cert_file), ("key_file", key_file)):
        if not path.exists():
            problems.append(f"{prefix}.{what}: missing file {path}")
    if problems:
        return problems
    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        problems.append(f"{prefix}.key_file: {key_file} is readable by others (mode {mode:o}); "
                        "use 0600")
    try:
        leaf = load_pair(cert_file, key_file, prefix)
    except ConfigError as e:
        return [*problems, str(e)]
    now = _now()
    validity = _validity_problem(leaf, now)
    if validity:
        problems.append(f"{prefix}.cert_file: {validity}")
    elif leaf.not_valid_after_utc < now + EXPIRY_WARNING:
        problems.append(f"{prefix}.cert_file: certificate expires soon, on "
                        f"{leaf.not_valid_after_utc:%Y-%m-%d}")
    for name in dict.fromkeys((hostname, *names)):
        if name and not covers(leaf, name):
            problems.append(f"{prefix}.cert_file: certificate does not cover {name} "
                            f"(it names {_dns_names(leaf)})")
    return problems


def check_tls(cfg: Config) -> list[str]:
    """`check_certificate` for the default certificate and every per-host one."""
    problems: list[str] = []
    for pair in cert_pairs(cfg):
        hostname, *names = pair.names
        problems += check_certificate(pair.cert_file, pair.key_file, hostname,
                                      prefix=pair.prefix, names=tuple(names))
    return problems


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


# -- logging failures -----------------------------------------------------------------------------


def network_error(e: BaseException) -> str:
    """The `reason` of a session ended by a network or TLS error, with OpenSSL's word for it.

    For an `ssl.SSLError` that is its `reason=` (WRONG_VERSION_NUMBER, UNSUPPORTED_PROTOCOL,
    TLSV1_ALERT_UNKNOWN_CA, ...), `library=` and, for a failed certificate check, `verify=`
    the verification message; without reason or verification message, `message=` the error's
    text. E.g. `network error: SSLError reason=WRONG_VERSION_NUMBER library=SSL`: a client that
    rejected the certificate is told apart from one that spoke no TLS or too old a version.
    Values are quoted as `log.quote` does (the disconnect line quotes the whole reason again).
    """
    text = f"network error: {e.__class__.__name__}"
    if not isinstance(e, ssl.SSLError):
        return text
    # Only errors from OpenSSL have the attributes: asyncio raises SSLError("...") of its own.
    fields = [(key, getattr(e, attr, None)) for key, attr in
              (("reason", "reason"), ("library", "library"), ("verify", "verify_message"))]
    if not fields[0][1] and not fields[2][1]:
        fields.append(("message", e.strerror or (str(e.args[-1]) if e.args else "")))
    return " ".join([text, *(f"{key}={log.quote(value)}" for key, value in fields if value)])


# -- the instance's own certificate -------------------------------------------------------------


def create_self_signed(hostname: str, cert_file: Path, key_file: Path, days: int = 825) -> None:
    """Write a self-signed ECDSA P-256 certificate for `hostname`; the key file is 0600.

    Valid from 5 minutes ago (clients with a clock slightly behind) for `days` in all, the
    backdating included: scanners flag a period above 825 days (the CA/Browser Forum's former
    limit for server certificates).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    not_before = _now().replace(microsecond=0) - datetime.timedelta(minutes=5)
    sans: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname == "localhost":
        sans += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
