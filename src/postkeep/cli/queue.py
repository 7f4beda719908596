"""`postkeep queue list|show|retry|hold|release|delete|bounce|tls-reports`: the outbound
queue, for an operator. What the running server's delivery workers do with an entry shows in
`show`; a change made here is seen by them at their next look (`delivery.poll_interval`)."""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from postkeep.cli.common import CliError, load_config, with_store
from postkeep.errors import NotFound

if TYPE_CHECKING:
    from postkeep.store.api import QueueEntry, Store


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def _state(entry: QueueEntry, now: float) -> str:
    if entry.held:
        return "held"
    if entry.lease_owner and (entry.lease_until or 0) > now:
        return "active"
    if entry.next_attempt <= now:
        return "due"
    return f"retry in {_age(entry.next_attempt - now)}"


def cmd_list(args: argparse.Namespace) -> int:
    entries: list[QueueEntry] = with_store(args, lambda s: s.list_outbound())
    now = time.time()
    if not entries:
        print("the queue is empty")
        return 0
    print(f"{'QUEUE ID':<18} {'SIZE':>9} {'AGE':>7} {'TRIES':>5}  {'STATE':<16} SENDER -> "
          "PENDING RECIPIENTS")
    for e in entries:
        sender = e.mail_from or "<> (a notice)"
        pending = ", ".join(r.address for r in e.pending) or "-"
        print(f"{e.queue_id:<18} {e.size:>9} {_age(now - e.created):>7} {e.attempts:>5}  "
              f"{_state(e, now):<16} {sender} -> {pending}")
        if e.last_error:
            print(f"{'':<18} last error: {e.last_error}")
    print(f"{len(entries)} entries, {sum(len(e.pending) for e in entries)} recipients pending")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def get(store: Store) -> tuple[QueueEntry, bytes | None]:
        entry = await store.get_outbound(args.queue_id)
        return entry, (await store.read_outbound(args.queue_id) if args.message else None)

    entry, message = _found(args, get)
    now = time.time()
    fields: list[tuple[str, Any]] = [
        ("queue id", entry.queue_id), ("sender", entry.mail_from or "<> (a notice)"),
        ("size", entry.size), ("queued", time.ctime(entry.created)),
        ("state", _state(entry, now)), ("attempts", entry.attempts),
        ("next attempt", time.ctime(entry.next_attempt)),
        ("last error", entry.last_error or "-"),
        ("dsn", f"RET={entry.ret or '-'} ENVID={entry.envid or '-'}"),
        ("body", f"{entry.body or '7BIT'}{' SMTPUTF8' if entry.smtputf8 else ''}"
                 f"{' REQUIRETLS' if entry.requiretls else ''}"),
        ("delay notice", "sent" if entry.delay_notified else "not sent"),
    ]
    for name, value in fields:
        print(f"{name + ':':<14}{value}")
    for r in entry.recipients:
        when = f" at {time.ctime(r.updated)}" if r.updated else ""
        said = f" by {r.remote}" if r.remote else ""
        print(f"  <{r.address}> {r.status}{': ' + r.reply if r.reply else ''}{said}{when}")
    if message is not None:
        print()
        print(message.decode("utf-8", "replace"), end="")
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    action = args.action
    if action == "retry":
        target = None if args.queue_id == "all" else args.queue_id
        count = with_store(args, lambda s: s.retry_outbound(target, time.time()))
        if target is not None and not count:
            raise CliError(f"queue id {target} is not queued")
        print(f"{count} entr{'y' if count == 1 else 'ies'} due now")
    elif action in ("hold", "release"):
        _found(args, lambda s: s.hold_outbound(args.queue_id, action == "hold"))
        print(f"{args.queue_id} {'held' if action == 'hold' else 'released'}")
    elif action == "delete":
        _found(args, lambda s: s.delete_outbound(args.queue_id))
        print(f"{args.queue_id} deleted (no notice sent)")
    return 0


def cmd_bounce(args: argparse.Namespace) -> int:
    """Give up on the entry's pending recipients now, with a bounce to its sender."""
    from postkeep.queue.dsn import Reported, notice

    cfg = load_config(args)
    owner = f"cli/{os.getpid()}/"

    async def bounce(store: Store) -> int:
        await store.get_outbound(args.queue_id)  # NotFound first
        claimed = await store.claim_outbound(owner, time.time(), 300, 1, args.queue_id)
        if not claimed:
            raise CliError(f"{args.queue_id} is being delivered or is held; try again, or "
                           "release it first")
        entry = claimed[0]
        now = time.time()
        why = "Returned to the sender by the postmaster"
        reported = [Reported(r.address, r.orcpt, "failed", "5.0.0", None, None, now)
                    for r in entry.pending]
        notices = []
        if entry.mail_from and reported:
            message = await store.read_outbound(entry.queue_id)
            notices.append(notice(entry, message, reported, hostname=cfg.server.hostname,
                                  max_returned=cfg.delivery.max_bounce_size, now=now))
        failed = [type(r)(r.address, r.notify, r.orcpt, "failed", f"550 5.0.0 {why}", None, now)
                  for r in entry.pending]
        await store.update_outbound(entry.id, owner, failed, reschedule=now, notices=notices)
        return len(failed)

    count = _found(args, bounce)
    print(f"{args.queue_id}: {count} recipient(s) bounced to the sender")
    return 0


def cmd_tls_reports(args: argparse.Namespace) -> int:
    """Queue the TLS reports (RFC 8460) of a UTC day not queued yet, as the delivery workers
    do after each day; a day reported by hand is not reported again."""
    from postkeep.dns.resolver import DnsResolver
    from postkeep.queue.tlsrpt import TlsReports
    from postkeep.queue.tlsrpt_report import DAY

    cfg = load_config(args)
    try:
        when = (datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC) if args.day
                else datetime.now(UTC) - timedelta(days=1))
    except ValueError:
        raise CliError(f"--day {args.day}: not a date (YYYY-MM-DD)") from None
    day = int(when.timestamp()) // DAY * DAY

    async def send(store: Store) -> int | None:
        return await TlsReports(cfg, store, DnsResolver(cfg.dns)).send_reports(day)

    count = with_store(args, send)
    print(f"{count or 0} TLS report(s) queued for {when:%Y-%m-%d}"
          + ("" if count is not None else "; some TLSRPT lookups failed, try again later"))
    return 0 if count is not None else 1


def _found(args: argparse.Namespace, action: Any) -> Any:
    try:
        return with_store(args, action)
    except NotFound as e:
        raise CliError(str(e)) from None


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("queue", help="the outbound queue")
    qsub = p.add_subparsers(dest="action", required=True)
    qsub.add_parser("list", help="every entry, the next due first").set_defaults(func=cmd_list)
    q = qsub.add_parser("show", help="one entry and its recipients")
    q.add_argument("queue_id")
    q.add_argument("--message", action="store_true", help="print the message too")
    q.set_defaults(func=cmd_show)
    q = qsub.add_parser("retry", help="make an entry (or 'all') due now")
    q.add_argument("queue_id", help="a queue id, or 'all'")
    q.set_defaults(func=cmd_change)
    for action, text in (("hold", "stop delivering an entry"),
                         ("release", "deliver a held entry again"),
                         ("delete", "remove an entry without notice")):
        q = qsub.add_parser(action, help=text)
        q.add_argument("queue_id")
        q.set_defaults(func=cmd_change)
    q = qsub.add_parser("bounce", help="give up on an entry now, with a bounce to its sender")
    q.add_argument("queue_id")
    q.set_defaults(func=cmd_bounce)
    q = qsub.add_parser("tls-reports", help="queue the TLS reports (RFC 8460) of a day now")
    q.add_argument("--day", help="the UTC day, YYYY-MM-DD (default: yesterday)")
    q.set_defaults(func=cmd_tls_reports)
