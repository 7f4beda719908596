"""The inbound pipelines of the two roles, built in one place, and in-process submission.

`make_pipeline` builds the `InboundPipeline` of a role as the SMTP listeners run it (MX:
authentication checks, inbound filters; submission: sender ownership, part sizes, outbound
filters, sending quotas, DKIM signing; both: trace fields, local delivery and the outbound
queue: `delivery.inbound`).

`LocalSubmission` hands a message composed in the webmail (`postkeep.web.mail`) to the
submission pipeline in process, as the submission listener hands a message after its
end-of-data (RFC 6409): first the checks SMTP makes before the text (the message size as
SIZE would, RFC 1870; the envelope sender owned by the login, RFC 6409 §8.1; each recipient
decided as its RCPT TO, `policy.relay.check_rcpt`, at most `submission.max_recipients`), then
the very pipeline the submission listener of the process runs (the worker passes it, or one
`make_pipeline` made when no submission listener is configured): whatever it refuses over
SMTP (a forged From:, a sending quota, a filter's reject, which holds the message) it refuses
here, with the same reply, and nothing is delivered or queued. It logs one line per message
as the SMTP driver does: ``message qid=... ip=... user=... via=web ... result=...`` when it was
taken, ``reject ip=... cmd=WEB code=... reason=... user=...`` when not.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence

from postkeep import log
from postkeep.config import Config
from postkeep.delivery.directory import StoreDirectory
from postkeep.delivery.inbound import Client, Inbound, InboundLimits, InboundPipeline
from postkeep.delivery.origin import InboundChecks
from postkeep.delivery.quarantine import HoldPolicy
from postkeep.delivery.signing import DkimKeyring
from postkeep.delivery.trace import TlsInfo
from postkeep.errors import Reply
from postkeep.filters.base import Direction
from postkeep.filters.setup import runner as filter_runner
from postkeep.mailauth.dmarc.aggregate import ReportRow
from postkeep.policy.relay import check_rcpt, check_sender
from postkeep.policy.submission import Submitted, check_envelope_sender, owned_addresses
from postkeep.policy.verdict import Verdict, reject
from postkeep.smtp.wire.parser import CommandError, parse_path
from postkeep.store.api import Account, DsnRecipient, Envelope, Store

logger = log.get("smtp")  # beside the SMTP driver's lines: operators' filters match them there

HELO = "webmail"  # the Received field's "from" name of a message composed on the web


def new_queue_id() -> str:
    """Sortable, unique enough queue id: milliseconds then 16 random bits, in hex."""
    return f"{int(time.time() * 1000):011X}{secrets.randbits(16):04X}"


def make_pipeline(
    cfg: Config,
    store: Store,
    directory: StoreDirectory,
    *,
    submission: bool,
    on_queued: Callable[[], None] | None = None,
    checks: InboundChecks | None = None,
    on_dmarc: Callable[[str, ReportRow], None] | None = None,
) -> InboundPipeline:
    """The pipeline of the MX (`submission` False) or of submission, from `cfg`."""
    sub = cfg.submission
    return InboundPipeline(
        store,
        directory,
        cfg.server.hostname,
        InboundLimits(
            max_header_size=sub.max_header_size if submission else cfg.smtp.max_header_size,
            max_received_headers=cfg.smtp.max_received_headers,
            max_part_size=sub.max_part_size,
        ),
        submission=submission,
        on_queued=on_queued,
        sending=cfg.sending,
        keyring=(DkimKeyring(store, cfg.dkim)
                 if submission or cfg.inbound.arc_seal else None),
        checks=checks,
        on_dmarc=on_dmarc,
        report_address="" if submission else cfg.inbound.dmarc_report_address,
        filters=filter_runner(
            cfg, Direction.OUTBOUND if submission else Direction.INBOUND, store),
        correspondents=submission and "junk" in cfg.filters.inbound,
        hold=HoldPolicy.of(cfg.quarantine, cfg.filters),
    )


class LocalSubmission:
    """The webmail's way into the submission pipeline (see the module docstring)."""

    def __init__(self, cfg: Config, store: Store, pipeline: InboundPipeline) -> None:
        self.store = store
        self.pipeline = pipeline
        self.directory = pipeline.directory
        self.max_size = cfg.submission.max_message_size
        self.max_recipients = cfg.submission.max_recipients

    async def submit(
        self,
        login: Account,
        *,
        ip: str,
        tls: tuple[str, str, int] | None,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        smtputf8: bool,
        message_id: str,
    ) -> Submitted:
        """Submit `data` from `mail_from` to `recipients` as `login`, from the web client at
        `ip` over `tls` (version, cipher, bits). Refused: nothing is delivered or queued."""
        queue_id = new_queue_id()
        verdict, accounts = await self._envelope(login, mail_from, recipients, len(data),
                                                 smtputf8)
        if verdict is not None:
            return self._refused(login, ip, queue_id, verdict, message_id)
        now = time.time()
        rcpts = [(DsnRecipient(address), ids) for address, ids in accounts]
        message = Inbound(
            queue_id=queue_id,
            received_at=now,
            envelope=Envelope(queue_id=queue_id, mail_from=mail_from,
                              recipients=[r for r, _ in rcpts], client_ip=ip, helo=HELO,
                              received_at=now, body="8BITMIME" if smtputf8 else None,
                              smtputf8=smtputf8),
            recipients=rcpts,
            data=data,
            client=Client(ip, HELO, True, TlsInfo(*tls) if tls else None, login,
                          await self._owned(login), mechanism="web"),
        )
        outcome = await self.pipeline.run(message)
        if not outcome.verdict.accepted:
            return self._refused(login, ip, queue_id, outcome.verdict, message_id,
                                 held=message.held is not None)
        reply = outcome.verdict.reply
        logger.info(
            "message qid=%s ip=%s tls=%s user=%s via=web from=<%s> to=%s size=%d msgid=%s "
            "result=%s%s", queue_id, ip, tls[0] if tls else "no", log.quote(login.address),
            mail_from, ",".join(f"<{r.address}>" for r, _ in message.recipients), len(data),
            log.quote(message_id), log.quote(f"{reply.code} {reply.enhanced}"),
            f" scan={log.quote(message.scan_summary)}" if message.scan_summary else "")
        return Submitted(outcome.verdict, queue_id, held=message.held is not None)

    async def _owned(self, login: Account) -> frozenset[str]:
        return owned_addresses(login, await self.store.list_aliases(),
                               await self.store.list_send_as(login.address))

    async def _envelope(
        self, login: Account, mail_from: str, recipients: Sequence[str], size: int,
        smtputf8: bool,
    ) -> tuple[Verdict | None, list[tuple[str, tuple[int, ...]]]]:
        """What MAIL FROM and RCPT TO would have decided: a refusal, or each recipient with
        the ids of the local accounts it reaches (none: remote)."""
        if size > self.max_size:
            return reject(552, "5.3.4", f"Message size exceeds the limit of {self.max_size} "
                          "bytes"), []
        if not recipients:
            return reject(554, "5.5.1", "No valid recipients"), []
        if len(recipients) > self.max_recipients:
            return reject(452, "4.5.3", f"Too many recipients (at most "
                          f"{self.max_recipients})"), []
        invalid = check_sender(mail_from)
        if invalid is not None:
            return invalid, []
        owned = await self._owned(login)
        refused = check_envelope_sender(mail_from, owned, login.address)
        if refused is not None:
            return Verdict(refused, refused.text), []
        accepted: list[tuple[str, tuple[int, ...]]] = []
        for address in dict.fromkeys(recipients):
            try:
                path = parse_path(f"<{address}>", smtputf8, allow_null=False)
            except CommandError as e:
                return Verdict(e.reply, f"recipient {address}: {e.reply.text}"), []
            decision = await check_rcpt(self.directory, path, size, authenticated=True)
            if not decision.verdict.accepted:
                reply = decision.verdict.reply
                return Verdict(Reply(reply.code, reply.enhanced, f"{reply.text}: <{address}>"),
                               decision.verdict.reason), []
            accepted.append((path.address, tuple(a.id for a in decision.accounts)))
        return None, accepted

    def _refused(self, login: Account, ip: str, queue_id: str, verdict: Verdict,
                 message_id: str, *, held: bool = False) -> Submitted:
        reply = verdict.reply
        logger.info("reject ip=%s cmd=WEB code=%d %s reason=%s user=%s qid=%s msgid=%s",
                    ip, reply.code, reply.enhanced, log.quote(verdict.reason or reply.text),
                    log.quote(login.address), queue_id, log.quote(message_id))
        return Submitted(verdict, queue_id, held=held)
