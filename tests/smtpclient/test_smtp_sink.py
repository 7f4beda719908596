"""The client against Postfix's smtp-sink (Debian package postfix), a real SMTP server whose
extensions and refusals its options set: pipelining on and off, 8BITMIME and DSN absent, an
ESMTP-less server (HELO), refusals of MAIL and RCPT, 421, a server that stalls or hangs up, and
the connection failures (refused, never greeted). smtp-sink 3.7 has no CHUNKING: BDAT is
tested against postkeep's own server (test_postkeep_peer.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postkeep.smtp.client.protocol import Envelope, Recipient, Stage, Timeouts
from postkeep.smtp.client.session import ClientSession, SessionFailure, connect
from tests.harness import free_port
from tests.interop.conftest import reachable, require_tool

TEXT = b"Subject: sink\r\n\r\n.dot line\r\n..two\r\nplain\r\n.\r\nend\r\n"
SHORT = Timeouts(connect=5, greeting=1, command=5, mail=1, rcpt=5, data_init=5, data_block=5,
                 data_end=1)


@dataclass
class Record:
    """One transaction smtp-sink dumped (-D): its MAIL and RCPT arguments and the text."""

    proto: str
    mail_args: str
    rcpt_args: list[str]
    text: bytes


@dataclass
class Sink:
    port: int
    dump: Path

    def records(self) -> list[Record]:
        if not self.dump.exists():
            return []
        out = []
        for raw in re.split(rb"^(?=X-Client-Addr: )", self.dump.read_bytes(), flags=re.M):
            if not raw:
                continue
            lines = raw.split(b"\n")
            head = {}
            rcpts = []
            i = 0
            while not lines[i].startswith(b"Received: "):
                key, _, value = lines[i].decode().partition(": ")
                if key == "X-Rcpt-Args":
                    rcpts.append(value)
                head[key] = value
                i += 1
            i += 1
            while lines[i].startswith(b"\t"):
                i += 1
            assert lines[-2:] == [b"", b""], lines[-3:]  # smtp-sink ends a record with a line
            text = b"".join(line + b"\r\n" for line in lines[i:-2])
            out.append(Record(head["X-Client-Proto"], head["X-Mail-Args"], rcpts, text))
        return out


@contextlib.contextmanager
def smtp_sink(tmp_path: Path, *options: str) -> Iterator[Sink]:
    exe = require_tool("smtp-sink", "postfix", path="/usr/sbin:/usr/bin")
    dump_dir = tmp_path / "sink"
    dump_dir.mkdir()
    reachable(dump_dir).chmod(0o777)  # smtp-sink, run by root, writes as nobody
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    for _attempt in range(5):
        port = free_port()
        with (tmp_path / "sink.log").open("ab") as log:
            proc = subprocess.Popen([exe, *user, "-D", str(dump_dir / "all"), *options,
                                     f"127.0.0.1:{port}", "16"],
                                    stdin=subprocess.DEVNULL, stderr=log)
        try:
            if _listening(proc, port):
                yield Sink(port, dump_dir / "all")
                return
        finally:
            proc.terminate()
            proc.wait(10)
    pytest.fail("smtp-sink did not start")


def _listening(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Wait until smtp-sink accepts (False if it exited: its port was taken meanwhile)."""
    while proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.02)
    return False


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def pieces(text: bytes, size: int) -> list[bytes]:
    return [text[i:i + size] for i in range(0, len(text), size)]


async def session(port: int, **kw: Any) -> ClientSession:
    s = await connect("127.0.0.1", port, helo_name="out.example.net", timeouts=SHORT, **kw)
    assert isinstance(s, ClientSession), s
    return s


def env(*rcpts: str, **kw: Any) -> Envelope:
    return Envelope("s@out.test", tuple(Recipient(r) for r in rcpts or ("r@sink.test",)), **kw)


def test_pipelined_dsn_and_several_messages(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as sink:
        async def go() -> list[list[int]]:
            s = await session(sink.port)
            caps = s.capabilities
            assert caps.pipelining and caps.dsn and caps.eightbitmime and caps.enhancedstatuscodes
            assert not caps.chunking and not caps.starttls and caps.size is None and s.tls is None
            dsn = Envelope("s@out.test", (Recipient("a@sink.test", "SUCCESS,FAILURE",
                                                    "rfc822;A+b@x.test"), Recipient("b@sink.test")),
                           body="8BITMIME", ret="HDRS", envid="queue id=1")
            codes = []
            for e in (dsn, env(), env("c@sink.test", "d@sink.test")):
                result = await s.send(e, chunks(*pieces(TEXT, 3)))
                assert result.dsn and result.stage is Stage.END
                codes.append([r.code for r in result.recipients])
                assert {r.enhanced for r in result.recipients} == {"2.0.0"}
            await s.quit()
            return codes

        assert asyncio.run(go()) == [[250, 250], [250], [250, 250]]
        first, second, third = sink.records()
    assert first.mail_args == "<s@out.test> BODY=8BITMIME RET=HDRS ENVID=queue+20id+3D1"
    assert first.rcpt_args == ["<a@sink.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bb@x.test",
                               "<b@sink.test>"]
    assert second.mail_args == "<s@out.test>" and third.rcpt_args == ["<c@sink.test>",
                                                                      "<d@sink.test>"]
    assert first.text == second.text == third.text == TEXT


def test_without_pipelining(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-p") as sink:
        async def go() -> None:
            s = await session(sink.port)
            assert not s.capabilities.pipelining
            for size in (1, 4):
                result = await s.send(env("a@sink.test", "b@sink.test"),
                                      chunks(*pieces(TEXT, size)))
                assert [r.code for r in result.recipients] == [250, 250]
            await s.quit()

        asyncio.run(go())
        assert [r.text for r in sink.records()] == [TEXT, TEXT]


def test_no_8bitmime_refuses_8bit_text_before_sending(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-8") as sink:
        async def go() -> None:
            s = await session(sink.port)
            assert not s.capabilities.eightbitmime
            result = await s.send(env(body="8BITMIME"), chunks(TEXT))
            assert not result.sent and result.reusable
            assert [r.enhanced for r in result.recipients] == ["5.6.3"]
            assert result.permanent and result.reply.generated
            result = await s.send(env(body="7BIT"), chunks(TEXT))  # no BODY= without 8BITMIME
            assert result.delivered
            await s.quit()

        asyncio.run(go())
        (record,) = sink.records()
    assert record.mail_args == "<s@out.test>"


def test_no_dsn_parameters_to_a_peer_without_dsn(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-N") as sink:
        async def go() -> None:
            s = await session(sink.port)
            e = Envelope("s@out.test", (Recipient("a@sink.test", "NEVER", "rfc822;a@x"),),
                         ret="FULL", envid="x")
            result = await s.send(e, chunks(TEXT))
            assert result.delivered and not result.dsn
            await s.quit()

        asyncio.run(go())
        (record,) = sink.records()
    assert record.mail_args == "<s@out.test>" and record.rcpt_args == ["<a@sink.test>"]


def test_helo_when_ehlo_is_refused(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-e") as sink:
        async def go() -> None:
            s = await session(sink.port)
            assert not s.capabilities.esmtp and not s.capabilities.pipelining
            result = await s.send(env(size=len(TEXT)), chunks(TEXT))  # no SIZE= to HELO
            assert [r.code for r in result.recipients] == [250]
            await s.quit()

        asyncio.run(go())
        (record,) = sink.records()
    assert record.proto == "SMTP" and record.mail_args == "<s@out.test>"


@pytest.mark.parametrize(("options", "stage", "code", "temporary"), [
    (["-r", "RCPT"], Stage.RCPT, 450, True),
    (["-f", "MAIL"], Stage.MAIL, 500, False),
    (["-f", "DATA"], Stage.DATA, 500, False),
])
def test_refusals(tmp_path: Path, options: list[str], stage: Stage, code: int,
                  temporary: bool) -> None:
    with smtp_sink(tmp_path, *options) as sink:
        async def go() -> None:
            s = await session(sink.port)
            result = await s.send(env("a@sink.test", "b@sink.test"), chunks(TEXT))
            assert result.stage is stage and result.reusable and result.sent
            assert [r.code for r in result.recipients] == [code, code]
            assert all(r.temporary == temporary for r in result.recipients)
            await s.quit()

        asyncio.run(go())
        assert sink.records() == []


def test_421_closes_and_is_temporary(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-Q", "RCPT") as sink:
        async def go() -> None:
            s = await session(sink.port)
            result = await s.send(env("a@sink.test", "b@sink.test"), chunks(TEXT))
            assert [str(r.reply) for r in result.recipients] == [
                "421 4.0.0 Server closing connection"] * 2
            assert result.temporary and not result.reusable and not s.usable
            again = await s.send(env(), chunks(TEXT))
            assert not again.sent and again.temporary and again.reply.generated

        asyncio.run(go())


def test_421_greeting(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-Q", "CONNECT") as sink:
        failure = asyncio.run(connect("127.0.0.1", sink.port, helo_name="out.test"))
    assert isinstance(failure, SessionFailure) and failure.stage is Stage.GREETING
    assert failure.reply.code == 421 and not failure.reply.generated


@pytest.mark.parametrize(("options", "stage"), [
    # past SHORT.mail; without PIPELINING: smtp-sink's -W answers later commands of a group first
    (["-p", "-W", "MAIL:30"], Stage.MAIL),
    (["-W", ".:30"], Stage.END),  # past SHORT.data_end, the text sent
])
def test_a_stalling_server_times_out_temporarily(tmp_path: Path, options: list[str],
                                                 stage: Stage) -> None:
    with smtp_sink(tmp_path, *options) as sink:
        async def go() -> None:
            s = await session(sink.port)
            result = await s.send(env("a@sink.test", "b@sink.test"), chunks(TEXT))
            assert result.stage is stage and not result.reusable and not s.usable
            for r in result.recipients:
                assert r.temporary and r.reply.generated and r.enhanced == "4.4.2"
                assert r.text == f"timeout waiting for the {stage.value} reply"

        asyncio.run(go())


def test_a_server_hanging_up_after_the_text(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-q", ".") as sink:
        async def go() -> None:
            s = await session(sink.port)
            result = await s.send(env(), chunks(TEXT))
            (r,) = result.recipients
            assert r.temporary and r.reply.generated and "connection lost" in r.text
            assert result.stage is Stage.END and not result.reusable

        asyncio.run(go())


def test_connection_refused() -> None:
    port = free_port()  # nothing listens there
    failure = asyncio.run(connect("127.0.0.1", port, helo_name="out.test", timeouts=SHORT))
    assert isinstance(failure, SessionFailure) and failure.stage is Stage.CONNECT
    assert failure.reply.enhanced == "4.4.1" and failure.reply.generated


def test_a_server_that_never_greets() -> None:
    """A listening socket that accepts (the kernel completes the TCP handshake) and never
    says anything."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        failure = asyncio.run(connect("127.0.0.1", listener.getsockname()[1],
                                      helo_name="out.test", timeouts=SHORT))
    assert isinstance(failure, SessionFailure) and failure.stage is Stage.GREETING
    assert failure.reply.enhanced == "4.4.2" and "timeout" in failure.reply.text
