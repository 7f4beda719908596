"""Submission policy (RFC 6409): who may send as whom, and per-message limits on submitted mail.

Sender ownership: the envelope sender (MAIL FROM) and every address in the From: header must belong
to the authenticated account: its own address, the source of an alias (not a catch-all) that
delivers to it (also through other aliases), or an address it was granted ("send as"). Anything
else is refused with 553 5.7.1, so a logged-in user cannot impersonate another (RFC 6409 §6.1 lets
the MSA enforce this).

MIME part limit: a single part larger than `max_part_size` (encoded) is refused with 552 5.3.4,
a structure nested deeper than `MAX_MIME_DEPTH` with 554 5.6.0. The parts are those of the MIME
parser IMAP serves them with (`mime.structure`, which reads a spooled message a block at a
time); the parse is skipped when the whole message is smaller than the limit.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import getaddresses

from postkeep.addresses import address_key
from postkeep.errors import Reply
from postkeep.mime.structure import Part, Text, parse_structure
from postkeep.policy.limits import header_section
from postkeep.policy.verdict import Verdict
from postkeep.store.api import ALIAS_DEPTH, Account, Alias

MAX_MIME_DEPTH = 50
MAX_MIME_PARTS = 10_000


@dataclass(frozen=True, slots=True)
class Submitted:
    """What became of a message submitted in process (the webmail, `delivery.submit`): the
    submission pipeline's verdict (its reply is what an SMTP client would have heard), the
    message's queue id, and whether the content filters held it (in the quarantine)."""

    verdict: Verdict
    queue_id: str
    held: bool = False


def owned_addresses(
    account: Account, aliases: Iterable[Alias], grants: Iterable[str] = ()
) -> frozenset[str]:
    """Lookup keys (`postkeep.addresses.address_key`) the account may send as: its address,
    the aliases whose mail reaches it (directly or through other aliases, as far as delivery
    follows them: `ALIAS_DEPTH` levels), and explicit "send as" grants."""
    reaching: dict[str, set[str]] = {}  # address -> sources of the aliases that name it
    for alias in aliases:
        if alias.source.startswith("@"):
            continue  # a catch-all does not let its target send as anyone@domain
        for target in alias.targets:
            reaching.setdefault(address_key(target), set()).add(address_key(alias.source))
    own = address_key(account.address)
    owned = {own}
    level = {own}
    for _ in range(ALIAS_DEPTH):
        level = {s for a in level for s in reaching.get(a, ())} - owned
        if not level:
            break
        owned |= level
    return frozenset(owned | {address_key(g) for g in grants})


def check_envelope_sender(address: str, owned: frozenset[str], login: str) -> Reply | None:
    """MAIL FROM ownership; the null sender is allowed (it impersonates no one)."""
    if not address or address_key(address) in owned:
        return None
    return Reply(553, "5.7.1", f"Sender address <{address}> is not owned by user {login}")


def check_from_header(data: bytes, owned: frozenset[str], login: str) -> Reply | None:
    """Every From: address must be owned by the login (RFC 5322 §3.6.2); a UTF-8 header
    (RFC 6532 §3.2) is read as UTF-8 (the parser hands its octets over as surrogate escapes)."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    header = parser.parsebytes(header_section(data))
    values = [
        v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for k, v in header.raw_items() if k.lower() == "from"
    ]
    if len(values) > 1:
        return Reply(550, "5.6.0", "Message has more than one From header (RFC 5322 3.6)")
    for _name, address in getaddresses(values):
        if address and address_key(address) not in owned:
            return Reply(553, "5.7.1", f"From address <{address}> is not owned by user {login}")
    return None


def from_domain(data: bytes) -> str | None:
    """The domain of the (first) From: address, lower-cased; None if there is none. The
    domain a DKIM signature is made for (RFC 7489 §3.1: DMARC aligns with it)."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    header = parser.parsebytes(header_section(data))
    values = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
              for k, v in header.raw_items() if k.lower() == "from"]
    for _name, address in getaddresses(values):
        domain = address.rpartition("@")[2].strip().lower()
        if "@" in address and domain:
            return domain
    return None


def check_part_sizes(data: Text, max_part_size: int) -> Reply | None:
    """Refuse a message with a MIME part (encoded body) over `max_part_size` bytes, or nested
    more than `MAX_MIME_DEPTH` levels below its top."""
    if len(data) <= max_part_size:
        return None
    # deep enough to see a level past the limit; parts enough for any sane message
    root = parse_structure(data, max_depth=MAX_MIME_DEPTH + 2, max_parts=MAX_MIME_PARTS)
    stack: list[tuple[Part, int]] = [(root, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_MIME_DEPTH:
            return Reply(554, "5.6.0", "MIME structure nested too deeply")
        if part.children:
            stack.extend((child, depth + 1) for child in part.children)
        elif part.body_end - part.body_start > max_part_size:
            return Reply(552, "5.3.4", f"A MIME part exceeds {max_part_size} bytes")
    return None
