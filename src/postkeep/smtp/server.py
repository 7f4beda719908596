"""asyncio driver for the SMTP session core, both roles (MX and submission): the thin part.

Each connection (accepted, counted and TLS-wrapped by `net.listener`) is an `asyncio.Protocol`
(`smtp.connection.SmtpConnection`) that feeds the bytes to `smtp.wire.session.SmtpSession`;
the server answers its events here (asking policy where the protocol alone cannot decide).
Replies are batched: everything answerable from the bytes at hand is answered in one write
(RFC 2920 §3.1: a server must flush before it blocks reading), so a whole EHLO reply and a
pipelined MAIL/RCPT/DATA group each go out in one segment.

Brute-force protection (`postkeep.bans`, with a `guard`): a banned client gets `421 4.7.1` at
accept (implicit TLS: a silent close); a failed AUTH, an RCPT refused `550 5.1.1`, the hard
error limit, a failed TLS handshake (implicit TLS or STARTTLS) and a session that ends before
AUTH or MAIL (without a failed handshake) are strikes.

Owns: the deadlines (RFC 5321 §4.5.3.2), the error budget's delays, STARTTLS (RFC 3207), AUTH's
replies and failure limits (RFC 4954), storing each message's text as it arrives
(`smtp.intake`: memory, then an encrypted spool; the process's budget for text in flight), and
handing each received message to the inbound pipeline (`delivery.inbound`), whose `250` is
sent only once the message is durable.

Deadlines: each command has `command_timeout` from when the server is ready for it (its replies
to the one before flushed) until its whole line is in; message text (DATA, a BDAT chunk) starts
with `data_timeout` and each read adds its octets / `min_data_rate`, at most `data_timeout`
ahead again (Postfix's smtpd_per_request_deadline and smtpd_min_data_rate). Octets that trickle
in extend neither. A connection that has kept the server waiting `slow_after` seconds for
commands since it connected or last delivered a message, or is that far behind the minimum
rate, turns slow and needs one of the role's slow slots (`postkeep.net.slots`). Past a deadline,
or refused a slow slot: 421 4.4.2, one `reject` line, close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from postkeep import log
from postkeep.auth.exchange import AuthResult, AuthStatus, SaslAuthenticator
from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import Guard
from postkeep.bans.policy import ERRORS, HARVEST, PREAUTH, TLS
from postkeep.config import Config
from postkeep.delivery.directory import StoreDirectory
from postkeep.delivery.inbound import Client, Inbound
from postkeep.delivery.origin import InboundChecks
from postkeep.delivery.submit import make_pipeline, new_queue_id
from postkeep.delivery.trace import TlsInfo
from postkeep.errors import Reply
from postkeep.mailauth.dmarc.aggregate import ReportRow
from postkeep.net.budget import DataBudget
from postkeep.net.firewall import Firewall, LocalRates, Rates
from postkeep.net.listener import HANDSHAKE_ERRORS, Listeners, upgrade_tls
from postkeep.net.slots import ConnectionLimiter, IpSlots, slow_slots
from postkeep.net.tls import EndPointBindings
from postkeep.policy.relay import check_rcpt, check_sender
from postkeep.policy.submission import check_envelope_sender, owned_addresses
from postkeep.smtp.connection import SmtpConnection, tls_info
from postkeep.smtp.intake import R_NO_ROOM, ROOM, Intake
from postkeep.smtp.wire.parser import Auth, Rcpt
from postkeep.smtp.wire.session import (
    AuthRequested,
    AuthResponse,
    Capabilities,
    ChunkReceived,
    DataReceived,
    ErrorAction,
    Event,
    HelloReceived,
    MailReceived,
    MessageReceived,
    Mode,
    RcptReceived,
    Say,
    SessionLimits,
    StartTlsRequested,
    TextReceived,
)
from postkeep.store.api import DsnRecipient, Envelope, Store

if TYPE_CHECKING:
    from postkeep.dns import DnsResolver

logger = log.get("smtp")

READ_SIZE = 256 * 1024
R_TOO_MANY_CONN = Reply(421, "4.7.0", "Too many connections, try again later")
R_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
R_BANNED = Reply(421, "4.7.1", "Too many failures from your address, try again later")

# AUTH (RFC 4954 §6): the SASL exchange's outcomes as replies
R_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R_AUTH_ABORTED = Reply(501, "5.0.0", "Authentication aborted")
R_AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data (base64 expected)")
R_AUTH_BUSY = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
R_AUTH_TOO_MANY = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
AUTH_REPLIES = {
    AuthStatus.OK: R_AUTH_OK,
    AuthStatus.BUSY: R_AUTH_BUSY,
    AuthStatus.MALFORMED: R_AUTH_MALFORMED,
    AuthStatus.CANCELLED: R_AUTH_ABORTED,
    AuthStatus.FAILED: R_AUTH_FAILED,
}


# events that are no command of their own, for the firewall's commands per minute
_NOT_COMMANDS = frozenset({TextReceived, MessageReceived, AuthResponse})
_COMMAND_NAMES: dict[type[Event], str] = {
    HelloReceived: "EHLO", MailReceived: "MAIL", RcptReceived: "RCPT", DataReceived: "DATA",
    ChunkReceived: "BDAT", StartTlsRequested: "STARTTLS", AuthRequested: "AUTH",
}


class SmtpServer:
    """The SMTP listeners of one role of an instance.

    Role "mx" (RFC 5321): port 25 with STARTTLS; mail for local recipients only, no AUTH.
    Role "submission" (RFC 6409, RFC 8314): STARTTLS and implicit-TLS listeners; AUTH (over TLS
    only) is required before MAIL; senders must be owned by the login; remote recipients go to
    the outbound queue.
    """

    def __init__(
        self,
        cfg: Config,
        store: Store,
        tls_context: ssl.SSLContext | None,
        role: str = "mx",
        verifier: PasswordVerifier | None = None,
        budget: DataBudget | None = None,
        slots: IpSlots | None = None,
        sockets: Sequence[socket.socket] | None = None,
        on_queued: Callable[[], None] | None = None,
        resolver: DnsResolver | None = None,
        guard: Guard | None = None,
        on_dmarc: Callable[[str, ReportRow], None] | None = None,
        rates: Rates | None = None,
    ) -> None:
        """`budget`: the process's budget for message text in flight, shared by the MX and
        submission servers (a budget of `smtp.max_data_in_flight` of its own if None);
        `slots`: the connection limits' counts (default: this process's own, for this role);
        `sockets`: listening sockets bound already, one per `listen` entry in order (worker
        processes share the main process's); `on_queued`: called once a message is in the
        outbound queue (the process's delivery worker starts on it at once); `resolver`: the
        process's `DnsResolver`, for the MX's checks of where mail comes from (none without
        it: `[inbound]`, docs/architecture.md "Inbound checks"); `on_dmarc`: told each DMARC
        evaluation whose policy asks for aggregate reports (`queue.dmarcrpt`); `rates`: where
        the firewall counts (`postkeep.net.firewall`; default: in this process)."""
        self.cfg = cfg
        self.guard = guard
        self.budget = budget if budget is not None else DataBudget(cfg.smtp.max_data_in_flight)
        self.smtp = cfg.smtp
        self.role = role
        self.submission = role == "submission"
        self.store = store
        self.tls_context = tls_context
        self.directory = StoreDirectory(store)
        self.report_address = "" if self.submission else cfg.inbound.dmarc_report_address
        self.checks = (InboundChecks(cfg.inbound, resolver)
                       if resolver is not None and not self.submission else None)
        sub = cfg.submission
        self.limits = SessionLimits(
            max_command_line=cfg.smtp.max_command_line,
            max_message_size=sub.max_message_size if self.submission else cfg.smtp.max_message_size,
            max_recipients=sub.max_recipients if self.submission else cfg.smtp.max_recipients,
            max_line_length=cfg.smtp.max_line_length,
            soft_error_limit=cfg.smtp.soft_error_limit,
            hard_error_limit=cfg.smtp.hard_error_limit,
        )
        self.inbound = make_pipeline(cfg, store, self.directory, submission=self.submission,
                                     on_queued=on_queued, checks=self.checks, on_dmarc=on_dmarc)
        self.auth: SaslAuthenticator | None = None
        self.bindings: EndPointBindings | None = None
        self._mechanisms: tuple[str, ...] = ()
        self._mechanisms_tls13: tuple[str, ...] = ()  # no -PLUS (see `sasl.plus_bindings`)
        if self.submission:
            assert verifier is not None and tls_context is not None
            keytab = str(cfg.data_path(sub.gssapi_keytab)) if sub.gssapi_keytab else None
            self.auth = SaslAuthenticator(store, verifier, cfg.server.hostname,
                                          sub.sasl_mechanisms, gssapi_keytab=keytab)
            # Offered once TLS is up. Every certificate yields a tls-server-end-point binding,
            # so the default certificate's stands for all when deciding whether to offer -PLUS;
            # the TLS version decides too: over TLS 1.3 clients want tls-exporter, not offered.
            self.bindings = EndPointBindings(cfg.data_path(cfg.tls.cert_file))
            self._mechanisms = tuple(self.auth.advertised(True, self.bindings.default))
            self._mechanisms_tls13 = tuple(
                self.auth.advertised(True, self.bindings.default, "TLSv1.3")
            )
        self.listen = (
            [(a, False) for a in sub.listen] + [(a, True) for a in sub.tls_listen]
            if self.submission
            else [(a, False) for a in cfg.smtp.listen]
        )
        self.slots: IpSlots = slots or ConnectionLimiter(
            cfg.smtp.max_connections, cfg.smtp.max_connections_per_ip,
            slow_slots(cfg.smtp.max_connections, cfg.smtp.slow_share),
        )
        self.firewall = Firewall(cfg.firewall, role, rates or LocalRates(cfg.firewall))
        self.listeners = Listeners(
            self.listen,
            None,
            tls_context,
            protocol=lambda listeners, peer: SmtpConnection(self, listeners, peer),
            slots=self.slots,
            busy=f"{R_TOO_MANY_CONN}\r\n".encode(),
            busy_code=f"{R_TOO_MANY_CONN.code} {R_TOO_MANY_CONN.enhanced}",
            role=role,
            logger=logger,
            read_size=READ_SIZE,
            sockets=sockets,
            handshake_timeout=cfg.tls.handshake_timeout,
            firewall=self.firewall,
            refused=lambda reason: f"421 4.7.0 Refused ({reason}), try again later\r\n".encode(),
            proxy_timeout=cfg.firewall.proxy_timeout,
            ban_lookup=guard.refused if guard is not None else None,
            banned=f"{R_BANNED}\r\n".encode(),
            banned_code=f"{R_BANNED.code} {R_BANNED.enhanced}",
            on_handshake_failed=(lambda ip: guard.strike(ip, TLS)) if guard is not None else None,
        )
        self.watch = self.listeners.watch
        self.handshake_timeout = cfg.tls.handshake_timeout
        self.greeting = f"220 {cfg.server.hostname} ESMTP postkeep\r\n".encode()

    def capabilities(self, implicit_tls: bool, tls: TlsInfo | None = None) -> Capabilities:
        """What a connection is offered: `tls`, the TLS it runs over (None before STARTTLS),
        decides whether the -PLUS mechanisms are among them."""
        if self.auth is None:
            return Capabilities(starttls=self.tls_context is not None)
        tls13 = tls is not None and tls.version == "TLSv1.3"
        return Capabilities(
            starttls=not implicit_tls,
            auth_mechanisms=self._mechanisms_tls13 if tls13 else self._mechanisms,
            auth_requires_tls=True,
            auth_required=True,
        )

    async def start(self) -> None:
        await self.listeners.start()

    async def stop(self) -> None:
        await self.listeners.stop()

    def _session_started(self, conn: SmtpConnection) -> None:
        """A connection was admitted and its session made (a hook for tests)."""

    def _session_ended(self, conn: SmtpConnection, reason: str) -> None:
        """A session is over: one that never tried to log in nor sent MAIL is a pre-auth
        close, a strike (`bans.preauth_close_weight`)."""
        if (self.guard is not None and reason != "server shutdown" and conn.account is None
                and not conn.auth_failures and not conn.mailed and not conn.tls_failed):
            self.guard.strike(conn.ip, PREAUTH)

    def _reply(self, conn: SmtpConnection, reply: Reply) -> None:
        conn.out.append(conn.session.render(reply))

    async def _error(self, conn: SmtpConnection, cmd: str, reply: Reply, reason: str) -> None:
        """Send an error reply, logging it, within the session's error budget."""
        self._log_reject(conn, cmd, reply, reason)
        self._reply(conn, reply)
        action = conn.session.error_action()
        if action is ErrorAction.DELAY and self.smtp.error_delay:
            conn.flush()
            await asyncio.sleep(self.smtp.error_delay)
        elif action is ErrorAction.CLOSE:
            self._log_reject(conn, cmd, R_TOO_MANY_ERRORS, "hard error limit")
            if self.guard is not None:
                self.guard.strike(conn.ip, ERRORS)
            conn.out.append(conn.session.render(R_TOO_MANY_ERRORS))
            conn.session.mode = Mode.CLOSED
            conn.closing = True

    def _log_reject(self, conn: SmtpConnection, cmd: str, reply: Reply, reason: str,
                    limit: str | None = None) -> None:
        logger.info(
            "reject ip=%s cmd=%s code=%d %s reason=%s%s",
            conn.ip,
            cmd,
            reply.code,
            reply.enhanced,
            log.quote(reason or reply.text),
            f" limit={log.quote(limit)}" if limit is not None else "",
        )

    async def _limited(self, conn: SmtpConnection, cmd: str, kind: str, n: int = 1) -> bool:
        """Count `n` of `kind` for the client's IP classes (`postkeep.net.firewall`): True
        when the connection is closed for it (421 4.7.0); past the commands per minute, the
        command waits `firewall.tarpit_delay` first."""
        over = self.firewall.take(kind, conn.ip, n)
        if over is None:
            return False
        refusal = over.refusal
        if not over.tarpit:
            conn.close_with(Reply(421, "4.7.0", f"Too much traffic ({refusal.reason}), try "
                                  "again later"), refusal.reason, refusal.reason, cmd,
                            refusal.limit)
            return True
        if not conn.tarpitted:
            conn.tarpitted = True
            self.firewall.log_tarpit(logger, conn.ip, refusal, cmd)
        conn.flush()
        await asyncio.sleep(self.firewall.tarpit_delay)
        return False

    async def _handle(self, conn: SmtpConnection, event: Event) -> None:
        session = conn.session
        assert conn.peer is not None
        if conn.peer.limited:
            kind = type(event)
            if isinstance(event, TextReceived):
                if await self._limited(conn, "DATA", "bytes", len(event.data)):
                    return
            elif kind not in _NOT_COMMANDS and await self._limited(
                conn, _COMMAND_NAMES.get(kind, "-"), "commands"
            ):
                return
            if kind is MailReceived and await self._limited(conn, "MAIL", "messages"):
                return
        match event:
            case Say(reply=reply, close=close):
                if reply.code >= 400:
                    await self._error(conn, "-", reply, self._reason(conn, reply))
                else:
                    self._reply(conn, reply)
                if close:
                    conn.closing = True
            case HelloReceived(hello=hello):
                answer = session.accept_hello(hello)
                conn.rcpt_accounts.clear()
                if isinstance(answer, list):
                    conn.out.append(session.render(answer, 250))
                else:
                    self._reply(conn, answer)
            case MailReceived(mail=mail):
                conn.rcpt_accounts.clear()
                conn.mailed = True
                if conn.checks is not None and (listed := await conn.checks.refusal()):
                    await self._error(conn, "MAIL", listed.reply, listed.reason)
                    return
                if (invalid := check_sender(mail.path.address)) is not None:
                    await self._error(conn, "MAIL", invalid.reply, invalid.reason)
                    return
                if self.submission and conn.account is not None:
                    refused = check_envelope_sender(
                        mail.path.address, conn.owned, conn.account.address
                    )
                    if refused is not None:
                        await self._error(conn, "MAIL", refused, refused.text)
                        return
                reply = session.accept_mail(mail)
                if reply.code >= 400:
                    await self._error(conn, "MAIL", reply, reply.text)
                else:
                    self._reply(conn, reply)
            case RcptReceived(rcpt=rcpt):
                await self._rcpt(conn, rcpt)
            case DataReceived():
                if self.budget.room < ROOM:
                    reply = session.refuse_data(R_NO_ROOM)
                    await self._error(conn, "DATA", reply, "no room in smtp.max_data_in_flight")
                else:
                    self._reply(conn, session.begin_data())
            case TextReceived(data=data):
                await self._text(conn, data)
            case ChunkReceived(size=size):
                self._reply(conn, session.chunk_reply(size))
            case MessageReceived():
                await self._message(conn, event)
            case StartTlsRequested():
                await self._starttls(conn)
            case AuthRequested(auth=auth):
                await self._auth_start(conn, auth)
            case AuthResponse(line=line):
                await self._auth_respond(conn, line)

    async def _rcpt(self, conn: SmtpConnection, rcpt: Rcpt) -> None:
        session = conn.session
        mail = session.transaction_mail
        declared = mail.params.size if mail is not None else None
        decision = await check_rcpt(
            self.directory, rcpt.path, declared, authenticated=conn.account is not None,
            report_address=self.report_address,
        )
        if not decision.verdict.accepted:
            reply = decision.verdict.reply
            if self.guard is not None and reply.enhanced == "5.1.1" and conn.account is None:
                # harvesting (or a typo): a client that logged in is not struck for it
                self.guard.strike(conn.ip, HARVEST)
            await self._error(conn, "RCPT", reply, decision.verdict.reason)
            return
        assert conn.peer is not None
        if conn.peer.limited and await self._limited(conn, "RCPT", "recipients"):
            return
        conn.rcpt_accounts[rcpt] = tuple(a.id for a in decision.accounts)
        self._reply(conn, session.accept_rcpt(rcpt))

    async def _text(self, conn: SmtpConnection, data: bytes) -> None:
        stream = conn.session.message_stream
        assert stream is not None  # text comes only while a message is being received
        if conn.intake is None:
            conn.intake = Intake(self.budget, self.smtp.spool_threshold, self.store.new_spool,
                                 stream)
        if not await conn.intake.add(data):
            conn.refusal = conn.intake.refusal
            conn.intake = None
            assert conn.refusal is not None
            conn.session.refuse_message(conn.refusal[0])

    def _reason(self, conn: SmtpConnection, reply: Reply) -> str:
        """What to log for an error reply: the reason of the intake's refusal if it is that."""
        refusal, conn.refusal = conn.refusal, None
        return refusal[1] if refusal is not None and refusal[0] is reply else reply.text

    async def _message(self, conn: SmtpConnection, event: MessageReceived) -> None:
        intake, conn.intake = conn.intake, None
        try:
            await self._deliver(conn, event, intake)
        finally:
            if intake is not None:
                intake.discard()

    async def _deliver(
        self, conn: SmtpConnection, event: MessageReceived, intake: Intake | None
    ) -> None:
        accounts = {rcpt: conn.rcpt_accounts.get(rcpt, ()) for rcpt in event.rcpts}
        conn.rcpt_accounts.clear()
        if event.error is not None:
            await self._error(conn, "DATA", event.error, self._reason(conn, event.error))
            return
        session, mail = conn.session, event.mail
        recipients = [
            (DsnRecipient(r.path.address, r.notify, r.orcpt), ids) for r, ids in accounts.items()
        ]
        queue_id, now = new_queue_id(), time.time()
        helo = session.helo.name if session.helo else ""
        message = Inbound(
            queue_id=queue_id,
            received_at=now,
            envelope=Envelope(
                queue_id=queue_id,
                mail_from=mail.path.address,
                recipients=[rcpt for rcpt, _ in recipients],
                client_ip=conn.ip,
                helo=helo,
                received_at=now,
                ret=mail.params.ret,
                envid=mail.params.envid,
                body=mail.params.body,
                smtputf8=mail.params.smtputf8,
                requiretls=mail.params.requiretls,
            ),
            recipients=recipients,
            data=intake.text() if intake is not None else b"",
            client=Client(
                conn.ip, helo, bool(session.helo and session.helo.extended), conn.tls,
                conn.account, conn.owned, conn.checks, conn.auth_mechanism,
            ),
        )
        outcome = await self.inbound.run(message)
        reply = outcome.verdict.reply
        if not outcome.verdict.accepted:
            await self._error(conn, "DATA", reply, outcome.verdict.reason)
            return
        conn.messages += 1
        conn.waited = 0.0  # a delivered message: the connection is not slow (any more)
        conn.not_slow()
        self._reply(conn, reply)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "message qid=%s ip=%s tls=%s user=%s from=<%s> to=%s size=%d result=%s%s%s",
                queue_id,
                conn.ip,
                conn.tls.version if conn.tls else "no",
                log.quote(conn.account.address if conn.account else "-"),
                mail.path.address,
                ",".join(f"<{r.path.address}>" for r in event.rcpts),
                event.size,
                log.quote(f"{reply.code} {reply.enhanced}"),
                f" auth={log.quote(message.auth_summary)}" if message.auth_summary else "",
                f" scan={log.quote(message.scan_summary)}" if message.scan_summary else "",
            )

    # -- AUTH (RFC 4954) --------------------------------------------------------------------------

    async def _auth_start(self, conn: SmtpConnection, auth: Auth) -> None:
        assert self.auth is not None and self.bindings is not None
        assert conn.transport is not None
        local = conn.transport.get_extra_info("sockname") or ("",)
        exchange, result = await self.auth.start(
            auth.mechanism, auth.initial, self.bindings.of(conn.transport), str(local[0]),
            conn.tls.version if conn.tls else None,
        )
        conn.auth = exchange
        await self._auth_result(conn, auth.mechanism, result)

    async def _auth_respond(self, conn: SmtpConnection, line: bytes) -> None:
        assert self.auth is not None
        if conn.auth is None:  # cannot happen: the session reads responses only after a 334
            conn.session.auth_finished(None)
            return
        result = await self.auth.respond(conn.auth, line)
        await self._auth_result(conn, conn.auth.name, result)

    async def _auth_result(self, conn: SmtpConnection, mechanism: str, result: AuthResult) -> None:
        session = conn.session
        if not result.finished:
            conn.out.append(session.auth_challenge(result.challenge))
            return
        exchange, conn.auth = conn.auth, None
        reply = AUTH_REPLIES[result.status]
        if result.status is AuthStatus.OK:
            assert result.account is not None
            session.auth_finished(result.account.address)
            conn.account = result.account
            conn.auth_mechanism = mechanism
            conn.owned = owned_addresses(
                result.account,
                await self.store.list_aliases(),
                await self.store.list_send_as(result.account.address),
            )
            logger.info("auth ok ip=%s user=%s mechanism=%s", conn.ip,
                        log.quote(result.account.address), mechanism)
            self._reply(conn, reply)
            if self.guard is not None:
                await self.guard.auth_ok(conn.ip, result.account.address, result.account.id,
                                         f"smtp {mechanism}")
            return
        session.auth_finished(None)
        if result.status is AuthStatus.FAILED:
            conn.auth_failures += 1
            user = exchange.user if exchange is not None and exchange.user else "-"
            logger.warning(
                "auth failure ip=%s user=%s mechanism=%s reason=%s",
                conn.ip, log.quote(user), mechanism, log.quote(result.reason),
            )
            if self.guard is not None:
                await self.guard.auth_failed(conn.ip, user)
            if conn.auth_failures >= self.cfg.submission.auth_close_after:
                self._log_reject(conn, "AUTH", R_AUTH_TOO_MANY, "too many auth failures")
                self._reply(conn, reply)
                conn.out.append(session.render(R_AUTH_TOO_MANY))
                session.mode = Mode.CLOSED
                conn.closing = True
                return
            if conn.auth_failures >= self.cfg.submission.auth_delay_after:
                await asyncio.sleep(self.cfg.submission.auth_failure_delay)
        else:
            self._log_reject(conn, "AUTH", reply, result.reason)
        self._reply(conn, reply)

    async def _starttls(self, conn: SmtpConnection) -> None:
        assert self.tls_context is not None and conn.transport is not None
        session = conn.session
        conn.out.append(session.render(session.starttls_reply()))
        conn.flush()
        # RFC 3207 §4.2: plaintext pipelined after STARTTLS is thrown away
        dropped = session.starttls_begin() + conn.drop_input()
        try:
            conn.transport = await upgrade_tls(
                conn.transport, conn, self.tls_context, dropped=dropped, ip=conn.ip,
                logger=logger, timeout=self.handshake_timeout,
            )
        except HANDSHAKE_ERRORS:
            conn.tls_failed = True
            if self.guard is not None:
                self.guard.strike(conn.ip, TLS)
            raise
        conn.tls = tls_info(conn.transport)
        session.tls_started(self.capabilities(False, conn.tls))
        conn.rcpt_accounts.clear()
