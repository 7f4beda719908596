"""`postkeep dkim` and the keys `init` and `domain add` make: what an operator publishes."""

from __future__ import annotations

import re
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from tests.interop.conftest import make_instance

ZONE_LINE = re.compile(r'^(pk\d{4}[a-z]+)\._domainkey\.([a-z0-9.-]+)\. IN TXT ((?:"[^"]*" ?)+)$')


def records(text: str) -> dict[str, str]:
    """selector -> the TXT value (strings joined), from `dkim show` lines."""
    found = {}
    for line in text.splitlines():
        if line.startswith(";") or not line:
            continue
        m = ZONE_LINE.match(line)
        assert m, line
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, m[3])
        found[m[1]] = b"".join(rdata.strings).decode()  # type: ignore[attr-defined]
        assert all(len(s) <= 255 for s in rdata.strings)  # type: ignore[attr-defined]
    return found


def test_keys_made_shown_rotated_and_removed(tmp_path: Path) -> None:
    inst = make_instance(tmp_path)
    shown = inst.cli("dkim", "show", "example.test").stdout
    first = records(shown)
    assert len(first) == 2 and shown.count("signing") == 2
    kinds = sorted(v.split(";")[1].strip() for v in first.values())
    assert kinds == ["k=ed25519", "k=rsa"]
    assert all(v.startswith("v=DKIM1; ") for v in first.values())
    again = inst.cli("dkim", "generate", "example.test", check=False)
    assert again.returncode == 1 and "dkim rotate" in again.stderr
    out = inst.cli("dkim", "rotate", "example.test").stdout
    assert "publish these records now; they sign from" in out and len(records(out)) == 2
    shown = inst.cli("dkim", "show", "example.test").stdout
    assert len(records(shown)) == 4 and shown.count("signing") == 2
    assert shown.count("signs from") == 2
    inst.cli("dkim", "rotate", "example.test", "--now")
    shown = inst.cli("dkim", "show", "example.test").stdout
    assert len(records(shown)) == 6
    assert shown.count(": signing") == 2 and shown.count("signs from") == 2  # the first rotation's
    assert shown.count("retired, keep published until") == 2  # the first keys
    old = sorted(first)[0]
    inst.cli("dkim", "remove", "example.test", old)
    assert old not in records(inst.cli("dkim", "show", "example.test").stdout)
    gone = inst.cli("dkim", "remove", "example.test", old, check=False)
    assert gone.returncode == 1
    assert inst.cli("dkim", "show", "nowhere.test", check=False).returncode == 1

    inst.cli("domain", "add", "second.test")
    assert len(records(inst.cli("dkim", "show", "second.test").stdout)) == 2
    inst.cli("domain", "add", "bare.test", "--no-dkim")
    assert "has no DKIM keys" in inst.cli("dkim", "show", "bare.test").stdout
    inst.cli("dkim", "generate", "bare.test")
    inst.cli("dkim", "remove", "bare.test")
    assert "has no DKIM keys" in inst.cli("dkim", "show", "bare.test").stdout
