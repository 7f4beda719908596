"""Unit tests of the TLS policy, per-host certificates and certificate checks (net/tls.py).

Policy: BCP 195 / RFC 9325 §3-§4; SNI: RFC 6066 §3; wildcards: RFC 6125 §6.4.3; validity
dates: RFC 5280 §4.1.2.5. Handshakes run over memory BIOs: no sockets, no threads.
"""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from postkeep import config as config_mod
from postkeep.errors import ConfigError
from postkeep.net import tls

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
TLS12_ALLOWED = set(tls.TLS12_CIPHERS.split(":"))


# -- helpers ------------------------------------------------------------------------------------


def write_leaf(ca: trustme.CA, directory: Path, stem: str, *names: str) -> tuple[Path, Path]:
    """A trustme certificate for `names`, as (cert_file, key_file) with the key 0600."""
    leaf = ca.issue_cert(*names, not_before=NOW - DAY, not_after=NOW + 90 * DAY)
    cert, key = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    return cert, key


def write_self_signed(directory: Path, stem: str, name: str, not_before: datetime.datetime,
                      not_after: datetime.datetime,
                      key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
                      password: bytes | None = None) -> tuple[Path, Path]:
    """A self-signed certificate with chosen dates and key (for expiry and weak-key cases)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    cert_file, key_file = directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8, encryption))
    key_file.chmod(0o600)
    return cert_file, key_file


def client_context(ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca.configure_trust(ctx)
    return ctx


def handshake(server: ssl.SSLContext, client: ssl.SSLContext,
              sni: str | None = None) -> ssl.SSLObject:
    """Run a TLS handshake over memory BIOs; returns the client's side (raises on failure)."""
    return handshake_pair(server, client, sni)[0]


def handshake_pair(server: ssl.SSLContext, client: ssl.SSLContext,
                   sni: str | None = None) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake over memory BIOs; returns (client side, server side)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=sni)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                finally:  # move what each side wrote, alerts too, to the other side
                    s_in.write(c_out.read())
                    c_in.write(s_out.read())
        if all(done.values()):
            return c, s
    raise AssertionError("handshake did not finish")


def served_names(conn: ssl.SSLObject) -> list[str]:
    cert = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True) or b"")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


def load_config(directory: Path, extra: str) -> config_mod.Config:
    path = directory / "postkeep.toml"
    path.write_text('[server]\nhostname = "localhost"\n\n' + extra)
    return config_mod.load(path)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pair(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    return write_leaf(ca, tmp_path, "default", "localhost")


# -- the policy ---------------------------------------------------------------------------------


def test_context_versions_and_options(pair: tuple[Path, Path]) -> None:
    ctx = tls.server_context(*pair)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    for flag in (ssl.OP_NO_COMPRESSION, ssl.OP_CIPHER_SERVER_PREFERENCE,
                 ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_TICKET):
        assert ctx.options & flag, flag
    assert ctx.num_tickets == 0  # no TLS 1.3 tickets either


def test_tls12_ciphers_are_ecdhe_aead_only(pair: tuple[Path, Path]) -> None:
    ciphers = tls.server_context(*pair).get_ciphers()
    tls12 = [c for c in ciphers if c["protocol"] == "TLSv1.2"]
    assert {c["name"] for c in tls12} == TLS12_ALLOWED
    for c in tls12:
        assert c["kea"] == "kx-ecdhe" and c["aead"], c
        assert "CBC" not in c["description"] and "SHA1" not in c["description"], c
        assert c["auth"] in ("auth-ecdsa", "auth-rsa"), c
    # the rest are TLS 1.3 suites: AEAD, key exchange negotiated separately
    for c in ciphers:
        assert c["protocol"] in ("TLSv1.2", "TLSv1.3") and c["aead"], c
    # RFC 9325 §4.2: AES-128-GCM first
    assert tls12[0]["name"].endswith("AES128-GCM-SHA256")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_protocols_refused(pair: tuple[Path, Path], version: str) -> None:
    """RFC 8996, RFC 9325 §3.1.1: the server answers a 1.0/1.1-only hello with an alert."""
    client = client_context()
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client really offer 1.0/1.1
    client.minimum_version = client.maximum_version = ssl.TLSVersion[version]
    with pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_PROTOCOL|PROTOCOL_VERSION"):
        handshake(tls.server_context(*pair), client)


def test_cbc_and_static_rsa_refused(ca: trustme.CA, tmp_path: Path) -> None:
    for key_type in (trustme.KeyType.ECDSA, trustme.KeyType.RSA):
        leaf = ca.issue_cert("localhost", key_type=key_type)
        cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        server = tls.server_context(cert, key)
        for weak in ("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384",
                     "AES128-GCM-SHA256:AES256-SHA:AES128-SHA256",
                     "DHE-RSA-AES128-GCM-SHA256"):
            client = client_context()
            client.maximum_version = ssl.TLSVersion.TLSv1_2
            client.set_ciphers(weak + ":@SECLEVEL=0")
            with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
                handshake(server, client)


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
def test_good_handshakes(ca: trustme.CA, tmp_path: Path, key_type: trustme.KeyType) -> None:
    leaf = ca.issue_cert("localhost", key_type=key_type)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    server = tls.server_context(cert, key)
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    conn = handshake(server, client, "localhost")
    auth = "ECDSA" if key_type is trustme.KeyType.ECDSA else "RSA"
    assert conn.version() == "TLSv1.2"
    assert conn.cipher()[0] == f"ECDHE-{auth}-AES128-GCM-SHA256"  # server preference
    conn = handshake(server, client_context(ca), "localhost")
    assert conn.version() == "TLSv1.3"


@pytest.mark.parametrize(("group", "accepted"), [
    ("X25519", True), ("prime256v1", True), ("secp384r1", True),
    ("X448", False), ("secp521r1", False),
])
def test_key_exchange_groups(pair: tuple[Path, Path], group: str, accepted: bool) -> None:
    """RFC 9325 §4.2.1: X25519, P-256, P-384 only (TLS 1.3, where the group is independent
    of the certificate)."""
    if tls._set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) != tls.KEY_EXCHANGE_GROUPS:
        pytest.skip("this Python/OpenSSL can pin only P-256")
    client = client_context()
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.set_ecdh_curve(group)  # on OpenSSL 3: the client's only group
    if accepted:
        assert handshake(tls.server_context(*pair), client).version() == "TLSv1.3"
    else:
        with pytest.raises(ssl.SSLError):
            handshake(tls.server_context(*pair), client)


def test_groups_fallback_pins_p256(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "_ctypes_set_groups", lambda ctx, groups: False)
    assert tls._set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) == "P-256"


# -- certificate errors at startup --------------------------------------------------------------


def test_missing_files(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    with pytest.raises(ConfigError, match=r"^tls.cert_file: missing file .*nope.pem"):
        tls.server_context(tmp_path / "nope.pem", key)
    with pytest.raises(ConfigError, match=r"^tls.key_file: missing file .*nope.pem"):
        tls.server_context(cert, tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"^tls.certificates\[1\].cert_file: missing file"):
        tls.server_context(tmp_path / "nope.pem", key, prefix="tls.certificates[1]")


def test_garbage_files(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"tls.cert_file: .* holds no PEM certificate"):
        tls.server_context(junk, key)
    with pytest.raises(ConfigError, match=r"tls.key_file: .* holds no PEM private key"):
        tls.server_context(cert, junk)


def test_mismatched_key(ca: trustme.CA, tmp_path: Path) -> None:
    cert_a, _ = write_leaf(ca, tmp_path, "a", "localhost")
    _, key_b = write_leaf(ca, tmp_path, "b", "localhost")
    with pytest.raises(ConfigError, match=r"^tls.key_file: certificate and key do not match"):
        tls.server_context(cert_a, key_b)


def test_expired_and_not_yet_valid(tmp_path: Path) -> None:
    expired = write_self_signed(tmp_path, "old", "localhost", NOW - 400 * DAY, NOW - 10 * DAY)
    when = (NOW - 10 * DAY).strftime("%Y-%m-%d")
    with pytest.raises(ConfigError, match=rf"^tls.cert_file: certificate expired on {when}"):
        tls.server_context(*expired)
    future = write_self_signed(tmp_path, "new", "localhost", NOW + 3 * DAY, NOW + 90 * DAY)
    with pytest.raises(ConfigError, match=r"^tls.cert_file: certificate is not valid before"):
        tls.server_context(*future)


def test_encrypted_and_weak_keys(tmp_path: Path) -> None:
    locked = write_self_signed(tmp_path, "enc", "localhost", NOW - DAY, NOW + 90 * DAY,
                               password=b"secret")
    with pytest.raises(ConfigError, match=r"tls.key_file: .* is encrypted"):
        tls.server_context(*locked)
    weak = write_self_signed(tmp_path, "weak", "localhost", NOW - DAY, NOW + 90 * DAY,
                             key=rsa.generate_private_key(65537, 1024))
    with pytest.raises(ConfigError, match=r"tls.key_file: RSA key of 1024 bits is too weak"):
        tls.server_context(*weak)


# -- SNI ----------------------------------------------------------------------------------------


def test_sni_selector_matching() -> None:
    a, b, c = (ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) for _ in range(3))
    sel = tls.SniSelector()
    sel.add("mail.example.org", a)
    sel.add("*.example.org", b)
    sel.add("MX.Other.Test", c)
    assert sel.select("mail.example.org") is a  # exact wins over the wildcard
    assert sel.select("imap.example.org") is b
    assert sel.select("IMAP.EXAMPLE.ORG.") is b
    assert sel.select("a.b.example.org") is None  # a wildcard covers one label
    assert sel.select("example.org") is None
    assert sel.select("mx.other.test") is c
    assert sel.select("unknown.test") is None
    assert sel.select(None) is None


def test_build_tls_presents_certificate_by_sni(ca: trustme.CA, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    write_leaf(ca, tmp_path / "tls", "default", "localhost")
    other = write_leaf(ca, tmp_path / "tls", "other", "mail.other.test")
    write_leaf(ca, tmp_path / "tls", "wild", "*.wild.test")
    cfg = load_config(tmp_path, """
[tls]
cert_file = "tls/default-cert.pem"
key_file = "tls/default-key.pem"

[[tls.certificates]]
names = ["mail.other.test"]
cert_file = "tls/other-cert.pem"
key_file = "tls/other-key.pem"

[[tls.certificates]]
names = ["*.wild.test"]
cert_file = "tls/wild-cert.pem"
key_file = "tls/wild-key.pem"
""")
    server = tls.build_tls(cfg)
    client = client_context(ca)
    assert served_names(handshake(server, client, "localhost")) == ["localhost"]
    assert served_names(handshake(server, client, "mail.other.test")) == ["mail.other.test"]
    assert served_names(handshake(server, client, "Imap.Wild.Test")) == ["*.wild.test"]
    unverified = client_context()
    for sni in (None, "unknown.test", "a.b.wild.test"):
        assert served_names(handshake(server, unverified, sni)) == ["localhost"], sni
    # the server side's context after the switch tells which certificate it presented
    _, served = handshake_pair(server, client, "mail.other.test")
    assert tls.certificate_file(served.context) == other[0].resolve()
    _, served = handshake_pair(server, unverified)
    assert tls.certificate_file(served.context) == (tmp_path / "tls/default-cert.pem").resolve()


def test_build_tls_names_the_bad_per_host_certificate(ca: trustme.CA, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    write_leaf(ca, tmp_path / "tls", "default", "localhost")
    write_self_signed(tmp_path / "tls", "old", "old.test", NOW - 400 * DAY, NOW - 2 * DAY)
    cfg = load_config(tmp_path, """
[tls]
cert_file = "tls/default-cert.pem"
key_file = "tls/default-key.pem"

[[tls.certificates]]
names = ["old.test"]
cert_file = "tls/old-cert.pem"
key_file = "tls/old-key.pem"
""")
    with pytest.raises(ConfigError, match=r"^tls.certificates\[0\].cert_file: certificate "
                                          r"expired on \d{4}-\d\d-\d\d"):
        tls.build_tls(cfg)


# -- config -------------------------------------------------------------------------------------


def test_config_certificates_parsed(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, """
[[tls.certificates]]
names = ["mail.example.org", "*.example.org"]
cert_file = "a.pem"
key_file = "b.pem"
""")
    assert cfg.tls.certificates == [
        config_mod.TlsCertificate(["mail.example.org", "*.example.org"], "a.pem", "b.pem")
    ]
    assert load_config(tmp_path, "").tls.certificates == []


@pytest.mark.parametrize(("table", "message"), [
    ('names = []\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names: must list at least one host name"),
    ('names = ["bad name"]\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names[0]: 'bad name' is not a host name"),
    ('names = ["mail.*.test"]\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names[0]: 'mail.*.test' is not a host name"),
    ('names = ["*.test"]\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names[0]: '*.test': a wildcard needs at least two labels"),
    ('names = ["192.0.2.1"]\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names[0]: '192.0.2.1': SNI carries host names, not IP"),
    ('names = ["a.test"]\nkey_file = "b"', "tls.certificates[0].cert_file: must name a PEM"),
    ('names = ["a.test"]\ncert_file = "a"\nkey_file = "b"\ncert = "c"',
     "tls.certificates[0].cert: unknown key"),
    ('names = "a.test"\ncert_file = "a"\nkey_file = "b"',
     "tls.certificates[0].names: expected a list"),
])
def test_config_certificate_errors(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, f"[[tls.certificates]]\n{table}\n")
    assert str(e.value).startswith(message), str(e.value)


def test_config_duplicate_name(tmp_path: Path) -> None:
    twice = '[[tls.certificates]]\nnames = ["A.test"]\ncert_file = "a"\nkey_file = "b"\n'
    with pytest.raises(ConfigError, match=r"tls.certificates\[1\].names\[0\]: a.test is "
                                          r"already served by tls.certificates\[0\]"):
        load_config(tmp_path, twice + twice.replace("A.test", "a.test"))


# -- `postkeep check` ---------------------------------------------------------------------------


def test_check_clean(pair: tuple[Path, Path]) -> None:
    assert tls.check_certificate(*pair, "localhost") == []


def test_check_reports_each_problem(ca: trustme.CA, tmp_path: Path) -> None:
    soon = write_self_signed(tmp_path, "soon", "localhost", NOW - 80 * DAY, NOW + 5 * DAY)
    os.chmod(soon[1], 0o640)
    problems = tls.check_certificate(*soon, "mail.example.org", prefix="tls.certificates[2]",
                                     names=("localhost", "*.example.org"))
    assert problems[0].startswith("tls.certificates[2].key_file: ")
    assert "readable by others (mode 640)" in problems[0]
    assert problems[1].startswith("tls.certificates[2].cert_file: certificate expires soon")
    assert problems[2].startswith("tls.certificates[2].cert_file: certificate does not cover "
                                  "mail.example.org")
    assert "does not cover *.example.org" in problems[3]
    assert len(problems) == 4

    expired = write_self_signed(tmp_path, "old", "localhost", NOW - 80 * DAY, NOW - DAY)
    assert tls.check_certificate(*expired, "localhost") == [
        f"tls.cert_file: certificate expired on {NOW - DAY:%Y-%m-%d}"
    ]
    cert_a, _ = write_leaf(ca, tmp_path, "a", "localhost")
    _, key_b = write_leaf(ca, tmp_path, "b", "localhost")
    [mismatch] = tls.check_certificate(cert_a, key_b, "localhost")
    assert mismatch.startswith("tls.key_file: certificate and key do not match")
    assert tls.check_certificate(tmp_path / "x.pem", key_b, "localhost") == [
        f"tls.cert_file: missing file {tmp_path / 'x.pem'}"
    ]


def test_check_covers_wildcards(ca: trustme.CA, tmp_path: Path) -> None:
    wild = write_leaf(ca, tmp_path, "w", "*.example.org")
    assert tls.check_certificate(*wild, "mail.example.org", names=("*.example.org",)) == []
    assert tls.check_certificate(*wild, "a.b.example.org")[0].endswith(
        "does not cover a.b.example.org (it names ['*.example.org'])"
    )


def test_check_tls_covers_every_certificate(ca: trustme.CA, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    write_leaf(ca, tmp_path / "tls", "default", "localhost")
    write_leaf(ca, tmp_path / "tls", "other", "mail.other.test")
    cfg = load_config(tmp_path, """
[tls]
cert_file = "tls/default-cert.pem"
key_file = "tls/default-key.pem"

[[tls.certificates]]
names = ["mail.other.test", "imap.other.test"]
cert_file = "tls/other-cert.pem"
key_file = "tls/other-key.pem"

[[tls.certificates]]
names = ["gone.test"]
cert_file = "tls/gone-cert.pem"
key_file = "tls/gone-key.pem"
""")
    problems = tls.check_tls(cfg)
    assert problems[0].startswith(
        "tls.certificates[0].cert_file: certificate does not cover imap.other.test"
    )
    assert problems[1:] == [
        f"tls.certificates[1].cert_file: missing file {tmp_path / 'tls' / 'gone-cert.pem'}",
        f"tls.certificates[1].key_file: missing file {tmp_path / 'tls' / 'gone-key.pem'}",
    ]


def test_self_signed_key_is_private(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    tls.create_self_signed("localhost", cert, key)
    assert key.stat().st_mode & 0o777 == 0o600
    assert tls.check_certificate(cert, key, "localhost") == []


def test_self_signed_validity_is_at_most_825_days(tmp_path: Path) -> None:
    # CA/Browser Forum's former 825-day limit, which scanners (testssl) still check: the whole
    # period counts, the backdating against clock skew included.
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    tls.create_self_signed("localhost", cert, key)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    period = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=824) < period <= datetime.timedelta(days=825)
    assert leaf.not_valid_before_utc < datetime.datetime.now(datetime.UTC)


def test_network_error_reasons() -> None:
    assert tls.network_error(ConnectionResetError()) == "network error: ConnectionResetError"
    # raised by Python code (asyncio's SSL protocol does): no reason, library or verify message
    assert tls.network_error(ssl.SSLError("SSL handshake is taking longer")) == (
        'network error: SSLError message="SSL handshake is taking longer"')
    # OpenSSL's reasons from real handshakes: tests/inprocess/test_wire_hygiene.py
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.reason, e.library, e.verify_message = "CERTIFICATE_VERIFY_FAILED", "SSL", "self-signed"
    assert tls.network_error(e) == (
        "network error: SSLCertVerificationError reason=CERTIFICATE_VERIFY_FAILED library=SSL "
        "verify=self-signed")
