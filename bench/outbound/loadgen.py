"""What the outbound benchmark drives and watches: the load generator (asyncio: STARTTLS,
AUTH PLAIN, pipelined MAIL/RCPT/DATA, several messages per connection, several connections;
RFC 3207, RFC 4954, RFC 2920, RFC 6409) and the sink every target relays to (Postfix's
`smtp-sink`, its dump read back and the DKIM signatures checked, RFC 6376). Imported by
`run.py`; needs dkimpy for the check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from common import LOOPBACK, TargetUnavailable, pick_port

DOMAIN = "bench.test"  # the sending domain: its keys sign
SENDER = f"user@{DOMAIN}"
SINK_DOMAIN = "sink.test"  # the recipient domain: its MX is the sink
RECIPIENT = f"someone@{SINK_DOMAIN}"
PASSWORD = "some-long-password-123"
SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclasses.dataclass(frozen=True)
class Load:
    messages: int
    size: int  # body octets
    connections: int  # parallel sessions
    per_connection: int  # messages per connection before QUIT and a new one
    pipelining: bool  # MAIL, RCPT and DATA in one write (RFC 2920) where offered


# -- the sink -------------------------------------------------------------------------------------


@dataclasses.dataclass
class SinkCheck:
    messages: int = 0
    rsa: int = 0  # messages with an rsa-sha256 signature of d=bench.test
    ed25519: int = 0
    verified: int = 0  # signatures dkimpy verified (first and last message)
    problems: list[str] = dataclasses.field(default_factory=list)


class Sink:
    """`smtp-sink` on 127.0.0.1, dumping every transaction into one file (-D)."""

    MARK = b"\nX-Client-Addr: "  # each dumped transaction starts with this field

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dump = workdir / "dump" / "all"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._tail = b"\n"
        self._count = 0

    def start(self) -> None:
        self.dump.parent.mkdir(parents=True)
        self.dump.parent.chmod(0o777)  # smtp-sink writes as nobody
        self.port = pick_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(self.workdir / "sink.log", "ab") as log:
            self.proc = subprocess.Popen(
                [SMTP_SINK, *user, "-D", str(self.dump), f"{LOOPBACK}:{self.port}", "256"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        wait_for_smtp(self.port, 20, alive=self.alive)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def reset(self) -> None:
        """Empty the dump (between runs, when no transaction is open)."""
        if self.dump.exists():
            os.truncate(self.dump, 0)
        self._offset, self._tail, self._count = 0, b"\n", 0

    def count(self) -> int:
        """Transactions dumped so far (reads only what was appended since the last call)."""
        try:
            with open(self.dump, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return 0
        self._offset += len(chunk)
        window = self._tail + chunk
        self._count += window.count(self.MARK) - self._tail.count(self.MARK)
        self._tail = window[-len(self.MARK) :]
        return self._count

    def check(self, records: dict[str, str]) -> SinkCheck:
        """Every dumped message signed? Verify the first and last ones' signatures."""
        import dkim  # dkimpy, in the test extra

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            return records.get(name.decode().rstrip(".").lower(), "").encode() or None

        data = b"\n" + self.dump.read_bytes()
        found = SinkCheck()
        messages = data.split(self.MARK)[1:]
        found.messages = len(messages)
        for i, raw in enumerate(messages):
            text = _message_text(raw)
            head = text.split(b"\r\n\r\n", 1)[0]
            if re.search(rb"^DKIM-Signature:[^:]*\ba=rsa-sha256;[^:]*\bd=bench\.test;", head,
                         re.M | re.I):  # fmt: skip
                found.rsa += 1
            if re.search(rb"^DKIM-Signature:[^:]*\ba=ed25519-sha256;", head, re.M | re.I):
                found.ed25519 += 1
            if i not in (0, len(messages) - 1):
                continue
            for n in range(len(re.findall(rb"^DKIM-Signature:", head, re.M | re.I))):
                if dkim.DKIM(text).verify(idx=n, dnsfunc=lookup):
                    found.verified += 1
                else:
                    found.problems.append(f"message {i + 1}: signature {n + 1} does not verify")
        return found


def _message_text(raw: bytes) -> bytes:
    """The message of one dumped transaction (smtp-sink's X-* fields and Received: cut off,
    LF turned back into CRLF)."""
    lines = raw.split(b"\n")
    i = 0
    while i < len(lines) and not lines[i].startswith(b"Received: "):
        i += 1
    i += 1
    while i < len(lines) and lines[i].startswith((b"\t", b" ")):
        i += 1
    body = lines[i:]
    while body and body[-1] == b"":  # smtp-sink ends a record with an empty line
        body.pop()
    return b"".join(line + b"\r\n" for line in body)


# -- the load generator ---------------------------------------------------------------------------


class LoadError(Exception):
    """A target answered something other than what a successful submission gets."""


def make_body(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"
    return (line * (size // len(line) + 1))[:size].rsplit(b"\r\n", 1)[0] + b"\r\n"


def make_message(tag: str, i: int, body: bytes) -> bytes:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    head = (
        f"From: Bench User <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
        f"Subject: outbound bench {tag} {i}\r\nDate: {date}\r\n"
        f"Message-ID: <{tag}.{i}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    return head.encode() + body


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise LoadError(f"connection closed (after {lines!r})")
        lines.append(line.decode("ascii", "replace").rstrip("\r\n"))
        if line[3:4] != b"-":
            break
    try:
        return int(lines[-1][:3]), "\n".join(lines)
    except ValueError:
        raise LoadError(f"not an SMTP reply: {lines!r}") from None


async def _expect(reader: asyncio.StreamReader, code: int, what: str) -> str:
    got, text = await _reply(reader)
    if got != code:
        raise LoadError(f"{what}: {text}")
    return text


async def _session(port: int, messages: list[bytes], ctx: ssl.SSLContext, pipeline: bool) -> None:
    """One connection: STARTTLS, AUTH PLAIN, the messages, QUIT."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        await _expect(reader, 220, "greeting")
        writer.write(b"EHLO client.bench.test\r\n")
        if "STARTTLS" not in await _expect(reader, 250, "EHLO"):
            raise LoadError("no STARTTLS offered")
        writer.write(b"STARTTLS\r\n")
        await _expect(reader, 220, "STARTTLS")
        await writer.start_tls(ctx)
        writer.write(b"EHLO client.bench.test\r\n")
        ehlo = await _expect(reader, 250, "EHLO after TLS")
        pipelining = pipeline and "PIPELINING" in ehlo.upper()
        plain = base64.b64encode(f"\0{SENDER}\0{PASSWORD}".encode())
        writer.write(b"AUTH PLAIN " + plain + b"\r\n")
        await _expect(reader, 235, "AUTH")
        commands = [
            (f"MAIL FROM:<{SENDER}>\r\n".encode(), 250, "MAIL"),
            (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250, "RCPT"),
            (b"DATA\r\n", 354, "DATA"),
        ]
        for message in messages:
            if pipelining:
                writer.write(b"".join(c for c, _, _ in commands))
                for _, code, what in commands:
                    await _expect(reader, code, what)
            else:
                for command, code, what in commands:
                    writer.write(command)
                    await _expect(reader, code, what)
            writer.write(message + b".\r\n")  # no line of ours starts with "."
            await _expect(reader, 250, "end of data")
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(LoadError, OSError):
            await _reply(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def drive(port: int, load: Load, tag: str, sink: Sink, timeout: float) -> tuple[float, float]:
    """Send `load`; returns (seconds until every message got its 250, until the sink had all)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # both use self-signed certs
    body = make_body(load.size)
    taken = 0

    async def worker() -> None:
        nonlocal taken
        while taken < load.messages:
            n = min(load.per_connection, load.messages - taken)
            batch = [make_message(tag, taken + j, body) for j in range(n)]
            taken += n
            await _session(port, batch, ctx, load.pipelining)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(load.connections))), timeout)
    sent = time.perf_counter() - t0
    deadline = t0 + timeout
    while sink.count() < load.messages:
        if time.perf_counter() > deadline:
            raise LoadError(f"the sink got {sink.count()} of {load.messages} in {timeout:.0f}s")
        await asyncio.sleep(0.02)
    return sent, time.perf_counter() - t0


# -- helpers --------------------------------------------------------------------------------------


def wait_for_smtp(port: int, timeout: float, alive: Callable[[], bool] | None = None) -> None:
    """Wait until 127.0.0.1:port greets with 220."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise TargetUnavailable(f"the server on port {port} exited during start-up")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as s:
                last = s.recv(512)
                if last.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise TargetUnavailable(f"port {port} did not greet within {timeout:.0f}s: {last!r}")
