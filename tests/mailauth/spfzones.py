"""The OpenSPF RFC 7208 test suite (tests/data/rfc7208-tests.yml) as DNS data for NSD.

A scenario's `zonedata` maps names to records ("A", "AAAA", "MX" [preference, exchange],
"PTR", "CNAME", "TXT" and "SPF" strings or lists of strings) and the "TIMEOUT" marker. Read
as pyspf's driver (test/testspf.py) reads it: "SPF" records stand for TXT records too unless
the name lists TXT records of its own; "TXT: NONE" is no record; "TIMEOUT" leaves the name's
queries unanswered except for the types listed before it. Every name goes into one root zone
(so that any other name is NXDOMAIN, as in pyspf's driver), owner names absolute, octets
outside letters, digits, "-" and "_" written as \\DDD (RFC 1035 §5.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUITE = Path(__file__).resolve().parent.parent / "data" / "rfc7208-tests.yml"

_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def scenarios() -> list[dict[str, Any]]:
    with SUITE.open("rb") as f:
        return list(yaml.safe_load_all(f))


def _escape(data: bytes, keep: Iterable[int]) -> str:
    kept = frozenset(keep)
    return "".join(chr(b) if b in kept else f"\\{b:03d}" for b in data)


def owner(name: str) -> str:
    """An absolute zone-file name for `name` ("" and "." are the root)."""
    labels = [label for label in name.rstrip(".").split(".") if label]
    return ".".join(_escape(label.encode(), _PLAIN) for label in labels) + "."


def _strings(value: str | list[str]) -> str:
    items = [value] if isinstance(value, str) else value
    if not items:
        # The suite's "null text", a TXT record of no strings, is no TXT record (RFC 1035
        # §3.3.14: one or more): neither NSD's loader nor dnspython takes one. The nearest
        # record is one empty string (the case's point stands: ignored, no crash).
        return '""'
    printable = frozenset(range(0x21, 0x7F)) - {ord('"'), ord("\\")}
    return " ".join(f'"{_escape(s.encode("utf-8"), printable)}"' for s in items)


def _rdata(rdtype: str, value: Any) -> str:
    if rdtype in ("TXT", "SPF"):
        return _strings(value)
    if rdtype == "MX":
        preference, exchange = value
        return f"{int(preference)} {owner(exchange)}"
    if rdtype in ("PTR", "CNAME"):
        return owner(value)
    return str(value)  # A, AAAA


@dataclass
class Zone:
    """A scenario's root zone records, and the names to leave unanswered with the types that
    still are answered."""

    records: list[str] = field(default_factory=list)
    timeouts: dict[str, frozenset[str]] = field(default_factory=dict)


def zone(scenario: dict[str, Any]) -> Zone:
    out = Zone()
    for name, entries in scenario["zonedata"].items():
        lines: list[str] = []
        answered: list[str] = []
        timeout = False
        own_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        generated = []
        for entry in entries:
            if entry == "TIMEOUT":
                timeout = True
                break
            ((rdtype, value),) = entry.items()
            if value == "NONE":
                continue
            answered.append(rdtype)
            lines.append(f"{owner(name)} {rdtype} {_rdata(rdtype, value)}")
            if rdtype == "SPF" and not own_txt:
                generated.append(f"{owner(name)} TXT {_rdata('TXT', value)}")
        lines += generated
        if timeout:
            out.timeouts[name.rstrip(".").lower()] = frozenset(answered)
        out.records.extend(lines)
    return out
