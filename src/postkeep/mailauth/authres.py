"""The Authentication-Results header field (RFC 8601): writing ours, removing forged ones.

One field per message, ``Authentication-Results: <authserv-id>; <resinfo>; ...``, with
``server.hostname`` as the authserv-id (§2.5) and each check's resinfo (``spf=pass
smtp.mailfrom=...``, ``dkim=pass header.d=... header.s=... header.b=...``, ``dmarc=...``,
``iprev=...``); ``none`` when no check ran (§2.2). Long fields are folded between resinfos
(RFC 5322 §2.2.3).

§5: a receiving MTA "MUST delete or otherwise obscure any instance of this header field that
claims, by virtue of its authentication service identifier, to have been added within its trust
boundary but that did not come directly from another trusted MTA". `strip_own` deletes every
field whose authserv-id is ours (compared case-insensitively, after comments and whitespace),
so a forged ``dmarc=pass`` never reaches the user. A field too malformed to name an authserv-id
is left alone: it claims nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from postkeep.mailauth.dkim.canon import parse_header_fields
from postkeep.mailauth.dkim.verify import DkimResult

#: Fold a field when a line would pass this length (RFC 5322 §2.1.1's 78).
FOLD_AT = 78
_WSP = re.compile(rb"[ \t\r\n]+")


def render(authserv_id: str, results: Sequence[str], *, instance: int | None = None) -> bytes:
    """The whole field, CRLF-terminated: `results` are resinfo strings (``method=result
    ...``), each on its own folded line when the field is long. With `instance`, the
    ARC-Authentication-Results field of that ARC Set instead (RFC 8617 §4.1.1: ``i=N;``
    before the same value)."""
    parts = [f"{authserv_id};"]
    items = list(results) or ["none"]
    for i, item in enumerate(items):
        parts.append(item + (";" if i < len(items) - 1 else ""))
    name = "Authentication-Results:" if instance is None else (
        f"ARC-Authentication-Results: i={instance};")
    line = f"{name} {parts[0]}"
    out = []
    for part in parts[1:]:
        if len(line) + 1 + len(part) > FOLD_AT:  # each resinfo on a line of its own
            out.append(line)
            line = "\t" + part.split(" ", 1)[0]
            words = part.split(" ")[1:]
        else:
            words = part.split(" ")
        for word in words:  # and a resinfo longer than a line folds between its words
            if len(line) + 1 + len(word) > FOLD_AT:
                out.append(line)
                line = "\t  " + word
            else:
                line += " " + word
    out.append(line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _value(text: str) -> str:
    """A property value (§2.2): as it is when it is an RFC 2045 token or an address or
    domain (pvalue), else quoted (a header.b with "/" or "=" in it)."""
    if text and re.fullmatch(r"[A-Za-z0-9!#$%&'*+^_`{|}~.@-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = "".join(c for c in text if c.isprintable() and c not in "()\\")[:120]
    return f" ({clean})" if clean else ""


def dkim_resinfo(results: Sequence[DkimResult]) -> list[str]:
    """One ``dkim=`` resinfo per signature (RFC 8601 §2.7.1, RFC 6008's header.b), ``dkim=none``
    for a message without any. A pass that leaves octets of the body unsigned (``l=``) says
    so in its comment."""
    if not results:
        return ["dkim=none"]
    out = []
    for r in results:
        note = r.reason if r.result != "pass" else (
            f"{r.unsigned_octets} body octets not signed" if r.unsigned_octets else "")
        props = [f"header.{k}={_value(v)}" for k, v in (
            ("d", r.domain), ("i", r.identity), ("s", r.selector), ("a", r.algorithm),
            ("b", r.header_b)) if v]
        out.append(" ".join([f"dkim={r.result}{_comment(note)}", *props]))
    return out


def _skip_cfws(value: bytes, i: int) -> int:
    """Past whitespace and (nested) comments from `i` (RFC 5322 §3.2.2); a comment that
    never closes runs to the end."""
    depth = 0
    while i < len(value):
        c = value[i : i + 1]
        if depth:
            if c == b"\\":
                i += 1
            elif c == b"(":
                depth += 1
            elif c == b")":
                depth -= 1
        elif c == b"(":
            depth = 1
        elif c not in (b" ", b"\t", b"\r", b"\n"):
            return i
        i += 1
    return i


def authserv_id(raw_field: bytes) -> str | None:
    """The authserv-id an Authentication-Results field names (its first value, a token or a
    quoted string: §2.2), lower-cased; None if it names none."""
    _, colon, value = raw_field.partition(b":")
    if not colon:
        return None
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == b'"':
        end = value.find(b'"', i + 1)
        token = value[i + 1 : end] if end > 0 else b""
    else:
        m = re.match(rb"[^\s;()\"]+", value[i:])
        token = m.group(0) if m else b""
    text = token.decode("utf-8", "replace").strip().lower().rstrip(".")
    return text or None


def strip_own(header_block: bytes, our_id: str) -> tuple[bytes, int]:
    """`header_block` without the Authentication-Results fields naming `our_id`, and how
    many were removed. The other fields stay exactly as written."""
    ours = our_id.lower().rstrip(".")
    kept, removed = [], 0
    for field in parse_header_fields(header_block):
        if field.key == "authentication-results" and authserv_id(field.raw) == ours:
            removed += 1
            continue
        kept.append(field.raw)
    return (b"".join(kept), removed) if removed else (header_block, 0)
