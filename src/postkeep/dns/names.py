"""Domain names as the resolver accepts them: bounded, checked, in A-labels.

- Length (RFC 1035 §2.3.4, §3.1): a label is 1 to 63 octets, a name at most 255 octets on the
  wire, which is 253 characters of text without the trailing dot. Input longer than
  `MAX_INPUT` characters is refused before any other work.
- Labels: letters, digits, hyphen and underscore (RFC 8552 §2 attribute leaves: `_dmarc`,
  `_mta-sts`, `_25._tcp`, DKIM's `_domainkey`); a hyphen neither starts nor ends a label
  (RFC 5891 §4.2.3.1). Other octets, though DNS could carry them, name nothing mail needs.
- A label with non-ASCII characters is converted to its A-label (RFC 5890 §2.3.2.1) by UTS #46
  processing, non-transitional, as `postkeep.addresses` does; one IDNA refuses is an error.
- ASCII is lower-cased (names compare case-insensitively, RFC 4343): the cache's keys.

`query_name` returns the name as text without the trailing dot, or raises `InvalidName`.

`literal_name` is for names made from untrusted parts that must be asked as they stand (SPF's
macro expansion, RFC 7208 §7: a local-part, "%_" spaces): any printable ASCII octet in a
label (DNS carries any octet, RFC 2181 §11), the same lengths, ASCII lower-cased, no IDNA.
"""

from __future__ import annotations

import idna

#: Characters of input looked at at all: anything longer is refused unread.
MAX_INPUT = 1024
MAX_NAME = 253  # text, no trailing dot (255 octets on the wire)
MAX_LABEL = 63

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidName(ValueError):
    """A name that is not a valid domain name; the message says why."""


def _a_label(label: str, name: str) -> str:
    if label.isascii():
        return label.lower()
    try:
        return idna.encode(label, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise InvalidName(f"{name!r}: label {label!r} is not a valid IDN label ({e})") from None


def _without_root(name: str) -> str:
    """`name` without its trailing dot; InvalidName for no text, too long or empty."""
    if not isinstance(name, str):
        raise InvalidName(f"expected a domain name as text, not {type(name).__name__}")
    if len(name) > MAX_INPUT:
        raise InvalidName(f"a domain name of {len(name)} characters (at most {MAX_NAME})")
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise InvalidName("an empty domain name")
    return text


def query_name(name: str) -> str:
    """`name` checked and in lower-case A-labels, without the trailing dot."""
    text = _without_root(name)
    labels = [_a_label(label, name) for label in text.split(".")]
    for label in labels:
        if not label:
            raise InvalidName(f"{name!r}: an empty label")
        if len(label) > MAX_LABEL:
            raise InvalidName(f"{name!r}: a label of {len(label)} octets (at most {MAX_LABEL})")
        if not set(label) <= _LABEL_CHARS:
            bad = sorted(set(label) - _LABEL_CHARS)
            raise InvalidName(f"{name!r}: label {label!r} has {''.join(bad)!r} "
                              "(letters, digits, '-' and '_' only)")
        if label.startswith("-") or label.endswith("-"):
            raise InvalidName(f"{name!r}: label {label!r} starts or ends with '-'")
    result = ".".join(labels)
    if len(result) > MAX_NAME:
        raise InvalidName(f"{name!r}: {len(result)} characters in A-labels (at most {MAX_NAME})")
    return result


def literal_name(name: str) -> str:
    """`name` as it stands: labels of printable ASCII (%x20-7E), 1 to 63 octets, at most
    253 in all, lower-cased, without the trailing dot; else InvalidName."""
    text = _without_root(name)
    if not (text.isascii() and text.isprintable()):
        raise InvalidName(f"{name!r}: characters outside printable ASCII")
    for label in text.split("."):
        if not label:
            raise InvalidName(f"{name!r}: an empty label")
        if len(label) > MAX_LABEL:
            raise InvalidName(f"{name!r}: a label of {len(label)} octets (at most {MAX_LABEL})")
    if len(text) > MAX_NAME:
        raise InvalidName(f"{name!r}: {len(text)} characters (at most {MAX_NAME})")
    return text.lower()
