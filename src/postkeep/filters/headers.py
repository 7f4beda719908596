"""The header fields that report content filters' results, and the removal of forged ones.

Each filter with a field writes one, naming itself and this host the way amavis and others
do: ``X-Virus-Scanned: clamav at mx.example.org; clean`` (or ``clean (first N octets)``,
``unscanned (...)``). When any filter scored or tagged the message, ``X-Spam-Status: Yes,
score=6.5 tests=A,B at mx.example.org`` follows (``No`` when it was not tagged), in the form
SpamAssassin's readers (mail clients' junk rules) expect at its start, and ``X-Spam-Score:
6.5 at mx.example.org`` (the number first, for rules that compare it).

As for Authentication-Results (RFC 8601 §5), fields of those names that claim to come from
this host (``at <server.hostname>``) but arrived with the message are forged: `strip_own`
removes them before ours are added, so no sender can write "clean" for us. Others' fields
stay: they claim nothing of ours.
"""

from __future__ import annotations

import re

from postkeep.filters.base import Action, ScanOutcome
from postkeep.mailauth.dkim.canon import parse_header_fields

FIELDS = ("x-virus-scanned", "x-spam-status", "x-spam-score")
_WSP = re.compile(rb"[ \t\r\n]+")


def render(outcome: ScanOutcome, hostname: str) -> bytes:
    """The fields for an accepted message's outcome, CRLF-terminated."""
    lines = [f"{s.header}: {s.filter} at {hostname}; {s.status}\r\n"
             for s in outcome.statuses if s.header]
    if outcome.action is Action.TAG or outcome.score or outcome.symbols:
        flag = "Yes" if outcome.action is Action.TAG else "No"
        tests = ",".join(outcome.symbols) or "none"
        lines.append(f"X-Spam-Status: {flag}, score={outcome.score:.1f} tests={tests} "
                     f"at {hostname}\r\n")
        lines.append(f"X-Spam-Score: {outcome.score:.1f} at {hostname}\r\n")
    return "".join(lines).encode("ascii", "replace")


def strip_own(header_block: bytes, hostname: str) -> tuple[bytes, int]:
    """`header_block` without the `FIELDS` that name `hostname` as where they were added,
    and how many were removed; the other fields stay exactly as written."""
    host = re.escape(hostname.lower().rstrip(".").encode("ascii", "replace"))
    ours = re.compile(rb"(?:^|[\s;,])at\s+" + host + rb"\.?(?![A-Za-z0-9.-])", re.IGNORECASE)
    kept, removed = [], 0
    for field in parse_header_fields(header_block):
        if field.key in FIELDS and ours.search(_WSP.sub(b" ", field.raw.partition(b":")[2])):
            removed += 1
            continue
        kept.append(field.raw)
    return (b"".join(kept), removed) if removed else (header_block, 0)
