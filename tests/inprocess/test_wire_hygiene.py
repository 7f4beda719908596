"""What the real servers echo and log of what a client sent: the EHLO/HELO argument is echoed
only as printable ASCII; TLS failures are logged with OpenSSL's reason (after STARTTLS; a failed
implicit-TLS handshake is not logged at all yet, an expected failure here)."""

from __future__ import annotations

import socket
import ssl
import time
import warnings

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


# -- TLS failures in the log ----------------------------------------------------------------------


def tls10_only() -> ssl.SSLContext:
    """A client that offers TLS 1.0 and nothing newer (the servers require 1.2 or 1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else this OpenSSL refuses to offer TLS 1.0 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated: what is tested here
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    return ctx


def wait_log(harness: Harness, pattern: str, before: list[str]) -> list[str]:
    """The log lines matching `pattern` after the `before` ones, once there is one."""
    deadline = time.monotonic() + 5
    while True:
        lines = harness.log_lines(pattern)[len(before):]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def client_hello_refused(sock: socket.socket) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls10_only().wrap_socket(sock, server_hostname="localhost")
    sock.close()


@pytest.mark.parametrize("role", ["mx", "submission"])
def test_smtp_starttls_plaintext_logged_with_reason(harness: Harness, role: str) -> None:
    client = harness.raw(role)
    client.feed(b"EHLO client.example.net\r\n", 1)
    assert client.feed(b"STARTTLS\r\n", 1).startswith(b"220 ")
    client.send(b"MAIL FROM:<a@example.net>\r\n")  # a client that never began the handshake
    assert client.read_to_eof() == b""
    [line] = wait_log(harness, rf"disconnect ip=127\.0\.0\.1 port={client.port} ", [])
    assert line.endswith(' reason="network error: SSLError reason=WRONG_VERSION_NUMBER '
                         'library=SSL"'), line


def test_smtp_starttls_old_protocol_logged_with_reason(harness: Harness) -> None:
    client = harness.raw("mx")
    client.feed(b"EHLO client.example.net\r\n", 1)
    assert client.feed(b"STARTTLS\r\n", 1).startswith(b"220 ")
    client_hello_refused(client.sock)  # type: ignore[arg-type]
    [line] = wait_log(harness, rf"disconnect ip=127\.0\.0\.1 port={client.port} ", [])
    assert line.endswith(' reason="network error: SSLError reason=UNSUPPORTED_PROTOCOL '
                         'library=SSL"'), line


IMAP_TLS_FAILURE = r"postkeep\.imap: disconnect ip=127\.0\.0\.1 tls=no .*reason=\"network error"


def imap_starttls(harness: Harness) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", harness.imap_port), timeout=5)
    assert sock.recv(4096).startswith(b"* OK ")
    sock.sendall(b"a STARTTLS\r\n")
    assert sock.recv(4096) == b"a OK Begin TLS negotiation now\r\n"
    return sock


def test_imap_starttls_plaintext_logged_with_reason(harness: Harness) -> None:
    before = harness.log_lines(IMAP_TLS_FAILURE)
    sock = imap_starttls(harness)
    sock.sendall(b"b LOGIN alice secret\r\n")
    assert sock.recv(4096) == b""
    sock.close()
    [line] = wait_log(harness, IMAP_TLS_FAILURE, before)
    assert line.endswith(' reason="network error: SSLError reason=WRONG_VERSION_NUMBER '
                         'library=SSL"'), line


def test_imap_starttls_old_protocol_logged_with_reason(harness: Harness) -> None:
    before = harness.log_lines(IMAP_TLS_FAILURE)
    client_hello_refused(imap_starttls(harness))
    [line] = wait_log(harness, IMAP_TLS_FAILURE, before)
    assert line.endswith(' reason="network error: SSLError reason=UNSUPPORTED_PROTOCOL '
                         'library=SSL"'), line


def test_implicit_tls_handshake_failure_logged(harness: Harness) -> None:
    before = harness.log_lines("UNSUPPORTED_PROTOCOL")
    client_hello_refused(socket.create_connection(("127.0.0.1", harness.submissions_port)))
    assert wait_log(harness, "UNSUPPORTED_PROTOCOL", before)
