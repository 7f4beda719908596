"""Which new addresses may be created (`postkeep user add`, `alias add`): no invisible
characters, no mixed scripts, no look-alike of an existing address (UTS #39).

The canonical form itself (NFC, case, IDNA) is `postkeep.addresses`; this is the policy on top.
Checked, in this order, on the canonical form:

- Refused always: an invisible character (control, format — zero-width spaces and joiners,
  the bidi embeddings, overrides and isolates — line and paragraph separators), a space, and
  private-use, surrogate or unassigned code points. Nobody could tell such an address from
  another on screen (and SMTP refuses invisible characters in RCPT anyway, `policy.relay`); an
  unassigned code point could gain case or composition in a later Unicode version, changing
  the address's lookup key under it.
- Refused unless forced: an address whose UTS #39 §4 skeleton is that of an existing account
  or alias (a confusable: `b\u043eb`, with a Cyrillic o, beside `bob`; `user1` beside `userl`); a
  local part above UTS #39 §5.2 restriction level Highly Restrictive (one script, or Latin
  with Han and Japanese kana, Bopomofo or Hangul: Latin with Cyrillic is refused), with digits
  of more than one numbering system (§5.3), or with a repeated nonspacing mark (§5.4).

A new alias target or send-as grant may be a remote address: only the invisible characters are
refused there (`check_visible`).

The UTS #39 checks are ICU's `SpoofChecker` (PyICU); docs/architecture.md says why.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import icu

from postkeep.addresses import address_key, describe, invisible_characters

#: General categories refused in new addresses besides the invisible ones: spaces, private
#: use, surrogates, unassigned.
_NEVER = frozenset({"Zs", "Co", "Cs", "Cn"})

_CHECKS = (
    icu.USpoofChecks.RESTRICTION_LEVEL | icu.USpoofChecks.MIXED_NUMBERS
    | icu.USpoofChecks.INVISIBLE
)




@functools.cache
def _checker() -> icu.SpoofChecker:
    checker = icu.SpoofChecker()
    checker.setChecks(_CHECKS)
    checker.setRestrictionLevel(icu.URestrictionLevel.HIGHLY_RESTRICTIVE)
    return checker


def skeleton(address: str) -> str:
    """The UTS #39 §4 skeleton of an address's lookup key: equal skeletons look alike."""
    return str(_checker().getSkeleton(0, address_key(address)))


def check_visible(address: str) -> str | None:
    """Why `address` may not be written into a new alias target or send-as grant (it may be a
    remote address: only invisible characters are refused), or None."""
    invisible = invisible_characters(address)
    if invisible:
        return (f"refusing {address!r}: it contains an invisible or control character "
                f"({', '.join(invisible)})")
    return None


def _never(local: str) -> str | None:
    invisible = invisible_characters(local)
    if invisible:
        return f"it contains an invisible or control character ({', '.join(invisible)})"
    bad = [c for c in local if unicodedata.category(c) in _NEVER]
    if bad:
        kind = {"Zs": "a space", "Co": "a private-use character",
                "Cs": "a surrogate", "Cn": "an unassigned code point"}
        c = bad[0]
        return f"it contains {kind[unicodedata.category(c)]} ({describe(c)})"
    return None


def _scripts(local: str) -> str:
    names = dict.fromkeys(str(icu.Script.getScript(c).getName()) for c in local)
    return ", ".join(n for n in names if n not in ("Common", "Inherited"))


def _restriction(local: str) -> str | None:
    failed = _checker().check(local)
    if failed & icu.USpoofChecks.RESTRICTION_LEVEL:
        return (f"its local part mixes scripts ({_scripts(local)}) beyond UTS #39's highly "
                "restrictive level")
    if failed & icu.USpoofChecks.MIXED_NUMBERS:
        return "its local part mixes digits of different numbering systems (UTS #39 5.3)"
    if failed & icu.USpoofChecks.INVISIBLE:
        return "its local part repeats a nonspacing mark (UTS #39 5.4)"
    return None


def _non_ascii(address: str) -> str:
    found = dict.fromkeys(describe(c) for c in address if not c.isascii())
    return f" ({', '.join(found)})" if found else ""


def check_new_address(
    address: str, existing: Iterable[tuple[str, str]], *, force: bool = False
) -> str | None:
    """Why `address` (canonical form, `local@domain` or a catch-all `@domain`) may not be
    created, or None. `existing` is (address, what it is: "account", "alias") for every
    address there is; one with the same lookup key is left to the store (it exists already).
    `force` lets a confusable or mixed-script address through, never an invisible character."""
    local = address.rpartition("@")[0]
    if not local:
        return None  # a catch-all: the domain was checked when it was added
    never = _never(local)
    if never is not None:
        return f"refusing {address!r}: {never}"
    if force:
        return None
    key, shape = address_key(address), skeleton(address)
    for other, what in existing:
        if address_key(other) != key and skeleton(other) == shape:
            return (f"refusing {address}{_non_ascii(address)}: it looks like the existing "
                    f"{what} {other} (Unicode confusables, UTS #39); give --force to add it "
                    "anyway")
    restricted = _restriction(local)
    if restricted is not None:
        return (f"refusing {address}{_non_ascii(address)}: {restricted}; give --force to add "
                "it anyway")
    return None
