"""Address normalisation for lookups (RFC 5321 §2.4, §4.1.2; RFC 5322 §3.4.1).

Domains compare case-insensitively; local parts are matched case-insensitively too, as every
mainstream server does for its own users. A quoted local part whose content is a valid dot-atom
("alice") is the same mailbox as the unquoted form (alice); any other quoted local part (with
spaces, "@", "%" ...) names no local account.
"""

from __future__ import annotations

import re

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")


def unquote_local(local: str) -> str:
    """`"alice"` → `alice` when the content is a dot-atom; otherwise unchanged."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM.fullmatch(inner):
            return inner
    return local


def normalize(local: str, domain: str) -> str:
    """The lookup key of a mailbox: unquoted local part, lower-cased domain."""
    return f"{unquote_local(local)}@{domain.lower().rstrip('.')}"
