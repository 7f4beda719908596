"""The PROXY protocol header (haproxy's "The PROXY protocol", versions 1 and 2), sans-IO.

A load balancer in front of a listener opens each connection with one header that names the
client it stands for; the listener (`postkeep.net.listener`) reads it, from a trusted proxy
only, before anything else (before the TLS ClientHello on implicit-TLS listeners).

`parse(data)` reads the header at the start of `data`: a `ProxyHeader` (with `length`, the
octets it takes), None while `data` may still grow into one, or `ProxyError`. Bounded: a v1
header is at most 107 octets with its CRLF (spec §2.1), a v2 header at most 16 + `MAX_V2_BODY`;
past that, or at any octet no header can have, the answer is `ProxyError`, so a reader never
needs more than `MAX_HEADER` octets.

- v1 (§2.1): `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`, or `PROXY UNKNOWN...\\r\\n`
  (the proxy's own connection: no client address);
- v2 (§2.2): the 12-octet signature, version 2 and command LOCAL (health checks: no client
  address) or PROXY, the family (AF_INET, AF_INET6 over STREAM; UNSPEC: no client address;
  others refused) and the length of the addresses and TLVs, which are skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # octets of a v1 header, CRLF included (§2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family, length
MAX_V2_BODY = 2048  # octets of addresses and TLVs accepted (TLVs are skipped)
MAX_HEADER = V2_FIXED + MAX_V2_BODY
_V2_ADDRESSES = {0x11: (4, 12), 0x21: (6, 36)}  # fam/proto byte: (IP version, octets)
_PORTS = struct.Struct("!HH")


class ProxyError(ValueError):
    """Octets that are not a PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A header: `source`, the client's (ip, port), None for a LOCAL or UNKNOWN header (use
    the proxy's address); `version` 1 or 2; `length`, the octets it takes."""

    source: tuple[str, int] | None
    version: int
    length: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header `data` starts with, None if more octets may make one (see the module)."""
    if data[:1] == b"P":
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyError("not a PROXY header")
        return _v1(data)
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyError("not a PROXY header")
        return _v2(data)
    if data:
        raise ProxyError("not a PROXY header")
    return None


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyError("v1 header without CRLF within 107 octets")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyError("v1 header not ASCII") from None
    words = line.split(" ")
    length = end + 2
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(None, 1, length)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyError("v1 header is not PROXY TCP4|TCP6|UNKNOWN with 4 fields")
    version = 4 if words[1] == "TCP4" else 6
    source = _address(words[2], version)
    _address(words[3], version)
    sport = _port(words[4])
    _port(words[5])
    return ProxyHeader((source, sport), 1, length)


def _address(text: str, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"v1 address {text[:45]!r} is not an IP address") from None
    if addr.version != version or "%" in text:
        raise ProxyError(f"v1 address {text!r} is not IPv{version}")
    return str(addr)


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or (
        len(text) > 1 and text[0] == "0"
    ):
        raise ProxyError(f"v1 port {text[:8]!r} is not a port number")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"v1 port {port} is not a port number")
    return port


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, family = data[12], data[13]
    (body,) = struct.unpack_from("!H", data, 14)
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"v2 header of version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyError(f"v2 header with command {command}")
    if body > MAX_V2_BODY:
        raise ProxyError(f"v2 header of {body} octets of addresses (at most {MAX_V2_BODY})")
    length = V2_FIXED + body
    if len(data) < length:
        return None
    if command == 0 or family == 0x00:  # LOCAL, or UNSPEC: the proxy's own connection
        return ProxyHeader(None, 2, length)
    known = _V2_ADDRESSES.get(family)
    if known is None:
        raise ProxyError(f"v2 header of family/protocol 0x{family:02x} (TCP over IPv4 or "
                         "IPv6 only)")
    version, size = known
    if body < size:
        raise ProxyError(f"v2 header with {body} octets for {size} of addresses")
    width = 4 if version == 4 else 16
    raw = data[V2_FIXED:V2_FIXED + width]
    source = str(ipaddress.IPv4Address(raw) if version == 4 else ipaddress.IPv6Address(raw))
    sport, _dport = _PORTS.unpack_from(data, V2_FIXED + 2 * width)
    return ProxyHeader((source, sport), 2, length)
