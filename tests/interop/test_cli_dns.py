"""`postkeep dns DOMAIN [--check]` and `postkeep check`'s resolver warning, run as an operator
runs them; --check asks NSD on loopback (tests/dnsserver.py) through the configured resolver."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsserver import AuthServer
from tests.interop.conftest import Instance, make_instance


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instance]:
    instance = make_instance(tmp_path, hostname="mx.example.test")
    instance.cli("dkim", "generate", "example.test", check=False)  # init may have made them
    yield instance


def test_records_to_publish(inst: Instance) -> None:
    out = inst.cli("dns", "example.test").stdout
    lines = [line for line in out.splitlines() if not line.startswith(";")]
    assert "example.test. IN MX 10 mx.example.test." in lines
    assert 'example.test. IN TXT "v=spf1 mx -all"' in lines
    assert ('_dmarc.example.test. IN TXT "v=DMARC1; p=reject; '
            'rua=mailto:postmaster@example.test"') in lines
    assert '_smtp._tls.example.test. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@example.test"' \
        in lines
    assert any(re.fullmatch(r'_mta-sts\.example\.test\. IN TXT "v=STSv1; id=[0-9a-f]{20}"', line)
               for line in lines)
    dkim = [line for line in lines if "._domainkey.example.test." in line]
    assert len(dkim) == 2 and all("v=DKIM1; k=" in line for line in dkim)
    assert any("k=ed25519" in line for line in dkim) and any("k=rsa" in line for line in dkim)
    port = inst.submissions_port
    assert f"_submissions._tcp.example.test. IN SRV 0 1 {port} mx.example.test." in lines
    assert f"_imaps._tcp.example.test. IN SRV 0 1 {inst.imaps_port} mx.example.test." in lines
    assert "_pop3._tcp.example.test. IN SRV 0 0 0 ." in lines
    for name in ("autoconfig", "autodiscover", "mta-sts"):  # the web listener's names
        assert f"{name}.example.test. IN CNAME mx.example.test." in lines
    assert (f"_autodiscover._tcp.example.test. IN SRV 0 1 {inst.https_port} mx.example.test."
            in lines)
    assert "; mail for the domain goes to this server" in out
    r = inst.cli("dns", "not-local.example", check=False)
    assert r.returncode == 1 and "not-local.example is not a local domain" in r.stderr


def test_check_names_each_mismatch(inst: Instance, dns_server: AuthServer) -> None:
    published = [line for line in inst.cli("dns", "example.test").stdout.splitlines()
                 if line and not line.startswith(";")]
    inst.set_config("dns", nameservers=[dns_server.nameserver], timeout=2.0, attempts=1)
    partial = [line for line in published
               if "_dmarc" not in line and "v=spf1" not in line and "_imaps" not in line]
    dns_server.add_zone("example.test", [
        *partial, 'example.test. IN TXT "v=spf1 -all"', "mx A 192.0.2.25",
        "_imaps._tcp SRV 0 1 9993 mx.example.test.",
    ])
    r = inst.cli("dns", "example.test", "--check", check=False)
    assert r.returncode == 1, r.stdout
    out = r.stdout.splitlines()
    assert "ok       A/AAAA mx.example.test." in out
    assert "ok       MX example.test." in out
    assert ("DIFFERS  TXT example.test.: DNS has 'v=spf1 -all', expected 'v=spf1 mx -all'"
            in out)
    assert any(line.startswith("MISSING  TXT _dmarc.example.test.: expected 'v=DMARC1")
               for line in out)
    assert any(line.startswith("DIFFERS  SRV _imaps._tcp.example.test.: DNS has "
                               "'0 1 9993 mx.example.test.'") for line in out)
    assert sum(line.startswith("ok       TXT ") and "_domainkey" in line for line in out) == 2
    dns_server.add_zone("example.test", [*published, "mx A 192.0.2.25"])
    r = inst.cli("dns", "example.test", "--check", check=False)
    assert r.returncode == 0 and all(line.startswith("ok") for line in r.stdout.splitlines())
    assert "ok       A/AAAA autoconfig.example.test." in r.stdout.splitlines()


def test_check_warns_about_a_public_resolver(inst: Instance) -> None:
    inst.set_config("dns", nameservers=["9.9.9.9", "127.0.0.1:5353"])
    r = inst.cli("check", check=False)
    assert ("warning: dns.nameservers: 9.9.9.9 is a public resolver; DNS block lists "
            "(Spamhaus and others) refuse queries from those") in r.stdout
    assert r.stdout.count("warning:") == 1 and r.returncode == 0
