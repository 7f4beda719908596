"""What the real servers echo and log of what a client sent: the EHLO/HELO argument is echoed
only as printable ASCII; TLS failures are logged with OpenSSL's reason."""

from __future__ import annotations

import pytest

from tests.harness import Harness


@pytest.mark.parametrize("verb", [b"EHLO", b"HELO"])
@pytest.mark.parametrize("name, echoed", [
    (b"client.example.net", b"client.example.net"),
    (b"[192.0.2.1]", b"[192.0.2.1]"),
    (b"evil\x1b[31mred\x1b[0m.example", b"evil?[31mred?[0m.example"),
    (b"a\x01b\x07c\x7fd", b"a?b?c?d"),
    ("c1\u009b\u0090.example".encode(), b"c1??.example"),  # C1 controls (CSI, DCS)
    ("caf\u00e9.example".encode(), b"caf?.example"),  # printable, but not ASCII
])
def test_hello_argument_echoed_as_printable_ascii(harness: Harness, verb: bytes, name: bytes,
                                                  echoed: bytes) -> None:
    client = harness.raw()
    reply = client.feed(verb + b" " + name + b"\r\n", 1)
    first = reply.split(b"\r\n")[0]
    assert first[:4] in (b"250 ", b"250-"), reply
    assert first[4:] == harness.hostname.encode() + b" Hello " + echoed
    assert all(0x20 <= octet < 0x7F for octet in reply.replace(b"\r\n", b"")), reply
    client.quit()
