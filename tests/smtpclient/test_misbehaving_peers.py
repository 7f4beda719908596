"""The client against peers that break the protocol, over real sockets. No real server sends
these, so each peer is a few lines of asyncio here answering from a script: replies past the
framing's bounds, garbage, replies nobody asked for, data before TLS. Each ends in a temporary
result (4.5.0) and a closed connection, never an exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from postkeep.smtp.client.protocol import Envelope, Recipient, Stage, Timeouts
from postkeep.smtp.client.session import ClientSession, SessionFailure, connect

SHORT = Timeouts(connect=5, greeting=5, command=5, mail=5, rcpt=5, data_init=5, data_block=5,
                 data_end=5)
EHLO = b"250-peer.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
ENVELOPE = Envelope("s@out.test", (Recipient("a@peer.test"),))


async def text() -> AsyncIterator[bytes]:
    yield b"Subject: x\r\n\r\nbody\r\n"


async def talk(greeting: bytes, answers: dict[bytes, bytes]
               ) -> tuple[ClientSession | SessionFailure, list[bytes]]:
    """Connect to a peer that sends `greeting`, then answers each command line by its verb
    ("250 ok" when the verb is not in `answers`); returns the session and the lines it got."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        while line := await reader.readline():
            got.append(line)
            writer.write(answers.get(line.split()[0].upper(), b"250 2.0.0 ok\r\n"))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = await connect("127.0.0.1", port, helo_name="out.test", timeouts=SHORT)
    server.close()  # no further connections; the one accepted goes on
    return session, got


def failure_of(greeting: bytes, answers: dict[bytes, bytes]) -> SessionFailure:
    async def go() -> SessionFailure:
        session, _ = await talk(greeting, answers)
        assert isinstance(session, SessionFailure), session
        return session

    return asyncio.run(go())


def test_garbage_greeting() -> None:
    failure = failure_of(b"hello there\r\n", {})
    assert failure.stage is Stage.GREETING and failure.reply.enhanced == "4.5.0"
    assert failure.reply.transient and "not a reply line" in failure.reply.text


def test_overlong_reply_line() -> None:
    failure = failure_of(b"220 " + b"x" * 5000 + b"\r\n", {})
    assert failure.stage is Stage.GREETING and "longer than 2048 octets" in failure.reply.text


def test_too_many_reply_lines() -> None:
    failure = failure_of(b"220 hi\r\n", {b"EHLO": b"250-x\r\n" * 500 + b"250 x\r\n"})
    assert failure.stage is Stage.EHLO and "longer than 128 lines" in failure.reply.text


def test_data_after_the_220_to_starttls() -> None:
    answers = {b"EHLO": b"250-peer.test\r\n250 STARTTLS\r\n",
               b"STARTTLS": b"220 go ahead\r\n250 injected\r\n"}
    failure = failure_of(b"220 hi\r\n", answers)
    assert failure.stage is Stage.TLS and failure.reply.enhanced == "4.5.0"


def test_a_reply_nobody_asked_for_stops_the_session() -> None:
    async def go() -> None:
        session, got = await talk(b"220 hi\r\n", {b"EHLO": EHLO + b"250 2.0.0 surprise\r\n"})
        assert isinstance(session, ClientSession), session
        result = await session.send(ENVELOPE, text())
        assert not result.sent and result.temporary and not session.usable
        assert "nobody asked for" in result.reply.text
        assert not any(line.startswith(b"MAIL") for line in got)

    asyncio.run(go())


def test_an_unsolicited_421_is_the_result() -> None:
    async def go() -> None:
        session, _ = await talk(b"220 hi\r\n", {b"EHLO": EHLO + b"421 4.3.2 going down\r\n"})
        assert isinstance(session, ClientSession)
        result = await session.send(ENVELOPE, text())
        assert str(result.reply) == "421 4.3.2 going down" and not result.reply.generated
        assert result.temporary and not result.sent

    asyncio.run(go())


def test_a_reply_whose_code_changes_midway() -> None:
    async def go() -> None:
        session, _ = await talk(b"220 hi\r\n", {b"EHLO": EHLO,
                                                b"RCPT": b"250-2.1.5 ok\r\n550 5.1.1 no\r\n"})
        assert isinstance(session, ClientSession)
        result = await session.send(ENVELOPE, text())
        assert result.stage is Stage.RCPT and not result.reusable and not session.usable
        (r,) = result.recipients
        assert r.temporary and r.enhanced == "4.5.0" and "code changed" in r.text

    asyncio.run(go())
