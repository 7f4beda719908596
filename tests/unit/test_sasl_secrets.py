"""Stored SASL secrets: resumable MD5 (RFC 1321), CRAM-MD5 contexts (RFC 2195, RFC 2104),
SCRAM keys (RFC 5802 §3, RFC 7677), DIGEST-MD5 values (RFC 2831 §2.1.2.1, §4), SASLprep (RFC 4013).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.sasl import md5state
from postkeep.sasl.secrets import (
    ScramSecret,
    address_domain,
    cram_md5_digest,
    cram_md5_secret,
    derive_secrets,
    digest_md5_ha1_base,
    digest_md5_response,
    digest_md5_secret,
    parse_digest_md5_secret,
    parse_scram_secret,
    saslprep,
    scram_normalize,
    scram_secret,
    verify_cram_md5,
)

# -- resumable MD5 ----------------------------------------------------------------------------


def test_md5_matches_hashlib_on_every_length_around_block_edges() -> None:
    rng = random.Random(1321)
    for n in range(0, 300):
        data = rng.randbytes(n)
        assert md5state.md5(data) == hashlib.md5(data).digest(), n


def test_md5_rfc1321_test_suite() -> None:
    # RFC 1321 §A.5
    assert md5state.md5(b"").hex() == "d41d8cd98f00b204e9800998ecf8427e"
    assert md5state.md5(b"abc").hex() == "900150983cd24fb0d6963f7d28e17f72"
    assert md5state.md5(b"message digest").hex() == "f96b697d7cb7938d525a2f31aaf161d0"
    digits = b"1234567890" * 8
    assert md5state.md5(digits).hex() == "57edf4a22be3c955ac49da2e2107b67a"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64 * 5), st.binary(max_size=200))
def test_resume_after_any_whole_blocks(prefix: bytes, rest: bytes) -> None:
    blocks = prefix[: len(prefix) - len(prefix) % 64]
    state = md5state.IV
    for i in range(0, len(blocks), 64):
        state = md5state.compress(state, blocks[i : i + 64])
    assert md5state.resume(state, rest, len(blocks)) == hashlib.md5(blocks + rest).digest()


def test_state_packing_and_errors() -> None:
    state = md5state.compress(md5state.IV, bytes(64))
    assert md5state.unpack_state(md5state.pack_state(state)) == state
    assert md5state.pack_state(md5state.IV).hex() == "0123456789abcdeffedcba9876543210"
    with pytest.raises(ValueError):
        md5state.compress(md5state.IV, b"short")
    with pytest.raises(ValueError):
        md5state.resume(md5state.IV, b"", 10)
    with pytest.raises(ValueError):
        md5state.unpack_state(b"\x00" * 15)


# -- CRAM-MD5 ---------------------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"


def test_cram_md5_rfc2195_example() -> None:
    secret = cram_md5_secret("tanstaaftanstaaf")
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert "tanstaaf" not in secret
    assert verify_cram_md5(secret, RFC2195_CHALLENGE, RFC2195_DIGEST)
    assert verify_cram_md5(secret, RFC2195_CHALLENGE, RFC2195_DIGEST.upper())
    assert not verify_cram_md5(secret, RFC2195_CHALLENGE + b" ", RFC2195_DIGEST)
    assert not verify_cram_md5(secret, RFC2195_CHALLENGE, "0" * 32)
    assert not verify_cram_md5(secret, RFC2195_CHALLENGE, RFC2195_DIGEST[:-1])
    assert not verify_cram_md5(secret, RFC2195_CHALLENGE, "ü" * 32)


def test_cram_md5_secret_is_dovecot_layout_outer_then_inner() -> None:
    key = b"tanstaaftanstaaf".ljust(64, b"\x00")
    outer = md5state.compress(md5state.IV, bytes(k ^ 0x5C for k in key))
    inner = md5state.compress(md5state.IV, bytes(k ^ 0x36 for k in key))
    expected = md5state.pack_state(outer) + md5state.pack_state(inner)
    assert cram_md5_secret("tanstaaftanstaaf") == expected.hex()


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=100), st.binary(max_size=300))
def test_cram_md5_contexts_reproduce_hmac_md5(password: str, challenge: bytes) -> None:
    # includes passwords longer than 64 octets, which HMAC first hashes (RFC 2104 §2)
    key = password.encode("utf-8", "surrogatepass")
    expected = hmac.new(key, challenge, "md5").digest()
    assert cram_md5_digest(cram_md5_secret(password), challenge) == expected
    assert verify_cram_md5(cram_md5_secret(password), challenge, expected.hex())


@pytest.mark.parametrize("secret", ["", "zz" * 32, "00" * 31, "0 " * 32, "00" * 33])
def test_cram_md5_malformed_secret_never_verifies(secret: str) -> None:
    with pytest.raises(ValueError):
        cram_md5_digest(secret, b"x")
    assert not verify_cram_md5(secret, b"x", "0" * 32)


# -- SCRAM ------------------------------------------------------------------------------------


def test_scram_sha1_keys_of_rfc5802_example() -> None:
    s = scram_secret("SCRAM-SHA-1", "pencil", salt=base64.b64decode("QSXCR+Q6sek8bf92"))
    salted = hashlib.pbkdf2_hmac("sha1", b"pencil", s.salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    assert s.stored_key == hashlib.sha1(client_key).digest()
    assert s.server_key == hmac.digest(salted, b"Server Key", "sha1")
    assert s.iterations == 4096


def test_scram_secret_string_round_trip_and_format() -> None:
    s = scram_secret("SCRAM-SHA-256-PLUS", "pencil", salt=b"0123456789abcdef", iterations=5000)
    text = s.encode()
    i, salt, stored, server = text.split("$")
    assert i == "5000" and base64.b64decode(salt) == b"0123456789abcdef"
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert parse_scram_secret(text, "SCRAM-SHA-256") == s
    with pytest.raises(ValueError):
        parse_scram_secret(text, "SCRAM-SHA-1")  # 32-byte keys are not SHA-1's


@pytest.mark.parametrize(
    "text",
    ["", "4096", "x$a$b$c", "-1$QQ==$QQ==$QQ==", "0$QUFB$" + "A" * 28 + "$" + "A" * 28,
     "4096$$" + "A" * 28 + "$" + "A" * 28, "4096$QUFB$!!$QUFB", "٤٠٩٦$QUFB$QUFB$QUFB",
     "4096$QUFB$" + "A" * 28 + "$" + "A" * 28 + "$extra", "99999999999$QUFB$QUFB$QUFB"],
)
def test_parse_scram_secret_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scram_secret(text, "SCRAM-SHA-1")


def test_scram_iteration_bounds() -> None:
    with pytest.raises(ValueError):
        scram_secret("SCRAM-SHA-1", "x", iterations=0)
    with pytest.raises(KeyError):
        scram_secret("SCRAM-MD5", "x")


# -- SASLprep -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
     ("a\u00a0b", "a b"), ("\u0627\u0628", "\u0627\u0628")],
)
def test_saslprep_rfc4013_examples(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected  # RFC 4013 §3 and mapping rules


@pytest.mark.parametrize("bad", ["\u0007", "a\x00b", "\u0627\u0031", "a\u200eb", "\ue000",
                                 "\u0627a\u0628"])
def test_saslprep_prohibited(bad: str) -> None:
    with pytest.raises(ValueError):
        saslprep(bad)


def test_saslprep_unassigned_only_for_queries() -> None:
    unassigned = "\u0221"  # unassigned in Unicode 3.2
    with pytest.raises(ValueError):
        saslprep(unassigned)
    assert saslprep(unassigned, allow_unassigned=True) == unassigned


def test_scram_normalize_falls_back_to_raw_utf8() -> None:
    assert scram_normalize("pass\u00adword") == b"password"
    assert scram_normalize("bell\u0007") == "bell\u0007".encode()
    assert scram_normalize("\u00ad") == "\u00ad".encode()  # maps to nothing: raw


# -- DIGEST-MD5 -------------------------------------------------------------------------------


def test_digest_md5_rfc2831_example() -> None:
    # RFC 2831 §4: chris / secret in realm elwood.innosoft.com, IMAP
    base = digest_md5_ha1_base("chris", "elwood.innosoft.com", "secret")

    def value(qop: str = "auth", authzid: str | None = None, rspauth: bool = False) -> str:
        return digest_md5_response(
            base, nonce="OA6MG9tEQGm2hh", cnonce="OA6MHXh6VqTrRk", nc="00000001", qop=qop,
            digest_uri="imap/elwood.innosoft.com", authzid=authzid, rspauth=rspauth,
        )

    assert value() == "d388dad90d4bbd760a152321f2143af7"
    assert value(rspauth=True) == "ea40f60335c427b5527b84dbabcdfffd"
    assert value(authzid="admin") != "d388dad90d4bbd760a152321f2143af7"
    with pytest.raises(ValueError):
        value(qop="auth-int")


def test_digest_md5_secret_uses_address_and_lowercase_domain() -> None:
    secret = digest_md5_secret("alice@Example.TEST", "pw")
    expected = hashlib.md5(b"alice@Example.TEST:example.test:pw").hexdigest()
    assert secret == expected
    assert parse_digest_md5_secret(secret) == bytes.fromhex(expected)
    assert address_domain("a@b@Example.test") == "example.test"
    assert address_domain("chris") == ""
    for bad in ("", "zz" * 16, "00" * 15, "0 " * 16):
        with pytest.raises(ValueError):
            parse_digest_md5_secret(bad)


def test_digest_md5_iso_8859_1_rule() -> None:
    # §2.1.2.1: each part is hashed in ISO 8859-1 when it fits, else in UTF-8
    assert digest_md5_ha1_base("jürgen", "r", "pässwort") == hashlib.md5(
        "jürgen:r:pässwort".encode("latin-1")
    ).digest()
    assert digest_md5_ha1_base("jürgen", "r", "пароль") == hashlib.md5(
        "jürgen:r:".encode("latin-1") + "пароль".encode()
    ).digest()


# -- all of them --------------------------------------------------------------------------------


def test_derive_secrets() -> None:
    a = derive_secrets("alice@example.test", "correct horse", scram_iterations=4096)
    b = derive_secrets("alice@example.test", "correct horse", scram_iterations=4096)
    assert set(a) == {"SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5", "DIGEST-MD5"}
    for value in a.values():
        assert value.isascii() and value.isprintable() and "correct" not in value
    assert a["SCRAM-SHA-256"] != b["SCRAM-SHA-256"]  # fresh salt every time
    assert a["CRAM-MD5"] == b["CRAM-MD5"] and a["DIGEST-MD5"] == b["DIGEST-MD5"]
    s1 = parse_scram_secret(a["SCRAM-SHA-1"], "SCRAM-SHA-1")
    s256 = parse_scram_secret(a["SCRAM-SHA-256"], "SCRAM-SHA-256")
    assert isinstance(s1, ScramSecret) and len(s1.salt) == len(s256.salt) == 16
    assert s1.salt != s256.salt
    assert scram_secret("SCRAM-SHA-256", "correct horse", salt=s256.salt) == s256
    assert a["DIGEST-MD5"] == digest_md5_secret("alice@example.test", "correct horse")
    assert parse_scram_secret(
        derive_secrets("a@b", "x", scram_iterations=10000)["SCRAM-SHA-1"], "SCRAM-SHA-1"
    ).iterations == 10000
