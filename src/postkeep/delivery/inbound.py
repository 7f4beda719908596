"""The inbound pipeline: what happens to a message after its end-of-data, until it is durable.

The SMTP driver hands over each message whose text it received in full (RFC 5321 §4.1.1.4,
BDAT RFC 3030) as an `Inbound`, and sends what `InboundPipeline.run` returns: a rejection, or
`250 2.0.0 Ok: queued as <qid>` once the message is stored (RFC 5321 §6.1: a `250` after the
text means the server has taken responsibility for it).

The pipeline is one sequence of named stages, each returning None (go on) or a `Verdict`
(stop; the verdict's reply goes to the client, its reason to the log):

- ``limits``: the header section's size and the Received count (`policy.limits`; RFC 5321
  §6.3: a count past the limit is a mail loop);
- ``authenticate`` (MX only): Authentication-Results fields naming this server removed (RFC
  8601 §5), then SPF, DKIM and DMARC (`delivery.authentication`), ours written from their
  results and iprev's (looked up at connect, `delivery.origin`); a DMARC failure refused or
  sent to Junk as the domain asks (`policy.trust`); none of it for a client in `[inbound]
  trusted_networks`;
- ``seal`` (MX, with `[inbound] arc_seal`): an ARC Set of the next instance (RFC 8617 §5.1,
  `mailauth.arc.seal`) added above our Authentication-Results: its AAR repeats our results
  (arc= among them), signed with the RSA key of the first local recipient's domain (the keys
  `delivery.signing` picks); no key, or a chain that has ended, no set. postkeep forwards no
  mail itself (the MX relays for nobody): the set is for whoever later passes the stored copy
  on (a mailbox's own forwarding, a list manager reading it), which then sees our verdict;
- ``links`` (MX, with `[[inbound.uribl]]` lists): the domains the text links to
  (`mailauth.uridomains`) asked of the domain lists; listed ones refuse the message
  (`policy.trust`);
- ``scan`` (with `[filters]` for the role: ``inbound`` on the MX, ``outbound`` on
  submission): forged ``X-Virus-Scanned`` / ``X-Spam-Status`` fields naming this host
  removed, then the content filters run in order (`filters.base.FilterRunner`: clamd's
  antivirus, milters, each within its timeout and fail mode); a reject is ``554 5.7.1``
  (or a milter's own reply), a scanner that failed closed ``451 4.7.1`` (`policy.content`),
  and an accepted message gets their fields (`filters.headers`), their header and body
  changes, and their recipient changes, an added recipient decided as its RCPT TO would be
  (`policy.relay`); a filter may file it into a mailbox (the junk filter: Junk, as DMARC's
  quarantine does). On submission it runs after ``sender``. A message the filters hold (a
  quarantine; on submission a reject too: `delivery.quarantine.held_by`) goes on, with their
  fields and changes, to ``store``, which puts it in the quarantine instead
  (`delivery.quarantine.hold`); ``quota`` and ``reports`` pass it by;
- ``sender`` (submission only): the From: header is owned by the login (RFC 6409 §8.1) and no
  MIME part is over the size limit (`policy.submission`);
- ``quota`` (submission only): the message counted against the login's and its domain's
  sending quotas, or refused with ``451 4.7.1`` (`policy.sending`);
- ``reports`` (MX, with `[inbound] dmarc_report_address`): DMARC aggregate reports mailed to
  that address read into the store (`mailauth.dmarc.feedback`, in a thread); the address is
  then dropped from the recipients unless it reaches an account, whose copy is delivered as
  any other. A report that cannot be read is logged, never refused, and a message with none
  readable goes to the postmaster when the address reaches no account;
- ``trace``: Return-Path and Received (`delivery.trace`, RFC 5321 §4.4); Return-Path only on
  the locally delivered copy (the queued copy is relayed, and its last MTA adds one);
- ``sign`` (submission only): DKIM-Signature fields with the keys of the From: domain
  (`delivery.signing`, RFC 6376 §5), on the local and the queued copy alike;
- ``store``: local recipients' copies in one durable commit (`Store.deliver`), remote
  recipients (authenticated submission) into the outbound queue; a held message into the
  quarantine (the local recipients' on the MX, the sender's on submission). With the junk
  filter on, a sent submission's recipients are then recorded as the login's correspondents.

The ``authenticate`` stage also hands each DMARC evaluation whose policy asks for aggregate
reports to `on_dmarc` (`queue.dmarcrpt.DmarcReports.record`: a count in memory).

Block lists are asked at connect and refuse at MAIL FROM (`delivery.origin`, the SMTP
driver). Later checks join here, as stages of their own in this list, before ``trace``.

A message's text is bytes, or a `SpooledText` (past `smtp.spool_threshold` it arrived into an
encrypted spool): stages read it as bytes-like (`len`, slices, `find`...; a spooled one is
decrypted a block at a time), the header checks only its first octets, the MIME part check
(a parse of the whole message) runs in a thread for a spooled one, and the store writes its
blob from the spool.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from postkeep import log
from postkeep.addresses import address_key
from postkeep.config import FiltersConfig, QuarantineConfig, SendingConfig
from postkeep.delivery.authentication import judge
from postkeep.delivery.directory import StoreDirectory
from postkeep.delivery.origin import ClientChecks, InboundChecks
from postkeep.delivery.quarantine import HoldPolicy, held_by, hold
from postkeep.delivery.signing import DkimKeyring, sign_message
from postkeep.delivery.trace import TlsInfo, protocol_name, received_header, return_path_header
from postkeep.errors import NotFound, Reply
from postkeep.filters import headers as filter_fields
from postkeep.filters.base import Direction, FilterRunner, RecipientEdit, ScanContext, ScanOutcome
from postkeep.mailauth import authres
from postkeep.mailauth.arc.seal import ArcSealer
from postkeep.mailauth.arc.verify import ArcResult
from postkeep.mailauth.dkim.canon import BodyHasher, split_message
from postkeep.mailauth.dmarc.aggregate import ReportRow
from postkeep.mailauth.dmarc.feedback import (
    MAX_MESSAGE,
    FeedbackError,
    Report,
    documents,
    parse,
)
from postkeep.mailauth.dnsbl import check_domains
from postkeep.mailauth.uridomains import body_domains
from postkeep.policy import limits
from postkeep.policy.content import R_NO_RECIPIENTS, content_verdict
from postkeep.policy.relay import check_rcpt
from postkeep.policy.sending import account_limits, domain_limits, over_limit
from postkeep.policy.submission import check_from_header, check_part_sizes, from_domain
from postkeep.policy.trust import links_listed
from postkeep.policy.verdict import Verdict
from postkeep.smtp.wire.parser import CommandError, parse_path
from postkeep.store.api import (
    Account,
    DmarcFeedback,
    DsnRecipient,
    Envelope,
    FilterReport,
    LocalDelivery,
    Store,
)
from postkeep.store.spool import MessageData, SpooledText

logger = log.get("smtp")  # the SMTP driver's log: operators' filters match these lines there

#: The keyword of mail filed as junk (RFC 5788's registry: Thunderbird and Apple Mail read it).
JUNK_KEYWORD = "$Junk"

R_LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")


@dataclass(frozen=True, slots=True)
class Client:
    """What the session knows of who sent the message."""

    ip: str
    helo: str  # "" when the client sent none (cannot happen after MAIL; kept total)
    esmtp: bool
    tls: TlsInfo | None
    login: Account | None = None  # authenticated submission
    owned: frozenset[str] = frozenset()  # addresses the login may send as
    checks: ClientChecks | None = None  # the MX's lookups about the client (`delivery.origin`)
    mechanism: str = ""  # the SASL mechanism `login` authenticated with


@dataclass(slots=True, eq=False)
class Inbound:
    """One message on its way in. `recipients` pairs each accepted recipient with the ids of
    the local accounts it resolved to (none: a remote recipient, submission only). Stages may
    add `trace`, the header fields put in front of `data` when it is stored."""

    queue_id: str
    received_at: float
    envelope: Envelope
    recipients: Sequence[tuple[DsnRecipient, tuple[int, ...]]]
    data: MessageData
    client: Client
    trace: bytes = b""  # our Received field
    return_path: bytes = b""  # for local delivery only (RFC 5321 §4.4)
    signature: bytes = b""  # DKIM-Signature fields (submission), above `trace`
    auth_results: bytes = b""  # our Authentication-Results field (MX), above `trace`
    mailbox: str = "INBOX"  # where local copies go (Junk: a quarantined message)
    client_name: str | None = None  # the client's confirmed reverse DNS name (iprev)
    auth_summary: str = ""  # the checks' results in short, for the log line
    auth_resinfo: tuple[str, ...] = ()  # the results in `auth_results`, for an ARC seal
    arc: ArcResult | None = None  # the ARC chain's validation (MX, `[inbound] arc`)
    arc_set: bytes = b""  # our ARC Set (`seal`), above `auth_results`
    scan_results: bytes = b""  # the content filters' fields (`scan`), above `trace`
    scan_summary: str = ""  # their results in short, for the log line
    held: ScanOutcome | None = None  # the filters held it: `store` puts it in the quarantine
    report: FilterReport | None = None  # each filter's result, stored with the message
    keywords: tuple[str, ...] = ()  # of the local copies: $Junk for mail filed as junk


@dataclass(frozen=True, slots=True)
class InboundLimits:
    max_header_size: int
    max_received_headers: int
    max_part_size: int  # submission only


@dataclass(frozen=True, slots=True)
class Outcome:
    """`stage` names the stage that refused the message, "" when it was stored."""

    verdict: Verdict
    stage: str = ""


Stage = Callable[[Inbound], Awaitable[Verdict | None]]


class InboundPipeline:
    """The stages for one role ("mx" or "submission"), in the order they run."""

    def __init__(
        self,
        store: Store,
        directory: StoreDirectory,
        hostname: str,
        limits: InboundLimits,
        *,
        submission: bool,
        on_queued: Callable[[], None] | None = None,
        sending: SendingConfig | None = None,
        keyring: DkimKeyring | None = None,
        checks: InboundChecks | None = None,
        clock: Callable[[], float] = time.time,
        on_dmarc: Callable[[str, ReportRow], None] | None = None,
        report_address: str = "",
        filters: FilterRunner | None = None,
        correspondents: bool = False,
        hold: HoldPolicy | None = None,
    ) -> None:
        self.store = store
        self.filters = filters
        self.correspondents = correspondents
        self.hold = hold or HoldPolicy.of(QuarantineConfig(), FiltersConfig())
        self.on_dmarc = on_dmarc
        self.report_address = address_key(report_address) if report_address else ""
        self.checks = checks
        self.on_queued = on_queued
        self.sending = sending
        self.keyring = keyring
        self.clock = clock
        self.directory = directory
        self.hostname = hostname
        self.limits = limits
        self.stages: tuple[tuple[str, Stage], ...] = (
            ("limits", self.check_limits),
            *((("authenticate", self.authenticate),) if not submission else ()),
            *((("seal", self.seal_arc),) if not submission and keyring and checks
              and checks.cfg.arc and checks.cfg.arc_seal else ()),
            *((("links", self.check_links),) if not submission and checks and
              checks.domain_lists else ()),
            *((("scan", self.scan_content),) if not submission and filters else ()),
            *((("sender", self.check_sender),) if submission else ()),
            *((("scan", self.scan_content),) if submission and filters else ()),
            *((("quota", self.check_quota),) if submission and sending else ()),
            *((("reports", self.take_reports),) if not submission and report_address else ()),
            ("trace", self.add_trace),
            *((("sign", self.sign_dkim),) if submission and keyring else ()),
            ("store", self.store_message),
        )

    async def run(self, message: Inbound) -> Outcome:
        for name, stage in self.stages:
            verdict = await stage(message)
            if verdict is not None:
                return Outcome(verdict, name)
        return Outcome(Verdict(Reply(250, "2.0.0", f"Ok: queued as {message.queue_id}")))

    # -- the stages, in pipeline order -------------------------------------------------------

    def _head(self, message: Inbound) -> bytes:
        """The first octets of the text: the header section, if it is within the limit (its
        empty line included), else more than the limit allows."""
        return message.data[: self.limits.max_header_size + 3]

    async def check_limits(self, message: Inbound) -> Verdict | None:
        problem = limits.check_headers(
            self._head(message), self.limits.max_header_size, self.limits.max_received_headers
        )
        return None if problem is None else Verdict(problem, problem.text)

    async def authenticate(self, message: Inbound) -> Verdict | None:
        """MX: Authentication-Results naming this server removed from the message (RFC 8601
        §5: forged, they never reach the user), then ours written from the checks' results
        (none for a trusted client)."""
        block, _ = split_message(self._head(message))  # within the limit: `limits` ran
        kept, removed = authres.strip_own(block, self.hostname)
        if removed:
            message.data = _with_head(message.data, kept, len(block))
            logger.info("authentication-results removed qid=%s ip=%s count=%d reason=%s",
                        message.queue_id, message.client.ip, removed,
                        log.quote("names this server's authserv-id"))
        checks = message.client.checks
        if checks is None or checks.trusted:
            return None
        assert self.checks is not None  # a ClientChecks comes from them
        judgement = await judge(
            self.checks, checks, self.hostname, helo=message.client.helo,
            mail_from=message.envelope.mail_from, header_block=block,  # as it came
            body=_chunks(message.data, len(kept) + 2), clock=self.clock)
        message.auth_results = judgement.auth_results
        message.client_name = judgement.client_name
        message.auth_summary = judgement.summary
        message.auth_resinfo = judgement.resinfo
        message.arc = judgement.arc
        if judgement.override:
            logger.info("dmarc policy overridden qid=%s ip=%s reason=%s", message.queue_id,
                        message.client.ip, log.quote(judgement.override))
        if judgement.report_row is not None and self.on_dmarc is not None:
            self.on_dmarc(*judgement.report_row)
        if judgement.mailbox is not None:
            message.mailbox = judgement.mailbox
            message.keywords = (JUNK_KEYWORD,)
            logger.info("quarantined qid=%s ip=%s mailbox=%s reason=%s", message.queue_id,
                        message.client.ip, judgement.mailbox, log.quote(judgement.reason))
        return judgement.verdict

    async def seal_arc(self, message: Inbound) -> Verdict | None:
        """MX: our ARC Set on the stored copy (RFC 8617 §5.1), for a checked client."""
        assert self.keyring is not None
        if message.arc is None:  # a trusted client: no results of ours to seal
            return None
        local = [rcpt.address for rcpt, ids in message.recipients if ids]
        domain = local[0].rpartition("@")[2].lower() if local else ""
        signers = await self.keyring.signers(domain) if domain else []
        signer = next((s for s in signers if s.algorithm == "rsa-sha256"), None)
        if signer is None:
            return None
        block, _ = split_message(self._head(message))
        start = len(block) + 2
        if isinstance(message.data, SpooledText):
            digest = await asyncio.to_thread(_relaxed_body_hash, message.data, start)
        else:
            digest = _relaxed_body_hash(message.data, start)
        sealer = ArcSealer(signer.domain, signer.selector, signer.key, self.hostname,
                           clock=self.clock)
        message.arc_set = sealer.seal(block, digest, message.auth_resinfo, message.arc.result)
        return None

    async def check_links(self, message: Inbound) -> Verdict | None:
        """MX: the domains the text links to, asked of `[[inbound.uribl]]` (RFC 5782 §3)."""
        checks = message.client.checks
        if checks is None or checks.trusted:
            return None
        assert self.checks is not None
        if isinstance(message.data, SpooledText):  # a parse of the whole text: off the loop
            domains = await asyncio.to_thread(body_domains, message.data)
        else:
            domains = body_domains(message.data)
        if not domains:
            return None
        try:
            async with asyncio.timeout(self.checks.cfg.check_timeout):
                listings = await check_domains(self.checks.resolver, domains,
                                               self.checks.domain_lists)
        except TimeoutError:
            logger.warning("uribl: lookups timed out qid=%s ip=%s", message.queue_id,
                           message.client.ip)
            return None
        for failed in (x for x in listings if x.error):
            logger.warning("uribl: lookup failed qid=%s domain=%s zone=%s reason=%s",
                           message.queue_id, failed.subject, failed.zone, log.quote(failed.error))
        return links_listed(listings, self.checks.cfg.uribl_threshold)

    async def scan_content(self, message: Inbound) -> Verdict | None:
        """The content filters (`filters.base`), after forged reports of theirs that name
        this host are removed (`filters.headers.strip_own`)."""
        assert self.filters is not None
        block, _ = split_message(self._head(message))  # within the limit: `limits` ran
        kept, removed = filter_fields.strip_own(block, self.hostname)
        if removed:
            message.data = _with_head(message.data, kept, len(block))
            logger.info("filter fields removed qid=%s ip=%s count=%d reason=%s",
                        message.queue_id, message.client.ip, removed,
                        log.quote("names this server"))
        login = message.client.login
        accounts = tuple(dict.fromkeys(i for _, ids in message.recipients for i in ids))
        context = ScanContext(self.filters.direction, message.queue_id, message.client.ip,
                              message.envelope, message.auth_summary,
                              login.address if login else "", accounts,
                              client_name=message.client_name or "",
                              mechanism=message.client.mechanism if login else "")
        outcome = await self.filters.run(message.data, context)
        message.scan_summary = outcome.summary()
        message.report = outcome.report(self.filters.direction, message.queue_id, self.clock())
        submission = self.filters.direction is Direction.OUTBOUND
        if outcome.data is not None:  # header fields or the body changed (a milter's)
            message.data = outcome.data
        if held_by(outcome, submission=submission):
            message.held = outcome
            message.scan_results = filter_fields.render(outcome, self.hostname)
            return None
        verdict = content_verdict(outcome, message.queue_id, submission=submission)
        if verdict is not None:
            return verdict
        if outcome.recipients:
            verdict = await self._edit_recipients(message, outcome.recipients)
        if verdict is None:
            message.scan_results = filter_fields.render(outcome, self.hostname)
            if outcome.mailbox and not submission:
                message.mailbox = outcome.mailbox
                message.keywords = (JUNK_KEYWORD,)
                logger.info("filed qid=%s ip=%s mailbox=%s reason=%s", message.queue_id,
                            message.client.ip, outcome.mailbox,
                            log.quote(f"content filter: score {outcome.score:g}"))
        return verdict

    async def _edit_recipients(self, message: Inbound,
                               edits: Sequence[RecipientEdit]) -> Verdict | None:
        """The filters' recipient changes, in order. An added recipient is decided as its
        RCPT TO would have been (`policy.relay.check_rcpt`: on the MX only local ones, on
        submission remote ones too); one refused is left out and logged. Removing every
        recipient refuses the message: no copy would be kept, and nobody told."""
        recipients = list(message.recipients)
        submission = self.filters is not None and self.filters.direction is Direction.OUTBOUND
        for edit in edits:
            key = address_key(edit.address)
            present = [r for r in recipients if address_key(r[0].address) == key]
            if not edit.add:
                recipients = [r for r in recipients if r not in present]
                logger.info("recipient removed qid=%s ip=%s filter=%s rcpt=%s",
                            message.queue_id, message.client.ip, edit.filter,
                            log.quote(edit.address))
                continue
            if present:
                continue
            try:
                path = parse_path(f"<{edit.address}>", message.envelope.smtputf8,
                                  allow_null=False)
            except CommandError as e:
                decision_reason = e.reply.text
            else:
                decision = await check_rcpt(self.directory, path, len(message.data),
                                            authenticated=submission)
                if decision.verdict.accepted:
                    recipients.append((DsnRecipient(path.address),
                                       tuple(a.id for a in decision.accounts)))
                    logger.info("recipient added qid=%s ip=%s filter=%s rcpt=%s",
                                message.queue_id, message.client.ip, edit.filter,
                                log.quote(path.address))
                    continue
                decision_reason = decision.verdict.reason
            logger.warning("recipient refused qid=%s ip=%s filter=%s rcpt=%s reason=%s",
                           message.queue_id, message.client.ip, edit.filter,
                           log.quote(edit.address), log.quote(decision_reason))
        if not recipients:
            return Verdict(R_NO_RECIPIENTS, f"{edits[-1].filter}: removed every recipient "
                                            f"qid={message.queue_id}")
        message.recipients = recipients
        message.envelope.recipients = [rcpt for rcpt, _ in recipients]
        return None

    async def check_sender(self, message: Inbound) -> Verdict | None:
        login = message.client.login
        if login is None:  # cannot happen: submission requires AUTH before MAIL
            return None
        # after `limits`: the header section is within what _head reads
        problem = check_from_header(self._head(message), message.client.owned, login.address)
        if problem is None:
            if isinstance(message.data, SpooledText):  # read from disk, decrypted: off the loop
                problem = await asyncio.to_thread(
                    check_part_sizes, message.data, self.limits.max_part_size
                )
            else:
                problem = check_part_sizes(message.data, self.limits.max_part_size)
        return None if problem is None else Verdict(problem, problem.text)

    async def check_quota(self, message: Inbound) -> Verdict | None:
        """Count the message against its login's and domain's sending quotas (`policy.sending`);
        refused, it counts for nothing."""
        login = message.client.login
        if login is None or self.sending is None or message.held is not None:
            return None  # a held message is not sent: it counts for nothing
        account, domain = f"a:{login.id}", f"d:{login.address.rpartition('@')[2].lower()}"
        scopes = [(account, account_limits(self.sending)), (domain, domain_limits(self.sending))]
        # the scopes' exceptions are read in the charging transaction: one store round trip
        hit = await self.store.charge_sending(scopes, len(message.recipients), self.clock())
        if hit is None:
            return None
        scope, limit, applied = hit
        return over_limit(scope, limit, applied, login.address)

    async def take_reports(self, message: Inbound) -> Verdict | None:
        """MX: the DMARC aggregate reports of a message to the report address, into the
        store (RFC 7489 §7.2, RFC 9990 §4); the address kept as a recipient only where it
        reaches an account."""
        ours = [rcpt for rcpt, _ in message.recipients
                if address_key(rcpt.address) == self.report_address]
        if not ours or message.held is not None:  # held: read by nobody
            return None
        try:  # a parse of the whole text, a spooled one read from disk: off the loop
            reports, problems = await asyncio.to_thread(_read_reports, message.data)
        except Exception as e:  # whatever a broken message makes the MIME parser do
            reports, problems = [], [f"{type(e).__name__}: {e}"]
        for problem in problems:
            logger.info("dmarc report unreadable qid=%s ip=%s reason=%s", message.queue_id,
                        message.client.ip, log.quote(problem))
        # an address without an account: to the postmaster what could not be read, so a
        # parse failure never loses a message
        fallback: tuple[int, ...] = ()
        if problems and not reports:
            domain = self.report_address.rpartition("@")[2]
            fallback = tuple(a.id for a in await self.directory.postmaster(domain))
        message.recipients = [(rcpt, ids or (fallback if rcpt in ours else ()))
                              for rcpt, ids in message.recipients]
        message.recipients = [(rcpt, ids) for rcpt, ids in message.recipients
                              if ids or rcpt not in ours]
        for report in reports:
            try:
                kept = await self.store.add_dmarc_feedback(DmarcFeedback(
                    report.org_name, report.email, report.report_id, report.domain,
                    report.begin, report.end, report.passed, report.failed,
                    json.dumps(report.records_json(), separators=(",", ":")),
                    message.received_at))
            except Exception:
                logger.exception("dmarc report not stored qid=%s", message.queue_id)
                continue
            logger.info("dmarc report %s qid=%s org=%s domain=%s id=%s records=%d",
                        "received" if kept else "duplicate", message.queue_id,
                        log.quote(report.org_name), report.domain, log.quote(report.report_id),
                        len(report.records))
        return None

    async def add_trace(self, message: Inbound) -> Verdict | None:
        client, envelope = message.client, message.envelope
        rcpts = envelope.recipients
        message.return_path = return_path_header(envelope.mail_from)
        message.trace = received_header(
            helo=client.helo or "unknown",
            client_ip=client.ip,
            client_name=message.client_name,
            hostname=self.hostname,
            protocol=protocol_name(
                client.esmtp, client.tls is not None, client.login is not None,
                envelope.smtputf8,
            ),
            queue_id=message.queue_id,
            tls=client.tls,
            recipient=rcpts[0].address if len(rcpts) == 1 else None,
            when=message.received_at,
        )
        return None

    async def sign_dkim(self, message: Inbound) -> Verdict | None:
        """DKIM-sign with the keys of the From: domain (`delivery.signing`); none: unsigned."""
        assert self.keyring is not None
        head = self._head(message)
        domain = from_domain(head)
        signers = await self.keyring.signers(domain) if domain else []
        if signers:
            header_block, _ = split_message(head)
            message.signature = await sign_message(message.data, header_block, signers)
        return None

    async def store_message(self, message: Inbound) -> Verdict | None:
        account_ids = list(dict.fromkeys(i for _, ids in message.recipients for i in ids))
        remote = [rcpt for rcpt, ids in message.recipients if not ids]
        head = (message.signature + message.arc_set + message.auth_results
                + message.scan_results + message.trace)
        if message.held is not None:
            return await self._hold(message, account_ids, head)
        try:
            if account_ids:  # the final delivery: Return-Path first (RFC 5321 §4.4)
                data = _prefixed(message.data, message.return_path + head)
                await self._deliver_local(message, account_ids, data)
                self.directory.note_delivery(account_ids, len(data))
            if remote:  # relayed: no Return-Path (the last MTA adds it)
                data = _prefixed(message.data, head)
                await self.store.enqueue_outbound(message.envelope, remote, data)
                if self.on_queued is not None:
                    self.on_queued()
        except Exception:
            logger.exception("delivery failed qid=%s ip=%s", message.queue_id, message.client.ip)
            return Verdict(R_LOCAL_ERROR, f"delivery failed qid={message.queue_id}")
        if self.correspondents and message.client.login is not None:
            await self._note_correspondents(message, message.client.login)
        return None

    async def _note_correspondents(self, message: Inbound, login: Account) -> None:
        """The junk filter's correspondents: whom the login wrote to (`Store.
        add_correspondents`, not durable); a failure is logged, the message is sent."""
        try:
            await self.store.add_correspondents(
                login.id, [rcpt.address for rcpt, _ in message.recipients], self.clock())
        except Exception:
            logger.exception("correspondents not recorded qid=%s", message.queue_id)

    async def _hold(self, message: Inbound, account_ids: list[int],
                    head: bytes) -> Verdict | None:
        """The held message into the quarantine (`delivery.quarantine.hold`): the local
        recipients' copies (Return-Path first) on the MX, the form it would be sent in on
        submission."""
        assert message.held is not None
        login = message.client.login
        prefix = head if login is not None else message.return_path + head
        data = _prefixed(message.data, prefix)
        try:
            verdict = await hold(self.store, self.hold, message.held, message.envelope, data,
                                 ip=message.client.ip, local=account_ids, login=login,
                                 clock=self.clock, report=message.report)
        except Exception:
            logger.exception("quarantine failed qid=%s ip=%s", message.queue_id,
                             message.client.ip)
            return Verdict(R_LOCAL_ERROR, f"quarantine failed qid={message.queue_id}")
        self.directory.note_delivery(account_ids if login is None else [login.id], len(data))
        return verdict

    async def _deliver_local(self, message: Inbound, account_ids: list[int],
                             data: MessageData) -> None:
        """Into `message.mailbox`; a recipient without that mailbox (a Junk deleted) gets it
        in INBOX instead, Authentication-Results telling why it was suspect."""
        delivery = LocalDelivery(message.envelope, account_ids, data,
                                 mailbox_name=message.mailbox, keywords=message.keywords,
                                 filters=message.report)
        try:
            await self.store.deliver(delivery)
        except NotFound:
            if message.mailbox == "INBOX":
                raise
            logger.warning("no mailbox qid=%s mailbox=%s: delivered to INBOX",
                           message.queue_id, message.mailbox)
            await self.store.deliver(LocalDelivery(message.envelope, account_ids, data,
                                                   keywords=message.keywords,
                                                   filters=message.report))


def _read_reports(data: MessageData) -> tuple[list[Report], list[str]]:
    """The reports `data` carries, and why those that could not be read were not."""
    if len(data) > MAX_MESSAGE:  # before it is read into memory
        return [], [f"message over {MAX_MESSAGE} octets"]
    try:
        xmls = documents(bytes(data[0:len(data)]))
    except FeedbackError as e:
        return [], [str(e)]
    reports, problems = [], []
    for xml in xmls:
        try:
            reports.append(parse(xml))
        except FeedbackError as e:
            problems.append(str(e))
    return reports, problems


def _chunks(data: MessageData, start: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`data` from `start` on, `size` octets at a time (a spooled text read as it goes)."""
    for offset in range(start, len(data), size):
        yield bytes(data[offset : offset + size])


def _relaxed_body_hash(data: MessageData, start: int) -> bytes:
    hasher = BodyHasher("relaxed")
    for chunk in _chunks(data, start):
        hasher.update(chunk)
    return hasher.digest()


def _with_head(data: MessageData, head: bytes, old: int) -> MessageData:
    """`data` with its first `old` octets replaced by `head`."""
    return data.with_head(head, old) if isinstance(data, SpooledText) else head + data[old:]


def _prefixed(data: MessageData, prefix: bytes) -> MessageData:
    return data.with_prefix(prefix) if isinstance(data, SpooledText) else prefix + data
