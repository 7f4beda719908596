"""Interop: the TLS policy (BCP 195 / RFC 9325) of a real `postkeep serve`, over STARTTLS.

STARTTLS is RFC 3207; the policy is in `postkeep.net.tls`. Per-host certificates are chosen by
SNI (RFC 6066 §3). `sslscan` (Debian package `sslscan`) gives an independent view.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from postkeep.net.tls import TLS12_CIPHERS
from tests.interop.conftest import POSTKEEP, Instance, make_instance, require_tool

OTHER_HOST = "mail.other.test"
CBC_ONLY = ":".join([
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384", "AES128-SHA", "AES256-SHA",
    "AES128-SHA256", "AES256-SHA256", "@SECLEVEL=0",
])
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
GROUPS = {"x25519", "secp256r1", "secp384r1"}
# The server refuses the handshake; the event loop may close before its alert is flushed, so
# the client sees either the alert or an EOF.
REFUSED = r"PROTOCOL_VERSION|HANDSHAKE_FAILURE|UNEXPECTED_EOF|EOF occurred"


# -- certificates -------------------------------------------------------------------------------


def issue_cert(ca: trustme.CA, cert_file: Path, key_file: Path, *names: str,
               days: int = 90, since_days: int = 0) -> None:
    """A P-256 server certificate from `ca` for host names / IP addresses, like a public CA's.

    Unlike `trustme.CA.issue_cert` it is valid from `since_days` (and an hour) ago until `days`
    from now, has a CRL distribution point and an OCSP URI, and server-auth-only key usage
    (testssl grades certificates on these).
    """
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    crl = x509.DistributionPoint([x509.UniformResourceIdentifier("http://ca.test/ca.crl")],
                                 None, None, None)
    ocsp = x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                  x509.UniformResourceIdentifier("http://ocsp.ca.test/"))
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=since_days, hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.CRLDistributionPoints([crl]), critical=False)
        .add_extension(x509.AuthorityInformationAccess([ocsp]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    tls_dir = key_file.parent.stat()  # the instance's: the server reads them as that user
    for path in (cert_file, key_file):
        os.chown(path, tls_dir.st_uid, tls_dir.st_gid)


@dataclass
class TlsSetup:
    """A started instance with a CA-issued default certificate and a per-host one."""

    inst: Instance
    ca: trustme.CA
    ca_file: Path


def install_certificates(inst: Instance) -> TlsSetup:
    """Default certificate for localhost/127.0.0.1 and a `[[tls.certificates]]` entry for
    `OTHER_HOST`, both from a fresh trustme CA written to `ca.pem` beside the instance."""
    ca = trustme.CA()
    ca_file = inst.dir.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls_dir = inst.dir / "tls"
    issue_cert(ca, tls_dir / "cert.pem", tls_dir / "key.pem", "localhost", "127.0.0.1")
    issue_cert(ca, tls_dir / "other-cert.pem", tls_dir / "other-key.pem", OTHER_HOST)
    config = inst.dir / "postkeep.toml"
    config.write_text(config.read_text() + f"""
[[tls.certificates]]
names = ["{OTHER_HOST}"]
cert_file = "tls/other-cert.pem"
key_file = "tls/other-key.pem"
""")
    return TlsSetup(inst, ca, ca_file)


def started_tls_instance(root: Path, processes: int = 0) -> Iterator[TlsSetup]:
    """A private instance (as `fresh` makes them) with `install_certificates`, running
    (`processes`: `server.processes`, 0 its default)."""
    inst = make_instance(root)
    if processes:
        inst.set_config("server", processes=processes)
    setup = install_certificates(inst)
    inst.start()
    try:
        yield setup
    finally:
        inst.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSetup]:
    """One instance shared by this module's tests, which change nothing on it. One worker
    process: OpenSSL's session cache (TLS 1.2 resumption by session id) is per process, and
    with two a second connection may reach the other one."""
    yield from started_tls_instance(tmp_path_factory.mktemp("tls"), processes=1)


# -- a STARTTLS client --------------------------------------------------------------------------


def _reply(sock: socket.socket) -> bytes:
    """One whole (possibly multi-line) SMTP reply, read without going past it."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
        last = data.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        if data.endswith(b"\r\n") and last[3:4] == b" ":
            return data


def starttls(port: int, ctx: ssl.SSLContext, sni: str | None = None,
             session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    """Connect, EHLO, STARTTLS (RFC 3207 §4) and hand the socket to `ctx` with SNI `sni`,
    offering `session` for resumption."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        assert _reply(sock).startswith(b"220")
        sock.sendall(b"EHLO client.test\r\n")
        assert b"STARTTLS" in _reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert _reply(sock).startswith(b"220")
        return ctx.wrap_socket(sock, server_hostname=sni, session=session)
    except BaseException:
        sock.close()
        raise


def client(setup: TlsSetup | None = None, version: ssl.TLSVersion | None = None,
           ciphers: str | None = None) -> ssl.SSLContext:
    """A client context: verifying against the test CA when given `setup`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if setup is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        setup.ca.configure_trust(ctx)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def ehlo_over_tls(conn: ssl.SSLSocket) -> bytes:
    with conn:
        conn.sendall(b"EHLO client.test\r\n")
        reply = _reply(conn)
        conn.sendall(b"QUIT\r\n")
        _reply(conn)
    return reply


def dns_names(conn: ssl.SSLSocket) -> list[str]:
    cert = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True) or b"")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_protocols_refused(tls_server: TlsSetup, version: str) -> None:
    """RFC 8996, RFC 9325 §3.1.1: no TLS 1.0 or 1.1."""
    ctx = client(version=ssl.TLSVersion[version], ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match=REFUSED):
        starttls(tls_server.inst.smtp_port, ctx).close()
    tls_server.inst.wait_log(r"tls=no .*reason=\"network error: SSLError")


def test_cbc_only_client_refused(tls_server: TlsSetup) -> None:
    """RFC 9325 §4.1-§4.2: on TLS 1.2 only AEAD suites."""
    ctx = client(version=ssl.TLSVersion.TLSv1_2, ciphers=CBC_ONLY)
    with pytest.raises(ssl.SSLError, match=REFUSED):
        starttls(tls_server.inst.smtp_port, ctx).close()
    tls_server.inst.wait_log(r"tls=no .*reason=\"network error: SSLError")


def test_tls12_aead_and_tls13_accepted(tls_server: TlsSetup) -> None:
    port = tls_server.inst.smtp_port
    ctx = client(tls_server, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    conn = starttls(port, ctx, "localhost")
    assert (conn.version(), conn.cipher()[0]) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert ehlo_over_tls(conn).startswith(b"250")
    conn = starttls(port, client(tls_server, ssl.TLSVersion.TLSv1_3), "localhost")
    assert conn.version() == "TLSv1.3" and conn.cipher()[0] in TLS13_SUITES
    assert ehlo_over_tls(conn).startswith(b"250")


def test_resumption_by_session_id_only(tls_server: TlsSetup) -> None:
    """RFC 9325 §3.4: no tickets; TLS 1.2 resumes from the server's session cache, TLS 1.3
    (which would need a ticket) does not resume."""
    for version, resumes in ((ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, False)):
        ctx = client(tls_server, version)
        with starttls(tls_server.inst.smtp_port, ctx, "localhost") as first:
            first.sendall(b"EHLO client.test\r\n")
            _reply(first)  # any TLS 1.3 ticket came before this reply
            session = first.session
            # a clean end (the server's close_notify) keeps the session in OpenSSL's cache
            first.sendall(b"QUIT\r\n")
            _reply(first)
            # wait for it: closing first makes the server's close_notify fail, and OpenSSL
            # drops a session whose connection did not end cleanly (seen under load)
            with contextlib.suppress(ssl.SSLError, OSError):
                while first.recv(4096):
                    pass
        assert session is not None
        with starttls(tls_server.inst.smtp_port, ctx, "localhost", session) as second:
            assert second.session_reused is resumes, version


def test_sni_chooses_the_per_host_certificate(tls_server: TlsSetup) -> None:
    port = tls_server.inst.smtp_port
    conn = starttls(port, client(tls_server), OTHER_HOST)  # verifies the name against the CA
    assert dns_names(conn) == [OTHER_HOST]
    assert ehlo_over_tls(conn).startswith(b"250")
    for sni in (None, "unknown.test"):
        conn = starttls(port, client(), sni)
        assert dns_names(conn) == ["localhost"], sni
        conn.close()


def test_sslscan_sees_only_the_policy(tls_server: TlsSetup) -> None:
    result = subprocess.run(
        [require_tool("sslscan", "sslscan"), "--starttls-smtp", "--no-colour", "--xml=-",
         f"127.0.0.1:{tls_server.inst.smtp_port}"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    test = ET.fromstring(result.stdout[result.stdout.index("<?xml"):]).find("ssltest")
    assert test is not None, result.stdout
    offered = {(p.get("type"), p.get("version")) for p in test.iter("protocol")
               if p.get("enabled") == "1"}
    assert offered == {("tls", "1.2"), ("tls", "1.3")}
    ciphers = {(c.get("sslversion"), c.get("cipher")) for c in test.iter("cipher")}
    assert ciphers, result.stdout
    tls12 = set(TLS12_CIPHERS.split(":"))
    for version, name in ciphers:
        assert (version == "TLSv1.2" and name in tls12) or (
            version == "TLSv1.3" and name in TLS13_SUITES), (version, name)
        assert not any(bad in str(name) for bad in ("CBC", "RC4", "DES", "NULL", "EXP")), name
    groups = {str(g.get("name")).split()[0] for g in test.iter("group")}
    assert groups and groups <= GROUPS, groups
    renegotiation = test.find("renegotiation")
    assert renegotiation is not None and renegotiation.get("supported") == "0"
    assert all(h.get("vulnerable") == "0" for h in test.iter("heartbleed"))


def refused_serve(inst: Instance) -> subprocess.CompletedProcess[str]:
    """Run `postkeep serve`, which must exit at once with a config error (status 2)."""
    try:
        result = subprocess.run([*POSTKEEP, "--dir", str(inst.dir), "serve"],
                                capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("postkeep serve started instead of refusing the certificate")
    assert result.returncode == 2, result.stderr
    return result


def test_bad_certificates_refused_at_startup(fresh: Instance) -> None:
    """An expired default certificate, or a per-host key that is not the certificate's, stop
    `postkeep serve` with one line naming the config key."""
    setup = install_certificates(fresh)
    tls_dir = fresh.dir / "tls"
    issue_cert(setup.ca, tls_dir / "cert.pem", tls_dir / "key.pem", "localhost",
               days=-2, since_days=100)
    expired = refused_serve(fresh)
    assert expired.stderr.strip().splitlines()[-1:] == [
        "postkeep: config error: tls.cert_file: certificate expired on "
        f"{datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2):%Y-%m-%d} "
        f"({tls_dir / 'cert.pem'})"
    ]
    issue_cert(setup.ca, tls_dir / "cert.pem", tls_dir / "key.pem", "localhost")
    issue_cert(setup.ca, tls_dir / "other-cert.pem", tls_dir / "spare-key.pem", OTHER_HOST)
    (tls_dir / "key.pem").replace(tls_dir / "other-key.pem")  # the default's key: no match
    issue_cert(setup.ca, tls_dir / "cert.pem", tls_dir / "key.pem", "localhost")
    mismatch = refused_serve(fresh)
    assert mismatch.stderr.strip().splitlines()[-1].startswith(
        "postkeep: config error: tls.certificates[0].key_file: certificate and key do not match"
    ), mismatch.stderr
