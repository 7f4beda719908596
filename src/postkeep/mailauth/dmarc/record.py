"""The DMARC policy record: its tag-value grammar and what each tag means.

RFC 9989 §4.7 (the tags) and §4.8 (the format), which obsoletes RFC 7489 §6.3-6.4: a TXT record
at ``_dmarc.<domain>`` that starts with ``v=DMARC1``, tags separated by ``;``, names and values
trimmed of whitespace. Unknown tags are ignored (§4.7). A tag with an invalid value is ignored
as if absent, except ``p``: a record whose ``p`` is missing or invalid is still a policy
record when it names at least one valid ``rua`` URI, and then counts as ``p=none``; otherwise
it is not a DMARC record at all (§4.7, "p").

The obsolete RFC 7489 tags are read for compatibility: ``pct=0`` (sample no messages) means
the same as RFC 9989's ``t=y`` (testing); any other ``pct`` is ignored, so a policy is applied
to every message (RFC 9989 §A.6 gives up sampling). ``rf`` and ``ri`` are ignored.

Parsing is bounded (`MAX_RECORD`, `MAX_TAGS`, `MAX_URIS`): a record past those limits is
not a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

#: Longest record read (octets); real records are a few hundred.
MAX_RECORD = 4096
#: Most tags in one record (RFC 9989 defines 11, RFC 7489 three more).
MAX_TAGS = 32
#: Most report URIs kept per ``rua`` or ``ruf`` tag (the rest are ignored).
MAX_URIS = 8


class Policy(StrEnum):
    """What the domain owner asks a receiver to do with mail that fails (RFC 9989 §4.7)."""

    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    def relaxed(self) -> Policy:
        """One step milder: the policy applied in testing mode (``t=y``, RFC 9989 §4.7)."""
        return {Policy.REJECT: Policy.QUARANTINE}.get(self, Policy.NONE)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed policy record. `sp` and `np` are None when absent (then `p`, resp. `sp`,
    applies: RFC 9989 §4.7); `psd` is "y", "n" or "u" (unspecified)."""

    p: Policy
    sp: Policy | None = None
    np: Policy | None = None
    psd: str = "u"
    testing: bool = False
    adkim_strict: bool = False
    aspf_strict: bool = False
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"


def _policy(value: str) -> Policy | None:
    try:
        return Policy(value.lower())
    except ValueError:
        return None


def _uris(value: str) -> tuple[str, ...]:
    """Report URIs (RFC 9989 §4.7 "rua"): comma-separated, each a URI; RFC 7489's ``!size``
    suffix is dropped (RFC 9989 says to ignore it). Only ``mailto:`` URIs are kept: the only
    scheme reports are sent to (§4.7, and RFC 9990 §3)."""
    out = []
    for uri in value.split(",")[:MAX_URIS]:
        uri = uri.strip()
        if "!" in uri:
            uri = uri[: uri.index("!")]
        if uri.lower().startswith("mailto:") and "@" in uri and len(uri) <= 320:
            out.append(uri)
    return tuple(out)


def _fo(value: str) -> str | None:
    """``fo`` (RFC 9989 §4.7): colon-separated options among 0, 1, d and s."""
    options = [o.strip() for o in value.split(":")]
    valid = options and all(o in ("0", "1", "d", "s") for o in options)
    return ":".join(options) if valid else None


@lru_cache(maxsize=1024)
def parse_record(text: bytes | str) -> DmarcRecord | None:
    """The policy record `text` holds, or None when it is not a DMARC record (wrong version,
    unusable ``p`` without a report address, or beyond the limits). A pure function of the
    text, its (immutable) result kept for the domains that recur."""
    if isinstance(text, bytes):
        if len(text) > MAX_RECORD:
            return None
        text = text.decode("ascii", "replace")
    if len(text) > MAX_RECORD:
        return None
    parts = text.split(";")
    if len(parts) > MAX_TAGS + 1:
        return None
    tags: dict[str, str] = {}
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if i == 0:
            if not eq or name != "v" or value != "DMARC1":
                return None  # §4.8: the record must start with v=DMARC1
            continue
        if eq:  # a term without "=" (the empty one after a final ";") is ignored
            tags.setdefault(name, value)  # the first of a repeated tag counts
    p = _policy(tags.get("p", ""))
    rua = _uris(tags.get("rua", ""))
    if p is None:
        if not rua:
            return None
        p = Policy.NONE
    psd = tags.get("psd", "u").lower()
    testing = tags.get("t", "n").lower() == "y" or tags.get("pct", "").strip() == "0"
    return DmarcRecord(
        p=p,
        sp=_policy(tags.get("sp", "")),
        np=_policy(tags.get("np", "")),
        psd=psd if psd in ("y", "n", "u") else "u",
        testing=testing,
        adkim_strict=tags.get("adkim", "r").lower() == "s",
        aspf_strict=tags.get("aspf", "r").lower() == "s",
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
        fo=_fo(tags.get("fo", "0")) or "0",
    )


def is_dmarc_text(text: bytes) -> bool:
    """Whether a TXT record claims to be a DMARC record (RFC 9989 §4.10 step 2: records that
    do not start with a "v=DMARC1" tag are discarded before counting them)."""
    head = text[:64].split(b";", 1)[0]
    name, _, value = head.partition(b"=")
    return name.strip().lower() == b"v" and value.strip() == b"DMARC1"
