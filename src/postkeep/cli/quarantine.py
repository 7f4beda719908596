"""`postkeep quarantine list|show|release|delete|expire|resume`: messages the content filters
held (`postkeep.delivery.quarantine`), for an operator.

`list` shows each entry (`--account`, `--direction in|out` narrow it); `show ID` its record,
every filter's result (as `postkeep message filters` shows it) and the message's header
(`--raw`: the whole message); `release ID` moves an inbound message to the recipient's
INBOX, or sends an outbound one as it was held (its remote recipients through the outbound
queue, which the running server's delivery workers see at their next look); `delete ID`
removes it; `expire` removes what is past `[quarantine] days` now (the delivery workers do
it hourly), showing its progress; `resume ADDRESS` ends an account's sending pause before
its time.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from postkeep.cli.common import CliError, check_address, with_store
from postkeep.cli.message import format_report
from postkeep.errors import NotFound

if TYPE_CHECKING:
    from postkeep.store.api import QuarantineEntry, Store


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _found(args: argparse.Namespace, action: Any) -> Any:
    try:
        return with_store(args, action)
    except NotFound as e:
        raise CliError(str(e)) from None


def cmd_list(args: argparse.Namespace) -> int:
    async def entries(store: Store) -> list[QuarantineEntry]:
        account_id = None
        if args.account:
            account = await store.get_account(check_address(args.account))
            if account is None:
                raise CliError(f"{args.account}: no such account")
            account_id = account.id
        return await store.list_quarantine(account_id, args.direction)

    found: list[QuarantineEntry] = with_store(args, entries)
    if not found:
        print("the quarantine is empty")
        return 0
    print(f"{'ID':>6} {'DIR':<3} {'HELD (UTC)':<20} {'QUEUE ID':<18} {'SIZE':>9} "
          f"{'ACCOUNT':<28} {'FILTER':<8} REASON")
    for e in found:
        print(f"{e.id:>6} {e.direction:<3} {_utc(e.created):<20} {e.queue_id:<18} "
              f"{e.size:>9} {e.address:<28} {e.filter:<8} {e.reason}")
    print(f"{len(found)} message(s) held")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def get(store: Store) -> tuple[QuarantineEntry, bytes]:
        return await store.get_quarantine(args.id), await store.read_quarantine(args.id)

    entry, message = _found(args, get)
    if args.raw:
        sys.stdout.buffer.write(message)
        return 0
    fields = [("id", entry.id), ("direction", entry.direction), ("account", entry.address),
              ("queue id", entry.queue_id), ("filter", entry.filter), ("reason", entry.reason),
              ("sender", entry.mail_from or "<>"),
              ("recipients", ", ".join(entry.recipients) or "-"), ("size", entry.size),
              ("held", _utc(entry.created)), ("expires", _utc(entry.expires))]
    for name, value in fields:
        print(f"{name + ':':<12}{value}")
    if entry.filters is not None:
        print()
        print("\n".join(format_report(entry.filters)))
    print()
    head = message.split(b"\r\n\r\n", 1)[0]
    print(head.decode("utf-8", "replace").replace("\r\n", "\n"))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from postkeep.delivery.quarantine import release

    async def act(store: Store) -> str:
        return await release(store, await store.get_quarantine(args.id))

    print(f"{args.id}: {_found(args, act)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _found(args, lambda s: s.delete_quarantine(args.id))
    print(f"{args.id} deleted")
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    from postkeep.delivery.quarantine import expire

    def progress(total: int) -> None:
        print(f"\r{total} expired...", end="", file=sys.stderr, flush=True)

    count = with_store(args, lambda s: expire(s, time.time(), progress))
    if count:
        print(file=sys.stderr)
    print(f"{count} expired message(s) deleted")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    address = check_address(args.address)

    async def act(store: Store) -> bool:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"{address}: no such account")
        return await store.resume_sending(account.id)

    if not with_store(args, act):
        raise CliError(f"{address}: not paused")
    print(f"{address} may send again")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quarantine", help="messages the content filters held")
    qsub = p.add_subparsers(dest="action", required=True)
    q = qsub.add_parser("list", help="the held messages, oldest first")
    q.add_argument("--account", help="only this account's")
    q.add_argument("--direction", choices=("in", "out"), help="arriving (in) or sent (out)")
    q.set_defaults(func=cmd_list)
    q = qsub.add_parser("show", help="one entry and its message's header")
    q.add_argument("id", type=int)
    q.add_argument("--raw", action="store_true", help="the whole message, as stored")
    q.set_defaults(func=cmd_show)
    q = qsub.add_parser("release", help="deliver (in) or send (out) a held message")
    q.add_argument("id", type=int)
    q.set_defaults(func=cmd_release)
    q = qsub.add_parser("delete", help="delete a held message")
    q.add_argument("id", type=int)
    q.set_defaults(func=cmd_delete)
    qsub.add_parser("expire", help="delete what is past quarantine.days now").set_defaults(
        func=cmd_expire)
    q = qsub.add_parser("resume", help="end an account's sending pause now")
    q.add_argument("address")
    q.set_defaults(func=cmd_resume)
