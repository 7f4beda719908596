"""The outbound SMTP client's asyncio driver: one connection to one peer, several messages.

`connect` opens a TCP connection (or implicit TLS, RFC 8314 §3 for a smart host's port 465),
runs the core's opening (`protocol.Handshake`: greeting, EHLO/HELO, STARTTLS per RFC 3207,
AUTH) and returns a `ClientSession`, or a `SessionFailure` saying where and why it could not.
`ClientSession.send` carries one message (`protocol.Transaction`), RSET first when the one before
did not end at its end of data; `quit` ends the session (RFC 5321 §4.1.1.10).

Every wait has its RFC 5321 §4.5.3.2 timeout (`protocol.Timeouts`). Nothing that the network or
the peer does escapes as an exception: a refused or lost connection, a timeout, a TLS failure, a
421 or a reply past the framing's bounds ends in a temporary result (4.4.1, 4.4.2, 4.7.5, the
421, 4.5.0), and the connection is closed. Only the caller's own message iterator may raise
(the connection is then closed: a DATA text cut short is never ended with ".").

TLS: `tls_verify="none"` (opportunistic, RFC 7435) completes a handshake whatever the
certificate and records it unverified; `"verify"` needs a chain the context trusts for
`tls_name` and fails the session otherwise. `peer_check` sees the peer's certificates (DER,
leaf first; Python before 3.13 gives the leaf only) before anything is sent over TLS, for the
caller's DANE (RFC 7672): it returns None when it authenticated the peer, or why the session
must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from postkeep.smtp.client.framing import Reply, ReplyError, ReplyReader, local_reply
from postkeep.smtp.client.protocol import (
    Capabilities,
    Credentials,
    Envelope,
    Handshake,
    HandshakeState,
    Stage,
    StartTls,
    Timeouts,
    TransactionResult,
    TxState,
    failed_result,
    plan,
)

TlsVerify = Literal["none", "verify"]
_READ = 65536


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The session's TLS. `verified`: the context verified the chain and `tls_name`;
    `authenticated`: verified, or the caller's `peer_check` accepted the peer (DANE)."""

    version: str
    cipher: str
    verified: bool
    authenticated: bool
    peer_certificates: tuple[bytes, ...]  # DER, the leaf first


@dataclass(frozen=True, slots=True)
class SessionFailure:
    """No session: `stage` where it failed, `reply` the peer's (a 421 or 554 greeting, a
    refused STARTTLS or AUTH) or one made here (`reply.generated`). Never the message's fault:
    the caller tries another host or later."""

    stage: Stage
    reply: Reply


class _Broken(Exception):
    """The connection cannot go on; carries the (generated) reply that says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@functools.cache
def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _context(given: ssl.SSLContext | None, verify: TlsVerify) -> ssl.SSLContext:
    if verify == "verify":
        ctx = given or _verifying_context()
        if ctx.verify_mode != ssl.CERT_REQUIRED or not ctx.check_hostname:
            raise ValueError('tls_verify="verify" needs a context with CERT_REQUIRED and '
                             "check_hostname")
        return ctx
    ctx = given or _unverified_context()
    if ctx.verify_mode != ssl.CERT_NONE:
        raise ValueError('tls_verify="none" needs a context with CERT_NONE')
    return ctx


async def connect(
    host: str,
    port: int = 25,
    *,
    helo_name: str,
    local_address: str | None = None,
    timeouts: Timeouts = Timeouts(),  # noqa: B008 - frozen, shared safely
    tls_context: ssl.SSLContext | None = None,
    tls_verify: TlsVerify = "none",
    tls_name: str | None = None,
    starttls: StartTls = "opportunistic",
    implicit_tls: bool = False,
    credentials: Credentials | None = None,
    peer_check: Callable[[TlsInfo], str | None] | None = None,
    ignore_extensions: frozenset[str] = frozenset(),
) -> ClientSession | SessionFailure:
    """A session with `host` (an address, or a name to resolve) on `port`, opened up to where
    transactions may begin.

    `tls_name` (default `host`) is sent as SNI and is the name `"verify"` checks. `tls_context`
    must match `tls_verify` (CERT_NONE for "none"; CERT_REQUIRED and check_hostname for
    "verify"); None takes a default one (the system's CAs for "verify"). `credentials` log in
    with AUTH PLAIN or LOGIN, only over TLS. `ignore_extensions`: EHLO keywords to take as not
    advertised ("CHUNKING", "PIPELINING" ... of a peer known to break them). Raises only
    ValueError for contradictory arguments.
    """
    ctx = _context(tls_context, tls_verify) if implicit_tls or starttls != "never" else None
    hs = Handshake(helo_name, starttls=starttls, tls=implicit_tls, credentials=credentials,
                   ignore=ignore_extensions)
    name = tls_name or host
    stage = Stage.TLS if implicit_tls else Stage.CONNECT
    try:
        async with asyncio.timeout(timeouts.connect + (timeouts.tls_handshake if implicit_tls
                                                       else 0)):
            reader, writer = await asyncio.open_connection(
                host, port, local_addr=(local_address, 0) if local_address else None,
                ssl=ctx if implicit_tls else None,
                server_hostname=name if implicit_tls else None,
                ssl_handshake_timeout=timeouts.tls_handshake if implicit_tls else None)
    except ssl.SSLError as e:
        return SessionFailure(stage, local_reply(451, "4.7.5", f"TLS handshake failed: {e}"))
    except TimeoutError:
        return SessionFailure(stage, local_reply(451, "4.4.1", f"no answer from {host}:{port} "
                                                               "(connect timeout)"))
    except OSError as e:
        return SessionFailure(Stage.CONNECT, local_reply(451, "4.4.1", f"cannot connect to "
                                                                       f"{host}:{port}: {e}"))
    session = ClientSession(reader, writer, timeouts, tls_verify == "verify")
    failure = await session._open(hs, ctx, name, peer_check)
    if failure is not None:
        await session._close(quit_first=failure.reply.code != 421)  # no-op if broken already
        return failure
    return session


class ClientSession:
    """An open session, ready for `send`. `capabilities` as the peer advertised them (after
    STARTTLS, the second EHLO's); `tls` None for a session in clear."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeouts: Timeouts, verify: bool) -> None:
        self._reader = reader
        self._writer = writer
        self._timeouts = timeouts
        self._verify = verify
        self._replies = ReplyReader()
        self._reset_needed = False
        self._closed = False
        self.capabilities = Capabilities()
        self.tls: TlsInfo | None = None
        self.greeting: Reply | None = None
        self.peer: tuple[str, int] = writer.get_extra_info("peername")[:2]

    @property
    def usable(self) -> bool:
        return not self._closed

    async def send(self, envelope: Envelope, chunks: AsyncIterable[bytes]) -> TransactionResult:
        """Send one message whose text `chunks` yields; the outcome per recipient.

        Nothing of it is sent when it is refused before (pre-flight: `result.sent` False). When
        `result.reusable` is False the session is closed and cannot send again."""
        if self._closed:
            return failed_result(envelope, local_reply(451, "4.4.2", "the session is closed"),
                                 Stage.MAIL)
        if self._replies.buffered:  # replies nobody asked for: the next ones would be misread
            return await self._out_of_turn(envelope)
        authenticated = self.tls is not None and self.tls.authenticated
        planned = plan(envelope, self.capabilities, tls=authenticated, reset=self._reset_needed)
        if isinstance(planned, TransactionResult):
            return planned
        tx = planned
        body = aiter(chunks)
        try:
            await self._write(tx.start(), self._timeouts.command)
            while tx.state is not TxState.DONE:
                if tx.state is TxState.REPLIES:
                    out = tx.on_reply(await self._reply(tx.awaiting))
                    if out:
                        await self._write(out, self._timeouts.data_block)
                    continue
                chunk = await anext(body, None)
                out = tx.body(chunk) if chunk is not None else tx.end_body()
                if out:
                    await self._write(out, self._timeouts.data_block)
        except _Broken as e:
            tx.fail(e.reply)
        except BaseException:
            await self._close(quit_first=False)
            raise
        result = tx.result
        assert result is not None
        self._reset_needed = tx.reset_needed
        if not result.reusable:
            await self._close(quit_first=False)
        return result

    async def quit(self) -> None:
        """QUIT (its reply awaited `timeouts.command` at most) and close. Never raises."""
        await self._close(quit_first=True)

    # -- the opening -----------------------------------------------------------------------------

    async def _open(self, hs: Handshake, ctx: ssl.SSLContext | None, name: str,
                    peer_check: Callable[[TlsInfo], str | None] | None) -> SessionFailure | None:
        try:
            if hs.tls:
                self._tls_established(peer_check)
            while hs.state is not HandshakeState.READY:
                if hs.state is HandshakeState.FAILED:
                    assert hs.failure is not None
                    return SessionFailure(hs.awaiting, hs.failure)
                if hs.state is HandshakeState.START_TLS:
                    assert ctx is not None
                    await self._starttls(ctx, name)
                    self._tls_established(peer_check)
                    out = hs.tls_started()
                else:
                    reply = await self._reply(hs.awaiting)
                    if hs.awaiting is Stage.GREETING:
                        self.greeting = reply
                    out = hs.on_reply(reply)
                    self._replies.enhanced_codes = hs.capabilities.enhancedstatuscodes
                if out:
                    await self._write(out, self._timeouts.command)
        except _Broken as e:
            await self._close(quit_first=False)
            return SessionFailure(hs.awaiting, e.reply)
        self.capabilities = hs.capabilities
        return None

    async def _starttls(self, ctx: ssl.SSLContext, name: str) -> None:
        if self._replies.buffered:  # RFC 3207 §4.2 / CVE-2011-0411: nothing may precede TLS
            raise _Broken(local_reply(451, "4.5.0", "the peer sent data after its 220 to "
                                                    "STARTTLS"))
        try:
            async with asyncio.timeout(self._timeouts.tls_handshake):
                await self._writer.start_tls(ctx, server_hostname=name,
                                             ssl_handshake_timeout=self._timeouts.tls_handshake)
        except ssl.SSLError as e:
            raise _Broken(local_reply(451, "4.7.5", f"TLS handshake failed: {e}")) from e
        except TimeoutError as e:
            raise _Broken(local_reply(451, "4.7.5", "TLS handshake timed out")) from e
        except OSError as e:
            raise _Broken(local_reply(451, "4.4.2", f"connection lost in the TLS handshake: "
                                                    f"{e}")) from e

    def _tls_established(self, peer_check: Callable[[TlsInfo], str | None] | None) -> None:
        obj = self._writer.get_extra_info("ssl_object")
        assert isinstance(obj, ssl.SSLObject)
        chain_of = getattr(obj, "get_unverified_chain", None)  # Python 3.13
        leaf = obj.getpeercert(binary_form=True)
        chain = tuple(chain_of()) if chain_of is not None else (leaf,) if leaf else ()
        cipher = obj.cipher()
        info = TlsInfo(version=obj.version() or "", cipher=cipher[0] if cipher else "",
                       verified=self._verify, authenticated=self._verify,
                       peer_certificates=chain)
        if peer_check is not None:
            problem = peer_check(info)
            if problem is not None:
                raise _Broken(local_reply(451, "4.7.5", f"peer certificate refused: {problem}"))
            info = replace(info, authenticated=True)
        self.tls = info

    # -- reading and writing ---------------------------------------------------------------------

    async def _reply(self, stage: Stage) -> Reply:
        try:
            async with asyncio.timeout(self._timeouts.for_stage(stage)):
                while (reply := self._replies.next_reply()) is None:
                    data = await self._reader.read(_READ)
                    if not data:
                        raise _Broken(local_reply(451, "4.4.2", f"connection lost waiting for "
                                                                f"the {stage.value} reply"))
                    self._replies.feed(data)
        except TimeoutError as e:
            raise _Broken(local_reply(451, "4.4.2", f"timeout waiting for the {stage.value} "
                                                    "reply")) from e
        except ReplyError as e:
            raise _Broken(local_reply(451, "4.5.0", f"protocol error: {e}")) from e
        except OSError as e:
            raise _Broken(local_reply(451, "4.4.2", f"connection lost waiting for the "
                                                    f"{stage.value} reply: {e}")) from e
        return reply

    async def _write(self, data: bytes, timeout: float) -> None:
        try:
            self._writer.write(data)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as e:
            raise _Broken(local_reply(451, "4.4.2", "timeout writing to the peer")) from e
        except OSError as e:
            raise _Broken(local_reply(451, "4.4.2", f"connection lost writing: {e}")) from e

    async def _out_of_turn(self, envelope: Envelope) -> TransactionResult:
        """The peer said something between transactions: a 421 (RFC 5321 §3.8), or a reply
        too many, after which no reply could be matched to its command."""
        try:
            extra = self._replies.next_reply()
        except ReplyError:
            extra = None
        reply = extra if extra is not None and extra.code == 421 else local_reply(
            451, "4.5.0", "protocol error: the peer sent a reply nobody asked for")
        await self._close(quit_first=False)
        return failed_result(envelope, reply, Stage.MAIL)

    async def _close(self, *, quit_first: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if quit_first:
            with contextlib.suppress(_Broken):
                await self._write(b"QUIT\r\n", self._timeouts.command)
                await self._reply(Stage.QUIT)
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(self._timeouts.command):
                await self._writer.wait_closed()
