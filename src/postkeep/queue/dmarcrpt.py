"""DMARC aggregate reports (RFC 7489 §7.1-7.2, RFC 9990) of the MX: its DMARC evaluations
counted in the store, and one report a day per policy domain that asks for them.

- **Recording** (RFC 9990 §3): `DmarcReports.record` (the inbound pipeline's ``authenticate``
  stage, for each evaluation whose policy record has ``rua=``: `postkeep.mailauth.dmarc.
  aggregate.row_for`) adds to a count in memory: no I/O on the message's path. `flush` (from
  `tick`, at most every 5 seconds, and on close) writes the counts in one non-durable
  transaction (`Store.add_dmarc_results`), keyed by policy domain, UTC day and row.
- **Reporting** (RFC 7489 §7.2, RFC 9990 §4): `tick`, called by the queue runner every poll,
  flushes and, from 00:05 UTC on, reports the previous day once (`send_reports`, in a task of
  its own; `postkeep dmarc send` does it by hand). For each policy domain with results not
  yet reported: its record looked up again (``_dmarc.<domain>``, exactly one; the ``rua``
  URIs as published now, with their ``!size`` limits); each destination whose Organizational
  Domain is not the policy domain's verified (RFC 7489 §7.1: a ``v=DMARC1`` TXT record at
  ``<domain>._report._dmarc.<host>``, whose own ``rua`` at that host, if any, replaces it),
  the others dropped; the XML, gzip'd, in the message of
  §7.2.1.1, DKIM-signed with the keys of its From: domain (`[inbound] dmarc_report_from`, or
  the local domain it is under) and queued to the destinations whose size limit it fits
  (`Store.queue_dmarc_report`, which marks the (domain, day) in the same commit, so of all
  processes and nodes exactly one queues it). No record, or no destination left: the day is
  marked with nothing queued. A lookup that fails is tried again at the next tick (results
  are kept a week).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from postkeep import log
from postkeep.config import Config
from postkeep.delivery.signing import DkimKeyring
from postkeep.dns.names import InvalidName
from postkeep.dns.resolver import DnsResolver
from postkeep.dns.results import Answer, TempFail
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all
from postkeep.mailauth.dmarc import OrgDomainMethod, TempError, org_domain, parse_record
from postkeep.mailauth.dmarc.aggregate import (
    DAY,
    ReportRow,
    ReportUri,
    authorizes,
    overriding,
    report_message,
    report_uris,
    report_xml,
    verification_name,
)
from postkeep.mailauth.dmarc.record import DmarcRecord, is_dmarc_text
from postkeep.queue.daily import DailyReports, date
from postkeep.store.api import DmarcResultCount, DsnRecipient, Envelope, QueueNotice, Store

logger = log.get("queue")

Progress = Callable[[str], None]


def reporting(cfg: Config) -> bool:
    """Whether the MX counts and sends aggregate reports: `[inbound] dmarc_reports` with a
    `server.hostname` that names a domain (the reporter, RFC 7489 §7.2.1.1 "Submitter")."""
    host = cfg.server.hostname
    return cfg.inbound.dmarc and cfg.inbound.dmarc_reports and "." in host.strip(".")


class DmarcReports(DailyReports):
    """One per worker process: `record` for the MX, `tick` for the queue runner."""

    kind = "DMARC"

    def __init__(self, cfg: Config, store: Store, resolver: DnsResolver, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.hostname = cfg.server.hostname
        self.org_name = cfg.inbound.dmarc_report_org or self.hostname
        self.sender = cfg.inbound.dmarc_report_from or f"noreply-dmarc@{self.hostname}"
        self.method = OrgDomainMethod(cfg.inbound.dmarc_org_domain)
        self.keyring = DkimKeyring(store, cfg.dkim, clock)
        self.store = store
        self.resolver = resolver

    def record(self, domain: str, row: ReportRow) -> None:
        """One message whose DMARC policy domain is `domain`, reported as `row`."""
        self.count(domain, row.key)

    async def _write(self, counts: list[tuple[str, int, str, int]]) -> None:
        await self.store.add_dmarc_results([DmarcResultCount(*c) for c in counts])

    async def send_reports(self, day: int, progress: Progress | None = None) -> int | None:
        """Queue the reports of the UTC day starting at `day` not queued yet (by any
        process); how many, or None if a lookup failed (try again later). `progress` is
        told one line per policy domain."""
        say = progress or (lambda line: None)
        await self.flush()
        sent, complete = 0, True
        for domain in await self.store.dmarc_report_domains(day):
            try:
                notice = await self._report(domain, day)
            except TempError as e:
                complete = False
                logger.info("queue: DMARC report of %s not sent for now: %s", domain, e)
                say(f"{domain}: not sent for now ({e}); try again later")
                continue
            queued = await self.store.queue_dmarc_report(domain, day, notice, self.clock())
            if not queued:
                say(f"{domain}: reported already")
            elif notice is None:
                say(f"{domain}: nothing sent (no rua destination to send to)")
            else:
                sent += 1
                to = ", ".join(r.address for r in notice.envelope.recipients)
                logger.info("queue: DMARC report for %s of %s queued qid=%s to %s", domain,
                            date(day), notice.envelope.queue_id, to)
                say(f"{domain}: report queued qid={notice.envelope.queue_id} "
                    f"({len(notice.data)} octets) to {to}")
        return sent if complete else None

    async def _policy(self, domain: str) -> tuple[DmarcRecord, tuple[ReportUri, ...]] | None:
        """The domain's record and its rua URIs now; None without one (TempError: failed)."""
        try:
            result = await self.resolver.txt(f"_dmarc.{domain}")
        except InvalidName:
            return None
        if isinstance(result, TempFail):
            raise TempError(f"_dmarc.{domain} TXT: {result.reason}")
        texts = [t for t in result.records if is_dmarc_text(t)] if isinstance(
            result, Answer) else []
        record = parse_record(texts[0]) if len(texts) == 1 else None
        if record is None:
            return None
        return record, report_uris(texts[0].decode("ascii", "replace"))

    async def _destinations(self, domain: str, uri: ReportUri) -> tuple[ReportUri, ...]:
        """Where reports about `domain` for `uri` go (RFC 7489 §7.1): `uri` itself, what an
        external destination's authorizing record names instead, or () (TempError)."""
        host = uri.address.rpartition("@")[2]
        if (await org_domain(self.resolver, host, self.method)
                == await org_domain(self.resolver, domain, self.method)):
            return (uri,)
        name = verification_name(domain, host)
        if name is None:
            return ()
        try:
            result = await self.resolver.txt(name)
        except InvalidName:
            return ()
        if isinstance(result, TempFail):
            raise TempError(f"{name} TXT: {result.reason}")
        if not isinstance(result, Answer) or not authorizes(result.records):
            logger.info("queue: DMARC reports of %s not sent to %s: %s has no v=DMARC1 "
                        "record (RFC 7489 §7.1)", domain, uri.address, name)
            return ()
        return overriding(result.records, host) or (uri,)

    async def _report(self, domain: str, day: int) -> QueueNotice | None:
        found = await self._policy(domain)
        if found is None:
            return None
        record, uris = found
        destinations: list[ReportUri] = []
        for uri in uris:
            destinations += await self._destinations(domain, uri)
        uris = tuple(dict.fromkeys(destinations))
        if not uris:
            return None
        rows = [(ReportRow.from_key(r.detail), r.count)
                for r in await self.store.dmarc_results(domain, day)]
        queue_id = f"D{secrets.token_hex(8).upper()}"
        report_id = f"{date(day)}.{queue_id}@{self.hostname}"
        begin, end = day, day + DAY - 1
        xml = report_xml(org_name=self.org_name, email=self.sender, report_id=report_id,
                         domain=domain, begin=begin, end=end, record=record,
                         discovery="psl" if self.method is OrgDomainMethod.PSL else "treewalk",
                         rows=rows)
        now = self.clock()
        recipients = list(dict.fromkeys(u.address for u in uris))
        data = report_message(xml, submitter=self.hostname, domain=domain,
                              report_id=report_id, begin=begin, end=end, sender=self.sender,
                              recipients=recipients, now=now)
        fitting = [u.address for u in uris if u.limit is None or len(data) <= u.limit]
        for uri in uris:
            if uri.address not in fitting:
                logger.info("queue: DMARC report of %s (%d octets) not sent to %s: over its "
                            "limit of %d", domain, len(data), uri.address, uri.limit)
        fitting = list(dict.fromkeys(fitting))
        if not fitting:
            return None
        if fitting != recipients:
            data = report_message(xml, submitter=self.hostname, domain=domain,
                                  report_id=report_id, begin=begin, end=end,
                                  sender=self.sender, recipients=fitting, now=now)
        signers = await self._signers()
        if signers:
            data = sign_all(data, signers) + data
        envelope = Envelope(queue_id, self.sender, [DsnRecipient(a) for a in fitting],
                            "127.0.0.1", self.hostname, now)
        return QueueNotice(envelope, data)

    async def _signers(self) -> list[DkimSigner]:
        """The signing keys of the From: domain, else of the local domain it is under."""
        domain = self.sender.rpartition("@")[2].lower()
        signers = await self.keyring.signers(domain)
        if signers:
            return signers
        parents = sorted((d.name for d in await self.store.list_domains()
                          if domain.endswith("." + d.name)), key=len, reverse=True)
        return await self.keyring.signers(parents[0]) if parents else []

