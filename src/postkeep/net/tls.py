"""TLS contexts for every listener, and the instance's self-signed certificate.

Policy (RFC 9325 / BCP 195): TLS 1.2 and 1.3 only; on 1.2, ECDHE key exchange with AEAD ciphers
only (AES-GCM, ChaCha20-Poly1305) — no CBC, static RSA, 3DES, RC4 or export suites; server cipher
preference; no compression; no renegotiation (TLS 1.3 has none; on 1.2 it is refused).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postkeep.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context with the policy above; ConfigError if the files are unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.options |= ssl.OP_SINGLE_ECDH_USE
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as e:
        raise ConfigError("tls.cert_file", f"missing file {e.filename}") from None
    except ssl.SSLError as e:
        raise ConfigError(
            "tls.key_file", f"certificate and key do not load together: {e}"
        ) from None
    return ctx


def create_self_signed(hostname: str, cert_file: Path, key_file: Path, days: int = 825) -> None:
    """Write a self-signed ECDSA P-256 certificate for `hostname`; the key file is 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
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
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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


def check_certificate(cert_file: Path, key_file: Path, hostname: str) -> list[str]:
    """Problems with the certificate files, for `postkeep check` (empty when all is well)."""
    problems: list[str] = []
    if not cert_file.exists():
        return [f"tls.cert_file: {cert_file} does not exist"]
    if not key_file.exists():
        return [f"tls.key_file: {key_file} does not exist"]
    mode = key_file.stat().st_mode & 0o777
    if mode & 0o077:
        problems.append(f"tls.key_file: {key_file} is readable by others (mode {mode:o}); use 0600")
    try:
        certs = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except ValueError as e:
        return [*problems, f"tls.cert_file: not a PEM certificate: {e}"]
    leaf = certs[0]
    now = datetime.datetime.now(datetime.UTC)
    expiry = leaf.not_valid_after_utc
    if expiry < now:
        problems.append(f"tls.cert_file: certificate expired on {expiry:%Y-%m-%d}")
    elif expiry < now + datetime.timedelta(days=14):
        problems.append(f"tls.cert_file: certificate expires on {expiry:%Y-%m-%d}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not any(_matches(pattern, hostname) for pattern in names):
        problems.append(f"tls.cert_file: certificate does not name {hostname} (has {names})")
    try:
        server_context(cert_file, key_file)
    except ConfigError as e:
        problems.append(str(e))
    return problems


def _matches(pattern: str, hostname: str) -> bool:
    pattern, hostname = pattern.lower(), hostname.lower()
    if pattern.startswith("*."):
        return hostname.partition(".")[2] == pattern[2:]
    return pattern == hostname
