"""`postkeep message filters ADDRESS MAILBOX UID`: what the content filters said of a stored
message (`Store.filter_report`, kept with its delivery; docs/architecture.md, "Content
filters").

The message is named as an IMAP client sees it: the account, the mailbox, the UID (RFC 9051
§2.3.1.1). It prints the direction, the queue id, when it was scanned, the combined action
and score, and one line per filter (action, score, status, symbols); `--json` gives the same
as JSON. A message no filter scanned (APPENDed, delivered before the record existed, or with
no `[filters]`) has no record: an error, exit 1.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, check_address, with_store

if TYPE_CHECKING:
    from postkeep.store.api import FilterReport, MailStore


def format_report(report: FilterReport) -> list[str]:
    """The report as `postkeep` shows it (here and in `quarantine show`)."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.created))
    lines = [f"{'direction:':<12}{report.direction}", f"{'queue id:':<12}{report.queue_id}",
             f"{'scanned:':<12}{when}", f"{'action:':<12}{report.action}",
             f"{'score:':<12}{report.score:g}",
             f"{'symbols:':<12}{','.join(report.symbols) or '-'}",
             f"{'FILTER':<12}{'ACTION':<11}{'SCORE':>7}  STATUS / SYMBOLS"]
    for f in report.filters:
        lines.append(f"{f.filter:<12}{f.action:<11}{f.score:>7g}  {f.status or '-'}"
                     + (f" [{','.join(f.symbols)}]" if f.symbols else ""))
    return lines


def cmd_filters(args: argparse.Namespace) -> int:
    address = check_address(args.address)
    if args.uid <= 0:
        raise CliError(f"{args.uid}: a UID is a positive number")

    async def act(store: MailStore) -> FilterReport:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"{address}: no such account")
        box = await store.get_mailbox(account.id, args.mailbox)
        if box is None:
            raise CliError(f"{address}: no mailbox {args.mailbox!r}")
        found = await store.messages_by_uid(box.id, [(args.uid, args.uid)])
        if not found:
            raise CliError(f"{address} {args.mailbox}: no message with UID {args.uid}")
        report = await store.filter_report(account.id, found[0].id)
        if report is None:
            raise CliError(f"{address} {args.mailbox} UID {args.uid}: no filter record "
                           "(not scanned by a content filter)")
        return report

    report: FilterReport = with_store(args, act)
    if args.json:
        print(json.dumps(asdict(report), indent=1))
        return 0
    print("\n".join(format_report(report)))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("message", help="stored messages")
    msub = p.add_subparsers(dest="action", required=True)
    q = msub.add_parser("filters", help="what the content filters said of a message")
    q.add_argument("address", help="the account")
    q.add_argument("mailbox", help="the mailbox (INBOX, Junk, ...)")
    q.add_argument("uid", type=int, help="the message's IMAP UID")
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(func=cmd_filters)
