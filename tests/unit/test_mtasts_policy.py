"""MTA-STS records and policies (RFC 8461 §3.1, §3.2, §4.1): `postkeep.queue.mtasts_policy`."""

from __future__ import annotations

import pytest

from postkeep.queue.mtasts_policy import (
    MAX_AGE_LIMIT,
    Mode,
    Policy,
    PolicyError,
    mx_matches,
    parse_policy,
    record_id,
)

GOOD = (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
        b"mx: backupmx.example.com\r\nmax_age: 604800\r\n")


# --- the TXT record (§3.1) ---

@pytest.mark.parametrize("text, expected", [
    (b"v=STSv1; id=20160831085700Z;", "20160831085700Z"),
    (b"v=STSv1; id=20160831085700Z", "20160831085700Z"),
    (b"v=STSv1;id=abc", "abc"),
    (b"v=STSv1 ;\tid=abc ; ", "abc"),
    (b"v=STSv1; ext=x-y:z; id=abc", "abc"),  # unknown fields ignored
    (b"v=STSv1; id=first; id=second", "first"),  # the first of a repeated field
    (b"v=STSv1; id=" + b"a" * 32, "a" * 32),
])
def test_record_ids(text: bytes, expected: str) -> None:
    assert record_id([text]) == expected


def test_records_that_are_not_mta_sts_are_discarded() -> None:
    assert record_id([]) is None
    assert record_id([b"v=spf1 -all", b"v=STSv10; id=x", b"hello"]) is None
    assert record_id([b"v=spf1 -all", b"v=STSv1; id=abc"]) == "abc"


@pytest.mark.parametrize("texts", [
    [b"v=STSv1; id=one", b"v=STSv1; id=two"],  # several: no policy
    [b"v=STSv1; id=same", b"v=STSv1; id=same"],
    [b"v=STSv1"],  # no id
    [b"v=STSv1;"],
    [b"v=STSv1; ID=abc"],  # field names are case-sensitive: ID is an unknown field
    [b"v=STSv1; id=" + b"a" * 33],  # id too long
    [b"v=STSv1; id=ab-c"],  # id: letters and digits only
    [b"v=STSv1; id="],
    [b"v=STSv1 id=abc"],  # no delimiter
    [b"v=STSv1; id=abc; bad field"],
    [b"v=STSv1; id=abc; =x"],
    [b"v=STSv1; id=abc; x=\xc3\xa9"],  # not US-ASCII
    [b"v=STSv1; id=abc;; x=y"],
])
def test_bad_or_several_records_are_no_policy(texts: list[bytes]) -> None:
    with pytest.raises(PolicyError):
        record_id(texts)


# --- the policy (§3.2) ---

def test_every_field_parsed() -> None:
    policy = parse_policy(GOOD, "id1")
    assert policy == Policy(Mode.ENFORCE,
                            ("mail.example.com", "*.example.net", "backupmx.example.com"),
                            604800, "id1")


@pytest.mark.parametrize("mode", list(Mode))
def test_modes(mode: Mode) -> None:
    body = f"version: STSv1\nmode: {mode}\nmx: mx.example.com\nmax_age: 86400\n".encode()
    assert parse_policy(body, "x").mode is mode


def test_lf_crlf_mixed_no_final_newline_blank_lines_spaces() -> None:
    body = (b"version:STSv1\n\nmode:   testing  \r\nmx: MX.Example.COM\t\n"
            b"max_age: 86400")
    policy = parse_policy(body, "x")
    assert policy.mode is Mode.TESTING
    assert policy.mx_patterns == ("mx.example.com",)
    assert policy.max_age == 86400


def test_unknown_keys_ignored_and_first_of_a_repeated_field_used() -> None:
    body = (b"version: STSv1\nmode: testing\nmode: enforce\nx-vendor.hint_1: some text here\n"
            b"max_age: 100\nmax_age: 200\nmx: a.example.com\nmx: b.example.com\n"
            b"mx: a.example.com\nnote: caf\xc3\xa9 ok\n")
    policy = parse_policy(body, "x")
    assert policy.mode is Mode.TESTING
    assert policy.max_age == 100
    assert policy.mx_patterns == ("a.example.com", "b.example.com")


def test_mode_none_needs_no_mx() -> None:
    policy = parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n", "x")
    assert policy.mode is Mode.NONE and policy.mx_patterns == ()


@pytest.mark.parametrize("max_age", ["0", "1", str(MAX_AGE_LIMIT), "0000086400"])
def test_max_age_in_bounds(max_age: str) -> None:
    body = f"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: {max_age}\n".encode()
    assert parse_policy(body, "x").max_age == int(max_age)


@pytest.mark.parametrize("max_age", [str(MAX_AGE_LIMIT + 1), "9999999999", "12345678901", "-1",
                                     "1e5", "86400s", "0x10", "+5", "1 000"])
def test_max_age_out_of_bounds_or_malformed(max_age: str) -> None:
    body = f"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: {max_age}\n".encode()
    with pytest.raises(PolicyError, match="max_age"):
        parse_policy(body, "x")


@pytest.mark.parametrize("body", [
    b"",
    b"mode: enforce\nmx: m.example.com\nmax_age: 86400\n",  # no version
    b"version: STSv1\nmx: m.example.com\nmax_age: 86400\n",  # no mode
    b"version: STSv1\nmode: enforce\nmx: m.example.com\n",  # no max_age
    b"version: STSv1\nmode: enforce\nmax_age: 86400\n",  # no mx in enforce
    b"version: STSv1\nmode: testing\nmax_age: 86400\n",  # no mx in testing
    b"version: STSv2\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n",
    b"version: stsv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n",  # case-sensitive
    b"version: STSv1\nmode: Enforce\nmx: m.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: report\nmx: m.example.com\nmax_age: 86400\n",  # a draft's mode
    b"Version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n",  # key case
    b"version: STSv1\nmode: enforce\nmx: .example.com\nmax_age: 86400\n",  # a draft's suffix
    b"version: STSv1\nmode: enforce\nmx: mail*.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: m.example.com.\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: m_x.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: -m.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: m..example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: " + b"a" * 64 + b".com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx: m\xc3\xa4il.example.com\nmax_age: 86400\n",  # U-label
    b"version: STSv1\nmode: enforce\nmx: a.example.com b.example.com\nmax_age: 86400\n",
    b"version: STSv1\nmode: enforce\nmx:\nmax_age: 86400\n",  # empty value
    b"version: STSv1\nmode enforce\nmx: m.example.com\nmax_age: 86400\n",  # no colon
    b"version : STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n",
    b"version: STSv1\rmode: enforce\rmx: m.example.com\rmax_age: 86400\r",  # CR alone
    b"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\nx: a\tb\n",
    b"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\nx: a\x00b\n",
    b"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n<html>\n",
    b"version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: 86400\n\xff\n",  # not UTF-8
])
def test_bad_policies(body: bytes) -> None:
    with pytest.raises(PolicyError):
        parse_policy(body, "x")


# --- MX host matching (§4.1) ---

@pytest.mark.parametrize("pattern, host, matches", [
    ("mx.example.com", "mx.example.com", True),
    ("mx.example.com", "other.example.com", False),
    ("mx.example.com", "a.mx.example.com", False),
    ("*.example.com", "mx.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.example.com", "mxexample.com", False),
    ("*.example.com", ".example.com", False),
    ("*.example.com", "mx.example.org", False),
])
def test_mx_matching(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def test_allows_is_case_insensitive_and_ignores_a_trailing_dot() -> None:
    policy = parse_policy(b"version: STSv1\nmode: enforce\nmx: *.Example.com\n"
                          b"mx: mail.example.net\nmax_age: 86400\n", "x")
    assert policy.allows("MX1.example.COM")
    assert policy.allows("mx1.example.com.")
    assert policy.allows("mail.example.net")
    assert not policy.allows("example.com")
    assert not policy.allows("a.b.example.com")
    assert not policy.allows("evil.example.net")
    assert not parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\n", "x").allows("m.x")
