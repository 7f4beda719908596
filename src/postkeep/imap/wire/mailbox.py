"""IMAP mailbox name encodings (sans-IO): modified UTF-7 and UTF-8 names.

Implements RFC 3501 §5.1.3 (modified UTF-7 "mailbox international naming convention", used by
IMAP4rev1 clients), RFC 9051 §5.1 (IMAP4rev2: mailbox names are UTF-8, Net-Unicode, without
control characters) and RFC 6855 §3 (UTF8=ACCEPT switches an IMAP4rev1 session to UTF-8 names).
The case-insensitive name INBOX is normalized to "INBOX" (RFC 9051 §5.1, RFC 3501 §5.1).

Decoding is strict, as RFC 3501 §5.1.3 requires: printable ASCII must not be base64-encoded,
shifts must not be superfluous ("&U,BTFw-&ZeVnLIqe-"), the base64 must end on a whole UTF-16
unit with zero pad bits and a "-", and surrogates must pair. Anything else raises
`MailboxNameError` (a `ValueError`), which the parser turns into a tagged BAD.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = [
    "MailboxNameError",
    "decode_mailbox",
    "decode_utf7",
    "encode_mailbox_utf7",
    "normalize_inbox",
]

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
_B64_CHARS = frozenset(_B64_ALPHABET)
# RFC 9051 §5.1: no C0/C1 controls, DEL, LINE SEPARATOR or PARAGRAPH SEPARATOR in names.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class MailboxNameError(ValueError):
    """A mailbox name that is not valid modified UTF-7 or UTF-8 (message says why)."""


def _printable(ch: int) -> bool:
    return 0x20 <= ch <= 0x7E


def encode_mailbox_utf7(name: str) -> str:
    """Encode `name` in modified UTF-7 (RFC 3501 §5.1.3) for an IMAP4rev1 client.

    Printable US-ASCII other than "&" stands for itself, "&" becomes "&-", and every run of
    other characters becomes "&" + modified BASE64 (with "," for "/", no padding) of its
    UTF-16BE form + "-".
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be", "surrogatepass")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            run.clear()

    for ch in name:
        if _printable(ord(ch)):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_utf7(raw: bytes) -> str:
    """Decode a modified UTF-7 name (RFC 3501 §5.1.3), strictly; raise `MailboxNameError`."""
    out: list[str] = []
    i = 0
    n = len(raw)
    previous_shift_end = -1  # index just past the "-" of the last base64 run
    while i < n:
        ch = raw[i]
        if ch != 0x26:  # "&"
            if not _printable(ch):
                raise MailboxNameError(
                    "Mailbox name must be printable US-ASCII in modified UTF-7 (RFC 3501 5.1.3)"
                )
            out.append(chr(ch))
            i += 1
            continue
        end = raw.find(b"-", i + 1)
        if end < 0:
            raise MailboxNameError("Unterminated modified UTF-7 shift in mailbox name")
        chunk = raw[i + 1 : end]
        if not chunk:
            out.append("&")
            i = end + 1
            continue
        if i == previous_shift_end:
            raise MailboxNameError("Superfluous shift in modified UTF-7 mailbox name")
        out.append(_decode_run(chunk))
        i = end + 1
        previous_shift_end = i
    return "".join(out)


def _decode_run(chunk: bytes) -> str:
    if not all(c in _B64_CHARS for c in chunk):
        raise MailboxNameError("Invalid modified BASE64 in mailbox name")
    bits = len(chunk) * 6
    if bits % 16 >= 6:
        raise MailboxNameError("Modified UTF-7 run does not end on a UTF-16 unit")
    padded = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise MailboxNameError("Invalid modified BASE64 in mailbox name") from None
    # base64 silently drops the leftover bits: they must be zero (canonical encoding).
    leftover = bits % 16
    if leftover and _B64_ALPHABET.index(chunk[-1]) & ((1 << leftover) - 1):
        raise MailboxNameError("Non-zero pad bits in modified UTF-7 mailbox name")
    try:
        text = data.decode("utf-16-be")
    except UnicodeDecodeError:
        raise MailboxNameError("Unpaired surrogate in modified UTF-7 mailbox name") from None
    if any(_printable(ord(c)) for c in text):
        raise MailboxNameError("Printable ASCII must not be encoded in modified UTF-7")
    return text


def normalize_inbox(name: str) -> str:
    """INBOX in any case means the primary mailbox (RFC 9051 §5.1): return it as "INBOX"."""
    return "INBOX" if name.upper() == "INBOX" else name


def decode_mailbox(raw: bytes, utf8: bool) -> str:
    """Decode a mailbox name as sent on the wire (the astring's octets).

    `utf8` is true for IMAP4rev2 sessions and after ENABLE UTF8=ACCEPT (RFC 9051 §5.1,
    RFC 6855 §3): the name is UTF-8 and "&" is an ordinary character. Otherwise the name is
    modified UTF-7 (RFC 3501 §5.1.3). Control characters are refused in either form. INBOX is
    case-insensitive and returned as "INBOX". Raises `MailboxNameError`.
    """
    if utf8:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MailboxNameError("Mailbox name is not valid UTF-8") from None
    else:
        name = decode_utf7(raw)
    if _FORBIDDEN.search(name):
        raise MailboxNameError("Control characters in mailbox name (RFC 9051 5.1)")
    return normalize_inbox(name)
