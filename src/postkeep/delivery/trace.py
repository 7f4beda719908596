"""Trace headers added on receipt (RFC 5321 §4.4): Return-Path and Received.

The Received "with" protocol names follow RFC 3848 and RFC 6531 §3.7.3 (ESMTP, ESMTPS, ESMTPA,
ESMTPSA, UTF8SMTP, UTF8SMTPS...). TLS details follow Postfix's comment style so operators and
tools that parse them feel at home. Client-supplied text (the HELO name) is sanitised: only
printable ASCII without parentheses or brackets reaches the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\[\]\\;]")


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int


def _clean(text: str, limit: int = 255) -> str:
    return _UNSAFE.sub("?", text)[:limit] or "unknown"


def protocol_name(esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    client_name: str | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    tls: TlsInfo | None,
    recipient: str | None,
    when: float,
) -> bytes:
    """A folded Received header line (RFC 5321 §4.4, RFC 5322 §3.6.7) ending in CRLF."""
    ip = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    name = f"{_clean(client_name)} " if client_name else ""
    parts = [f"Received: from {_clean(helo)} ({name}[{ip}])"]
    if tls is not None:
        bits = f"{tls.bits}/{tls.bits} bits"
        parts.append(f"\t(using {tls.version} with cipher {tls.cipher} ({bits}))")
    by = f"\tby {hostname} (postkeep) with {protocol} id {queue_id}"
    if recipient is not None:
        parts.append(by)
        by = f"\tfor <{recipient}>"
    date = _rfc5322_date(int(when))
    parts.append(f"{by}; {date}")
    return ("\r\n".join(parts) + "\r\n").encode()


_date_cache: tuple[int, str] = (0, "")


def _rfc5322_date(second: int) -> str:
    """RFC 5322 §3.3 date-time, cached for the current second (one per message otherwise)."""
    global _date_cache
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


def return_path_header(sender: str) -> bytes:
    """RFC 5321 §4.4: the reverse-path, `<>` for the null sender."""
    return f"Return-Path: <{sender}>\r\n".encode()
