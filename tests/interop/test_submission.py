"""Submission (RFC 6409, RFC 8314) with SASL (RFC 4954) over real TLS, with real clients."""

from __future__ import annotations

import base64
import hashlib
import re
import smtplib
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient

from tests.interop.conftest import PASSWORD, Instance, make_instance, require_tool


@pytest.fixture(scope="module")
def sub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("submission"))
    inst.set_config(
        "submission",
        sasl_mechanisms=["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                         "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5", "PLAIN", "LOGIN"],
        auth_failure_delay=0.1,
        max_part_size=20000,
    )
    inst.cli("alias", "add", "sales@example.test", "alice@example.test")
    inst.start()
    yield inst
    inst.stop()


def noverify(max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def marker() -> str:
    return uuid.uuid4().hex


def login(inst: Instance, user: str = "alice@example.test", password: str = PASSWORD,
          mechanism: str = "PLAIN") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", inst.submission_port, timeout=20)
    c.starttls(context=noverify())
    c.ehlo()
    method = {"PLAIN": c.auth_plain, "LOGIN": c.auth_login, "CRAM-MD5": c.auth_cram_md5}
    c.user, c.password = user, password
    code, text = c.auth(mechanism, method[mechanism], initial_response_ok=True)
    assert code == 235, text
    return c


# -- before TLS -----------------------------------------------------------------------------


def test_no_auth_and_no_mail_before_tls(sub: Instance) -> None:
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        assert c.has_extn("starttls")
        assert c.docmd("AUTH", "PLAIN AGFsaWNlAHg=")[0] == 538
        code, text = c.mail("alice@example.test")
        assert (code, text[:5]) == (530, b"5.7.0")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_mail_needs_auth_after_tls(sub: Instance, version: ssl.TLSVersion) -> None:
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as c:
        c.starttls(context=noverify(version))
        c.ehlo()
        mechs = c.esmtp_features["auth"].split()
        if version is ssl.TLSVersion.TLSv1_2:  # tls-server-end-point is what clients use here
            assert mechs[:4] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                                 "SCRAM-SHA-1"]
        else:  # TLS 1.3: clients want tls-exporter (RFC 9266), which we cannot give
            assert mechs[:2] == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
            assert not [m for m in mechs if m.endswith("-PLUS")]
        assert "PLAIN" in mechs and "LOGIN" in mechs
        assert c.mail("alice@example.test")[0] == 530


@pytest.mark.parametrize("port", ["submission_port", "submissions_port"])
def test_no_plus_over_tls13(sub: Instance, port: str) -> None:
    """Over TLS 1.3 a -PLUS AUTH is an unknown mechanism, and a SCRAM client saying it could
    bind ("y") is no downgrade, since none was offered; over TLS 1.2 it is one (RFC 5802 §6)."""
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        raw = socket.create_connection(("127.0.0.1", getattr(sub, port)), timeout=20)
        f = raw.makefile("rb")
        sock = raw
        if port == "submissions_port":
            sock = noverify(version).wrap_socket(raw, server_hostname="localhost")
            f = sock.makefile("rb")
        f.readline()
        if port == "submission_port":
            sock.sendall(b"EHLO plus.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
            sock = noverify(version).wrap_socket(raw, server_hostname="localhost")
            f = sock.makefile("rb")
        assert sock.version() == version.name.replace("_", ".")
        sock.sendall(b"EHLO plus.test\r\n")
        lines = [f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(f.readline())
        (auth,) = [line for line in lines if line[4:9] == b"AUTH "]
        y_first = base64.b64encode(b"y,,n=alice@example.test,r=0123456789abcdef")
        if version is ssl.TLSVersion.TLSv1_3:
            assert b"-PLUS" not in auth
            sock.sendall(b"AUTH SCRAM-SHA-256-PLUS\r\n")
            assert f.readline().startswith(b"504 5.5.4")
            sock.sendall(b"AUTH SCRAM-SHA-256 " + y_first + b"\r\n")
            assert f.readline().startswith(b"334 ")
            sock.sendall(b"*\r\n")
            assert f.readline().startswith(b"501")
        else:
            assert b" SCRAM-SHA-256-PLUS " in auth
            sock.sendall(b"AUTH SCRAM-SHA-256 " + y_first + b"\r\n")
            assert f.readline().startswith(b"535 5.7.8")
        sock.close()


# -- every mechanism, with real clients -----------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_mechanisms_and_local_delivery(sub: Instance, mechanism: str) -> None:
    m = marker()
    with login(sub, mechanism=mechanism) as c:
        c.sendmail("alice@example.test", ["bob@example.test"],
                   f"From: alice@example.test\r\nSubject: {m}\r\n\r\nhi\r\n")
    (msg,) = [x for x in sub.messages("bob@example.test") if m.encode() in x]
    assert b"with ESMTPSA id" in msg


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"])
@pytest.mark.parametrize("tls", ["--tls", "--tls-on-connect"])
def test_swaks_mechanisms(sub: Instance, mechanism: str, tls: str) -> None:
    port = sub.submissions_port if tls == "--tls-on-connect" else sub.submission_port
    # DIGEST-MD5 (RFC 2831): the realm is the user's domain; digest-uri names our host name.
    extra = (["--auth-extra", "realm=example.test,dmd5-host=localhost"]
             if mechanism == "DIGEST-MD5" else [])
    r = subprocess.run(
        [require_tool("swaks", "swaks"), "--server", "127.0.0.1", "--port", str(port), tls,
         "--timeout", "20",
         "--auth", mechanism, "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
         "-f", "alice@example.test", "-t", "bob@example.test",
         "--header", "From: alice@example.test", *extra],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout


def _scram(sub: Instance, mechanism: str, user: str = "alice@example.test",
           password: str = PASSWORD) -> bytes:
    """A SCRAM exchange with scramp's client over implicit TLS; returns the final reply.

    -PLUS over TLS 1.2: over TLS 1.3 they are not offered (no tls-exporter binding)."""
    raw = socket.create_connection(("127.0.0.1", sub.submissions_port), timeout=20)
    plus = mechanism.endswith("-PLUS")
    sock = noverify(ssl.TLSVersion.TLSv1_2 if plus else None).wrap_socket(
        raw, server_hostname="localhost")
    f = sock.makefile("rb")

    def reply() -> bytes:
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    reply()
    sock.sendall(b"EHLO scram.test\r\n")
    reply()
    cb = None
    if mechanism.endswith("-PLUS"):
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        cb = ("tls-server-end-point", hashlib.sha256(der).digest())
    client = ScramClient([mechanism], user, password, channel_binding=cb)
    first = client.get_client_first().encode()
    sock.sendall(b"AUTH " + mechanism.encode() + b" " + base64.b64encode(first) + b"\r\n")
    answer = reply()
    assert answer.startswith(b"334 "), answer
    client.set_server_first(base64.b64decode(answer[4:].strip()).decode())
    sock.sendall(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
    answer = reply()
    if answer.startswith(b"334 "):
        client.set_server_final(base64.b64decode(answer[4:].strip()).decode())
        sock.sendall(b"\r\n")
        answer = reply()
    sock.close()
    return answer


@pytest.mark.parametrize(
    "mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]
)
def test_scram_with_and_without_channel_binding(sub: Instance, mechanism: str) -> None:
    answer = _scram(sub, mechanism)
    assert answer.startswith(b"235 2.7.0"), answer


def test_scram_wrong_password(sub: Instance) -> None:
    assert _scram(sub, "SCRAM-SHA-256", password="wrong password here").startswith(b"535 5.7.8")


def test_curl_smtps(sub: Instance, tmp_path: Path) -> None:
    m = marker()
    mail = tmp_path / "mail.txt"
    mail.write_text(f"From: alice@example.test\r\nSubject: {m}\r\n\r\nvia curl\r\n")
    # curl would pick DIGEST-MD5 (enabled on this instance), and its DIGEST-MD5 sends an empty
    # realm and host ("smtp/"), which RFC 2831 servers refuse: ask for PLAIN, its usual choice.
    r = subprocess.run(
        [require_tool("curl", "curl"), "-sS", "--insecure",
         f"smtps://127.0.0.1:{sub.submissions_port}",
         "--login-options", "AUTH=PLAIN",
         "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
         "--upload-file", str(mail), "--user", f"alice@example.test:{PASSWORD}"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert any(m.encode() in x for x in sub.messages("bob@example.test"))


# -- refusals -------------------------------------------------------------------------------


def test_wrong_password_logged_for_fail2ban(sub: Instance) -> None:
    with smtplib.SMTP("127.0.0.1", sub.submission_port) as c:
        c.starttls(context=noverify())
        c.ehlo()
        c.user, c.password = "alice@example.test", "not the password at all"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.auth("PLAIN", c.auth_plain, initial_response_ok=True)
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (535, b"5.7.8")
    sub.wait_log(r"auth failure ip=127\.0\.0\.1 user=alice@example\.test mechanism=PLAIN")


def test_abort_malformed_and_lockout(sub: Instance) -> None:
    raw = socket.create_connection(("127.0.0.1", sub.submissions_port), timeout=20)
    sock = noverify().wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
    f.readline()

    def cmd(line: bytes) -> bytes:
        sock.sendall(line + b"\r\n")
        while True:
            out = f.readline()
            if out[3:4] != b"-":
                return out

    cmd(b"EHLO x.test")
    assert cmd(b"AUTH LOGIN").startswith(b"334 ")
    assert cmd(b"*").startswith(b"501 5.0.0")
    assert cmd(b"AUTH PLAIN !!!notbase64").startswith(b"501 5.5.2")
    assert cmd(b"AUTH FOOBAR").startswith(b"504 5.5.4")
    bad = base64.b64encode(b"\0alice@example.test\0wrong-password-x")
    replies = [cmd(b"AUTH PLAIN " + bad) for _ in range(5)]
    assert all(r.startswith(b"535 5.7.8") for r in replies)
    assert f.readline().startswith(b"421 4.7.0")  # closed after auth_close_after failures
    sock.close()


def test_sender_ownership(sub: Instance) -> None:
    with login(sub) as c:
        code, text = c.mail("bob@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        assert c.mail("sales@example.test")[0] == 250  # an alias of alice's
        c.rset()
        assert c.mail("ALICE@EXAMPLE.TEST")[0] == 250
        c.rset()
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("alice@example.test", ["bob@example.test"],
                       "From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nx\r\n")
        assert e.value.smtp_code == 553


def test_send_as_grant(sub: Instance) -> None:
    with login(sub) as c:
        assert c.mail("shared@remote.test")[0] == 553
    sub.cli("send-as", "add", "alice@example.test", "Shared@Remote.test")
    assert sub.cli("send-as", "list", "alice@example.test").stdout.split() == ["shared@remote.test"]
    with login(sub) as c:
        c.sendmail("shared@remote.test", ["bob@example.test"],
                   "From: Shared <shared@remote.test>\r\nSubject: s\r\n\r\nx\r\n")
    r = sub.cli("send-as", "add", "alice@example.test", "shared@remote.test", check=False)
    assert r.returncode == 1 and "already" in r.stderr
    sub.cli("send-as", "remove", "alice@example.test", "shared@remote.test")
    with login(sub) as c:
        assert c.mail("shared@remote.test")[0] == 553


def test_remote_recipient_is_queued_not_relayed_unauthenticated(sub: Instance) -> None:
    m = marker()
    with login(sub) as c:
        c.sendmail("alice@example.test", ["friend@remote.test", "bob@example.test"],
                   f"From: alice@example.test\r\nSubject: {m}\r\n\r\nout\r\n")
    assert any(m.encode() in x for x in sub.messages("bob@example.test"))
    queued = sub.outbound()
    assert any(m.encode() in data and "friend@remote.test" in rcpts for rcpts, data in queued)
    # the MX port still refuses to relay for anyone not logged in
    with smtplib.SMTP("127.0.0.1", sub.smtp_port) as c:
        c.ehlo()
        c.mail("alice@example.test")
        assert c.rcpt("friend@remote.test")[0] == 554


def test_part_size_limit(sub: Instance) -> None:
    big = ("y" * 76 + "\r\n") * 400  # ~31 KB part; limit 20000
    body = (
        "From: alice@example.test\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nsmall\r\n"
        f"--b\r\nContent-Type: text/plain\r\n\r\n{big}\r\n--b--\r\n"
    )
    with login(sub) as c, pytest.raises(smtplib.SMTPDataError) as e:
        c.sendmail("alice@example.test", ["bob@example.test"], body)
    assert e.value.smtp_code == 552


def test_app_passwords(sub: Instance) -> None:
    r = sub.cli("app-password", "add", "bob@example.test", "phone", "--scope", "smtp")
    app_pw = r.stdout.strip().splitlines()[-1].split()[-1]
    r = sub.cli("app-password", "add", "bob@example.test", "mailreader", "--scope", "imap")
    imap_pw = r.stdout.strip().splitlines()[-1].split()[-1]
    login(sub, "bob@example.test", app_pw).quit()
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login(sub, "bob@example.test", imap_pw)  # scoped to IMAP only
    sub.cli("user", "set", "bob@example.test", "--app-passwords-only", "yes")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login(sub, "bob@example.test", PASSWORD)
    login(sub, "bob@example.test", app_pw).quit()
    sub.cli("app-password", "revoke", "bob@example.test", "phone")
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login(sub, "bob@example.test", app_pw)
    sub.cli("user", "set", "bob@example.test", "--app-passwords-only", "no")


def test_fail2ban_filter_matches_auth_failures(sub: Instance) -> None:
    """The shipped fail2ban filter matches every AUTH failure line, with the client IP."""
    log = sub.log()
    failures = len(re.findall(r"postkeep\.smtp\[w\d+\]: auth failure ip=127\.0\.0\.1 ", log))
    assert failures >= 3  # made by the tests above in this module
    filt = Path(__file__).parents[2] / "contrib" / "fail2ban" / "filter.d" / "postkeep.conf"
    r = subprocess.run([require_tool("fail2ban-regex", "fail2ban"), str(sub.log_path), str(filt)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    found = re.search(r"Lines: \d+ lines, \d+ ignored, (\d+) matched", r.stdout)
    assert found is not None, r.stdout
    matched = int(found.group(1))
    closes = log.count("code=421 4.7.0 reason=\"too many auth failures\"")
    assert matched == failures + closes, r.stdout
