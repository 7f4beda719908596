"""`postkeep dmarc reports|send`: DMARC aggregate reports (RFC 7489 §7.2, RFC 9990), for an
operator. `reports` lists those received at `[inbound] dmarc_report_address` (who sent them,
the period, the policy domain, how many messages passed and failed DMARC); `send` queues the
reports of a UTC day not queued yet, as the delivery workers do after each day
(`postkeep.queue.dmarcrpt`), one line per policy domain."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, check_domain, load_config, with_store

if TYPE_CHECKING:
    from postkeep.store.api import DmarcFeedback, Store


def _date(when: int) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M")


def cmd_reports(args: argparse.Namespace) -> int:
    domain = check_domain(args.domain) if args.domain else None
    reports: list[DmarcFeedback] = with_store(args, lambda s: s.list_dmarc_feedback(domain))
    if args.json:
        print(json.dumps([{
            "org_name": r.org_name, "email": r.email, "report_id": r.report_id,
            "domain": r.domain, "begin": r.begin, "end": r.end, "passed": r.passed,
            "failed": r.failed, "received_at": r.received_at,
            "records": json.loads(r.records)} for r in reports], indent=1))
        return 0
    if not reports:
        print("no DMARC aggregate reports received" + (f" about {domain}" if domain else ""))
        return 0
    print(f"{'BEGIN (UTC)':<16}  {'END (UTC)':<16}  {'DOMAIN':<24} {'PASS':>8} {'FAIL':>8}  "
          "ORGANIZATION (REPORT ID)")
    for r in reports:
        print(f"{_date(r.begin):<16}  {_date(r.end):<16}  {r.domain:<24} {r.passed:>8} "
              f"{r.failed:>8}  {r.org_name} ({r.report_id})")
    print(f"{len(reports)} report(s), {sum(r.passed for r in reports)} message(s) passed, "
          f"{sum(r.failed for r in reports)} failed")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """Queue the DMARC reports of a UTC day not queued yet; a day reported by hand is not
    reported again."""
    from postkeep.dns.resolver import DnsResolver
    from postkeep.mailauth.dmarc.aggregate import DAY
    from postkeep.queue.dmarcrpt import DmarcReports, reporting

    cfg = load_config(args)
    if not reporting(cfg):
        raise CliError("DMARC reports are off: [inbound] dmarc_reports (and dmarc) must be "
                       "true and server.hostname a domain name")
    try:
        when = (datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC) if args.day
                else datetime.now(UTC) - timedelta(days=1))
    except ValueError:
        raise CliError(f"--day {args.day}: not a date (YYYY-MM-DD)") from None
    day = int(when.timestamp()) // DAY * DAY

    async def send(store: Store) -> int | None:
        reports = DmarcReports(cfg, store, DnsResolver(cfg.dns))
        return await reports.send_reports(day, progress=lambda line: print(line, flush=True))

    count = with_store(args, send)
    print(f"{count or 0} DMARC report(s) queued for {when:%Y-%m-%d}"
          + ("" if count is not None else "; some lookups failed, try again later"))
    return 0 if count is not None else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dmarc", help="DMARC aggregate reports, received and sent")
    dsub = p.add_subparsers(dest="action", required=True)
    q = dsub.add_parser("reports", help="the aggregate reports received, the newest first")
    q.add_argument("--domain", help="only those about this policy domain")
    q.add_argument("--json", action="store_true", help="as JSON, with their records")
    q.set_defaults(func=cmd_reports)
    q = dsub.add_parser("send", help="queue the aggregate reports of a day now")
    q.add_argument("--day", help="the UTC day, YYYY-MM-DD (default: yesterday)")
    q.set_defaults(func=cmd_send)
