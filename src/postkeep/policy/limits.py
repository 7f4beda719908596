"""Message-level limits checked after the text is received (RFC 5321 §4.5.3.1, §6.3).

The protocol core already bounds line lengths and total size; this module looks at the header
section: its size, and the number of Received headers (a count past the limit means a mail loop).
"""

from __future__ import annotations

import re

from postkeep.errors import Reply

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)

R_HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section too large")
R_LOOP = Reply(554, "5.4.6", "Too many Received headers: mail loop detected (RFC 5321 6.3)")


def header_section(data: bytes) -> bytes:
    """The header section of a message (RFC 5322 §2.1), without the empty line after it.

    Lines may end in a bare LF: BDAT BODY=BINARYMIME (RFC 3030 §3) lets such a message in, and
    the MIME parser reads it the same way, so its header ends at its first empty line too."""
    if data.startswith((b"\r\n", b"\n")):
        return b""
    ends = [i for i in (data.find(b"\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return data[: min(ends) + 1] if ends else data  # up to the LF that ends the last line


def check_headers(data: bytes, max_header_size: int, max_received: int) -> Reply | None:
    """Refuse an over-large header section or a message that has looped."""
    header = header_section(data)
    if len(header) > max_header_size:
        return R_HEADER_TOO_BIG
    if len(_RECEIVED.findall(header)) > max_received:
        return R_LOOP
    return None
