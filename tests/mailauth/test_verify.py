"""DKIM verification, the sans-IO core (RFC 6376 §6, RFC 8463, RFC 8301): the RFC 8463
example, signatures from dkimpy and from postkeep's signer, and what must not pass. The key
records are handed in as the TXT records a lookup found (the core's contract: the caller
fetches them); test_dkim_check.py fetches them from a real DNS server."""

from __future__ import annotations

import base64
import re
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from postkeep.mailauth.dkim.canon import Canon, split_message
from postkeep.mailauth.dkim.keys import SigningKey, dns_record, public_key_value, record_name
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from postkeep.mailauth.dkim.tags import MAX_FIELD, TagListError, parse_tag_list
from postkeep.mailauth.dkim.verify import MAX_HEADER_FIELDS, KeyUnavailable, MessageVerifier
from tests.mailauth import rfc6376, rfc8463
from tests.mailauth.conftest import DOMAIN
from tests.mailauth.messages import MESSAGES
from tests.mailauth.verifying import craft, dkimpy_sign, records_of, verify

CANONS: list[tuple[Canon, Canon]] = [("relaxed", "relaxed"), ("simple", "simple"),
                                     ("relaxed", "simple"), ("simple", "relaxed")]
ED_NAME = record_name("ed", DOMAIN)


@pytest.fixture
def keys(rsa_key: SigningKey, ed25519_key: SigningKey) -> dict[str, SigningKey]:
    return {"rsa": rsa_key, "ed": ed25519_key}


def results(message: bytes, keys: dict[str, SigningKey], **options: object) -> list[str]:
    return [r.result for r in verify(message, records_of(keys), **options)]  # type: ignore[arg-type]


# RFC 8463, Appendix A

def test_rfc8463_example_verifies() -> None:
    found = verify(rfc8463.MESSAGE, rfc8463.RECORDS, now=rfc8463.TIMESTAMP)
    assert [(r.result, r.selector, r.algorithm) for r in found] == [
        ("pass", "brisbane", "ed25519-sha256"), ("pass", "test", "rsa-sha256")]
    ed, rsa = found
    assert (ed.domain, ed.identity, ed.header_b) == (rfc8463.DOMAIN, "@" + rfc8463.DOMAIN,
                                                     "/gCrinpc")
    assert rsa.header_b == "F45dVWDf" and not ed.testing and ed.unsigned_octets == 0


def test_rfc8463_key_matches_its_record() -> None:
    seed = base64.b64decode(rfc8463.ED25519_SEED)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert dns_record(key) == rfc8463.ED25519_RECORD


def test_rfc8463_example_tampered() -> None:
    body = rfc8463.MESSAGE.replace(b"hungry", b"thirsty")
    assert {r.reason for r in verify(body, rfc8463.RECORDS)} == {"body hash mismatch (bh=)"}
    subject = rfc8463.MESSAGE.replace(b"dinner", b"lunch")
    assert {r.reason for r in verify(subject, rfc8463.RECORDS)} == {"signature mismatch (b=)"}
    # The records swapped: each key is of the other type.
    swapped = dict(zip(rfc8463.RECORDS, reversed(rfc8463.RECORDS.values()), strict=True))
    assert [r.result for r in verify(rfc8463.MESSAGE, swapped)] == ["permerror"] * 2


def test_rfc6376_example_verifies() -> None:
    [found] = verify(rfc6376.MESSAGE, rfc6376.RECORDS)
    assert (found.result, found.selector, found.identity) == (
        "pass", "brisbane", "joe@football.example.com")
    [printed] = verify(rfc6376.BODY_AS_PRINTED, rfc6376.RECORDS)
    assert (printed.result, printed.reason) == ("fail", "body hash mismatch (bh=)")


# Independent signer (dkimpy) and our own

@pytest.mark.parametrize("canon", CANONS, ids="/".join)
@pytest.mark.parametrize("selector", ["rsa", "ed"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_dkimpy_signatures_verify(keys: dict[str, SigningKey], name: str, selector: str,
                                  canon: tuple[str, str]) -> None:
    signed = dkimpy_sign(MESSAGES[name], selector, keys[selector], canon=canon)
    assert results(signed, keys) == ["pass"]


@pytest.mark.parametrize("canon", CANONS, ids="/".join)
@pytest.mark.parametrize("chunk", [0, 1, 7, 4096])
def test_round_trip(keys: dict[str, SigningKey], canon: tuple[Canon, Canon],
                    chunk: int) -> None:
    for name, message in MESSAGES.items():
        signers = [DkimSigner(DOMAIN, s, k, canonicalization=canon, expire_after=3600)
                   for s, k in keys.items()]
        assert results(sign_all(message, signers) + message, keys, chunk=chunk) == [
            "pass", "pass"], name


def test_tampering_fails(keys: dict[str, SigningKey]) -> None:
    message = MESSAGES["plain"]
    fields = sign_all(message, [DkimSigner(DOMAIN, s, k) for s, k in keys.items()])
    assert results(fields + b"Received: by relay\r\n" + message, keys) == ["pass"] * 2
    tampered = {
        "body changed": (message.replace(b"noon", b"nine"), "body hash mismatch (bh=)"),
        "signed header changed": (message.replace(b"Lunch", b"Lunch!"),
                                  "signature mismatch (b=)"),
        # From is signed twice for its one instance: one added on top is the second.
        "over-signed From added on top": (b"From: mallory@example.org\r\n" + message,
                                          "signature mismatch (b=)"),
        "over-signed Subject added below": (
            message.replace(b"\r\n\r\n", b"\r\nSubject: Free lunch\r\n\r\n", 1),
            "signature mismatch (b=)"),
    }
    for what, (text, reason) in tampered.items():
        found = verify(fields + text, records_of(keys))
        assert [(r.result, r.reason) for r in found] == [("fail", reason)] * 2, what


def test_body_length_limit(keys: dict[str, SigningKey]) -> None:
    message = MESSAGES["plain"]
    signed = dkimpy_sign(message, "ed", keys["ed"], length=True)
    [whole] = verify(signed, records_of(keys))
    assert (whole.result, whole.unsigned_octets) == ("pass", 0)
    assert whole.body_length == len(b"Shall we meet at noon?\r\n")
    appended = b"\r\nBuy now: https://mallory.example/\r\n"
    [longer] = verify(signed + appended, records_of(keys), chunk=5)
    assert (longer.result, longer.unsigned_octets) == ("pass", len(appended))
    [cut] = verify(signed.removesuffix(b"noon?\r\n"), records_of(keys))
    assert (cut.result, cut.reason) == ("fail", "l= is longer than the body")


def test_expiry(keys: dict[str, SigningKey]) -> None:
    message = MESSAGES["plain"]
    signed_at = 1_700_000_000
    field = DkimSigner(DOMAIN, "ed", keys["ed"], clock=lambda: signed_at,
                       expire_after=3600).sign(message)
    at = lambda now: [(r.result, r.reason) for r in  # noqa: E731
                      verify(field + message, records_of(keys), now=now)]
    assert at(signed_at + 3600) == [("pass", "")]
    assert at(signed_at + 3600 + 299) == [("pass", "")]  # within the clock skew allowed
    assert at(signed_at + 3600 + 301) == [("fail", "signature expired (x=)")]
    assert at(signed_at - 301) == [("neutral", "signature timestamp (t=) in the future")]


def test_rsa_sha1_is_not_acceptable(keys: dict[str, SigningKey]) -> None:
    signed = dkimpy_sign(MESSAGES["plain"], "rsa", keys["rsa"], signature_algorithm=b"rsa-sha1")
    [found] = verify(signed, records_of(keys))
    assert (found.result, found.algorithm) == ("policy", "rsa-sha1")


def test_rsa_key_under_1024_bits_fails() -> None:
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                          "rsa_keygen_bits:512"], capture_output=True, check=True).stdout
    weak = serialization.load_pem_private_key(pem, password=None)
    signed = dkimpy_sign(MESSAGES["plain"], "weak", weak)  # type: ignore[arg-type]
    record = f"v=DKIM1; k=rsa; p={public_key_value(weak)}"  # type: ignore[arg-type]
    [found] = verify(signed, {record_name("weak", DOMAIN): record})
    assert (found.result, found.reason) == ("fail", "RSA key of 512 bits (RFC 8301 §3.2: "
                                                    "at least 1024)")


# Key records (RFC 6376 §3.6.1)

@pytest.mark.parametrize(("record", "result", "reason"), [
    ("v=DKIM1; k=ed25519; p=", "permerror", "key revoked (empty p=)"),
    ("v=DKIM1; k=rsa; p={p}", "permerror", "key is k=rsa, signature a=ed25519-sha256"),
    ("v=DKIM1; k=ed25519; h=sha1; p={p}", "permerror", "key record's h= does not allow sha256"),
    ("v=DKIM1; k=ed25519; s=other; p={p}", "permerror", "no key: key not for email (s=other)"),
    ("v=DKIM2; k=ed25519; p={p}", "permerror", "no key: key record with v= other than DKIM1"),
    ("k=ed25519; v=DKIM1; p={p}", "permerror", "no key: key record with v= other than DKIM1"),
    ("v=DKIM1; k=ed25519; p=not*base64", "permerror", "no key: p= is not base64"),
    ("v=DKIM1; k=ed25519; p=AAAA", "permerror", "Ed25519 key of 3 octets, not 32"),
    ("v=DKIM1; k=dsa; p={p}", "permerror", "no key: unknown key type k=dsa"),
    ("v=DKIM1; k=ed25519; k=rsa; p={p}", "permerror", "no key: malformed key record: tag k="),
    ("v=DKIM1; k=ed25519; t=s; p={p}", "pass", ""),  # i= is @example.test: d= itself
    ("v=DKIM1; k=ed25519; t=y:s; h=sha1:sha256; s=email; n=note; x_new=1;; p={p}", "pass", ""),
    ("k=ed25519; p={p}", "pass", ""),
])
def test_key_records(ed25519_key: SigningKey, record: str, result: str, reason: str) -> None:
    message = MESSAGES["plain"]
    field = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message)
    [found] = verify(field + message, {ED_NAME: record.format(p=public_key_value(ed25519_key))})
    assert found.result == result
    assert found.reason.startswith(reason), found.reason
    assert found.testing == ("t=y" in record)


def test_strict_key_refuses_a_subdomain_identity(ed25519_key: SigningKey) -> None:
    key = ed25519_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    tags = f"v=1; a=ed25519-sha256; c=relaxed/relaxed; d={DOMAIN}; s=ed; h=from"
    record = f"v=DKIM1; k=ed25519; t=s; p={public_key_value(key)}"
    lax = f"v=DKIM1; k=ed25519; p={public_key_value(key)}"
    sub = craft(MESSAGES["plain"], key, tags + f"; i=joe@mail.{DOMAIN}")
    assert [r.result for r in verify(sub, {ED_NAME: lax})] == ["pass"]
    [strict] = verify(sub, {ED_NAME: record})
    assert strict.result == "permerror" and "t=s" in strict.reason


def test_several_records_and_none(ed25519_key: SigningKey) -> None:
    message = MESSAGES["plain"]
    signed = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message) + message
    good = dns_record(ed25519_key)
    assert [r.result for r in verify(signed, {ED_NAME: ["v=spf1 -all", good]})] == ["pass"]
    assert [(r.result, r.reason) for r in verify(signed, {ED_NAME: []})] == [
        ("permerror", "no key: no TXT record")]
    assert [r.result for r in verify(signed, {})] == ["temperror"]
    assert [r.result for r in verify(signed, {ED_NAME: KeyUnavailable(True, "SERVFAIL")})] == [
        "temperror"]
    assert [r.result for r in verify(signed, {ED_NAME: KeyUnavailable(False, "NXDOMAIN")})] == [
        "permerror"]


# The signature field (RFC 6376 §3.2, §3.5)

def test_unknown_tags_are_ignored(ed25519_key: SigningKey) -> None:
    assert isinstance(ed25519_key, ed25519.Ed25519PrivateKey)
    tags = (f"v=1; a=ed25519-sha256; c=relaxed/relaxed; d={DOMAIN}; s=ed; h=from;"
            " xfuture=some value; z=From:alice@example.test; q=dns/txt:other/x")
    signed = craft(MESSAGES["plain"], ed25519_key, tags)
    assert [r.result for r in verify(signed, {ED_NAME: dns_record(ed25519_key)})] == ["pass"]


# (where in our signer's field, what instead, the reason given)
_BROKEN = [
    (r"v=1;", "v=1;;", "malformed tag list: an empty tag"),
    (r"v=1;", "v=1; a=rsa-sha256;", "malformed tag list: tag a= twice"),
    (r"v=1;", "v=1; noequals;", "malformed tag list: not a tag: 'noequals'"),
    (r"v=1;", "v=1; 1x=y;", "malformed tag list: not a tag: '1x=y'"),
    (r"v=1;", "v=1; u=a\x01b;", "malformed tag list: tag u= has octets"),
    (r"v=1;", "v=2;", "unsupported version v=2"),
    (r"a=ed25519-sha256", "a=rsa-md5", "unknown algorithm a=rsa-md5"),
    (r"c=relaxed/relaxed", "c=relaxed/nofws", "unknown canonicalisation c=relaxed/nofws"),
    (r"v=1;", "v=1; i=joe@example.org;", f"i= domain example.org is not within d={DOMAIN}"),
    (r"v=1;", "v=1; i=nobody;", "i=nobody has no @"),
    (r"h=[^;]*", "h=to:subject", "From is not signed"),
    (r"h=[^;]*", "h=from::to", "h= is not a list of field names"),
    (r"s=ed;", "s=a/b;", "s=a/b is not a selector"),
    (r"bh=", "bh=*", "bh= is not base64"),
    (r"bh=[^;]*", "bh=AAAA", "bh= of 3 octets for ed25519-sha256"),
    (r"(?<=[ ;])b=", "b=*", "b= is not base64"),
    (r"t=[0-9]+;", "t=200; x=100;", "x= is not after t="),
    (r"t=[0-9]+;", "t=now;", "t=now is not a number"),
    (r"v=1;", "v=1; l=-1;", "l=-1 is not a number"),
    (r"v=1;", "v=1; q=http/well-known;", "no known query method in q=http/well-known"),
]


@pytest.mark.parametrize(("where", "instead", "reason"), _BROKEN, ids=[c[2] for c in _BROKEN])
def test_malformed_signatures_are_neutral(ed25519_key: SigningKey, where: str, instead: str,
                                          reason: str) -> None:
    message = MESSAGES["plain"]
    field = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message).decode()
    broken, count = re.subn(where, lambda _: instead, field, count=1)
    assert count == 1
    [found] = verify(broken.encode() + message, {ED_NAME: dns_record(ed25519_key)})
    assert found.result == "neutral" and found.reason.startswith(reason), found.reason
    assert found.domain is None


@pytest.mark.parametrize("tag", ["v", "a", "b", "bh", "d", "h", "s"])
def test_required_tags(ed25519_key: SigningKey, tag: str) -> None:
    message = MESSAGES["plain"]
    field = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message).decode()
    field = re.sub(rf"(?<=[ ;]){tag}=[^;]*;? ?", "", field.replace("\r\n", ""), count=1) + "\r\n"
    [found] = verify(field.encode() + message, {ED_NAME: dns_record(ed25519_key)})
    assert (found.result, found.reason) == ("neutral", f"required tag {tag}= missing")


def test_tag_list_bounds() -> None:
    assert parse_tag_list(b" a = 1 ;\r\n\tb=x\r\n y ;")["b"].value == "xy"
    assert parse_tag_list(b"n=two  words")["n"].value == "two  words"
    for bad, message in [(b"a=" + b"x" * MAX_FIELD, "octets"),
                         (b";".join(b"t%d=1" % i for i in range(65)), "more than 64 tags"),
                         (b"a=1\rb=2", "CR or LF"), (b"a=1\r\nb=2", "CR or LF"),
                         (b"a=\xff", "not UTF-8"), (b"a=x;b", "not a tag")]:
        with pytest.raises(TagListError, match=message):
            parse_tag_list(bad)
    assert parse_tag_list("i=jörg@example.test".encode())["i"].value == "jörg@example.test"


# Bounds on the message

def test_too_many_signatures(keys: dict[str, SigningKey]) -> None:
    message = MESSAGES["plain"]
    fields = b"".join(DkimSigner(DOMAIN, "ed", keys["ed"], clock=lambda i=i: 1e9 + i)
                      .sign(message) for i in range(12))  # twelve t=: twelve signatures
    assert [r.result for r in verify(fields + message, records_of(keys), now=1e9)] == [
        "pass"] * 10
    verifier = MessageVerifier(split_message(fields + message)[0], now=1e9, max_signatures=3)
    assert (verifier.signatures, verifier.ignored) == (3, 9)
    assert verifier.key_names() == [ED_NAME]  # one selector: one lookup


def test_too_many_header_fields(keys: dict[str, SigningKey]) -> None:
    message = b"Received: by relay\r\n" * MAX_HEADER_FIELDS + MESSAGES["plain"]
    field = DkimSigner(DOMAIN, "ed", keys["ed"]).sign(message)
    [found] = verify(field + message, records_of(keys))
    assert (found.result, found.reason) == (
        "permerror", f"more than {MAX_HEADER_FIELDS} header fields")


def test_header_b_is_unique(ed25519_key: SigningKey) -> None:
    """Two signatures whose b= share 10 characters: header.b takes 11 of each (RFC 6008)."""
    message = MESSAGES["plain"]
    field = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message).decode()
    # Unfolded, b= without FWS: the same header hash under relaxed canonicalisation.
    flat = field.replace("\r\n ", " ")
    start = flat.index("; b=") + 4
    flat = flat[:start] + flat[start:].replace(" ", "")
    other = "A" if flat[start + 10] != "A" else "B"
    twin = flat[:start + 10] + other + flat[start + 11:]
    found = verify((twin + flat).encode() + message, {ED_NAME: dns_record(ed25519_key)})
    assert [r.result for r in found] == ["fail", "pass"]
    assert [r.header_b for r in found] == [twin[start:start + 11], flat[start:start + 11]]
