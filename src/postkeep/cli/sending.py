"""`postkeep user show|limits` and `postkeep domain limits`: sending quotas, for an operator.

`limits` without options shows the limits in force and what was sent in the current hour and
UTC day; with options it sets an exception to `[sending]` for the account or domain
(`--unlimited`, or some of the four numbers, 0 for no limit; those not given keep the value
in force), and `--default` removes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from postkeep.cli.common import CliError, check_address, check_domain, load_config, with_store
from postkeep.policy.sending import account_limits, domain_limits
from postkeep.store.api import SendingLimits, SendingUsage, Store

_KEYS = ("messages_per_hour", "messages_per_day", "recipients_per_hour", "recipients_per_day")
_USED = {"messages_per_hour": "messages_hour", "messages_per_day": "messages_day",
         "recipients_per_hour": "recipients_hour", "recipients_per_day": "recipients_day"}


def _table(limits: SendingLimits, usage: SendingUsage, exception: bool) -> list[str]:
    lines = [f"sending limits ({'exception' if exception else 'configured in [sending]'}):"]
    for key in _KEYS:
        limit = getattr(limits, key)
        used = getattr(usage, _USED[key])
        lines.append(f"  {key.replace('_', ' '):<20} {used:>6} sent of "
                     f"{limit if limit else 'unlimited'}")
    return lines


async def _scope_of(store: Store, kind: str, name: str) -> str:
    if kind == "domain":
        if await store.get_domain(name) is None:
            raise CliError(f"{name} is not a local domain")
        return f"d:{name}"
    account = await store.get_account(name)
    if account is None:
        raise CliError(f"no account {name}")
    return f"a:{account.id}"


def cmd_limits(args: argparse.Namespace, kind: str) -> int:
    cfg = load_config(args).sending
    name = check_domain(args.name) if kind == "domain" else check_address(args.address)
    given = {k: getattr(args, k) for k in _KEYS if getattr(args, k) is not None}
    if sum(bool(x) for x in (given, args.unlimited, args.default)) > 1:
        raise CliError("give numbers, --unlimited or --default, not several")
    effective = domain_limits if kind == "domain" else account_limits

    async def act(store: Store) -> list[str]:
        scope = await _scope_of(store, kind, name)
        current = await store.get_sending_limits(scope)
        if args.default:
            await store.set_sending_limits(scope, None)
            return [f"{name}: sending limits as configured in [sending]"]
        if args.unlimited or given:
            base = (SendingLimits() if args.unlimited
                    else effective(cfg) if current is None else current)
            new = dataclasses.replace(base, **given)
            await store.set_sending_limits(scope, new)
            current = new
        usage = await store.sending_usage(scope, time.time())
        return [name, *_table(effective(cfg) if current is None else current, usage,
                             current is not None)]

    print("\n".join(with_store(args, act)))
    return 0


def cmd_user_show(args: argparse.Namespace) -> int:
    cfg = load_config(args).sending
    address = check_address(args.address)

    async def show(store: Store) -> list[str]:
        account = await store.get_account(address)
        if account is None:
            raise CliError(f"no account {address}")
        scope = f"a:{account.id}"
        exception = await store.get_sending_limits(scope)
        usage = await store.sending_usage(scope, time.time())
        apps = await store.list_app_passwords(address)
        senders = await store.list_send_as(address)
        quota = f"{account.quota_bytes}" if account.quota_bytes else "unlimited"
        return [
            f"account:            {account.address}",
            f"storage:            {account.used_bytes} bytes used of {quota}",
            f"disabled:           {'yes' if account.disabled else 'no'}",
            f"app passwords only: {'yes' if account.app_passwords_only else 'no'}",
            f"app passwords:      {', '.join(a.name for a in apps) or 'none'}",
            f"may send as:        {', '.join(senders) or 'only its own addresses'}",
            *_table(account_limits(cfg) if exception is None else exception, usage,
                    exception is not None),
        ]

    print("\n".join(with_store(args, show)))
    return 0


def add_limit_options(q: argparse.ArgumentParser) -> None:
    for key in _KEYS:
        q.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, metavar="N",
                       help="0: no limit")
    q.add_argument("--unlimited", action="store_true", help="no sending limit at all")
    q.add_argument("--default", action="store_true", help="back to the [sending] limits")
