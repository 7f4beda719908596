"""Signatures made by postkeep, verified by OpenDKIM (a second independent implementation,
libopendkim 2.11): the `opendkim` filter in test mode (`-t FILE`: verify and exit), its
libunbound pointed at the test's NSD through `ResolverConfiguration` (an Unbound config file
forwarding every name to NSD's port: OpenDKIM's `Nameservers` takes no port)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from postkeep.mailauth.dkim.canon import Canon
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from tests.mailauth.conftest import DOMAIN, Published
from tests.mailauth.messages import MESSAGES

# dkim=pass (2048-bit key; unprotected) header.d=... header.a=rsa-sha256 header.s=rsa ...
_RESULT = re.compile(r"\bdkim=(\w+)\b.*?\bheader\.s=([^\s;']+)")


def opendkim_config(directory: Path, published: Published) -> Path:
    opendkim = shutil.which("opendkim", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if opendkim is None:
        pytest.fail("opendkim is missing: install the Debian package opendkim "
                    "(scripts/test-deps.sh does)", pytrace=False)
    unbound = directory / "unbound.conf"
    unbound.write_text(f"""server:
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
forward-zone:
    name: "."
    forward-addr: {published.server.address}@{published.server.port}
""")
    config = directory / "opendkim.conf"
    config.write_text(f"Mode v\nSyslog no\nAlwaysAddARHeader yes\n"
                      f"ResolverConfiguration {unbound}\nTemporaryDirectory {directory}\n")
    return config


def opendkim_verify(config: Path, message: bytes) -> dict[str, str]:
    """OpenDKIM's result for each signature of `message`, by selector (from the
    Authentication-Results field it prints with -vv)."""
    path = config.parent / "message.eml"
    path.write_bytes(message)
    done = subprocess.run(["opendkim", "-x", str(config), "-vv", "-t", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {m[2]: m[1] for line in done.stdout.splitlines() if (m := _RESULT.search(line))}


CANONS: list[tuple[Canon, Canon]] = [("relaxed", "relaxed"), ("simple", "simple")]


@pytest.mark.parametrize("canon", CANONS, ids="/".join)
def test_opendkim_verifies(published: Published, tmp_path: Path,
                           canon: tuple[Canon, Canon]) -> None:
    config = opendkim_config(tmp_path, published)
    signers = [DkimSigner(DOMAIN, selector, key, canonicalization=canon)
               for selector, key in published.keys.items()]
    # The filter gets each field as name and value (the milter protocol) and writes it back
    # as "Name: value": a field with other whitespace after its colon ("folded" has
    # "Subject:   a") is not what was signed under simple header canonicalisation, whoever
    # signed it. dkimpy verifies that message in every canonicalisation (test_sign_dkimpy).
    names = [name for name in MESSAGES if canon[0] == "relaxed" or name != "folded"]
    results = {name: opendkim_verify(config, sign_all(MESSAGES[name], signers) + MESSAGES[name])
               for name in names}
    assert results == {name: {"rsa": "pass", "ed": "pass"} for name in names}


def test_opendkim_fails_tampering(published: Published, tmp_path: Path) -> None:
    config = opendkim_config(tmp_path, published)
    message = MESSAGES["plain"]
    fields = sign_all(message, [DkimSigner(DOMAIN, selector, key)
                                for selector, key in published.keys.items()])
    assert opendkim_verify(config, fields + message) == {"rsa": "pass", "ed": "pass"}
    for text in (message.replace(b"noon", b"nine"),
                 b"From: mallory@example.org\r\n" + message):
        assert opendkim_verify(config, fields + text) == {"rsa": "fail", "ed": "fail"}
