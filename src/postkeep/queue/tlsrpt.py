"""SMTP TLS Reporting (RFC 8460) for outbound delivery: the results of each worker's sessions
counted in the store, and one report a day per domain that asks for them.

- **Recording** (§4.3): `TlsReports.record` (from `postkeep.queue.remote`, once per session
  opened to an MX host, and for a host not used because its DANE lookup failed or an MTA-STS
  policy does not name it) adds to a count in memory: no I/O. `flush` (from `tick`, at most
  every 5 seconds) writes the counts in one non-durable transaction
  (`Store.add_tls_results`), keyed by policy domain (the recipient domain), UTC day and
  result. Every domain's results are counted (a
  few rows a day per domain), whether or not it publishes a TLSRPT record: the record is
  looked up only when the day's report is due, so a delivery never waits for that lookup.
- **Reporting** (§3, §4.4, §5.3): `tick`, called by the queue runner every poll, flushes and,
  from 00:05 UTC on, reports the previous day once (`send_reports`, in a task of its own;
  `postkeep queue tls-reports` does it by hand). For each domain with
  results not yet reported: `_smtp._tls.<domain>` TXT (exactly one valid `v=TLSRPTv1`
  record, else none), the report message (`postkeep.queue.tlsrpt_report`) queued to its
  `mailto:` URIs with `Store.queue_tls_report`, which marks the (domain, day) in the same
  commit, so of all the processes and nodes exactly one queues it. No record: the day is
  marked with nothing queued. A TXT lookup that fails is tried again at the next tick (the
  day's results are kept a week). `https:` URIs (§5.4: an HTTP POST) are not posted: logged.
- The report is DKIM-signed (§5.3: SHOULD) with the signing keys of its From: domain (the
  contact's, `postmaster@<first local domain>`), as submitted mail is
  (`postkeep.delivery.signing`); without keys it goes unsigned.
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
from postkeep.mailauth.dkim.sign import sign_all
from postkeep.queue.daily import DailyReports, date
from postkeep.queue.tlsrpt_report import (
    AppliedPolicy,
    TlsResult,
    mailto_address,
    parse_record,
    report,
    report_message,
)
from postkeep.store.api import DsnRecipient, Envelope, QueueNotice, Store, TlsResultCount

logger = log.get("queue")


class TlsReports(DailyReports):
    """One per worker process: `record` for the transport, `tick` for the runner."""

    kind = "TLS"

    def __init__(self, cfg: Config, store: Store, resolver: DnsResolver, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.hostname = cfg.server.hostname
        self.keyring = DkimKeyring(store, cfg.dkim, clock)
        self.store = store
        self.resolver = resolver

    def record(self, domain: str, policy: AppliedPolicy, result_type: str | None,
               mx_host: str, ip: str | None, info: str | None = None) -> None:
        """One session to `mx_host` [`ip`] of `domain` under `policy`: a success (None) or a
        failure of that RFC 8460 result type."""
        self.count(domain, TlsResult(policy, result_type, mx_host.lower().removesuffix("."),
                                     ip, info=info).key)

    async def _write(self, counts: list[tuple[str, int, str, int]]) -> None:
        await self.store.add_tls_results([TlsResultCount(*c) for c in counts])

    async def send_reports(self, day: int) -> int | None:
        """Queue the reports of the UTC day starting at `day` not queued yet (by any process);
        how many, or None if a domain's TXT lookup failed (try again later)."""
        await self.flush()
        sent, complete = 0, True
        for domain in await self.store.tls_report_domains(day):
            uris = await self._rua(domain)
            if uris is None:
                complete = False
                continue
            notice = await self._report(domain, day, uris)
            queued = await self.store.queue_tls_report(domain, day, notice, self.clock())
            if queued and notice is not None:
                sent += 1
                logger.info("queue: TLS report for %s of %s queued qid=%s to %s", domain,
                            date(day), notice.envelope.queue_id,
                            ", ".join(r.address for r in notice.envelope.recipients))
        return sent if complete else None

    async def _rua(self, domain: str) -> tuple[str, ...] | None:
        """The domain's rua URIs (§3), () without a valid record, None if the lookup failed."""
        try:
            result = await self.resolver.txt(f"_smtp._tls.{domain}")
        except InvalidName:
            return ()
        if isinstance(result, TempFail):
            logger.info("queue: TLSRPT record of %s unknown for now: %s", domain, result.reason)
            return None
        texts = [t.decode("utf-8", "replace") for t in result.records
                 if t.startswith(b"v=TLSRPTv1")] if isinstance(result, Answer) else []
        if len(texts) != 1:
            return ()
        try:
            return parse_record(texts[0])
        except ValueError as e:
            logger.info("queue: TLSRPT record of %s ignored: %s", domain, e)
            return ()

    async def _report(self, domain: str, day: int, uris: tuple[str, ...]
                      ) -> QueueNotice | None:
        for uri in uris:
            if mailto_address(uri) is None:
                logger.info("queue: TLS report of %s not sent to %s (only mailto: reports are "
                            "sent)", domain, uri)
        recipients = list(dict.fromkeys(a for u in uris if (a := mailto_address(u))))
        if not recipients:
            return None
        results = [(TlsResult.from_key(r.detail), r.count)
                   for r in await self.store.tls_results(domain, day)]
        local = await self.store.list_domains()
        contact = f"postmaster@{local[0].name if local else self.hostname}"
        queue_id = f"R{secrets.token_hex(8).upper()}"
        report_id = f"{date(day)}.{queue_id}@{self.hostname}"
        body = report(organization=self.hostname, contact=contact, report_id=report_id,
                      domain=domain, day=day, results=results)
        now = self.clock()
        data = report_message(body, submitter=self.hostname, domain=domain, sender=contact,
                              recipients=recipients, now=now)
        signers = await self.keyring.signers(contact.partition("@")[2])
        if signers:
            data = sign_all(data, signers) + data
        envelope = Envelope(queue_id, contact, [DsnRecipient(a) for a in recipients],
                            "127.0.0.1", self.hostname, now)
        return QueueNotice(envelope, data)

