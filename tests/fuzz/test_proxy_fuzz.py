"""Hypothesis fuzzing of the PROXY protocol parser (`postkeep.net.proxy`): any octets give a
header, None (only while a header may still come) or ProxyError, never another exception;
a header is never longer than its bound nor than the octets given, and what follows it is
never read into it."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.net import proxy

FRAGMENTS = [
    b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN", b"192.0.2.1 ", b"::1 ", b"2001:db8::1 ",
    b"65535 ", b"0 ", b"25", b"\r\n", b"\r", b"\n", b" ", proxy.V2_SIGNATURE, b"\x21\x11",
    b"\x20\x00", b"\x21\x21", b"\x21\x31", b"\x00\x0c", b"\x00\x24", b"\xff\xff", b"\x00\x00",
    b"\x7f\x00\x00\x01", b"\x00" * 16,
]
octets = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=6)), max_size=20).map(
        b"".join
    ),
)


@settings(max_examples=3000, deadline=None)
@given(octets, st.binary(max_size=20))
def test_parse_never_raises_another_error(data: bytes, tail: bytes) -> None:
    try:
        header = proxy.parse(data)
    except proxy.ProxyError:
        return
    if header is None:
        assert len(data) < proxy.MAX_HEADER  # more octets could still make a header
        return
    assert 0 < header.length <= min(len(data), proxy.MAX_HEADER)
    if header.version == 1:
        assert header.length <= proxy.V1_MAX
    if header.source is not None:
        ipaddress.ip_address(header.source[0])
        assert 0 <= header.source[1] <= 65535
    assert proxy.parse(data[: header.length] + tail) == header  # what follows is not read


@settings(max_examples=500, deadline=None)
@given(octets)
def test_every_prefix_of_a_header_waits(data: bytes) -> None:
    """A header cut anywhere is None (wait for more), never an error: the listener reads one
    that comes in parts."""
    try:
        header = proxy.parse(data)
    except proxy.ProxyError:
        return
    if header is not None:
        for end in range(header.length):
            assert proxy.parse(data[:end]) is None
