"""One delivery attempt to a remote domain over SMTP: its MX hosts, their addresses, one
transaction (RFC 5321 §5.1, §4.5.4.1), with the client of `postkeep.smtp.client`.

- Hosts in MX order (`postkeep.queue.routes`), every address of each (IPv6 first) in turn,
  until one server answers the transaction. A connection that fails (refused, timeout, TLS, a
  421 or 554 greeting) or a transaction refused as a whole with a 4xx before any recipient was
  answered moves on to the next address; answers about recipients are final for this attempt.
- TLS (RFC 3207, RFC 7435): opportunistic by default. The handshake is first made verifying the
  peer's certificate for the MX host name (`delivery.tls_ca_file` or the system's CAs); a peer
  whose certificate does not verify is connected to again without verification, and remembered
  for an hour so that it costs one connection, not two. The log line of each delivery says
  which it was (`tls=TLSv1.3/verified`, `tls=TLSv1.3/unverified`, `tls=none`).
- A failed TLS handshake is never retried in clear text: the next host is tried, then later.
- REQUIRETLS (RFC 8689 §4.2.1): STARTTLS required and the certificate verified for the MX host
  name, and the peer must offer REQUIRETLS; else the next host. A host without REQUIRETLS is
  a permanent 5.7.30 when it is the last one tried; one whose TLS failed is a temporary
  failure (retried until the message expires).
- A connection is kept open a few seconds after a message (`SessionPool`) and used again for
  the next one to the same host and address, up to `delivery.max_messages_per_connection`
  messages; one the server closed meanwhile is replaced, the message sent again over it.
- DANE (RFC 7672, `postkeep.queue.dane`): for an MX host below a DNSSEC-authenticated MX
  answer whose TLSA records are authenticated, TLS is required and the certificate must match
  them (the log says `tls=TLSv1.3/dane`); a TLSA lookup that fails makes the host unusable for
  now, never a reason to send in clear. Needs `[dns] trust_ad` and a validating resolver.
- MTA-STS (RFC 8461, `postkeep.queue.mtasts`): under an `enforce` policy only the MX hosts it
  names are used, each over STARTTLS with a certificate verified for its name (or its DANE
  records, which come first, RFC 8461 §2); none left is a temporary failure. Under
  `testing`, mail goes as usual and a host outside the policy is logged.
- TLS-RPT (RFC 8460, `postkeep.queue.tlsrpt`): each session opened to an MX host is counted
  with the policy it was held to (DANE's TLSA records, else MTA-STS, else none) and its result
  (a success, or the result type of its failure); so is a host not used because its TLSA
  lookup failed (`dnssec-invalid`) or no host is one an `enforce` policy names.
- Smart hosts (`postkeep.queue.smarthost`): a domain a relay serves goes to that relay instead
  of its MX hosts, over required TLS, with its login.
- The outcome when no host took the message is the last host's: a transaction refused as a
  whole (its 5xx stands, a 4xx is retried), else a connection failure (always temporary: a
  554 greeting too, since the next attempt may reach another host), else the address lookup's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import replace
from pathlib import Path

from postkeep import log
from postkeep.config import Config
from postkeep.dns.names import InvalidName, query_name
from postkeep.dns.resolver import DnsResolver
from postkeep.queue.dane import DanePolicy, dane_for
from postkeep.queue.mtasts import MtaStsPolicies
from postkeep.queue.mtasts_policy import Mode, Policy
from postkeep.queue.outcome import Outcome, temporary
from postkeep.queue.routes import host_addresses, mx_hosts
from postkeep.queue.smarthost import Relay, load_relays, relay_for
from postkeep.queue.tlsrpt import TlsReports
from postkeep.queue.tlsrpt_report import (
    NO_POLICY,
    AppliedPolicy,
    PolicyType,
    classify,
    verify_failure,
)
from postkeep.smtp.client.protocol import Envelope, Recipient, Stage, Timeouts, TransactionResult
from postkeep.smtp.client.session import ClientSession, SessionFailure, connect
from postkeep.store.api import QueueEntry, QueueRecipient

logger = log.get("queue")

CHUNK = 64 * 1024
UNVERIFIABLE_FOR = 3600.0  # seconds a host whose certificate did not verify is remembered


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def _chunks(message: bytes) -> AsyncIterator[bytes]:
    with memoryview(message) as view:
        for start in range(0, len(message), CHUNK):
            yield bytes(view[start : start + CHUNK])


def client_envelope(entry: QueueEntry, recipients: Sequence[QueueRecipient],
                    size: int) -> Envelope:
    return Envelope(
        entry.mail_from,
        tuple(Recipient(r.address, r.notify, r.orcpt) for r in recipients),
        size=size, body=entry.body, smtputf8=entry.smtputf8, ret=entry.ret,
        envid=entry.envid, requiretls=entry.requiretls,
    )


class RemoteTransport:
    """`postkeep.queue.runner.Transport` over SMTP to the recipients' MX hosts."""

    def __init__(self, cfg: Config, resolver: DnsResolver,
                 tls_reports: TlsReports | None = None) -> None:
        self.cfg = cfg
        self.delivery = cfg.delivery
        self.resolver = resolver
        self.hostname = cfg.server.hostname
        ca = cfg.data_path(self.delivery.tls_ca_file) if self.delivery.tls_ca_file else None
        self._verifying = verifying_context(ca)
        self._unverified = unverified_context()
        self._unverifiable: dict[str, tuple[float, str]] = {}  # until, why
        self.tls_reports = tls_reports  # TLS-RPT (RFC 8460): None when off
        self.relays = load_relays(cfg)
        self.mta_sts = (MtaStsPolicies(resolver, self._verifying,
                                       https_port=self.delivery.mta_sts_port)
                        if self.delivery.mta_sts else None)
        self.pool = SessionPool(self.delivery.max_messages_per_connection)
        d = self.delivery
        self.timeouts = Timeouts(
            connect=d.connect_timeout, greeting=d.greeting_timeout, command=d.greeting_timeout,
            mail=d.greeting_timeout, rcpt=d.greeting_timeout, data_end=d.data_timeout)

    async def deliver(
        self, domain: str, entry: QueueEntry, recipients: Sequence[QueueRecipient],
        message: bytes,
    ) -> list[Outcome]:
        relay = relay_for(self.relays, domain)
        secure: set[str] = set()  # MX hosts below a DNSSEC-authenticated answer
        dane: dict[str, DanePolicy | None] = {}
        enforced: set[str] = set()  # MX hosts an MTA-STS policy in force names
        sts: Policy | None = None
        if relay is not None:
            names = [relay.host]
            what = f"The smart host {relay.host} could not be reached"

            def open_(name: str, address: str) -> Awaitable[ClientSession | SessionFailure]:
                assert relay is not None
                return self._open_relay(relay, address)
        else:
            hosts = await mx_hosts(self.resolver, domain, self.hostname)
            if isinstance(hosts, Outcome):
                return [hosts] * len(recipients)
            names = [h.name for h in hosts]
            what = f"No MX host of {domain} could be reached"
            secure = {h.name for h in hosts if h.secure}
            sts = await self._mta_sts(domain, names, entry.queue_id)
            if sts is not None and sts.mode is Mode.ENFORCE:
                names = [n for n in names if sts.allows(n)]
                if not names:
                    for name in (h.name for h in hosts):  # TLS-RPT
                        self._tls_result(domain, _applied(sts, None, name), name, None,
                                         "validation-failure",
                                         "MX host not named by the MTA-STS policy")
                    return [temporary("4.7.5", f"MTA-STS: no MX host of {domain} is one its "
                                      "policy names")] * len(recipients)
                enforced = set(names)

            def open_(name: str, address: str) -> Awaitable[ClientSession | SessionFailure]:
                policy = dane.get(name)
                if policy is not None:  # DANE first (RFC 8461 §2: it takes precedence)
                    return self._open_dane(policy, address)
                return self._connect(name, address, entry.requiretls or name in enforced)
        envelope = client_envelope(entry, recipients, len(message))
        mode = ("relay", relay.host) if relay is not None else ("mx",)
        last: Outcome | None = None  # why the last host tried did not take the message
        for name in names:
            if relay is None and name in secure:  # DANE only below a secure MX (RFC 7672 §2.2.1)
                policy = await dane_for(self.resolver, name, self.delivery.remote_port,
                                        extra_names=(domain,))
                if isinstance(policy, Outcome):  # TLSA unknown now: not this host, not in clear
                    last = replace(policy, remote=name)
                    self._tls_result(domain, AppliedPolicy(PolicyType.TLSA, (), (name,)), name,
                                     None, "dnssec-invalid", policy.text)  # TLS-RPT
                    logger.info("queue: qid=%s relay=%s DANE lookup failed: %s",
                                entry.queue_id, name, policy.line())
                    continue
                dane[name] = policy
            addresses = await self._addresses(name)
            if isinstance(addresses, Outcome):
                last = last or addresses  # another host's answer or failure matters more
                continue
            for address in addresses:
                where = f"{name} [{address}]"
                key = (name, address, *mode, entry.requiretls or name in enforced)
                reused = self.pool.take(key)
                session = reused or await open_(name, address)
                if reused is None and relay is None:  # TLS-RPT: each session opened
                    self._tls_session(domain, sts, dane.get(name), name, address, session)
                if isinstance(session, SessionFailure):
                    reply = session.reply  # the server's own words kept, its code too
                    said = reply.text if reply.generated else (
                        f"the server said {reply.code} {reply.status} {reply.text}")
                    last = temporary(reply.status.replace("5.", "4.", 1), said, where)
                    logger.info("queue: qid=%s relay=%s connection failed: %s",
                                entry.queue_id, where, last.line())
                    continue
                result = await self._send(session, envelope, message)
                if reused is not None and _went_away(result):  # it closed while idle: anew
                    logger.info("queue: qid=%s relay=%s the kept connection was closed by the "
                                "server; opening a new one", entry.queue_id, where)
                    session = await open_(name, address)
                    if relay is None:  # TLS-RPT
                        self._tls_session(domain, sts, dane.get(name), name, address, session)
                    if isinstance(session, SessionFailure):
                        last = temporary(session.reply.status.replace("5.", "4.", 1),
                                         session.reply.text, where)
                        continue
                    reused = None
                    result = await self._send(session, envelope, message)
                self.pool.give(key, session)
                tls = session.tls
                tls_text = ("none" if tls is None else f"{tls.version}/dane" if dane.get(name)
                            and tls.authenticated else
                            f"{tls.version}/{'verified' if tls.verified else 'unverified'}")
                logger.info("queue: qid=%s relay=%s tls=%s%s", entry.queue_id, where, tls_text,
                            " (connection reused)" if reused is not None else "")
                if not _try_next(result):  # RFC 3461 §5.2.2: without DSN we report relaying
                    return [Outcome(r.code, r.reply.status, r.text, where,
                                    relayed=r.delivered and not result.dsn)
                            for r in result.recipients]
                last = Outcome(result.reply.code, result.reply.status, result.reply.text, where)
        if last is None:
            last = temporary("4.4.1", what)
        return [last] * len(recipients)

    # -- TLS-RPT (RFC 8460, `postkeep.queue.tlsrpt`) ------------------------------------------

    def _tls_session(self, domain: str, sts: Policy | None, dane: DanePolicy | None,
                     name: str, address: str, session: ClientSession | SessionFailure) -> None:
        """Count what a session just opened (or not) to `name` came to under its policy."""
        if self.tls_reports is None:
            return
        if isinstance(session, SessionFailure):
            kind = classify(session.stage, session.reply)
            if kind is not None:  # else not a TLS failure (refused, a 421 greeting...)
                self._tls_result(domain, _applied(sts, dane, name), name, address, kind,
                                 session.reply.text)
            return
        tls = session.tls
        applied = _applied(sts, dane, name)
        if tls is None:
            self._tls_result(domain, applied, name, address, "starttls-not-supported", None)
        elif dane is not None or sts is None:  # DANE checked it, or no policy: TLS is enough
            self._tls_result(domain, applied, name, address, None, None)
        elif not sts.allows(name):  # testing mode (enforce never connects to it)
            self._tls_result(domain, applied, name, address, "validation-failure",
                             "MX host not named by the MTA-STS policy")
        elif not tls.verified:  # testing mode: it went on unverified
            why = self._unverifiable.get(name, (0.0, "certificate verify failed"))[1]
            self._tls_result(domain, applied, name, address, verify_failure(why), why)
        else:
            self._tls_result(domain, applied, name, address, None, None)

    def _tls_result(self, domain: str, applied: AppliedPolicy, name: str, address: str | None,
                    kind: str | None, info: str | None) -> None:
        if self.tls_reports is not None:
            self.tls_reports.record(domain, applied, kind, name, address, info)

    async def _mta_sts(self, domain: str, names: list[str], queue_id: str) -> Policy | None:
        """The domain's MTA-STS policy (`postkeep.queue.mtasts`); in `testing` mode, the
        hosts it would refuse are logged (RFC 8461 §5: deliver, and report)."""
        if self.mta_sts is None:
            return None
        try:
            sts = await self.mta_sts.policy(query_name(domain))
        except InvalidName:
            return None
        if isinstance(sts, Outcome):  # no policy known, and none cached: none (RFC 8461 §3.3)
            logger.info("queue: qid=%s MTA-STS policy of %s unknown for now (%s): delivering "
                        "without one", queue_id, domain, sts.text)
            return None
        if isinstance(sts, Policy) and sts.mode is Mode.TESTING:
            for name in names:
                if not sts.allows(name):
                    logger.warning("queue: qid=%s MTA-STS testing: %s is not in the policy "
                                   "of %s (would not be used under enforce)", queue_id, name,
                                   domain)
        return sts

    async def _send(self, session: ClientSession, envelope: Envelope, message: bytes
                    ) -> TransactionResult:
        try:
            return await session.send(envelope, _chunks(message))
        except BaseException:
            await session.quit()
            raise

    async def close(self) -> None:
        """End the idle connections (QUIT)."""
        await self.pool.close()

    async def _addresses(self, name: str) -> list[str] | Outcome:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return await host_addresses(self.resolver, name)
        return [name]

    async def _open_dane(self, policy: DanePolicy, address: str
                         ) -> ClientSession | SessionFailure:
        """RFC 7672 §2.2: TLS required, the certificate authenticated by the TLSA records
        instead of a CA (no verification, the check on the peer's certificates), SNI the TLSA
        base domain (§8.1)."""
        return await connect(
            address, self.delivery.remote_port, helo_name=self.hostname,
            timeouts=self.timeouts, tls_context=self._unverified, tls_verify="none",
            tls_name=policy.sni, starttls="required", peer_check=policy.peer_check)

    async def _open_relay(self, relay: Relay, address: str) -> ClientSession | SessionFailure:
        return await connect(
            address, relay.port, helo_name=self.hostname, timeouts=self.timeouts,
            tls_context=relay.context, tls_verify="verify" if relay.verify else "none",
            tls_name=relay.host, starttls="required", implicit_tls=relay.implicit_tls,
            credentials=relay.credentials)

    async def _connect(self, name: str, address: str, verified: bool
                       ) -> ClientSession | SessionFailure:
        """`verified` (REQUIRETLS, an MTA-STS policy in force): STARTTLS and a certificate
        that verifies for `name`, or no session."""
        if verified:
            return await self._open(address, name, self._verifying, required=True)
        now = time.monotonic()
        if self._unverifiable.get(name, (0.0, ""))[0] <= now:
            first = await self._open(address, name, self._verifying)
            if not (isinstance(first, SessionFailure) and first.stage is Stage.TLS
                    and "certificate verify failed" in first.reply.text):
                return first
            self._unverifiable[name] = (now + UNVERIFIABLE_FOR, first.reply.text)
            if len(self._unverifiable) > 10_000:
                self._unverifiable = {k: v for k, v in self._unverifiable.items()
                                      if v[0] > now}
        return await self._open(address, name, self._unverified)

    async def _open(self, address: str, name: str, ctx: ssl.SSLContext, *,
                    required: bool = False) -> ClientSession | SessionFailure:
        verify = ctx.verify_mode == ssl.CERT_REQUIRED
        return await connect(
            address, self.delivery.remote_port, helo_name=self.hostname,
            timeouts=self.timeouts, tls_context=ctx, tls_verify="verify" if verify else "none",
            tls_name=name, starttls="required" if required else "opportunistic")


def _applied(sts: Policy | None, dane: DanePolicy | None, name: str) -> AppliedPolicy:
    """The policy (RFC 8460 §4.4) a session to `name` is held to: DANE first (RFC 8461 §2)."""
    if dane is not None:
        return AppliedPolicy.tlsa(name, [(r.usage, r.selector, r.mtype, r.data)
                                         for r in dane.records])
    if sts is not None:
        return AppliedPolicy.sts(sts.mode, sts.mx_patterns, sts.max_age)
    return NO_POLICY


def _went_away(result: TransactionResult) -> bool:
    """The connection was lost before the server answered MAIL (a reused one the server had
    closed meanwhile): nothing was delivered, the message may go over a new connection."""
    return result.stage is Stage.MAIL and result.reply.generated and not result.reusable


class SessionPool:
    """Open sessions kept between messages to the same host (RFC 5321 §3.3: several
    transactions per connection), for `IDLE` seconds at most, each used for at most
    `delivery.max_messages_per_connection` messages."""

    IDLE = 5.0

    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self._idle: dict[tuple[object, ...], list[tuple[ClientSession, asyncio.TimerHandle]]] = {}
        self._sent: dict[int, int] = {}  # id(session) -> messages sent over it
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: tuple[object, ...]) -> ClientSession | None:
        idle = self._idle.get(key)
        while idle:
            session, timer = idle.pop()
            timer.cancel()
            if session.usable:
                return session
            self._sent.pop(id(session), None)
        self._idle.pop(key, None)
        return None

    def give(self, key: tuple[object, ...], session: ClientSession) -> None:
        sent = self._sent.get(id(session), 0) + 1
        if not session.usable or sent >= self.max_messages:
            self._sent.pop(id(session), None)
            self._quit(session)
            return
        self._sent[id(session)] = sent
        timer = asyncio.get_running_loop().call_later(self.IDLE, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))

    def _expire(self, key: tuple[object, ...], session: ClientSession) -> None:
        idle = self._idle.get(key, [])
        self._idle[key] = [(s, t) for s, t in idle if s is not session]
        if not self._idle[key]:
            del self._idle[key]
        self._sent.pop(id(session), None)
        self._quit(session)

    def _quit(self, session: ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for idle in list(self._idle.values()):
            for session, timer in idle:
                timer.cancel()
                self._quit(session)
        self._idle.clear()
        self._sent.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)


def _try_next(result: TransactionResult) -> bool:
    """Whether another host should be tried: the transaction failed before any recipient was
    answered by the server (a refused MAIL, a lost connection, a 421), temporarily, or a
    pre-flight refusal that another host may not share (REQUIRETLS, SIZE)."""
    if result.stage in (Stage.RCPT, Stage.DATA, Stage.BODY, Stage.BDAT, Stage.END):
        return False
    return result.reply.transient or not result.sent
