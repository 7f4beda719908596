"""FETCH of messages too large to hold (`postkeep.imap.loader.STREAM_SIZE`), over the wire: the
streamed responses are octet for octet what the in-memory renderer gives for the whole message
(`postkeep.imap.fetch.render_items` on its bytes), for every kind of section, partial fetches,
BINARY (base64, quoted-printable, NUL and literal8) and BINARY.SIZE; with COMPRESS too. The
same for smaller messages read whole, with their blob inline in the database or a file."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import zlib

import pytest

from postkeep.imap import fetch as fetchmod
from postkeep.imap import loader
from postkeep.imap.wire.commands import Fetch
from postkeep.imap.wire.parser import parse
from postkeep.mime.summary import Summary, summarize
from postkeep.store.api import Flag, MessageInfo
from postkeep.store.blobs import INLINE_MAX
from tests.harness import PASSWORD, Harness

LINE = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"


def big_message(divisor: int = 1) -> bytes:
    """About 1.3 MiB: text, a base64 attachment, quoted-printable, binary with NUL, and an
    attached message, each part well past STREAM_SIZE or small; with a `divisor`, the same
    parts that much smaller."""
    attachment = base64.encodebytes(bytes(range(256)) * (1200 // divisor)).replace(
        b"\n", b"\r\n"
    )
    qp = b"caf=C3=A9 =3D soft=\r\nbreak   \r\n" * (9000 // divisor)
    nul = (b"\x00\x01binary\r\n" * (20000 // divisor))
    inner = (b"From: Inner <in@example.test>\r\nSubject: inner\r\nX-Extra: yes\r\n\r\n"
             + LINE * (3000 // divisor))
    return (
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: big one\r\n"
        b"X-Long: " + b"x" * 500 + b"\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\npreamble\r\n'
        b"--BB\r\nContent-Type: text/plain\r\n\r\n" + LINE * (5000 // divisor) +
        b"\r\n--BB\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment +
        b"\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp +
        b"\r\n--BB\r\nContent-Type: application/x-nul\r\nContent-Transfer-Encoding: binary\r\n"
        b"\r\n" + nul +
        b"\r\n--BB\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
        b"\r\n--BB\r\nContent-Type: application/bad\r\nContent-Transfer-Encoding: x-weird\r\n"
        b"\r\nzzz\r\n--BB--\r\n"
    )


ITEMS = [
    "BODY.PEEK[]",
    "BODY.PEEK[TEXT]",
    "BODY.PEEK[HEADER] RFC822.SIZE",
    "BODY.PEEK[HEADER.FIELDS (Subject X-Long)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
    "BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME]",
    "BODY.PEEK[5.HEADER.FIELDS (Subject)] BODY.PEEK[5.TEXT] BODY.PEEK[5.HEADER]",
    "BODY.PEEK[]<1000.300000> BODY.PEEK[2]<65000.70000> BODY.PEEK[1]<999999999.10>",
    "BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[3] BINARY.SIZE[3]",
    "BINARY.PEEK[4] BINARY.SIZE[4] BINARY.PEEK[4]<1.5> BINARY.PEEK[4]<2.4>",
    "BINARY.PEEK[2]<70000.200000> BINARY.PEEK[3]<5.17> BINARY.PEEK[1] BINARY.PEEK[5]",
    "BINARY.PEEK[] BINARY.SIZE[1] UID",
    "ENVELOPE BODYSTRUCTURE BODY.PEEK[9]",
]


class Client:
    """A raw IMAP client over implicit TLS that returns responses with their literals."""

    def __init__(self, harness: Harness, user: str) -> None:
        context = harness.client_context()
        sock = socket.create_connection(("127.0.0.1", harness.imaps_port), timeout=30)
        self.sock: ssl.SSLSocket = context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.buf = b""
        self.inflate: zlib._Decompress | None = None
        self.deflate: zlib._Compress | None = None
        self.line()
        assert self.command(f'LOGIN {user} "{PASSWORD}"').endswith(b"OK")

    def send(self, data: bytes) -> None:
        if self.deflate is not None:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        assert chunk, self.buf[-300:]
        self.buf += self.inflate.decompress(chunk) if self.inflate is not None else chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self) -> bytes:
        """One response, CRLF removed, literals in place ("{n}\\r\\n" + octets)."""
        out = self.line()
        while (m := re.search(rb"~?\{(\d+)\}$", out)) is not None:
            size = int(m.group(1))
            while len(self.buf) < size:
                self._fill()
            out += b"\r\n" + self.buf[:size]
            self.buf = self.buf[size:]
            out += self.line()
        return out

    def command(self, text: str) -> bytes:
        """The tagged response's status ("OK", "NO ..."): untagged ones in `self.untagged`."""
        self.send(f"t {text}\r\n".encode())
        self.untagged: list[bytes] = []
        while not (resp := self.response()).startswith(b"t "):
            self.untagged.append(resp)
        return resp[2:].split(b" ", 1)[0] if resp[2:4] == b"OK" else resp[2:]

    def compress(self) -> None:
        assert self.command("COMPRESS DEFLATE") == b"OK"
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)


def expected(data: bytes, items: str, flags: Flag = Flag(0)) -> bytes:  # noqa: B008
    """The response the in-memory renderer gives for the whole message (UID 1, \\Recent)."""
    cmd = parse(f"x FETCH 1 ({items})".encode())
    assert isinstance(cmd, Fetch)
    info = MessageInfo(1, 1, 1, 1, len(data), 0.0, flags, (), "0" * 36)
    pieces = fetchmod.render_items(
        info, cmd.attributes, Summary(summarize(data)), data, uid=False, modseq=False, recent=True
    )
    assert len(pieces) == 1 and isinstance(pieces[0], bytes)
    return b"* 1 FETCH " + pieces[0]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "deflate"])
def test_streamed_fetch_matches_in_memory_rendering(harness: Harness, compress: bool) -> None:
    data = big_message()
    assert len(data) > 4 * loader.STREAM_SIZE
    user = harness.new_user("example.test")
    client = Client(harness, user)
    if compress:
        client.compress()
    literal = b"{%d}\r\n" % len(data)
    client.send(b"a APPEND INBOX " + literal)
    assert client.line().startswith(b"+ ")
    client.send(data + b"\r\n")
    assert client.response().startswith(b"a OK [APPENDUID ")
    assert client.command("SELECT INBOX") == b"OK"
    for items in ITEMS:
        assert client.command(f"FETCH 1 ({items})") == b"OK", items
        assert client.untagged == [expected(data, items)], items
    assert client.command("FETCH 1 (BINARY.PEEK[6])").startswith(b"NO [UNKNOWN-CTE]")
    assert client.untagged == []
    items = "RFC822 RFC822.HEADER RFC822.TEXT FLAGS"  # not PEEK: sets \Seen
    assert client.command(f"FETCH 1 ({items})") == b"OK"
    assert client.untagged == [expected(data, items, Flag.SEEN)]


@pytest.mark.parametrize(("divisor", "layout"), [(100, "inline"), (8, "file")])
def test_messages_read_whole_fetch_alike_inline_or_file(
    harness: Harness, divisor: int, layout: str
) -> None:
    """Below STREAM_SIZE a message is read whole: from its row (inline blob, no file made) or
    from its file (past INLINE_MAX), the responses are the renderer's, item for item."""
    data = big_message(divisor)
    assert (len(data) < INLINE_MAX) == (layout == "inline") and len(data) < loader.STREAM_SIZE
    user = harness.new_user("example.test")
    client = Client(harness, user)
    before = set(harness.root.glob("blobs/*/*/*"))
    client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert client.response().startswith(b"a OK [APPENDUID ")
    made = set(harness.root.glob("blobs/*/*/*")) - before
    assert len(made) == (0 if layout == "inline" else 1)
    assert client.command("SELECT INBOX") == b"OK"
    for items in ITEMS:
        assert client.command(f"FETCH 1 ({items})") == b"OK", items
        assert client.untagged == [expected(data, items)], items


def test_blob_failing_mid_literal_closes_the_connection(harness: Harness) -> None:
    """A streamed literal whose blob fails authentication after its announcement cannot be
    answered in band: the connection ends short of the literal, with one log line (a blob
    bad from the start is answered NO, as for small messages)."""
    data = big_message()
    user = harness.new_user("example.test")
    client = Client(harness, user)
    client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert client.response().startswith(b"a OK [APPENDUID ")
    blob = max(harness.root.glob("blobs/*/*/*"), key=lambda p: p.stat().st_mtime_ns)
    raw = bytearray(blob.read_bytes())
    raw[-20] ^= 1  # in the last chunk: the first pieces are sent before it is read
    blob.write_bytes(bytes(raw))
    assert client.command("SELECT INBOX") == b"OK"
    client.send(b"f FETCH 1 (BODY.PEEK[])\r\n")
    assert client.line() == b"* 1 FETCH (BODY[] {%d}" % len(data)
    received = b""
    with pytest.raises(AssertionError):  # the connection closes: recv() returns b""
        while True:
            client._fill()
            received, client.buf = received + client.buf, b""
    assert 0 < len(received) < len(data)
    assert data.replace(b"\0", b"\x80").startswith(received)  # NUL goes as 0x80 in a literal
    assert harness.log_lines(
        rf"store error ip=127\.0\.0\.1 user={re.escape(user)} command=Fetch "
        r"error=.*failed authentication.*; closing the connection"
    )
    client = Client(harness, user)
    assert client.command("SELECT INBOX") == b"OK"
    assert client.command("FETCH 1 (BINARY.PEEK[5])").startswith(b"NO [SERVERBUG]")
    assert client.untagged == []
