"""The PROXY protocol parser (`postkeep.net.proxy`) on the examples of haproxy's spec."""

from __future__ import annotations

import socket
import struct

import pytest

from postkeep.net import proxy
from postkeep.net.proxy import ProxyHeader

SIG = proxy.V2_SIGNATURE


def v2(ver_cmd: int, family: int, body: bytes) -> bytes:
    return SIG + bytes([ver_cmd, family]) + struct.pack("!H", len(body)) + body


def test_v1() -> None:
    line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert proxy.parse(line + b"GET /") == ProxyHeader(("192.168.0.1", 56324), 1, len(line))
    line6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n"
    assert proxy.parse(line6) == ProxyHeader(("2001:db8::1", 1), 1, len(line6))
    assert proxy.parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == ProxyHeader(None, 1, 35)
    longest = b"PROXY UNKNOWN " + b"f" * 91 + b"\r\n"  # 107 octets: the spec's worst case
    assert proxy.parse(longest) == ProxyHeader(None, 1, 107)
    with pytest.raises(proxy.ProxyError, match="107"):
        proxy.parse(b"PROXY UNKNOWN " + b"f" * 92 + b"\r\n")


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",  # a field missing
    b"PROXY TCP4 ::1 192.168.0.11 1 2\r\n",  # IPv6 for TCP4
    b"PROXY TCP6 192.168.0.1 ::1 1 2\r\n",
    b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 1\r\n",
    b"PROXY TCP4 192.168.0.1 192.168.0.11 01 1\r\n",  # a leading zero
    b"PROXY TCP4 192.168.0.1 192.168.0.11 1 2\n",  # LF alone
    b"PROXY UDP4 192.168.0.1 192.168.0.11 1 2\r\n",
    b"PROXY TCP4 192.168.0.1  192.168.0.11 1 2\r\n",  # two spaces
    b"proxy TCP4 192.168.0.1 192.168.0.11 1 2\r\n",
    b"EHLO x\r\n",
])
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(proxy.ProxyError):
        proxy.parse(line)


def test_v2() -> None:
    inet = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack("!HH", 7, 25)
    data = v2(0x21, 0x11, inet + b"\x04\x00\x01x")  # a NOOP TLV, skipped
    assert proxy.parse(data + b"\x16\x03") == ProxyHeader(("10.0.0.1", 7), 2, len(data))
    inet6 = (socket.inet_pton(socket.AF_INET6, "2001:db8::7") + b"\x00" * 16
             + struct.pack("!HH", 8, 25))
    assert proxy.parse(v2(0x21, 0x21, inet6)) == ProxyHeader(("2001:db8::7", 8), 2, 52)
    assert proxy.parse(v2(0x20, 0x00, b"")) == ProxyHeader(None, 2, 16)  # LOCAL
    assert proxy.parse(v2(0x20, 0x11, inet)) == ProxyHeader(None, 2, 28)  # LOCAL ignores
    assert proxy.parse(v2(0x21, 0x00, b"")) == ProxyHeader(None, 2, 16)  # UNSPEC
    assert proxy.parse(data[:27]) is None  # in parts: wait


@pytest.mark.parametrize("data", [
    v2(0x11, 0x11, b"\x00" * 12),  # version 1 in a v2 header
    v2(0x22, 0x11, b"\x00" * 12),  # command 2
    v2(0x21, 0x11, b"\x00" * 11),  # addresses cut short
    v2(0x21, 0x31, b"\x00" * 216),  # AF_UNIX
    v2(0x21, 0x12, b"\x00" * 12),  # UDP
    SIG + b"\x21\x11" + struct.pack("!H", proxy.MAX_V2_BODY + 1),  # past the bound
    SIG[:11] + b"X",
])
def test_v2_malformed(data: bytes) -> None:
    with pytest.raises(proxy.ProxyError):
        proxy.parse(data)
