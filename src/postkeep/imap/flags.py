"""IMAP message flags (RFC 9051 §2.3.2) between the wire and the store's `Flag` bits.

System flags are stored as `postkeep.store.api.Flag` bits and keywords as their names; this
module renders them as a FLAGS list and reads the flag names of STORE and APPEND into bits and
keywords. It lives outside `postkeep.imap.wire`, the sans-IO core that never imports the store.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from postkeep.store.api import Flag

#: System flags in the order the server lists them (RFC 9051 §2.3.2).
SYSTEM_FLAGS: tuple[tuple[Flag, str], ...] = (
    (Flag.ANSWERED, "\\Answered"),
    (Flag.FLAGGED, "\\Flagged"),
    (Flag.DELETED, "\\Deleted"),
    (Flag.SEEN, "\\Seen"),
    (Flag.DRAFT, "\\Draft"),
)
FLAG_BY_NAME: dict[str, Flag] = {name.upper(): flag for flag, name in SYSTEM_FLAGS}

#: The junk keywords (RFC 9051 §2.3.2, in RFC 5788's registry), lower-cased: a client marks a
#: message junk or not junk with them; the junk filter learns from it (`filters.junk.training`)
JUNK = "$junk"
NOT_JUNK = "$notjunk"


def flag_names(flags: Flag, keywords: Iterable[str] = ()) -> list[str]:
    return [name for flag, name in SYSTEM_FLAGS if flags & flag] + list(keywords)


@functools.lru_cache(maxsize=1024)  # FETCH FLAGS of a large mailbox repeats a few lists
def flag_list(flags: Flag, keywords: tuple[str, ...] = (), *, recent: bool = False) -> bytes:
    names = flag_names(flags, keywords)
    if recent:
        names.insert(0, "\\Recent")
    return ("(" + " ".join(names) + ")").encode()


def split_flags(names: Sequence[str]) -> tuple[Flag, tuple[str, ...]] | str:
    """System flags and keywords from flag names, or an error text for a bad system flag.

    \\Recent cannot be stored (RFC 3501 §2.3.2) and is ignored, as Dovecot does.
    """
    flags = Flag(0)
    keywords: dict[str, str] = {}
    for name in names:
        if name.startswith("\\"):
            upper = name.upper()
            if upper == "\\RECENT":
                continue
            flag = FLAG_BY_NAME.get(upper)
            if flag is None:
                return f"Invalid system flag {name}"
            flags |= flag
        else:
            keywords.setdefault(name.lower(), name)
    return flags, tuple(keywords.values())
