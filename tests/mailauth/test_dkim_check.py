"""DKIM verification over DNS (`mailauth.dkim_check`): messages signed by independent signers
(dkimpy; OpenDKIM, the `opendkim` filter signing in test mode) and by
postkeep, their keys published in NSD (tests/dnsserver.py) and fetched through
`postkeep.dns.DnsResolver`; the RFC 8463 example the same way; and the lookups' failures
(NXDOMAIN, NODATA, SERVFAIL from a zone NSD cannot load, a nameserver that never answers)."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkeep.config import DnsConfig
from postkeep.dns import DnsResolver
from postkeep.mailauth.dkim.canon import split_message
from postkeep.mailauth.dkim.keys import SigningKey, key_type, private_key_pem, zone_line
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from postkeep.mailauth.dkim_check import DkimCheck, check_dkim, check_dkim_parts
from tests.dnsserver import AuthServer, free_port
from tests.mailauth import rfc8463
from tests.mailauth.conftest import DOMAIN, Published
from tests.mailauth.messages import MESSAGES
from tests.mailauth.verifying import dkimpy_sign


def resolver(*nameservers: str, timeout: float = 2.0) -> DnsResolver:
    return DnsResolver(DnsConfig(nameservers=list(nameservers), timeout=timeout, attempts=1))


def check(server: AuthServer, message: bytes, **options: float) -> DkimCheck:
    return asyncio.run(check_dkim(resolver(server.nameserver), message, **options))  # type: ignore[arg-type]


def verdicts(found: DkimCheck) -> list[tuple[str | None, str]]:
    return [(r.selector, r.result) for r in found.results]


def opendkim_binary() -> str:
    found = shutil.which("opendkim", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail("opendkim is missing: install the Debian package opendkim "
                    "(scripts/test-deps.sh does)", pytrace=False)
    return found


def opendkim_sign(directory: Path, message: bytes, selector: str, key: SigningKey,
                  body_canon: str, algorithm: str = "") -> bytes:
    """The DKIM-Signature field the opendkim filter adds in test mode (-t: it prints the
    field it would insert), for `key` as `selector` of DOMAIN, From over-signed."""
    keyfile = directory / f"{selector}.pem"
    keyfile.write_bytes(private_key_pem(key))
    config = directory / f"sign-{selector}.conf"
    # RequireSafeKeys off: the key is in a pytest directory under /tmp, which others may
    # write to. Header canonicalisation relaxed: the filter gets each field as name and
    # value, as a milter does, and writes it back in a form of its own.
    config.write_text(f"Mode s\nSyslog no\nDomain {DOMAIN}\nSelector {selector}\n"
                      f"KeyFile {keyfile}\nRequireSafeKeys false\n"
                      f"SignatureAlgorithm {algorithm or key_type(key) + '-sha256'}\n"
                      f"Canonicalization relaxed/{body_canon}\nOversignHeaders From\n"
                      f"TemporaryDirectory {directory}\n")
    path = directory / "unsigned.eml"
    path.write_bytes(message)
    done = subprocess.run([opendkim_binary(), "-x", str(config), "-vvv", "-t", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    match = re.search(r"hname='DKIM-Signature' hvalue='(.*?)'$", done.stdout, re.S | re.M)
    assert match is not None, done.stdout
    return b"DKIM-Signature: " + match[1].replace("\n", "\r\n").encode() + b"\r\n"


SIGNERS = ["dkimpy", "postkeep", "opendkim-relaxed", "opendkim-simple"]


def signed_by(signer: str, message: bytes, published: Published, directory: Path) -> bytes:
    """`message` with one signature per published key (rsa, ed) by `signer` prepended."""
    keys = published.keys
    if signer == "postkeep":
        return sign_all(message, [DkimSigner(DOMAIN, s, k) for s, k in keys.items()]) + message
    if signer == "dkimpy":
        for selector, key in keys.items():
            message = dkimpy_sign(message, selector, key)
        return message
    canon = signer.removeprefix("opendkim-")
    fields = [opendkim_sign(directory, message, s, k, canon) for s, k in keys.items()]
    return b"".join(fields) + message


@pytest.mark.parametrize("signer", SIGNERS)
def test_independent_signers_verify(published: Published, tmp_path: Path, signer: str) -> None:
    for name in ("plain", "folded", "utf8", "whitespace", "empty-body"):
        signed = signed_by(signer, MESSAGES[name], published, tmp_path)
        found = check(published.server, signed)
        assert sorted(verdicts(found)) == [("ed", "pass"), ("rsa", "pass")], (name, found)
        assert found.ignored == 0 and all(r.domain == DOMAIN for r in found.results)


@pytest.mark.parametrize("signer", SIGNERS)
def test_independent_signers_tampered(published: Published, tmp_path: Path,
                                      signer: str) -> None:
    message = MESSAGES["plain"]
    signed = signed_by(signer, message, published, tmp_path)
    fields = signed[:len(signed) - len(message)]
    for text in (message.replace(b"noon", b"nine"),
                 b"From: mallory@example.org\r\n" + message):  # each signer over-signs From
        found = check(published.server, fields + text)
        assert sorted(verdicts(found)) == [("ed", "fail"), ("rsa", "fail")], found


def test_opendkim_rsa_sha1_is_policy(published: Published, tmp_path: Path) -> None:
    """OpenDKIM still signs with rsa-sha1 when told to; RFC 8301 §3.1 retired it. (Not
    opendkim-testmsg, which signs with it by default: 2.11.0~beta2 prints a b= whose last
    characters are repeated, not base64, which is `neutral`.)"""
    message = MESSAGES["plain"]
    field = opendkim_sign(tmp_path, message, "rsa", published.keys["rsa"], "simple",
                          "rsa-sha1")
    assert field.startswith(b"DKIM-Signature: v=1; a=rsa-sha1;")
    found = check(published.server, field + message)
    assert [(r.result, r.algorithm) for r in found.results] == [("policy", "rsa-sha1")]


def test_dkimpy_body_length(published: Published) -> None:
    signed = dkimpy_sign(MESSAGES["plain"], "ed", published.keys["ed"], length=True)
    appended = b"Unsigned postscript\r\n"
    [result] = check(published.server, signed + appended).results
    assert (result.result, result.unsigned_octets) == ("pass", len(appended))


def test_rfc8463_example_over_dns(dns_server: AuthServer) -> None:
    lines = [f'{name} IN TXT "{record}"' for name, record in rfc8463.RECORDS.items()]
    dns_server.add_zone(rfc8463.DOMAIN, lines)
    found = check(dns_server, rfc8463.MESSAGE, clock=lambda: rfc8463.TIMESTAMP)  # type: ignore[arg-type]
    assert verdicts(found) == [("brisbane", "pass"), ("test", "pass")]


def test_body_in_chunks(published: Published) -> None:
    message = MESSAGES["large"]
    signed = signed_by("postkeep", message, published, Path())
    header_block, body = split_message(signed)
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))
    found = asyncio.run(check_dkim_parts(resolver(published.server.nameserver), header_block,
                                         chunks))
    assert verdicts(found) == [("rsa", "pass"), ("ed", "pass")]


def test_key_lookup_failures(dns_server: AuthServer, ed25519_key: SigningKey) -> None:
    dns_server.add_zone(DOMAIN, [
        zone_line("ed", DOMAIN, ed25519_key),
        'revoked._domainkey IN TXT "v=DKIM1; k=ed25519; p="',
        "nodata._domainkey IN A 192.0.2.1",
    ])
    dns_server.add_broken_zone("broken.test")
    message = MESSAGES["plain"]
    fields = b"".join(DkimSigner(domain, selector, ed25519_key).sign(message) for domain, selector
                      in [(DOMAIN, "ed"), (DOMAIN, "absent"), (DOMAIN, "revoked"),
                          (DOMAIN, "nodata"), ("broken.test", "ed")])
    found = check(dns_server, fields + message)
    assert [(r.selector, r.domain, r.result) for r in found.results] == [
        ("ed", DOMAIN, "pass"), ("absent", DOMAIN, "permerror"),
        ("revoked", DOMAIN, "permerror"), ("nodata", DOMAIN, "permerror"),
        ("ed", "broken.test", "temperror")]
    reasons = [r.reason for r in found.results]
    assert "NXDOMAIN" in reasons[1] and "revoked" in reasons[2]
    assert "no TXT record" in reasons[3] and "SERVFAIL" in reasons[4]


@pytest.fixture
def silent_udp() -> Iterator[socket.socket]:
    """A UDP socket that reads nothing and answers nothing: a nameserver that is gone."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    yield sock
    sock.close()


def test_lookup_timeout_is_temperror(silent_udp: socket.socket,
                                     ed25519_key: SigningKey) -> None:
    message = MESSAGES["plain"]
    signed = DkimSigner(DOMAIN, "ed", ed25519_key).sign(message) + message
    host, port = silent_udp.getsockname()
    # The resolver would wait 30 s; the check's deadline (0.2 s) ends the lookup first.
    slow = resolver(f"{host}:{port}", timeout=30.0)
    [result] = asyncio.run(check_dkim(slow, signed, timeout=0.2)).results
    assert result.result == "temperror" and "took more than 0.2 s" in result.reason


def test_lookups_bounded_and_each_name_once(dns_server: AuthServer,
                                            ed25519_key: SigningKey) -> None:
    selectors = [f"s{i}" for i in range(10)]
    dns_server.add_zone(DOMAIN, [zone_line(s, DOMAIN, ed25519_key) for s in selectors])
    message = MESSAGES["plain"]
    signers = [DkimSigner(DOMAIN, s, ed25519_key) for s in selectors]
    signers += [DkimSigner(DOMAIN, "s0", ed25519_key, canonicalization=("simple", "simple"))]
    fields = sign_all(message, signers)
    before = dns_server.query_count("TXT")
    found = asyncio.run(check_dkim(resolver(dns_server.nameserver), fields + message,
                                   concurrency=2, max_signatures=11))
    assert [r.result for r in found.results] == ["pass"] * 11
    assert dns_server.query_count("TXT") - before == 10  # s0 asked once for two signatures
    fewer = check(dns_server, fields + message)  # max_signatures 10: the 11th is not verified
    assert (len(fewer.results), fewer.ignored) == (10, 1)
