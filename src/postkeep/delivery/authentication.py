"""The MX's authentication of a message: SPF, DKIM, ARC and DMARC, one Authentication-Results.

Run by the inbound pipeline's ``authenticate`` stage for a client outside `[inbound]
trusted_networks`, once the text is in (the checks need its header section and body):

1. **SPF** (RFC 7208) for the MAIL FROM identity, and for the HELO identity when the
   reverse-path is null (§2.4: then postmaster@HELO is the sender), and **DKIM** (RFC 6376)
   for every signature, and **ARC** (RFC 8617 §5.2) for the chain, at the same time (the body
   read once: each chunk goes to both). iprev was looked up at connect.
2. **DMARC** (RFC 9989) from their results: the RFC 5322.From domain, SPF's domain (the MAIL
   FROM domain, or the HELO name for a null reverse-path, §4.4.2) and each DKIM ``d=``.
   A message with more than one From field, or one naming several authors, cannot be judged
   (RFC 9989 §4.4.1): it is refused, since evaluating one of its authors would let the other
   through unchecked.
3. One Authentication-Results field (RFC 8601) with iprev=, spf=, one dkim= per signature,
   arc= (RFC 8617 §7.1: header.oldest-pass, smtp.remote-ip) and dmarc=; `policy.trust` turns
   DMARC's disposition into a refusal or the Junk mailbox, unless a trusted ARC sealer
   vouches for the message (`[inbound] arc_trusted_sealers`, RFC 7489 §6.7).
4. For a policy that asks for aggregate reports (``rua=``), the evaluation's report row
   (`mailauth.dmarc.aggregate.row_for`, the disposition as applied), for the caller to count.

SPF alone refuses nothing: a fail is reported and left to DMARC, which forwarding (SPF's known
failure) cannot fool when a DKIM signature survives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from postkeep.delivery.origin import ClientChecks, InboundChecks
from postkeep.errors import Reply
from postkeep.mailauth import authres
from postkeep.mailauth.arc.verify import ArcResult
from postkeep.mailauth.arc_check import ArcCheck
from postkeep.mailauth.dkim.canon import parse_header_fields
from postkeep.mailauth.dkim_check import DkimCheck, check_dkim_parts
from postkeep.mailauth.dmarc import OrgDomainMethod, Policy, author_domain, evaluate
from postkeep.mailauth.dmarc.aggregate import ReportRow, row_for
from postkeep.mailauth.spf import SpfResult, check_helo, check_mailfrom
from postkeep.mailauth.spf import authentication_results as spf_resinfo
from postkeep.policy.trust import dmarc_outcome
from postkeep.policy.verdict import Verdict

R_AUTHORS = Reply(550, "5.7.1", "Message rejected: more than one author (From) to "
                  "authenticate")


@dataclass(slots=True)
class Judgement:
    """What the checks concluded: our Authentication-Results field, a refusal (None: go
    on), the mailbox for local copies (None: INBOX), the client's confirmed name."""

    auth_results: bytes
    verdict: Verdict | None = None
    mailbox: str | None = None
    client_name: str | None = None
    reason: str = ""  # for the log line of a quarantined message (the DMARC verdict)
    summary: str = ""  # "iprev=pass spf=pass dkim=pass dmarc=pass", for the message's log line
    resinfo: tuple[str, ...] = ()  # the results in `auth_results` (an ARC seal's AAR repeats them)
    arc: ArcResult | None = None  # the ARC chain's validation, when `[inbound] arc`
    override: str = ""  # DMARC's policy not applied, and why (a trusted ARC sealer)
    report_row: tuple[str, ReportRow] | None = None  # (policy domain, row): DMARC rua= asked


def _from_fields(header_block: bytes) -> list[str]:
    return [f.raw.split(b":", 1)[1].replace(b"\r\n", b"").decode("utf-8", "replace").strip()
            for f in parse_header_fields(header_block) if f.key == "from"]


async def judge(checks: InboundChecks, client: ClientChecks, hostname: str, *,
                helo: str, mail_from: str, header_block: bytes, body: Iterable[bytes],
                clock: Callable[[], float]) -> Judgement:
    """Authenticate one message from `client` (not a trusted one: the caller checks)."""
    cfg, resolver = checks.cfg, checks.resolver
    timeout = cfg.check_timeout

    async def spf() -> SpfResult | None:
        if not cfg.spf:
            return None
        if not mail_from and helo:
            return await check_helo(client.ip, helo, resolver, receiver=hostname,
                                    timeout=timeout)
        return await check_mailfrom(client.ip, mail_from, helo or None, resolver,
                                    receiver=hostname, timeout=timeout)

    arc = (ArcCheck.start(resolver, header_block, timeout=timeout)
           if cfg.arc else None)
    chunks = _feeding(body, arc) if arc is not None else body

    async def dkim() -> DkimCheck | None:
        if not cfg.dkim:
            for _ in chunks:  # ARC alone reads the body
                await asyncio.sleep(0)
            return None
        return await check_dkim_parts(resolver, header_block, chunks, timeout=timeout,
                                      clock=clock)

    iprev, spf_result, dkim_result = await asyncio.gather(client.iprev(), spf(), dkim())
    results = []
    judgement = Judgement(b"")
    judgement.arc = await arc.result() if arc is not None else None
    if iprev is not None:
        results.append(iprev.auth_result())
        judgement.client_name = iprev.name or None
    if spf_result is not None:
        results.append(spf_resinfo(spf_result))
    if dkim_result is not None:
        results += authres.dkim_resinfo(dkim_result.results)
    if judgement.arc is not None:
        results.append(judgement.arc.auth_result(client.ip))
    if cfg.dmarc:
        froms = _from_fields(header_block)
        domain = author_domain(froms)
        if domain is None and (len(froms) > 1 or (froms and "," in froms[0])):
            judgement.verdict = Verdict(R_AUTHORS, f"dmarc: {len(froms)} From fields")
        spf_pair = None
        if spf_result is not None:
            spf_pair = (str(spf_result.result), spf_result.domain)
        dkim_pairs = [(r.result, r.domain or "") for r in
                      (dkim_result.results if dkim_result is not None else ())]
        method = OrgDomainMethod(cfg.dmarc_org_domain)
        dmarc = await evaluate(resolver, domain, spf_pair, dkim_pairs, method=method,
                               timeout=timeout)
        results.append(dmarc.auth_result())
        outcome = dmarc_outcome(dmarc, cfg.dmarc_reject, cfg.dmarc_quarantine,
                                cfg.temperror_defer, judgement.arc, cfg.arc_trusted_sealers)
        judgement.verdict = judgement.verdict or outcome.verdict
        judgement.mailbox = outcome.mailbox
        judgement.override = outcome.override
        judgement.reason = dmarc.auth_result()
        applied = (Policy.REJECT if outcome.verdict else
                   Policy.QUARANTINE if outcome.mailbox else Policy.NONE)
        judgement.report_row = row_for(
            dmarc, applied, source_ip=client.ip, envelope_from=mail_from,
            spf=None if spf_result is None else (
                spf_result.domain, spf_result.identity, str(spf_result.result)),
            dkim=[(r.domain or "", r.selector or "", str(r.result))
                  for r in (dkim_result.results if dkim_result is not None else ())])
    judgement.auth_results = authres.render(hostname, results)
    judgement.resinfo = tuple(results)
    judgement.summary = " ".join(dict.fromkeys(r.split(" ", 1)[0] for r in results))
    return judgement


def _feeding(body: Iterable[bytes], arc: ArcCheck) -> Iterator[bytes]:
    """`body`'s chunks, each given to the ARC check as it goes by."""
    for chunk in body:
        arc.update(chunk)
        yield chunk
