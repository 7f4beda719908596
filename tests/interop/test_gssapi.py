"""SASL GSSAPI (RFC 4752) on submission against a real MIT Kerberos KDC started by the test.

The KDC (realm EXAMPLE.TEST) runs from its own krb5.conf/kdc.conf in a temporary directory
on a free loopback port; postkeep accepts with a keytab for smtp/localhost; the client is
python-gssapi driving the SMTP AUTH exchange (RFC 4954) by hand over STARTTLS, and perl's
Net::SMTP with Authen::SASL's GSSAPI. Without the MIT KDC, the perl GSSAPI modules or the
`gssapi` package (postkeep[gssapi]) these tests fail, not skip: `make test` installs them all.
The mapping rule, the offering rules and the config check need no KDC.
"""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postkeep import config as config_mod
from postkeep.errors import ConfigError
from postkeep.sasl import gssapi as sasl_gssapi
from postkeep.sasl import mechanisms as sasl
from tests.interop.conftest import Instance, free_port, make_instance, reachable, require_tool

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

REALM = "EXAMPLE.TEST"
KRB_PASSWORD = "kerberos-pass-phrase-42"  # kadmin -q does no quoting
LAYER_NONE = b"\x01\x00\x00\x00"  # RFC 4752 §3.3: no security layer, maximum size 0


def _tool(name: str) -> str:
    path = shutil.which(name, path=SBIN_PATH)
    assert path is not None, f"{name} missing (krb5-kdc, krb5-admin-server, krb5-user)"
    return path


@dataclass
class Kdc:
    """A private MIT KDC; `env` points the Kerberos tools and libraries at it."""

    dir: Path
    port: int
    env: dict[str, str]
    keytab: Path
    proc: subprocess.Popen[bytes]

    def kadmin(self, query: str) -> None:
        r = subprocess.run([_tool("kadmin.local"), "-r", REALM, "-q", query], env=self.env,
                           capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "usage:" not in out and " while " not in out, out

    def kinit(self, principal: str, password: str = KRB_PASSWORD) -> Path:
        """A fresh credential cache holding a TGT for `principal` (password on stdin)."""
        ccache = self.dir / f"ccache-{uuid.uuid4().hex}"
        r = subprocess.run([_tool("kinit"), "-c", f"FILE:{ccache}", principal],
                           input=password + "\n", env=self.env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return ccache


def _write_configs(d: Path, port: int) -> None:
    (d / "krb5.conf").write_text(f"""\
[libdefaults]
    default_realm = {REALM}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    default_ccache_name = FILE:{d}/ccache-default
    default_keytab_name = FILE:{d}/no-default-keytab

[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {REALM}
""")
    (d / "kdc.conf").write_text(f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {REALM} = {{
        database_name = {d}/principal
        key_stash_file = {d}/stash
        acl_file = {d}/kadm5.acl
        max_life = 1h
    }}

[logging]
    kdc = FILE:{d}/kdc.log
""")


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    krb5kdc = require_tool("krb5kdc", "krb5-kdc", path=SBIN_PATH)
    d = tmp_path_factory.mktemp("kdc")
    port = free_port()
    _write_configs(d, port)
    (d / "rcache").mkdir()
    env = {
        **os.environ,
        "KRB5_CONFIG": str(d / "krb5.conf"),
        "KRB5_KDC_PROFILE": str(d / "kdc.conf"),
        "KRB5CCNAME": f"FILE:{d}/ccache-default",
        "KRB5RCACHEDIR": str(d / "rcache"),
        "KRB5_TRACE": str(d / "trace.log"),
    }
    r = subprocess.run([_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "master key 7"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (d / "krb5kdc.out").open("ab")
    proc = subprocess.Popen([krb5kdc, "-n", "-r", REALM], env=env, stdout=log, stderr=log)
    kdc = Kdc(d, port, env, d / "smtp.keytab", proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (d / "krb5kdc.out").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "krb5kdc did not start listening"
                time.sleep(0.05)
        for user in ("alice", "mallory", "alice/admin"):
            kdc.kadmin(f"addprinc -pw {KRB_PASSWORD} {user}")
        for service in ("smtp/localhost", "imap/localhost"):
            kdc.kadmin(f"addprinc -randkey {service}")
        # imap/localhost is in the keytab too: the acceptor must still take only smtp/localhost.
        kdc.kadmin(f"ktadd -k {kdc.keytab} smtp/localhost imap/localhost")
        # The client side (python-gssapi, in this process) reads the same environment.
        with pytest.MonkeyPatch.context() as mp:
            for key in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHEDIR"):
                mp.setenv(key, env[key])
            yield kdc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gss(kdc: Kdc) -> Any:
    """The python-gssapi package (the optional extra postkeep[gssapi])."""
    try:
        import gssapi
    except ImportError:
        pytest.fail("the gssapi package is missing: pip install -e '.[gssapi]' (make test does)")
    return gssapi


@pytest.fixture(scope="module")
def sub(kdc: Kdc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("gssapi"))
    reachable(kdc.dir)
    inst.hand_over(kdc.keytab, kdc.dir / "rcache")  # read and written after the drop
    inst.set_config(
        "submission",
        sasl_mechanisms=["GSSAPI", "SCRAM-SHA-256", "PLAIN"],
        gssapi_keytab=str(kdc.keytab),
        auth_failure_delay=0.1,
    )
    # The server process inherits os.environ: point it at the test krb5.conf and rcache dir.
    with pytest.MonkeyPatch.context() as mp:
        for key in ("KRB5_CONFIG", "KRB5RCACHEDIR"):
            mp.setenv(key, kdc.env[key])
        mp.setenv("KRB5_TRACE", str(inst.dir / "server-trace.log"))
        inst.start()
    yield inst
    inst.stop()


# -- a GSSAPI client (RFC 4752 §3.1, client side) over SMTP AUTH (RFC 4954 §4) -----------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def connect(inst: Instance) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20)
    ctx = ssl.create_default_context(cafile=str(inst.ca_file))
    ctx.check_hostname = False  # the certificate names "localhost"; we dial 127.0.0.1
    c.starttls(context=ctx)
    c.ehlo()
    return c


def initiator(gss: Any, ccache: Path, target: str = "smtp@localhost",
              mutual: bool = True) -> Any:
    creds = gss.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    flags = gss.RequirementFlag.mutual_authentication if mutual else 0
    return gss.SecurityContext(
        name=gss.Name(target, gss.NameType.hostbased_service), creds=creds,
        mech=gss.MechType.kerberos, flags=flags, usage="initiate",
    )


def authenticate(c: smtplib.SMTP, ctx: Any, *, authzid: bytes = b"", initial: bool = True,
                 sent: list[bytes] | None = None) -> tuple[int, bytes]:
    """Run AUTH GSSAPI to its end; returns the final reply. `sent` collects our tokens."""
    token = ctx.step()
    if sent is not None:
        sent.append(token)
    if initial:
        code, resp = c.docmd("AUTH", f"GSSAPI {b64(token)}")
    else:
        code, resp = c.docmd("AUTH", "GSSAPI")
        assert (code, resp) == (334, b""), resp
        code, resp = c.docmd(b64(token))
    for _ in range(5):
        if code != 334:
            break
        challenge = base64.b64decode(resp)
        if not ctx.complete:
            answer = ctx.step(challenge) or b""
        else:  # security layer negotiation (RFC 4752 §3.1)
            offer = ctx.unwrap(challenge)
            assert offer.message == LAYER_NONE and not offer.encrypted
            answer = ctx.wrap(LAYER_NONE + authzid, False).message
        code, resp = c.docmd(b64(answer) if answer else "")
    return code, resp


def send_as_alice(c: smtplib.SMTP, inst: Instance) -> None:
    m = uuid.uuid4().hex
    c.sendmail("alice@example.test", ["bob@example.test"],
               f"From: alice@example.test\r\nSubject: {m}\r\n\r\nkerberized\r\n")
    (msg,) = [x for x in inst.messages("bob@example.test") if m.encode() in x]
    assert b"with ESMTPSA" in msg


# -- without a KDC: the mapping rule, when GSSAPI is offered, the config --------------------------


def test_principal_to_address() -> None:
    assert sasl_gssapi.principal_to_address("alice@EXAMPLE.TEST") == "alice@example.test"
    assert sasl_gssapi.principal_to_address("Bob.Smith@Mail.Example") == "Bob.Smith@mail.example"
    for bad in ("alice", "alice@", "@EXAMPLE.TEST", "alice/admin@EXAMPLE.TEST",
                "host/mx.example.test@EXAMPLE.TEST", "a\\@b@EXAMPLE.TEST",
                "x" * 250 + "@EXAMPLE.TEST"):
        with pytest.raises(ValueError):
            sasl_gssapi.principal_to_address(bad)


@pytest.mark.parametrize("package", [True, False])
def test_offered_only_with_keytab_and_package(monkeypatch: pytest.MonkeyPatch,
                                              package: bool) -> None:
    monkeypatch.setattr(sasl_gssapi, "available", lambda: package)
    enabled = ["PLAIN", "GSSAPI", "SCRAM-SHA-256"]
    assert sasl.advertised(enabled, tls=True, channel_bindings=None) == ["SCRAM-SHA-256", "PLAIN"]
    assert sasl.advertised(enabled, tls=True, channel_bindings=None, gssapi_keytab="k") == (
        ["GSSAPI", "SCRAM-SHA-256", "PLAIN"] if package else ["SCRAM-SHA-256", "PLAIN"])
    assert sasl.advertised(["PLAIN"], tls=True, channel_bindings=None, gssapi_keytab="k") == [
        "PLAIN"]
    assert "GSSAPI" not in sasl.ALL_MECHANISMS  # those need no setup
    with pytest.raises(ValueError):
        sasl.create("GSSAPI", hostname="localhost")
    if not package:
        with pytest.raises(ValueError):
            sasl.create("GSSAPI", hostname="localhost", gssapi_keytab="k")


def test_config_keytab_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text('[submission]\nsasl_mechanisms = ["GSSAPI", "PLAIN"]\n'
                    'gssapi_keytab = "smtp.keytab"\n')
    with pytest.raises(ConfigError, match="gssapi_keytab"):
        config_mod.load(path)
    (tmp_path / "smtp.keytab").write_bytes(b"")
    assert config_mod.load(path).submission.gssapi_keytab == "smtp.keytab"


# -- against the KDC ---------------------------------------------------------------------------


def test_mechanism_refuses_junk(kdc: Kdc, gss: Any) -> None:
    """Without the driver: junk and out-of-sequence data end in Failure, never an exception."""
    for junk in (b"\x00", b"\x60\x82\xff\xffgarbage", b"x" * 5000):
        mech = sasl.create("gssapi", hostname="localhost", gssapi_keytab=str(kdc.keytab))
        assert mech.name == "GSSAPI" and mech.start(None) == sasl.Challenge(b"")
        assert isinstance(mech.respond(junk), sasl.Failure) and mech.finished
    mech = sasl.create("GSSAPI", hostname="localhost", gssapi_keytab=str(kdc.keytab))
    assert isinstance(mech.provide({}), sasl.Failure)
    missing = sasl.create("GSSAPI", hostname="localhost", gssapi_keytab=str(kdc.dir / "none"))
    step = initiator(gss, kdc.kinit("alice")).step()
    failure = missing.start(step)
    assert isinstance(failure, sasl.Failure) and "GSS-API" in failure.reason




def test_gssapi_advertised_first_after_tls(sub: Instance) -> None:
    with smtplib.SMTP("127.0.0.1", sub.submission_port, timeout=20) as c:
        c.ehlo()
        assert not c.has_extn("auth")
    with connect(sub) as c:
        assert c.esmtp_features["auth"].split() == ["GSSAPI", "SCRAM-SHA-256", "PLAIN"]


@pytest.mark.parametrize("mutual", [True, False], ids=["mutual", "no-mutual"])
@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "empty-challenge"])
def test_gssapi_login_and_send(sub: Instance, kdc: Kdc, gss: Any, mutual: bool,
                               initial: bool) -> None:
    ctx = initiator(gss, kdc.kinit("alice"), mutual=mutual)
    with connect(sub) as c:
        code, resp = authenticate(c, ctx, initial=initial)
        assert (code, resp[:5]) == (235, b"2.7.0"), resp
        assert ctx.complete
        send_as_alice(c, sub)


def test_gssapi_authzid(sub: Instance, kdc: Kdc, gss: Any) -> None:
    ccache = kdc.kinit("alice")
    for authzid, expected in ((b"alice@example.test", 235), (b"bob@example.test", 535)):
        with connect(sub) as c:
            assert authenticate(c, initiator(gss, ccache), authzid=authzid)[0] == expected
    sub.wait_log(r"auth failure .*mechanism=GSSAPI reason=.*may not act as")


def test_gssapi_without_ticket(sub: Instance, kdc: Kdc, gss: Any) -> None:
    empty = kdc.dir / "ccache-empty"
    with pytest.raises(gss.exceptions.GSSError):
        initiator(gss, empty).step()
    with connect(sub) as c:  # a client without a ticket can only send nothing (or junk)
        assert c.docmd("AUTH", "GSSAPI")[0] == 334
        assert c.docmd("")[0] == 535
    with connect(sub) as c:
        assert c.docmd("AUTH", "GSSAPI " + b64(b"\x60\x05not a kerberos token"))[0] == 535
    sub.wait_log(r"auth failure .*mechanism=GSSAPI reason=.*empty GSS-API token")


def test_gssapi_wrong_service(sub: Instance, kdc: Kdc, gss: Any) -> None:
    # A valid ticket, for imap/localhost (a key the server's keytab even holds), not smtp.
    ctx = initiator(gss, kdc.kinit("alice"), target="imap@localhost")
    with connect(sub) as c:
        code, _ = authenticate(c, ctx)
        assert code == 535
        assert c.mail("alice@example.test")[0] == 530
    sub.wait_log(r"auth failure .*mechanism=GSSAPI reason=.*GSS-API")


@pytest.mark.parametrize("principal", ["mallory", "alice/admin"])
def test_gssapi_principal_without_account(sub: Instance, kdc: Kdc, gss: Any,
                                          principal: str) -> None:
    # mallory@EXAMPLE.TEST maps to mallory@example.test, which has no account; a principal
    # with an instance is not a user at all.
    with connect(sub) as c:
        assert authenticate(c, initiator(gss, kdc.kinit(principal)))[0] == 535
    reason = "account vanished" if principal == "mallory" else "more than one component"
    sub.wait_log(rf"auth failure .*mechanism=GSSAPI reason=.*{reason}")


def test_gssapi_replayed_token(sub: Instance, kdc: Kdc, gss: Any) -> None:
    sent: list[bytes] = []
    with connect(sub) as c:
        assert authenticate(c, initiator(gss, kdc.kinit("alice")), sent=sent)[0] == 235
    with connect(sub) as c:  # an eavesdropper replaying the AP-REQ (RFC 4120 §3.2.3)
        code, resp = c.docmd("AUTH", f"GSSAPI {b64(sent[0])}")
        assert code in (334, 535), resp
        if code == 334:
            assert c.docmd("")[0] == 535
    sub.wait_log(r"auth failure .*mechanism=GSSAPI reason=.*[Rr]eplay")


PERL_CLIENT = r"""
use strict; use warnings;
use Net::SMTP; use Authen::SASL;
my ($port, $ca, $marker) = @ARGV;
my $smtp = Net::SMTP->new("localhost", Port => $port, Hello => "perl.example", Timeout => 20)
  or die "connect: $@";
$smtp->starttls(SSL_ca_file => $ca, SSL_verifycn_name => "localhost")
  or die "starttls: " . $smtp->message;
# Net::SMTP asks for service smtp at the host it dialled: smtp@localhost.
my $sasl = Authen::SASL->new(mechanism => "GSSAPI", callback => {});
$smtp->auth($sasl) or die "auth: " . $smtp->code . " " . $smtp->message;
print "AUTH ", $smtp->code, "\n";
$smtp->mail("alice\@example.test") and $smtp->to("bob\@example.test")
  and $smtp->data("From: alice\@example.test\r\nSubject: $marker\r\n\r\nperl\r\n")
  or die "send: " . $smtp->message;
$smtp->quit;
"""


def test_perl_gssapi_client(sub: Instance, kdc: Kdc) -> None:
    """A second, independent client: Net::SMTP with Authen::SASL's GSSAPI (perl GSSAPI).

    (swaks has no GSSAPI authenticator: it uses Authen::SASL for DIGEST-MD5 only.)
    """
    probe = subprocess.run(["perl", "-MGSSAPI", "-MAuthen::SASL::Perl::GSSAPI",
                            "-MIO::Socket::SSL", "-e", "1"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail("perl GSSAPI modules are missing: install the Debian packages libgssapi-perl "
                    "and libauthen-sasl-perl (scripts/test-deps.sh does)\n"
                    + probe.stderr.decode(errors="replace"), pytrace=False)
    m = uuid.uuid4().hex
    env = {**kdc.env, "KRB5CCNAME": f"FILE:{kdc.kinit('alice')}"}
    r = subprocess.run(["perl", "-e", PERL_CLIENT, str(sub.submission_port), str(sub.ca_file), m],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AUTH 235" in r.stdout
    assert [x for x in sub.messages("bob@example.test") if m.encode() in x]
