"""SASL server mechanisms (RFC 4422): PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), DIGEST-MD5
(RFC 2831), SCRAM-SHA-1/-256[-PLUS] (RFC 5802, RFC 7677, RFC 5929, RFC 9266), and the framing
helpers (RFC 4954 §4, RFC 9051 §6.2.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

import pytest
from scramp import ScramClient

from postkeep.sasl import mechanisms as sasl
from postkeep.sasl import secrets as ss
from postkeep.sasl.mechanisms import (
    ABORT,
    ALL_MECHANISMS,
    Challenge,
    Failure,
    NeedPassword,
    NeedSecrets,
    SaslMalformed,
    Success,
    decode_response,
    encode_challenge,
)

HOST = "mx.example.test"
USER = "alice@example.test"
PASSWORD = "correct horse battery"
SECRETS = ss.derive_secrets(USER, PASSWORD)
CB = {"tls-server-end-point": hashlib.sha256(b"certificate").digest()}


def failed(step: sasl.Step) -> str:
    assert isinstance(step, Failure), step
    return step.reason


# -- framing ----------------------------------------------------------------------------------


def test_decode_response() -> None:
    assert decode_response(b"*") is ABORT
    assert decode_response(b"*", initial=True) is ABORT
    assert decode_response(b"=", initial=True) == b""
    assert decode_response(b"") == b""
    assert decode_response(b"AGFsaWNlAHg=") == b"\x00alice\x00x"
    assert decode_response(b"QQ==") == b"A"


@pytest.mark.parametrize(
    "line",
    [b"=", b"QQ", b"QQ=", b"Q===", b"QQ==QQ==", b"QQ=A", b"Q Q=", b"QQ==\r", b" QQ==", b"Q\x00==",
     b"QR==", b"**", b"\xff\xfe==", b"QUJD\n", b"QUJD-_=="],
)
def test_decode_response_is_strict(line: bytes) -> None:
    with pytest.raises(SaslMalformed):
        decode_response(line)


def test_decode_response_length_limit() -> None:
    ok = base64.b64encode(b"x" * 9216)
    assert len(ok) == 12288 and decode_response(ok) == b"x" * 9216
    with pytest.raises(SaslMalformed):
        decode_response(ok + b"QUJD")
    with pytest.raises(SaslMalformed):
        decode_response(b"QUJD", max_length=3)
    assert issubclass(SaslMalformed, ValueError)


def test_encode_challenge() -> None:
    assert encode_challenge(b"") == b""
    assert encode_challenge(b"Username:") == b"VXNlcm5hbWU6"


# -- choosing ---------------------------------------------------------------------------------


def test_all_mechanisms_order() -> None:
    assert ALL_MECHANISMS == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                              "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5", "PLAIN", "LOGIN")


def test_advertised() -> None:
    everything = list(reversed(ALL_MECHANISMS))
    assert sasl.advertised(everything, tls=True, channel_bindings=CB) == list(ALL_MECHANISMS)
    assert sasl.advertised(everything, tls=True, channel_bindings=None) == [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5", "PLAIN", "LOGIN"]
    assert sasl.advertised(everything, tls=False, channel_bindings=None) == [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5"]
    assert sasl.advertised(everything, tls=False, channel_bindings=CB)[0] == "SCRAM-SHA-256"
    assert sasl.advertised(["PLAIN", "SCRAM-SHA-1-PLUS"], tls=True, channel_bindings=CB) == [
        "SCRAM-SHA-1-PLUS", "PLAIN"]
    exporter = {"tls-exporter": b"k" * 32}
    assert "SCRAM-SHA-256-PLUS" in sasl.advertised(everything, tls=True, channel_bindings=exporter)
    for useless in ({"tls-unique": b"x"}, {"tls-server-end-point": b""}, {}):
        assert "SCRAM-SHA-256-PLUS" not in sasl.advertised(
            everything, tls=True, channel_bindings=useless)
    assert sasl.advertised([], tls=True, channel_bindings=CB) == []


def test_advertised_by_tls_version() -> None:
    """Over TLS 1.3 clients bind with tls-exporter (RFC 9266), not tls-server-end-point."""
    everything = list(ALL_MECHANISMS)
    end_point = {"tls-server-end-point": b"h" * 32}
    for version in (None, "TLSv1.2", "TLSv1.1"):
        assert sasl.advertised(everything, tls=True, channel_bindings=end_point,
                               tls_version=version) == everything
    assert sasl.advertised(everything, tls=True, channel_bindings=end_point,
                           tls_version="TLSv1.3") == [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5", "PLAIN", "LOGIN"]
    both = {**end_point, "tls-exporter": b"k" * 32}
    assert sasl.advertised(everything, tls=True, channel_bindings=both,
                           tls_version="TLSv1.3") == everything
    assert sasl.plus_bindings(both, "TLSv1.3") == {"tls-exporter": b"k" * 32}
    assert sasl.plus_bindings(both, "TLSv1.2") == both
    assert sasl.plus_bindings(end_point, "TLSv1.3") == {}


def test_create() -> None:
    for name in ALL_MECHANISMS:
        mech = sasl.create(name, hostname=HOST, channel_bindings=CB)
        assert mech.name == name and not mech.finished
    assert sasl.create("plain", hostname=HOST).name == "PLAIN"
    for bad in ("GSSAPI", "SCRAM-SHA-512", "SCRAM-MD5-PLUS", "", "XOAUTH2"):
        with pytest.raises(ValueError):
            sasl.create(bad, hostname=HOST)


# -- sequencing -------------------------------------------------------------------------------


def test_finished_exchange_refuses_to_continue() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    assert isinstance(mech.start(b"\x00alice\x00pw"), NeedPassword)
    assert isinstance(mech.password_checked(True), Success)
    assert mech.finished
    for step in (mech.start(None), mech.respond(b"x"), mech.provide(SECRETS),
                 mech.password_checked(True)):
        assert failed(step) == "exchange finished"


def test_out_of_sequence_calls_fail_the_exchange() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    assert "unexpected" in failed(mech.respond(b"\x00a\x00b"))  # before start
    mech = sasl.create("CRAM-MD5", hostname=HOST)
    assert isinstance(mech.start(None), Challenge)
    assert "unexpected" in failed(mech.password_checked(True))
    assert failed(mech.respond(b"alice " + b"0" * 32)) == "exchange finished"
    mech = sasl.create("LOGIN", hostname=HOST)
    mech.start(b"alice")
    assert "unexpected" in failed(mech.provide(SECRETS))
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST)
    assert isinstance(mech.start(b"n,,n=alice,r=abc"), NeedSecrets)
    assert "unexpected" in failed(mech.respond(b"c=biws"))  # secrets were due
    mech = sasl.create("PLAIN", hostname=HOST)
    mech.start(None)
    assert "unexpected" in failed(mech.start(None))


# -- PLAIN ------------------------------------------------------------------------------------


def test_plain_with_initial_response() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    assert mech.start(b"\x00alice@example.test\x00s3cret") == NeedPassword(
        "alice@example.test", "", "s3cret")
    assert mech.password_checked(True) == Success("alice@example.test", "", None)


def test_plain_without_initial_response_and_authzid() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    assert mech.start(None) == Challenge(b"")
    step = mech.respond("boss\x00alice\x00pässword".encode())
    assert step == NeedPassword("alice", "boss", "pässword")
    assert mech.password_checked(True) == Success("alice", "boss", None)


def test_plain_wrong_password() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    mech.start(b"\x00alice\x00wrong")
    assert failed(mech.password_checked(False)) == "invalid credentials"
    assert mech.finished


@pytest.mark.parametrize(
    "message",
    [b"", b"alice", b"\x00alice", b"\x00alice\x00", b"\x00\x00pw", b"\x00alice\x00pw\x00",
     b"\x00\x00alice\x00pw", b"\x00al\xffice\x00pw", b"\x00alice\x00p\xc3", b"\x00a\nb\x00pw",
     b"x\x07\x00alice\x00pw", b"\x00" + b"a" * 256 + b"\x00pw", b"\x00alice\x00" + b"p" * 256,
     b"a" * 256 + b"\x00alice\x00pw"],
)
def test_plain_malformed(message: bytes) -> None:
    if message:  # an empty initial response counts as none (see test_plain_empty_initial)
        failed(sasl.create("PLAIN", hostname=HOST).start(message))
    mech = sasl.create("PLAIN", hostname=HOST)
    mech.start(None)
    failed(mech.respond(message))


def test_plain_empty_initial_response_is_no_initial_response() -> None:
    assert sasl.create("PLAIN", hostname=HOST).start(b"") == Challenge(b"")


def test_plain_part_limits_are_255_octets() -> None:
    mech = sasl.create("PLAIN", hostname=HOST)
    step = mech.start(b"z" * 255 + b"\x00" + b"a" * 255 + b"\x00" + b"p" * 255)
    assert isinstance(step, NeedPassword) and len(step.password) == 255


# -- LOGIN ------------------------------------------------------------------------------------


def test_login() -> None:
    mech = sasl.create("LOGIN", hostname=HOST)
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"alice@example.test") == Challenge(b"Password:")
    assert mech.respond(b"pw") == NeedPassword("alice@example.test", "", "pw")
    assert mech.password_checked(True) == Success("alice@example.test", "", None)


def test_login_username_as_initial_response_and_wrong_password() -> None:
    mech = sasl.create("LOGIN", hostname=HOST)
    assert mech.start(b"alice") == Challenge(b"Password:")
    assert isinstance(mech.respond(b"bad"), NeedPassword)
    assert failed(mech.password_checked(False)) == "invalid credentials"
    mech = sasl.create("LOGIN", hostname=HOST)
    assert mech.start(b"") == Challenge(b"Username:")  # empty initial response = none


@pytest.mark.parametrize(("user", "password"), [(b"", b"pw"), (b"alice", b""), (b"\xff", b"pw"),
                                                (b"a\x00b", b"pw"), (b"alice", b"p\x00w"),
                                                (b"a" * 256, b"pw"), (b"alice", b"p" * 256)])
def test_login_malformed(user: bytes, password: bytes) -> None:
    mech = sasl.create("LOGIN", hostname=HOST)
    mech.start(None)
    step = mech.respond(user)
    if isinstance(step, Challenge):
        step = mech.respond(password)
    failed(step)


# -- CRAM-MD5 ---------------------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def cram_answer(challenge: bytes, user: str, password: str) -> bytes:
    return f"{user} {hmac.new(password.encode(), challenge, 'md5').hexdigest()}".encode()


def test_cram_md5_rfc2195_example() -> None:
    mech = sasl.CramMd5(HOST, challenge=RFC2195_CHALLENGE)
    assert mech.start(None) == Challenge(RFC2195_CHALLENGE)
    assert mech.respond(b"tim b913a602c7eda7a495b4e6e7334d3890") == NeedSecrets("tim")
    secrets = ss.derive_secrets("tim", "tanstaaftanstaaf")
    assert mech.provide(secrets) == Success("tim", "", None)


def test_cram_md5_challenges_are_fresh_msg_ids() -> None:
    challenges = set()
    for _ in range(20):
        step = sasl.create("CRAM-MD5", hostname=HOST).start(None)
        assert isinstance(step, Challenge)
        assert step.data.startswith(b"<") and step.data.endswith(b"@" + HOST.encode() + b">")
        challenges.add(step.data)
    assert len(challenges) == 20


def test_cram_md5_full_exchange_wrong_password_and_unknown_user() -> None:
    def run(password: str, secrets: Mapping[str, str] | None, user: str = USER) -> sasl.Step:
        mech = sasl.create("CRAM-MD5", hostname=HOST)
        challenge = mech.start(None)
        assert isinstance(challenge, Challenge)
        assert mech.respond(cram_answer(challenge.data, user, password)) == NeedSecrets(user)
        return mech.provide(secrets)

    assert run(PASSWORD, SECRETS) == Success(USER, "", None)
    assert run("Alice Smith", SECRETS, user="alice smith") == Failure("invalid credentials")
    assert failed(run("wrong", SECRETS)) == "invalid credentials"
    assert "unknown user" in failed(run(PASSWORD, None))
    assert "unknown user" in failed(run(PASSWORD, {"PLAIN": "x"}))
    assert failed(run(PASSWORD, {"CRAM-MD5": "garbage"})) == "invalid credentials"


def test_cram_md5_user_with_space_and_uppercase_digest() -> None:
    mech = sasl.CramMd5(HOST, challenge=b"<1.2@h>")
    mech.start(None)
    digest = hmac.new(b"pw", b"<1.2@h>", "md5").hexdigest().upper()
    assert mech.respond(f"john smith {digest}".encode()) == NeedSecrets("john smith")
    assert mech.provide({"CRAM-MD5": ss.cram_md5_secret("pw")}) == Success("john smith", "", None)


@pytest.mark.parametrize(
    "answer",
    [b"", b"alice", b"alice ", b" " + b"0" * 32, b"alice " + b"0" * 31, b"alice " + b"0" * 33,
     b"alice " + b"g" * 32, b"al\xffice " + b"0" * 32, b"a\tb " + b"0" * 32,
     b"a" * 300 + b" " + b"0" * 32],
)
def test_cram_md5_malformed(answer: bytes) -> None:
    mech = sasl.create("CRAM-MD5", hostname=HOST)
    mech.start(None)
    failed(mech.respond(answer))


def test_cram_md5_refuses_initial_response() -> None:
    failed(sasl.create("CRAM-MD5", hostname=HOST).start(b"alice 00"))


# -- DIGEST-MD5 -------------------------------------------------------------------------------


def digest_client(
    challenge: bytes,
    user: str = USER,
    password: str = PASSWORD,
    *,
    realm: str | None = "example.test",
    uri: str = f"smtp/{HOST}",
    nc: str = "00000001",
    authzid: str | None = None,
    cnonce: str = "OA6MHXh6VqTrRk",
    nonce: str | None = None,
) -> tuple[bytes, str]:
    """An RFC 2831 client response to `challenge`, and the rspauth it expects."""
    d = sasl.parse_directives(challenge.decode())
    assert d["qop"] == "auth" and "realm" not in d
    used_nonce = d["nonce"] if nonce is None else nonce
    base = ss.digest_md5_ha1_base(user, realm or "", password)

    def value(rspauth: bool) -> str:
        return ss.digest_md5_response(base, nonce=used_nonce, cnonce=cnonce, nc=nc, qop="auth",
                                      digest_uri=uri, authzid=authzid, rspauth=rspauth)

    response = value(False)
    parts = [f'username="{user}"', f'nonce="{used_nonce}"', f'cnonce="{cnonce}"', f"nc={nc}",
             "qop=auth", f'digest-uri="{uri}"', f"response={response}", "charset=utf-8"]
    if realm is not None:
        parts.append(f'realm="{realm}"')
    if authzid is not None:
        parts.append(f'authzid="{authzid}"')
    return ",".join(parts).encode(), value(True)


def digest_run(response_for: dict[str, object] | None = None,
               secrets: Mapping[str, str] | None = SECRETS) -> tuple[sasl.Step, str]:
    mech = sasl.create("DIGEST-MD5", hostname=HOST)
    challenge = mech.start(None)
    assert isinstance(challenge, Challenge)
    response, rspauth = digest_client(challenge.data, **(response_for or {}))  # type: ignore[arg-type]
    step = mech.respond(response)
    if isinstance(step, NeedSecrets):
        step = mech.provide(secrets)
    return step, rspauth


def test_digest_md5_challenge() -> None:
    mech = sasl.DigestMd5(HOST, nonce="OA6MG9tEQGm2hh")
    assert mech.start(None) == Challenge(
        b'nonce="OA6MG9tEQGm2hh",qop="auth",charset=utf-8,algorithm=md5-sess')
    other = sasl.create("DIGEST-MD5", hostname=HOST)
    assert isinstance(other, sasl.DigestMd5) and other.nonce != mech.nonce


def test_digest_md5_end_to_end_with_derived_secrets() -> None:
    step, rspauth = digest_run()
    assert step == Success(USER, "", b"rspauth=" + rspauth.encode())


def test_digest_md5_authzid_imap_and_serv_name() -> None:
    step, rspauth = digest_run({"authzid": "boss@example.test", "uri": f"imap/{HOST}/example.test"})
    assert step == Success(USER, "boss@example.test", b"rspauth=" + rspauth.encode())
    step, _ = digest_run({"uri": f"smtp/{HOST.upper()}"})
    assert isinstance(step, Success)


def test_digest_md5_rfc2831_style_response_parsing() -> None:
    # the §4 layout: LWS, token and quoted values, escapes, directive names in any case
    mech = sasl.DigestMd5("elwood.innosoft.com", nonce="OA6MG9tEQGm2hh")
    mech.start(None)
    response = (
        b'charset=utf-8,USERNAME="chris",realm="",nonce="OA6MG9tEQGm2hh",'
        b'nc=00000001, cnonce = "OA6MHXh6VqTrRk",digest-uri="imap/elwood.innosoft.com",'
        b"response=%s,qop=auth,maxbuf=65536,,"
    )
    base = ss.digest_md5_ha1_base("chris", "", "secret")
    value = ss.digest_md5_response(base, nonce="OA6MG9tEQGm2hh", cnonce="OA6MHXh6VqTrRk",
                                   nc="00000001", qop="auth",
                                   digest_uri="imap/elwood.innosoft.com")
    assert mech.respond(response % value.encode()) == NeedSecrets("chris")
    step = mech.provide({"DIGEST-MD5": base.hex()})
    assert isinstance(step, Success) and step.final is not None
    assert step.final.startswith(b"rspauth=")


def test_digest_md5_realm_must_be_the_users_domain() -> None:
    assert "realm" in failed(digest_run({"realm": "elwood.innosoft.com"})[0])
    assert "realm" in failed(digest_run({"realm": None})[0])
    assert "realm" in failed(digest_run({"realm": "Example.test"})[0])


def test_digest_md5_wrong_password_and_unknown_user() -> None:
    assert failed(digest_run({"password": "wrong"})[0]) == "invalid credentials"
    assert "unknown user" in failed(digest_run(secrets=None)[0])
    assert "unknown user" in failed(digest_run(secrets={"DIGEST-MD5": "nothex"})[0])


@pytest.mark.parametrize(
    "change",
    [{"uri": "smtp/other.example"}, {"uri": f"http/{HOST}"}, {"uri": HOST},
     {"uri": f"smtp/{HOST}/x/y"}, {"uri": f"smtp//{HOST}"}, {"nc": "00000002"}, {"nc": "1"},
     {"nonce": "not-ours"}, {"authzid": ""}, {"cnonce": ""}],
)
def test_digest_md5_checks(change: dict[str, object]) -> None:
    failed(digest_run(change)[0])


@pytest.mark.parametrize(
    "response",
    [b"", b"garbage", b'username="a', b"username=a,username=b", b'username="a" x', b"=x",
     b'username="alice@example.test",nonce="n",cnonce="c",nc=00000001,digest-uri="smtp/h"',
     b"\xff\xfe", b"a=" + b"b" * 5000, b'username="\\'],
)
def test_digest_md5_malformed(response: bytes) -> None:
    mech = sasl.create("DIGEST-MD5", hostname=HOST)
    mech.start(None)
    failed(mech.respond(response))


def test_digest_md5_qop_and_charset() -> None:
    mech = sasl.create("DIGEST-MD5", hostname=HOST)
    challenge = mech.start(None)
    assert isinstance(challenge, Challenge)
    response, _ = digest_client(challenge.data)
    assert "qop" in failed(mech.respond(response.replace(b"qop=auth", b"qop=auth-conf")))
    mech = sasl.create("DIGEST-MD5", hostname=HOST)
    challenge = mech.start(None)
    assert isinstance(challenge, Challenge)
    response, _ = digest_client(challenge.data)
    assert "charset" in failed(mech.respond(response.replace(b"utf-8", b"latin-1")))


def test_digest_md5_refuses_subsequent_authentication() -> None:
    failed(sasl.create("DIGEST-MD5", hostname=HOST).start(b'username="x"'))


def test_parse_directives() -> None:
    assert sasl.parse_directives('a=b, C="d,\\"e" ,,f=') == {"a": "b", "c": 'd,"e', "f": ""}
    for bad in ("a", "a=b c=d", '=b', 'a="b', "a=b,a=c", "a b=c"):
        with pytest.raises(ValueError):
            sasl.parse_directives(bad)


# -- SCRAM ------------------------------------------------------------------------------------


def scram_exchange(
    mechanism: str,
    *,
    password: str = PASSWORD,
    user: str = USER,
    client_cb: tuple[str, bytes] | None = None,
    server_cb: Mapping[str, bytes] | None = None,
    secrets: Mapping[str, str] | None = SECRETS,
    initial: bool = True,
) -> sasl.Step:
    """A full exchange between scramp's client and our server; the last step."""
    client = ScramClient([mechanism], user, password, channel_binding=client_cb)
    mech = sasl.create(client.mechanism_name, hostname=HOST, channel_bindings=server_cb)
    first = client.get_client_first().encode()
    if initial:
        step = mech.start(first)
    else:
        assert mech.start(None) == Challenge(b"")
        step = mech.respond(first)
    if not isinstance(step, NeedSecrets):
        return step
    assert step.authcid == user
    step = mech.provide(secrets)
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    step = mech.respond(client.get_client_final().encode())
    if isinstance(step, Success):
        assert step.final is not None
        client.set_server_final(step.final.decode())  # scramp verifies the ServerSignature
    return step


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
@pytest.mark.parametrize("initial", [True, False])
def test_scram_with_scramp_client(mechanism: str, initial: bool) -> None:
    step = scram_exchange(mechanism, initial=initial)
    assert isinstance(step, Success) and (step.authcid, step.authzid) == (USER, "")
    # the server offered -PLUS on this connection, but this client has no binding: "n" is fine
    assert isinstance(scram_exchange(mechanism, server_cb=CB), Success)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_scram_plus_with_tls_server_end_point(mechanism: str) -> None:
    cb = ("tls-server-end-point", CB["tls-server-end-point"])
    assert isinstance(scram_exchange(mechanism, client_cb=cb, server_cb=CB), Success)
    other = ("tls-server-end-point", hashlib.sha256(b"mitm certificate").digest())
    assert failed(scram_exchange(mechanism, client_cb=other, server_cb=CB)) == (
        "channel binding mismatch")
    assert "channel binding" in failed(scram_exchange(mechanism, client_cb=cb, server_cb=None))


def test_scram_downgrade_y_flag() -> None:
    cb = ("tls-server-end-point", CB["tls-server-end-point"])
    # scramp sends "y" when it has a binding but the mechanism is not -PLUS
    assert "downgrade" in failed(scram_exchange("SCRAM-SHA-256", client_cb=cb, server_cb=CB))
    assert isinstance(scram_exchange("SCRAM-SHA-256", client_cb=cb, server_cb=None), Success)
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST, channel_bindings=CB, plus_offered=False)
    assert isinstance(mech.start(b"y,,n=alice,r=abc"), NeedSecrets)
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST, plus_offered=True)
    assert "downgrade" in failed(mech.start(b"y,,n=alice,r=abc"))


def test_scram_wrong_password_and_unknown_user() -> None:
    assert failed(scram_exchange("SCRAM-SHA-256", password="wrong")) == "invalid credentials"
    assert "unknown user" in failed(scram_exchange("SCRAM-SHA-256", secrets=None))
    assert "unknown user" in failed(scram_exchange("SCRAM-SHA-1", secrets={"CRAM-MD5": "x"}))
    assert "unknown user" in failed(scram_exchange("SCRAM-SHA-1", secrets={"SCRAM-SHA-1": "bad"}))
    # a SHA-256 secret is no SHA-1 secret
    assert "unknown user" in failed(
        scram_exchange("SCRAM-SHA-1", secrets={"SCRAM-SHA-1": SECRETS["SCRAM-SHA-256"]}))


def server_first_for(mech: sasl.ServerMechanism, first: bytes,
                     secrets: Mapping[str, str] | None) -> bytes:
    assert isinstance(mech.start(first), NeedSecrets)
    step = mech.provide(secrets)
    assert isinstance(step, Challenge)
    return step.data


def test_scram_unknown_user_gets_a_stable_plausible_salt() -> None:
    firsts = [server_first_for(sasl.create("SCRAM-SHA-256", hostname=HOST),
                               b"n,,n=nobody@example.test,r=abc", None) for _ in range(2)]
    salts = [dict(a.split(b"=", 1) for a in f.split(b","))[b"s"] for f in firsts]
    assert salts[0] == salts[1] and len(base64.b64decode(salts[0])) == 16
    assert firsts[0].endswith(b",i=4096")
    other = server_first_for(sasl.create("SCRAM-SHA-256", hostname=HOST),
                             b"n,,n=someone@example.test,r=abc", None)
    assert dict(a.split(b"=", 1) for a in other.split(b","))[b"s"] != salts[0]


def scram_proof(hash_name: str, password: str, server_first: bytes, bare: str,
                without_proof: str) -> str:
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored = hashlib.new(hash_name, client_key).digest()
    auth = f"{bare},{server_first.decode()},{without_proof}".encode()
    sig = hmac.digest(stored, auth, hash_name)
    return base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True))).decode()


def test_scram_authzid_and_tls_exporter_with_handmade_client() -> None:
    exporter = b"E" * 32
    mech = sasl.create("SCRAM-SHA-256-PLUS", hostname=HOST,
                       channel_bindings={"tls-exporter": exporter})
    gs2 = "p=tls-exporter,a=boss=3Dx=2Cy,"
    bare = f"n={USER},r=clientnonce,x=ignored"
    server_first = server_first_for(mech, (gs2 + bare).encode(), SECRETS)
    nonce = server_first.split(b",")[0][2:].decode()
    cbind = base64.b64encode(gs2.encode() + exporter).decode()
    without = f"c={cbind},r={nonce}"
    proof = scram_proof("sha256", PASSWORD, server_first, bare, without)
    step = mech.respond(f"{without},p={proof}".encode())
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == (USER, "boss=x,y")


def test_scram_username_escapes_and_saslprep() -> None:
    mech = sasl.create("SCRAM-SHA-1", hostname=HOST)
    assert mech.start(b"n,,n=a=2Cb=3Dc,r=x") == NeedSecrets("a,b=c")
    mech = sasl.create("SCRAM-SHA-1", hostname=HOST)
    assert mech.start("n,,n=I\u00adX\u2168,r=x".encode()) == NeedSecrets("IXIX")


def test_scram_rfc5802_example() -> None:
    secret = ss.scram_secret("SCRAM-SHA-1", "pencil", salt=base64.b64decode("QSXCR+Q6sek8bf92"))
    mech = sasl.Scram("SCRAM-SHA-1", nonce="3rfcNHYJY1ZVvWVs7j")
    assert mech.start(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == NeedSecrets("user")
    assert mech.provide({"SCRAM-SHA-1": secret.encode()}) == Challenge(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    step = mech.respond(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                        b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert step == Success("user", "", b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_scram_rfc7677_example() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    secret = ss.scram_secret("SCRAM-SHA-256", "pencil", salt=salt)
    mech = sasl.Scram("SCRAM-SHA-256", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert mech.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == NeedSecrets("user")
    assert mech.provide({"SCRAM-SHA-256": secret.encode()}) == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    step = mech.respond(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert step == Success("user", "", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_nonces_are_fresh() -> None:
    nonces = set()
    for _ in range(10):
        data = server_first_for(sasl.create("SCRAM-SHA-256", hostname=HOST),
                                b"n,,n=user,r=abc", SECRETS)
        nonces.add(data.split(b",")[0])
    assert len(nonces) == 10


@pytest.mark.parametrize(
    "first",
    [b",", b"n", b"n,,", b"x,,n=u,r=a", b"n,a=u=40,n=u,r=a", b"n,x,n=u,r=a", b"n,a=,n=u,r=a",
     b"n,,m=ext,n=u,r=a",
     b"n,,r=a,n=u", b"n,,n=,r=a", b"n,,n=u=2X,r=a", b"n,,n=u=,r=a", b"n,,n=u,r=", b"n,,n=u,r=a b",
     b"n,,n=u", b"n,,n=u,r=a,1=x", b"n,,n=u,r=a,", b"n,,n=\xff,r=a", b"n,,n=u\x07,r=a",
     b"n,,n=\xd8\xa71,r=a", b"p=tls-unique,,n=u,r=a", b"p=tls-server-end-point,,n=u,r=a",
     b"n,,n=" + b"u" * 256 + b",r=a", b"n,,n=u,r=" + b"a" * 5000],
)
def test_scram_malformed_client_first(first: bytes) -> None:
    failed(sasl.create("SCRAM-SHA-256", hostname=HOST, channel_bindings=CB).start(first))


@pytest.mark.parametrize(("mechanism", "first"), [
    ("SCRAM-SHA-256-PLUS", b"n,,n=u,r=a"),
    ("SCRAM-SHA-256-PLUS", b"y,,n=u,r=a"),
    ("SCRAM-SHA-256-PLUS", b"p=tls-exporter,,n=u,r=a"),  # not available on this connection
    ("SCRAM-SHA-256-PLUS", b"p=tls-unique,,n=u,r=a"),
])
def test_scram_plus_gs2_rules(mechanism: str, first: bytes) -> None:
    failed(sasl.create(mechanism, hostname=HOST, channel_bindings=CB).start(first))


def scram_final_step(final: bytes, *, mechanism: str = "SCRAM-SHA-256") -> sasl.Step:
    mech = sasl.create(mechanism, hostname=HOST)
    server_first_for(mech, b"n,,n=" + USER.encode() + b",r=abc", SECRETS)
    return mech.respond(final)


def test_scram_malformed_client_final() -> None:
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST)
    server_first = server_first_for(mech, b"n,,n=" + USER.encode() + b",r=abc", SECRETS)
    nonce = server_first.split(b",")[0][2:].decode()
    good_without = f"c=biws,r={nonce}"
    proof = scram_proof("sha256", PASSWORD, server_first, f"n={USER},r=abc", good_without)
    cases = [
        b"", b"garbage", f"c=biws,r={nonce}".encode(), f"r={nonce},c=biws,p={proof}".encode(),
        f"c=biws,r={nonce}x,p={proof}".encode(), f"c=biws,r=abc,p={proof}".encode(),
        f"c=eSws,r={nonce},p={proof}".encode(), f"c=!!,r={nonce},p={proof}".encode(),
        f"c=biws,r={nonce},p=!!".encode(), f"c=biws,r={nonce},p=QUJD".encode(),
        f"c=biws,r={nonce},p={proof},x=y".encode(), f"c=biws,r={nonce},1=2,p={proof}".encode(),
        f"c=cD10bHMtZXhwb3J0ZXIsLA==,r={nonce},p={proof}".encode(),
    ]
    for final in cases:
        assert isinstance(scram_final_step(final), Failure), final
    assert isinstance(mech.respond(f"{good_without},p={proof}".encode()), Success)
    # extensions before the proof are part of the AuthMessage, and allowed
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST)
    server_first = server_first_for(mech, b"n,,n=" + USER.encode() + b",r=abc", SECRETS)
    nonce = server_first.split(b",")[0][2:].decode()
    without = f"c=biws,r={nonce},x=ext"
    proof = scram_proof("sha256", PASSWORD, server_first, f"n={USER},r=abc", without)
    assert isinstance(mech.respond(f"{without},p={proof}".encode()), Success)


def test_scram_replayed_client_final_fails() -> None:
    # the same client-final against a new exchange: the server nonce differs
    mech = sasl.create("SCRAM-SHA-256", hostname=HOST)
    server_first = server_first_for(mech, b"n,,n=" + USER.encode() + b",r=abc", SECRETS)
    nonce = server_first.split(b",")[0][2:].decode()
    without = f"c=biws,r={nonce}"
    proof = scram_proof("sha256", PASSWORD, server_first, f"n={USER},r=abc", without)
    final = f"{without},p={proof}"
    assert isinstance(mech.respond(final.encode()), Success)
    assert failed(mech.respond(final.encode())) == "exchange finished"
    assert failed(scram_final_step(final.encode())) == "nonce mismatch"


# -- abort and over-long input through the framing ----------------------------------------------


def test_abort_and_over_long_lines_for_every_mechanism() -> None:
    for name in ALL_MECHANISMS:
        assert decode_response(b"*") is ABORT, name
    with pytest.raises(SaslMalformed):
        decode_response(base64.b64encode(b"\x00alice\x00" + b"p" * 12000))
    mech = sasl.create("PLAIN", hostname=HOST)
    failed(mech.start(b"\x00alice\x00" + b"p" * 9000))
