"""One SMTP connection as an `asyncio.Protocol`: bytes in as they come, events out, replies
batched, the deadlines; `smtp.server.SmtpServer` answers the events.

The event loop calls `data_received` with whatever the socket had (up to the loop's read
buffer, 256 KiB on uvloop); the connection feeds it to its `SmtpSession` and answers every
event it yields, in order. An answer is a coroutine of the server's (`SmtpServer._handle`),
run at once and to its end when it need not wait (HELO, MAIL, a cached RCPT, a piece of text
kept in memory: nearly every event), so a command costs no task, future or stream wake-up.
One that must wait (a message made durable, AUTH, STARTTLS, an error delay, a spool write)
goes on in a task, and the connection stops reading until it is done: while a message is
made durable nothing more is read from its client, so a pipelining client cannot make the
server buffer ahead. Replies pile up in `out` and go out in one write when the connection is
ready for more input (RFC 2920 §3.1: the server flushes before it waits on the client).

Deadlines (RFC 5321 §4.5.3.2; see `smtp.server` for the rules) are kept as before: from when
the replies are written until the command line or the text is in, the connection is in the
server's `DeadlineWatch`, which calls `expired` past the deadline (421 4.4.2 and close) or past
the slow mark (it asks for a slow slot, or closes). While the client does not read its
replies (the transport's buffer is past its high-water mark) the connection does not read
either, and that wait is part of the command's deadline too.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from typing import TYPE_CHECKING

from postkeep import log
from postkeep.auth.exchange import AuthExchange
from postkeep.delivery.origin import ClientChecks
from postkeep.delivery.trace import TlsInfo
from postkeep.eager import Ran, eagerly
from postkeep.errors import Reply
from postkeep.net.listener import Listeners, Peer, SessionProtocol
from postkeep.net.tls import network_error
from postkeep.smtp.intake import Intake
from postkeep.smtp.wire.parser import Rcpt
from postkeep.smtp.wire.session import (
    ChunkReceived,
    Event,
    MessageReceived,
    Mode,
    SmtpSession,
    TextReceived,
)
from postkeep.store.api import Account

if TYPE_CHECKING:
    from postkeep.smtp.server import SmtpServer

logger = log.get("smtp")

R_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
R_TOO_SLOW = Reply(421, "4.4.2", "Too many slow connections, closing connection")
R_SHUTDOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
# the handlers that make a message durable, which a stop lets finish (`goodbye`)
_FINISH_ON_STOP = (MessageReceived, ChunkReceived)
_NETWORK_ERRORS = (ConnectionError, ssl.SSLError, OSError)
# replies answered from one read before they are written and the transport's buffer is looked
# at: past its high-water mark, answering waits for the client to read (`_hold_output`)
MAX_QUEUED_REPLIES = 64


class SmtpConnection(SessionProtocol):
    """See the module docstring. The attributes from `session` to `slow` are the driver's
    state that `SmtpServer`'s handlers read and change."""

    __slots__ = (
        "_began", "_ended", "_eof", "_gone", "_held", "_loop", "_output_held", "_reading_paused",
        "_slow_asked", "_started", "_stopping", "_task", "_task_kind", "_waiting", "_write_paused",
        "account", "auth", "auth_failures", "auth_mechanism",
        "checks", "closing", "deadline", "intake", "last_read", "mailed", "messages", "out",
        "owned", "rcpt_accounts", "record", "refusal", "server", "session", "slow", "slow_at",
        "tarpitted", "tls", "tls_failed", "waited",
    )

    def __init__(self, server: SmtpServer, listeners: Listeners, peer: Peer | None) -> None:
        super().__init__(listeners, peer)
        self.server = server
        self._loop = asyncio.get_running_loop()
        self.session: SmtpSession  # made by `begin`, once the capabilities are known
        self.out: list[bytes] = []  # replies not written yet
        self.tls: TlsInfo | None = None
        self.rcpt_accounts: dict[Rcpt, tuple[int, ...]] = {}
        self.messages = 0
        self.mailed = False  # a MAIL command came (not a pre-auth close, `postkeep.bans`)
        self.tls_failed = False  # its STARTTLS handshake failed (a strike of its own)
        self.closing = False  # a handler decided the session ends after its replies
        self.account: Account | None = None  # after a successful AUTH
        self.owned: frozenset[str] = frozenset()  # addresses the account may send as
        self.auth_mechanism = ""  # the SASL mechanism of the successful AUTH
        self.auth: AuthExchange | None = None  # an AUTH exchange in progress
        self.auth_failures = 0
        self.tarpitted = False  # its commands were slowed by the firewall (logged once)
        self.checks: ClientChecks | None = None  # MX: lookups about the client (`begin`)
        self.intake: Intake | None = None  # the text of the message being received
        self.refusal: tuple[Reply, str] | None = None  # an intake's refusal, until replied
        # the deadline (loop time) of the command line, message text or BDAT chunk being
        # received, and the session mode it is for; None once it is complete
        self.deadline: float | None = None
        self.record = Mode.COMMAND
        self.last_read = 0.0  # loop time of the last octets of message text
        self.waited = 0.0  # seconds waited for commands since connect or the last message
        self.slow = False  # holds one of the slow slots
        self._slow_asked = False  # a slow slot asked for, the answer not in yet
        self.slow_at: float | None = None  # when the current wait makes it slow
        self._began = 0.0  # when the current wait on the client began
        self._waiting = False  # in the watch: ready for input, replies written
        self._task: asyncio.Task[None] | None = None  # a handler that had to wait
        # the server stops while that handler makes a message durable: it finishes first, its
        # reply goes out, then the 421 (cancelling it would 421 a message the store may still
        # commit, which the client would send again)
        self._stopping = False
        self._task_kind: type[Event] | None = None  # the event that handler answers
        self._reading_paused = False
        self._write_paused = False  # the client does not read its replies fast enough
        self._output_held = False  # answering stopped until the client reads its replies
        self._eof = False
        self._held: list[bytes] = []  # read while not waiting for input (not fed yet)
        self._gone: str | None = None  # lost while a handler was waiting: why
        self._ended = False
        self._started = 0.0

    @property
    def ip(self) -> str:
        assert self.peer is not None
        return self.peer.ip

    @property
    def port(self) -> int:
        assert self.peer is not None
        return self.peer.port

    # -- the session's life ---------------------------------------------------------------

    def begin(self) -> None:
        assert self.peer is not None and self.transport is not None
        server, implicit = self.server, self.peer.implicit_tls
        self._started = time.monotonic()
        self.tls = tls_info(self.transport) if implicit else None
        self.session = SmtpSession(
            server.cfg.server.hostname, server.limits, server.capabilities(implicit, self.tls),
            tls_active=implicit,
        )
        if server.checks is not None:
            self.checks = server.checks.start(self.ip)
        server._session_started(self)
        logger.debug("connect ip=%s port=%d role=%s", self.ip, self.port, server.role)
        self.out.append(server.greeting)
        self._pump()

    def goodbye(self) -> None:
        """The server stops: 421, whatever the session was doing. A handler waiting is
        cancelled first, except one making a message durable (end of DATA, a BDAT chunk): that
        one finishes, and its reply goes out before the 421."""
        if self._ended:
            return
        if self._task is not None:
            if self._task_kind in _FINISH_ON_STOP:
                self._stopping = True  # `_resumed` says goodbye once it is done
            else:
                self._task.cancel()  # `_resumed` says goodbye once it is
            return
        self.out.append(self.session.render(R_SHUTDOWN))
        self._end("server shutdown")

    def ended(self, exc: BaseException | None) -> None:
        reason = network_error(exc) if exc is not None else "client closed"
        if self._task is not None:  # e.g. a message being made durable: that goes on
            self._gone = reason
            return
        self._end(reason)

    def _end(self, reason: str) -> None:
        """The session is over: log it, give back what it holds, write what is left, close."""
        if self._ended:
            return
        self._ended = True
        self._stop_waiting()
        if self.checks is not None:
            self.checks.cancel()
        if self.intake is not None:
            self.intake.discard()
            self.intake = None
        session = self.session
        logger.info(
            "disconnect ip=%s port=%d role=%s tls=%s user=%s helo=%s messages=%d errors=%d "
            "seconds=%.3f reason=%s",
            self.ip,
            self.port,
            self.server.role,
            self.tls.version if self.tls else "no",
            log.quote(self.account.address if self.account else "-"),
            log.quote(session.helo.name if session.helo else "-"),
            self.messages,
            session.errors,
            time.monotonic() - self._started,
            log.quote(reason),
        )
        self.server._session_ended(self, reason)
        self.not_slow()
        self.flush()
        self.close()

    def close_with(self, reply: Reply, reason: str, summary: str, cmd: str = "-",
                   limit: str | None = None) -> None:
        """Refuse to go on: `reply` (logged as a reject of `cmd` for `reason`, and the
        `limit` that refused it), then close."""
        self.server._log_reject(self, cmd, reply, reason, limit)
        self.out.append(self.session.render(reply))
        self._end(summary)

    # -- output ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the replies so far, in one write."""
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            self.out.clear()
            assert self.transport is not None
            self.transport.write(data)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._output_held:
            self._output_held = False
            self.server.watch.discard(self)
            self._pump()
        elif self._waiting:
            self._resume_reading()

    def _hold_output(self) -> None:
        """The client pipelines commands but does not read the replies: stop answering (the
        rest stays in the session's buffer, nothing more is read) until it reads them, within
        the command's deadline. Without this one read of 256 KiB of `EHLO x` made 5 MB of
        replies."""
        self._output_held = True
        self._pause_reading()
        if self.deadline is None:
            self.deadline = self._loop.time() + self.server.smtp.command_timeout
        self.server.watch.add(self)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- input ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._waiting:  # a handler is waiting (or the session ended): later
            if not self._ended:
                self._held.append(data)
            return
        self._received(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiting:
            self._end("client closed")
        # keep the transport to write the replies of what came before (over TLS a half-close
        # is not possible: asyncio warns at True and closes anyway)
        return self.transport is None or self.transport.get_extra_info("ssl_object") is None

    def _received(self, data: bytes) -> None:
        self._stop_waiting()
        if self.record in (Mode.DATA, Mode.BDAT) and self.deadline is not None:
            # the text's allowance grows with what came, never past data_timeout ahead
            now = self._loop.time()
            smtp = self.server.smtp
            self.last_read = now
            self.deadline = min(now + smtp.data_timeout,
                                self.deadline + len(data) / smtp.min_data_rate)
        self.session.feed(data)
        self._pump()

    def _pump(self) -> None:
        """Answer every event the buffered input yields, until one has to wait or more input
        is needed."""
        session, handle = self.session, self.server._handle
        while self._task is None and not self._ended:
            if len(self.out) >= MAX_QUEUED_REPLIES:
                self.flush()
                if self._write_paused:
                    self._hold_output()
                    return
            event = session.next_event()
            if event is None:
                self._drop_stale_intake()  # a message refused while its text was read
                self._await_input()
                return
            began: float | None = None
            if type(event) is TextReceived:  # a piece of text: the rest is to come
                began = self._loop.time()
            else:
                self.deadline = None  # the command, the message or the chunk is complete
            try:
                ran = eagerly(handle(self, event))
            except Exception as e:
                self._failed(e)
                return
            if not isinstance(ran, Ran):
                self._pause_reading()
                self._task, self._task_kind = ran, type(event)
                ran.add_done_callback(functools.partial(self._resumed, began=began))
                return
            self._after(began)

    def _after(self, began: float | None) -> None:
        """What follows each answered event."""
        session = self.session
        if began is not None and self.deadline is not None:
            self.deadline += self._loop.time() - began  # the server's time is not the client's
        self._drop_stale_intake()
        if self.closing:
            self._end("quit" if session.mode is Mode.CLOSED else "error limit")

    def _drop_stale_intake(self) -> None:
        """Discard the intake once its text no longer names the message being received: RSET,
        EHLO, STARTTLS, a refused chunk, or a text the core refused as it was read (too big, a
        bare newline, a line too long), whose remaining octets the core reads and drops."""
        intake = self.intake
        if intake is not None and intake.stream != self.session.message_stream:
            intake.discard()
            self.intake = None

    def _resumed(self, task: asyncio.Task[None], *, began: float | None) -> None:
        self._task = None
        if task.cancelled():  # the server stops
            self.goodbye()
            if self.transport is not None and self.transport.is_closing():
                self.connection_lost(None)  # as in `_failed`: a failed STARTTLS may never say
            return
        exc = task.exception()
        if exc is not None:
            self._failed(exc)
            return
        self._after(began)
        if self._gone is not None:
            self._end(self._gone)
        if self._stopping:
            self.goodbye()  # after the handler's reply: the server stops
            return
        self._pump()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, _NETWORK_ERRORS):
            self._end(network_error(exc))
        else:
            logger.error("session error ip=%s", self.ip, exc_info=exc)
            self._end(f"internal error: {exc.__class__.__name__}")
        if self.transport is not None and self.transport.is_closing():
            # a failed STARTTLS handshake leaves a transport that may never report it lost
            self.connection_lost(None)

    def _await_input(self) -> None:
        """Everything buffered is answered: write the replies, and wait on the client within
        the deadline of what it is to send (RFC 5321 §4.5.3.2)."""
        if self._held:  # came while a handler waited: feed it now
            data = b"".join(self._held)
            self._held.clear()
            self._began = self._loop.time()  # no wait on the client: nothing to count
            self._waiting = True
            self._received(data)
            return
        if self._eof:
            self._end("client closed")
            return
        session, smtp = self.session, self.server.smtp
        now = self._loop.time()
        mode = session.mode
        text = mode is Mode.DATA or mode is Mode.BDAT
        if self.deadline is None or self.record is not mode:
            self.record = mode
            self.deadline = now + (smtp.data_timeout if text else smtp.command_timeout)
            self.last_read = now
        self.flush()
        self._began = now
        self.slow_at = None
        self._waiting = True
        self.server.watch.add(self)
        if not self.slow and not self._slow_asked:
            # commands: the time waited in all; text: how far behind min_data_rate
            base = self.deadline - smtp.data_timeout if text else now
            slow_at = base + smtp.slow_after - self.waited
            if slow_at <= now:
                self._turn_slow()
                if self._ended:
                    return
            else:
                self.slow_at = slow_at
        if not self._write_paused:
            self._resume_reading()

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.server.watch.discard(self)
            if self.record not in (Mode.DATA, Mode.BDAT):
                self.waited += self._loop.time() - self._began

    # -- deadlines and slow slots ---------------------------------------------------------

    def expired(self, now: float) -> None:
        """Called by the watch: past the deadline, or past the slow mark."""
        if self.deadline is not None and self.deadline < now:
            self._stop_waiting()
            self.close_with(R_TIMEOUT, self._timeout_reason(), "timeout")
            return
        self.waited += now - self._began if self.record not in (Mode.DATA, Mode.BDAT) else 0.0
        self._began = now
        self.slow_at = None
        if not self.slow and not self._slow_asked:
            self._turn_slow()

    def _turn_slow(self) -> None:
        """Ask for a slow slot (once: in a worker the answer takes a round trip to the main
        process, and input that comes meanwhile must not ask again)."""
        self._slow_asked = True
        ran = eagerly(self.server.slots.acquire_slow())
        if isinstance(ran, Ran):
            self._slow_answer(ran.value)
        else:
            ran.add_done_callback(
                lambda t: self._slow_answer(
                    not t.cancelled() and t.exception() is None and t.result()
                )
            )

    def _slow_answer(self, granted: bool) -> None:
        self._slow_asked = False
        if self._ended or (granted and self.slow):
            if granted:
                self.server.slots.release_slow()
            return
        if granted:
            self.slow = True
            return
        if self._task is not None:
            # input came meanwhile and a handler is at work (a message being made durable):
            # closing now could 421 a message that is committed after; the next wait on the
            # client asks again
            return
        self._stop_waiting()
        self.close_with(R_TOO_SLOW, "too many slow connections", "too slow")

    def not_slow(self) -> None:
        """Give back the slow slot, if the connection holds one."""
        if self.slow:
            self.slow = False
            self.server.slots.release_slow()

    def _timeout_reason(self) -> str:
        if self.record not in (Mode.DATA, Mode.BDAT):
            return "command timeout"
        assert self.deadline is not None
        if self.deadline < self.last_read + self.server.smtp.data_timeout:
            return "data rate below min_data_rate"
        return "data timeout"

    # -- STARTTLS -------------------------------------------------------------------------

    def drop_input(self) -> int:
        """Throw away what was read and not yet fed (RFC 3207 §4.2); its size."""
        dropped = sum(len(d) for d in self._held)
        self._held.clear()
        return dropped


def tls_info(transport: asyncio.BaseTransport) -> TlsInfo | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    name, version, bits = ssl_object.cipher()
    return TlsInfo(version, name, bits)
