"""The canonical form of a mail address: how one is stored, compared and looked up.

Every layer that stores, compares or looks up an address of this server goes through this
module: the CLI, SMTP recipient and sender checks, SASL and IMAP logins, the recipient
directory and the store. So one mailbox has one name whatever form a client or an operator
typed it in (the NFC and NFD forms of `üser` are one account, not two that look alike).

- **Local part** (RFC 6532 §3.1 asks for NFC; the steps are those of RFC 8265 §3.3-3.4, the
  UsernameCasePreserved and UsernameCaseMapped profiles): a quoted local part whose content is
  a dot-atom is unquoted (`"alice"` is alice, RFC 5321 §4.1.2); fullwidth and halfwidth forms
  are mapped to their ordinary forms (RFC 8265 §3.3.2 rule 1); the result is put in NFC. That
  is the stored form, case kept. The lookup key is that, lower-cased (Unicode toLowerCase,
  RFC 8265 §3.3.2 rule 2) and in NFC again: local parts match case-insensitively, as every
  mainstream server does for its own users. Any other quoted local part (with spaces, "@",
  "%" ...) is left as written and names no local account.
- **Domain** (RFC 5890-5891, UTS #46 processing, non-transitional, by the `idna` package):
  mapped (case, width, NFC), checked, and written as U-labels, so `EXÄMPLE.test`,
  `exämple.test` in NFD and `xn--exmple-cua.test` are one domain; a trailing dot is dropped. A
  name IDNA refuses is kept in NFC lower case for lookups (it matches no local domain, since
  those are created in canonical form) and refused where a domain is created (`strict`).

Pure functions of the text (no I/O, no other postkeep module): the store uses them as well.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import idna

_DOT_ATOM = re.compile(
    r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+"
    r"(?:\.(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+)*"
)  # RFC 5322 §3.2.3 dot-atom-text with RFC 6532 §3.2's UTF8-non-ascii

#: General categories no address may contain (RFC 6532 §3.1 leaves these to the server): control
#: characters, format characters (zero-width spaces and joiners, the bidi embeddings, overrides,
#: isolates and marks, the soft hyphen ...), and the line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def unquote_local(local: str) -> str:
    """`"alice"` → `alice` when the content is a dot-atom; otherwise unchanged."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_ATOM.fullmatch(inner):
            return inner
    return local


def _width_mapped(text: str) -> str:
    """RFC 8265 §3.3.2 rule 1: fullwidth and halfwidth code points → their decompositions."""
    if text.isascii():
        return text
    out = []
    for c in text:
        decomposition = unicodedata.decomposition(c)
        if decomposition.startswith(("<wide> ", "<narrow> ")):
            c = chr(int(decomposition.split()[1], 16))
        out.append(c)
    return "".join(out)


def canonical_local(local: str) -> str:
    """The stored form of a local part: unquoted (if a dot-atom), width-mapped, NFC."""
    local = unquote_local(local)
    if local.isascii():
        return local
    return unicodedata.normalize("NFC", _width_mapped(local))


@functools.lru_cache(maxsize=4096)
def _idna_domain(name: str) -> str | None:
    try:
        return idna.decode(idna.encode(name, uts46=True))
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def canonical_domain(name: str, *, strict: bool = False) -> str:
    """A domain in canonical form: UTS #46-mapped U-labels, no trailing dot.

    An address literal (`[192.0.2.1]`) is only lower-cased. A name IDNA refuses raises
    ValueError with `strict`, else is returned in NFC lower case (see the module docstring).
    """
    name = name.strip().rstrip(".")
    if name.startswith("["):
        return name.lower()
    mapped = _idna_domain(name) if name and len(name) <= 255 else None
    if mapped is not None:
        return mapped
    if strict:
        raise ValueError(f"{name!r} is not a valid domain name (IDNA, RFC 5891)")
    return unicodedata.normalize("NFC", name.lower())


def canonical_address(address: str) -> str:
    """The stored form of `local@domain` (or of a catch-all `@domain`)."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return canonical_local(address.strip())
    return f"{canonical_local(local)}@{canonical_domain(domain)}"


def address_key(address: str) -> str:
    """The lookup key of an address: its canonical form with the local part lower-cased."""
    canonical = canonical_address(address)
    local, at, domain = canonical.rpartition("@")
    return f"{_lower(local)}@{domain}" if at else _lower(canonical)


def _lower(text: str) -> str:
    return text.lower() if text.isascii() else unicodedata.normalize("NFC", text.lower())


def invisible_characters(text: str) -> list[str]:
    """The control, format (bidi controls included) and line/paragraph-separator characters in
    `text`, each described as "U+200B ZERO WIDTH SPACE"; empty when there is none."""
    if text.isascii() and text.isprintable():
        return []
    return [describe(c) for c in text if unicodedata.category(c) in _INVISIBLE]


def describe(c: str) -> str:
    """`U+043E CYRILLIC SMALL LETTER O`: a character as an operator can look it up."""
    return f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}"
