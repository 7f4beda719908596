"""The web's sans-IO security checks (`postkeep.web.security`): Host parsing and matching
(wildcards one label deep; ports, IPv6 literals; anything with a path, user or space refused),
the cross-site checks of state changes, and the tokens (the CSRF token is tied to its session
token; comparisons refuse missing, wrong and oversized tokens)."""

from __future__ import annotations

import pytest

from postkeep.web.security import (
    cross_site,
    csrf_token,
    host_allowed,
    new_token,
    split_host,
    token_hash,
    tokens_match,
)

NAMES = ["mail.example.org", "*.example.net"]


@pytest.mark.parametrize(("host", "expected"), [
    ("mail.example.org", "mail.example.org"),
    ("MAIL.example.org.:8443", "mail.example.org"),
    ("a.example.net", "a.example.net"),
    ("example.net", None),
    ("a.b.example.net", None),
    ("evil.test", None),
    ("mail.example.org@evil.test", None),
    ("evil.test/mail.example.org", None),
    ("mail.example.org:99999", None),
    ("mail.example.org:x", None),
    ("mail.example.org evil", None),
    ("", None),
    (None, None),
])
def test_host_allowed(host: str | None, expected: str | None) -> None:
    assert host_allowed(host, NAMES) == expected


def test_split_host_ipv6_literal() -> None:
    assert split_host("[2001:db8::1]:443") == ("[2001:db8::1]", 443)
    assert split_host("[2001:db8::1]x") is None


def test_cross_site() -> None:
    origin = "https://mail.example.org"
    assert cross_site("GET", {"Sec-Fetch-Site": "cross-site"}, origin) is None
    assert cross_site("POST", {}, origin) is None  # no browser headers: the token decides
    assert cross_site("POST", {"Sec-Fetch-Site": "same-origin", "Origin": origin}, origin) is None
    assert cross_site("POST", {"Sec-Fetch-Site": "none"}, origin) is None
    assert cross_site("POST", {"Sec-Fetch-Site": "same-site"}, origin) == "Sec-Fetch-Site same-site"
    assert cross_site("POST", {"Origin": "https://mail.example.org:444"}, origin) == (
        "foreign Origin")
    assert cross_site("DELETE", {"Origin": "null"}, origin) == "foreign Origin"
    # a form of our own page under Referrer-Policy no-referrer (what Chromium sends)
    assert cross_site("POST", {"Sec-Fetch-Site": "same-origin", "Origin": "null"}, origin) is None
    assert cross_site("POST", {"Sec-Fetch-Site": "cross-site", "Origin": "null"}, origin) == (
        "Sec-Fetch-Site cross-site")


def test_tokens() -> None:
    session, other = new_token(), new_token()
    assert session != other and len(session) == 43
    assert len(token_hash(session)) == 64 and token_hash(session) != token_hash(other)
    csrf = csrf_token(session)
    assert tokens_match(csrf, csrf) and not tokens_match(csrf, csrf_token(other))
    assert not tokens_match(csrf, None) and not tokens_match(csrf, "")
    assert not tokens_match("", "") and not tokens_match(csrf, csrf + "x" * 64)
