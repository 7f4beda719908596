"""`[mta_sts]` (postkeep.config.mtasts) and the pure parts of `postkeep.web.autoconfig`: what
the listeners offer as each combination of listeners gives it, the policy text and id, the
bounded parsing of addresses, Host names and Autodiscover requests. Over the wire:
tests/interop/test_autoconfig.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from postkeep import config
from postkeep.errors import ConfigError
from postkeep.queue.mtasts_policy import Mode, parse_policy
from postkeep.web.autoconfig import (
    MAX_REQUEST,
    Server,
    autodiscover_address,
    domain_of_host,
    offers,
    split_address,
)

REQUEST = ('<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/'
           'requestschema/2006"><Request><EMailAddress>{}</EMailAddress></Request>'
           "</Autodiscover>")


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "postkeep.toml"
    path.write_text('[server]\nhostname = "MX.example.org."\n' + text)
    return config.load(path)


def test_policy_defaults_to_the_server_hostname(tmp_path: Path) -> None:
    sts = _load(tmp_path, '[mta_sts]\nmode = "enforce"\n').mta_sts
    text = sts.policy("MX.example.org.")
    assert text == "version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmax_age: 604800\r\n"
    policy = parse_policy(text.encode(), "id")  # the sending side's parser reads it
    assert policy.mode is Mode.ENFORCE and policy.mx_patterns == ("mx.example.org",)
    other = _load(tmp_path, '[mta_sts]\nmode = "testing"\nmx = ["a.example.org", '
                            '"*.mx.example.org"]\nmax_age = 86400\n').mta_sts
    assert parse_policy(other.policy("x").encode(), "id").mx_patterns == (
        "a.example.org", "*.mx.example.org")
    ids = {sts.policy_id("mx.example.org"), other.policy_id("mx.example.org")}
    assert len(ids) == 2 and all(i.isalnum() and 0 < len(i) <= 32 for i in ids)
    assert sts.policy_id("mx.example.org") == sts.policy_id("mx.example.org")


@pytest.mark.parametrize(("text", "key"), [
    ('mode = "strict"', "mta_sts.mode"),
    ("max_age = 0", "mta_sts.max_age"),
    ("max_age = 31557601", "mta_sts.max_age"),
    ('mx = ["localhost"]', "mta_sts.mx[0]"),
    ('mx = ["a.example.org", "bad name.org"]', "mta_sts.mx[1]"),
])
def test_bad_mta_sts(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, f"[mta_sts]\n{text}\n")
    assert e.value.path == key


def test_offers_follow_the_listeners(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[imap]\nlisten = ["127.0.0.1:143"]\ntls_listen = ["127.0.0.1:993"]\n'
                          '[submission]\nlisten = ["[::1]:587", "127.0.0.1:2587"]\n'
                          'sasl_mechanisms = ["SCRAM-SHA-256"]\n')
    found = offers(cfg)
    assert found.imap == [Server("mx.example.org", 993, True), Server("mx.example.org", 143, False)]
    assert found.smtp == [Server("mx.example.org", 587, False, cleartext=False)]
    assert found.smtp[0].socket_type == "STARTTLS" and found.imap[0].socket_type == "SSL"
    none = offers(_load(tmp_path, "[imap]\nlisten = []\ntls_listen = []\n"))
    assert none.imap == [] and none.smtp == []


def test_addresses_and_hosts() -> None:
    assert split_address(" Alice@EXAMPLE.org ") == ("Alice", "example.org")
    assert split_address('"a@b"@example.org') == ('"a@b"', "example.org")
    for bad in ("", "alice", "@example.org", "alice@", "a b@example.org", "a@[192.0.2.1]",
                "a\x00@example.org", "a" * 250 + "@example.org"):
        assert split_address(bad) is None, bad
    assert domain_of_host("autoconfig.Example.ORG:443") == "example.org"
    assert domain_of_host("mta-sts.xn--exmple-cua.test") == "exämple.test"
    assert domain_of_host("example.org") == "example.org"
    for bad in (None, "", "[::1]:443", "localhost", "autoconfig.", "a/b.org"):
        assert domain_of_host(bad) is None, bad


def test_autodiscover_requests() -> None:
    assert autodiscover_address(REQUEST.format(" bob@example.org ").encode()) == \
        "bob@example.org"
    assert autodiscover_address(REQUEST.format("").encode()) is None
    assert autodiscover_address(b"<Autodiscover><Request><EMailAddress>a@b.org</EMailAddress>"
                                b"</Request></Autodiscover>") is None  # not its namespace
    assert autodiscover_address(b'<!DOCTYPE a [<!ENTITY e "x">]>'
                                + REQUEST.format("&e;@b.org").encode()) is None
    assert autodiscover_address(b"\xff\xfe<") is None
    padded = REQUEST.format("a@b.org").replace("<Request>", "<Request>" + " " * MAX_REQUEST)
    assert autodiscover_address(padded.encode()) is None
