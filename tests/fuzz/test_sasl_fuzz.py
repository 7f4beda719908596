"""Hypothesis fuzzing of the SASL framing and mechanisms: nothing but Steps, never an exception."""

from __future__ import annotations

import base64
import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.sasl import mechanisms as sasl
from postkeep.sasl import secrets as ss

HOST = "mx.example.test"
SECRETS = ss.derive_secrets("alice@example.test", "pw")
STEPS = (sasl.Challenge, sasl.NeedPassword, sasl.NeedSecrets, sasl.Success, sasl.Failure)
CB = {"tls-server-end-point": b"\x01" * 32, "tls-exporter": b"\x02" * 32}

# fragments that reach deep into each parser
FRAGMENTS = [
    b"\x00", b"n,,", b"y,,", b"p=tls-server-end-point,,", b"p=tls-exporter,", b"a=", b"n=", b"r=",
    b"m=", b"c=", b"p=", b"s=", b"i=", b",", b"=2C", b"=3D", b"=", b"biws", b"alice@example.test",
    b'username="', b'"', b"\\", b"realm=", b"nonce=", b"cnonce=", b"nc=00000001", b"qop=auth",
    b"digest-uri=", b"smtp/mx.example.test", b"response=", b"charset=utf-8", b"authzid=",
    b"0123456789abcdef0123456789abcdef", b" ", b"\t", b"\xff", b"\xc3\xa9", b"\xd8\xa7",
    b"example.test", b"Username:", b"\r\n",
]
message = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=30).map(
        b"".join
    ),
)
secrets = st.one_of(
    st.none(),
    st.just(SECRETS),
    st.dictionaries(st.sampled_from([*sorted(SECRETS), "PLAIN"]), st.text(max_size=80)),
)
operation = st.one_of(
    st.tuples(st.just("start"), st.one_of(st.none(), message)),
    st.tuples(st.just("respond"), message),
    st.tuples(st.just("provide"), secrets),
    st.tuples(st.just("password"), st.booleans()),
)


def drive(mech: sasl.ServerMechanism, ops: list[tuple[str, object]]) -> None:
    for op, arg in ops:
        if op == "start":
            step = mech.start(arg)  # type: ignore[arg-type]
        elif op == "respond":
            step = mech.respond(arg)  # type: ignore[arg-type]
        elif op == "provide":
            step = mech.provide(arg)  # type: ignore[arg-type]
        else:
            step = mech.password_checked(bool(arg))
        assert isinstance(step, STEPS), step
        if isinstance(step, sasl.Failure):
            assert mech.finished
            assert isinstance(mech.respond(b"x"), sasl.Failure)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sasl.ALL_MECHANISMS), st.booleans(), st.lists(operation, max_size=6))
def test_any_call_sequence_returns_steps(
    name: str, cb: bool, ops: list[tuple[str, object]]
) -> None:
    drive(sasl.create(name, hostname=HOST, channel_bindings=CB if cb else None), ops)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sasl.ALL_MECHANISMS), st.one_of(st.none(), message), message, message)
def test_start_then_responses_return_steps(
    name: str, initial: bytes | None, first: bytes, second: bytes
) -> None:
    """The usual order: start, respond, whatever is asked for, respond again."""
    mech = sasl.create(name, hostname=HOST, channel_bindings=CB)
    step = mech.start(initial)
    for data in (first, second):
        assert isinstance(step, STEPS)
        if isinstance(step, sasl.NeedSecrets):
            step = mech.provide(SECRETS)
        elif isinstance(step, sasl.NeedPassword):
            step = mech.password_checked(True)
        else:
            step = mech.respond(data)
    assert isinstance(step, STEPS)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]), message)
def test_scram_client_final_fuzz(name: str, final: bytes) -> None:
    mech = sasl.create(name, hostname=HOST, channel_bindings=CB)
    gs2 = b"p=tls-exporter,," if name.endswith("-PLUS") else b"n,,"
    assert isinstance(mech.start(gs2 + b"n=alice@example.test,r=abc"), sasl.NeedSecrets)
    assert isinstance(mech.provide(SECRETS), sasl.Challenge)
    assert isinstance(mech.respond(final), sasl.Failure)  # no forged proof can pass


@settings(max_examples=200, deadline=None)
@given(message)
def test_digest_md5_response_fuzz(response: bytes) -> None:
    mech = sasl.create("DIGEST-MD5", hostname=HOST)
    mech.start(None)
    step = mech.respond(response)
    if isinstance(step, sasl.NeedSecrets):
        step = mech.provide(SECRETS)
    assert isinstance(step, sasl.Failure)  # without our random nonce, never a success


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.text("ABCDQUab01+/=* \r\n-_", max_size=40).map(
    str.encode)), st.booleans())
def test_decode_response_only_bytes_abort_or_malformed(line: bytes, initial: bool) -> None:
    try:
        out = sasl.decode_response(line, initial=initial, max_length=48)
    except sasl.SaslMalformed:
        return
    assert out is sasl.ABORT or isinstance(out, bytes)
    if isinstance(out, bytes) and line != b"=":
        assert base64.b64encode(out) == line  # only canonical base64 gets through


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_encode_decode_round_trip(data: bytes) -> None:
    assert sasl.decode_response(sasl.encode_challenge(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_directive_parser_and_secret_parsers_only_raise_value_error(text: str) -> None:
    for parse in (
        sasl.parse_directives,
        lambda t: ss.parse_scram_secret(t, "SCRAM-SHA-256"),
        ss.parse_digest_md5_secret,
        ss.saslprep,
    ):
        with contextlib.suppress(ValueError):
            parse(text)
    assert ss.verify_cram_md5(text, b"challenge", text) in (True, False)
