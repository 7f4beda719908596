"""The client against postkeep's own MX and submission servers (the in-process harness) over
real sockets and real TLS: STARTTLS verified against the harness's certificate, BDAT and DATA
(dot-stuffing over chunk boundaries, pipelined or not), mixed recipients, several messages on
one connection, AUTH on submission, and the TLS failures that end a session."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest

from postkeep.smtp.client.protocol import Credentials, Envelope, Recipient, Stage
from postkeep.smtp.client.session import ClientSession, SessionFailure, TlsInfo, connect
from tests.conftest import HarnessFactory
from tests.harness import PASSWORD, Harness, strip_trace

T = TypeVar("T")
DOMAIN = "example.test"
TEXT = (b"From: a@remote.test\r\nSubject: client test\r\n\r\n.leading dot\r\nline\r\n..two\r\n"
        b".\r\n\r\n.\r\nlast\r\n")


@pytest.fixture(scope="module")
def h(harness_factory: HarnessFactory) -> Harness:
    harness = harness_factory()
    harness.add_domain(DOMAIN)
    return harness


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def split_everywhere(text: bytes, size: int) -> list[bytes]:
    return [text[i:i + size] for i in range(0, len(text), size)]


async def open_mx(h: Harness, **kw: Any) -> ClientSession:
    kw.setdefault("tls_context", h.client_context())
    kw.setdefault("tls_verify", "verify")
    kw.setdefault("tls_name", "localhost")
    session = await connect("127.0.0.1", h.smtp_port, helo_name="out.example.net", **kw)
    assert isinstance(session, ClientSession), session
    return session


def der(h: Harness) -> bytes:
    return ssl.PEM_cert_to_DER_cert(h.cert_file.read_text())


def test_starttls_verified_and_bdat(h: Harness) -> None:
    user = h.new_user(DOMAIN)

    async def go() -> None:
        s = await open_mx(h, starttls="required")
        assert s.tls is not None and s.tls.verified and s.tls.authenticated
        assert s.tls.version in ("TLSv1.2", "TLSv1.3") and s.tls.cipher
        assert s.tls.peer_certificates[0] == der(h)
        caps = s.capabilities
        assert caps.chunking and caps.pipelining and caps.smtputf8 and caps.dsn
        assert caps.enhancedstatuscodes and caps.size and not caps.starttls
        result = await s.send(Envelope("a@remote.test", (Recipient(user),), size=len(TEXT)),
                              chunks(*split_everywhere(TEXT, 7)))
        assert [r.code for r in result.recipients] == [250], result
        assert result.stage is Stage.END and result.recipients[0].enhanced == "2.0.0"
        await s.quit()
        assert not s.usable

    run(go())
    (stored,) = h.messages(user)
    assert strip_trace(stored) == TEXT
    assert b"with ESMTPS" in stored


@pytest.mark.parametrize("ignore", [{"CHUNKING"}, {"CHUNKING", "PIPELINING"}, {"PIPELINING"}])
def test_data_and_bdat_with_and_without_pipelining(h: Harness, ignore: set[str]) -> None:
    user = h.new_user(DOMAIN)
    no_final_crlf = TEXT + b"tail without CRLF"

    async def go() -> list[int]:
        s = await open_mx(h, ignore_extensions=frozenset(ignore))
        assert s.capabilities.chunking == ("CHUNKING" not in ignore)
        assert s.capabilities.pipelining == ("PIPELINING" not in ignore)
        codes = []
        for size in (1, 2, 3, 5, 64):  # every "." and CRLF lands on a chunk boundary somewhere
            result = await s.send(Envelope("a@remote.test", (Recipient(user),)),
                                  chunks(*split_everywhere(TEXT, size)))
            codes.append(result.recipients[0].code)
        result = await s.send(Envelope("a@remote.test", (Recipient(user),)),
                              chunks(no_final_crlf))
        codes.append(result.recipients[0].code)
        await s.quit()
        return codes

    assert run(go()) == [250] * 6
    stored = [strip_trace(m) for m in h.messages(user)]
    assert stored[:5] == [TEXT] * 5
    # DATA must end the text with CRLF before "."; BDAT sends the octets as they are
    assert stored[5] == no_final_crlf + (b"\r\n" if "CHUNKING" in ignore else b"")


def test_mixed_recipients_and_several_messages_per_connection(h: Harness) -> None:
    good1, good2 = h.new_user(DOMAIN), h.new_user(DOMAIN)
    unknown = f"nobody-here@{DOMAIN}"

    async def go() -> None:
        s = await open_mx(h)
        env = Envelope("a@remote.test", (Recipient(good1), Recipient(unknown), Recipient(good2)))
        result = await s.send(env, chunks(TEXT))
        assert [r.code for r in result.recipients] == [250, 550, 250]
        assert result.recipients[1].enhanced.startswith("5.1.")
        assert [r.recipient.address for r in result.delivered] == [good1, good2]
        # nobody accepted: the transaction stays open, RSET goes first in the next group
        result = await s.send(Envelope("a@remote.test", (Recipient(unknown),)), chunks(TEXT))
        assert result.permanent and result.stage is Stage.RCPT and result.reusable
        result = await s.send(Envelope("b@remote.test", (Recipient(good1),)), chunks(TEXT))
        assert result.delivered and result.reusable
        await s.quit()

    run(go())
    assert len(h.messages(good1)) == 2 and len(h.messages(good2)) == 1
    assert h.messages(good1)[1].startswith(b"Return-Path: <b@remote.test>")


def test_smtputf8_delivered_and_preflight_refusals_send_nothing(h: Harness) -> None:
    user = h.new_user(DOMAIN)

    async def go() -> None:
        s = await open_mx(h)
        result = await s.send(Envelope("jörg@exämple.remote", (Recipient(user),),
                                       body="8BITMIME"),
                              chunks("Subject: grüße\r\n\r\nGröße\r\n".encode()))
        assert result.delivered, result
        assert s.capabilities.size is not None
        too_big = Envelope("a@remote.test", (Recipient(user),), size=s.capabilities.size + 1)
        result = await s.send(too_big, chunks(TEXT))
        assert not result.sent and result.recipients[0].enhanced == "5.3.4"
        # REQUIRETLS (RFC 8689): the MX offers it over TLS, and the session's TLS is verified
        assert s.capabilities.requiretls and s.tls is not None and s.tls.authenticated
        result = await s.send(Envelope("a@remote.test", (Recipient(user),), requiretls=True),
                              chunks(TEXT))
        assert result.delivered, result
        await s.quit()
        # over TLS that is not authenticated, REQUIRETLS is refused before anything is sent
        s = await connect("127.0.0.1", h.smtp_port, helo_name="out.example.net")
        assert isinstance(s, ClientSession) and s.tls is not None and not s.tls.authenticated
        result = await s.send(Envelope("a@remote.test", (Recipient(user),), requiretls=True),
                              chunks(TEXT))
        assert not result.sent and result.recipients[0].enhanced == "5.7.30"
        await s.quit()

    run(go())
    stored, required = h.messages(user)
    assert "Größe".encode() in stored and b"UTF8SMTPS" in stored
    assert required.endswith(TEXT)


def test_verification_failures_end_the_session(h: Harness) -> None:
    async def go(**kw: Any) -> SessionFailure:
        failure = await connect("127.0.0.1", h.smtp_port, helo_name="out.example.net",
                                tls_verify="verify", starttls="required", **kw)
        assert isinstance(failure, SessionFailure), failure
        return failure

    wrong_name = run(go(tls_context=h.client_context(), tls_name="mx.other.test"))
    system_cas = run(go(tls_name="localhost"))  # a self-signed certificate no CA vouches for
    for failure in (wrong_name, system_cas):
        assert failure.stage is Stage.TLS and failure.reply.enhanced == "4.7.5"
        assert failure.reply.transient and failure.reply.generated
        assert "certificate verify failed" in failure.reply.text


def test_opportunistic_unverified_and_the_peer_check(h: Harness) -> None:
    seen: list[TlsInfo] = []

    def refuse(info: TlsInfo) -> str | None:
        seen.append(info)
        return "no TLSA record matches"

    async def go() -> None:
        s = await open_mx(h, tls_context=None, tls_verify="none")
        assert s.tls is not None and not s.tls.verified and not s.tls.authenticated
        assert s.tls.peer_certificates[0] == der(h)
        await s.quit()
        s = await open_mx(h, tls_context=None, tls_verify="none", peer_check=lambda info: None)
        assert s.tls is not None and s.tls.authenticated and not s.tls.verified
        await s.quit()
        failure = await connect("127.0.0.1", h.smtp_port, helo_name="out.example.net",
                                peer_check=refuse)
        assert isinstance(failure, SessionFailure) and failure.stage is Stage.TLS
        assert failure.reply.enhanced == "4.7.5" and "no TLSA record" in failure.reply.text

    run(go())
    assert seen and seen[0].peer_certificates[0] == der(h)


def test_contradictory_tls_arguments_are_refused(h: Harness) -> None:
    with pytest.raises(ValueError):
        run(connect("127.0.0.1", h.smtp_port, helo_name="out.test", tls_verify="none",
                    tls_context=h.client_context()))


def test_auth_on_submission_over_starttls(h: Harness) -> None:
    user, other = h.new_user(DOMAIN), h.new_user(DOMAIN)

    async def go(password: str, starttls: Any = "required") -> ClientSession | SessionFailure:
        return await connect("127.0.0.1", h.submission_port, helo_name="out.example.net",
                             tls_context=h.client_context(), tls_verify="verify",
                             tls_name="localhost", starttls=starttls,
                             credentials=Credentials(user, password))

    async def deliver() -> None:
        s = await go(PASSWORD)
        assert isinstance(s, ClientSession), s
        text = f"From: {user}\r\nSubject: submitted\r\n\r\nhi\r\n".encode()
        result = await s.send(Envelope(user, (Recipient(other),)), chunks(text))
        assert result.delivered, result
        await s.quit()

    run(deliver())
    assert len(h.messages(other)) == 1
    wrong = run(go("not the password"))
    assert isinstance(wrong, SessionFailure) and wrong.stage is Stage.AUTH
    assert wrong.reply.code == 535 and not wrong.reply.generated
    in_clear = run(go(PASSWORD, starttls="never"))
    assert isinstance(in_clear, SessionFailure) and in_clear.stage is Stage.AUTH
    assert in_clear.reply.generated and in_clear.reply.enhanced == "4.7.10"


def test_implicit_tls_with_auth(h: Harness) -> None:
    user = h.new_user(DOMAIN)

    async def go() -> None:
        s = await connect("127.0.0.1", h.submissions_port, helo_name="out.example.net",
                          implicit_tls=True, tls_context=h.client_context(), tls_verify="verify",
                          tls_name="localhost", credentials=Credentials(user, PASSWORD))
        assert isinstance(s, ClientSession), s
        assert s.tls is not None and s.tls.verified and s.greeting is not None
        text = f"From: {user}\r\nSubject: implicit\r\n\r\nhi\r\n".encode()
        result = await s.send(Envelope(user, (Recipient(user),)), chunks(text))
        assert result.delivered, result
        await s.quit()

    run(go())
    (stored,) = h.messages(user)
    assert b"Subject: implicit" in stored
