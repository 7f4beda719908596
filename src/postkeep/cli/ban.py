"""`postkeep ban list|add|remove`: the bans in force (`postkeep.bans`), for an operator.

`list` shows each banned address or network, why, until when (UTC), the strikes that led to
it and its escalation level; `add ADDRESS|NETWORK --duration D --reason TEXT` bans by hand
(D in seconds, or with a unit: 90s, 15m, 6h, 2d); `remove` ends a ban now. They work on the
store, or Redis with `[cluster] redis_url`: a running server applies the change within
`bans.sync_interval` seconds. Addresses within `bans.never_ban` cannot be banned.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, load_config, with_store

if TYPE_CHECKING:
    from postkeep.bans.keeper import BanKeeper
    from postkeep.store.api import Ban, Store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from "900", "90s", "15m", "6h" or "2d"; CliError otherwise."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if m is None or float(m[1]) <= 0:
        raise CliError(f"--duration {text}: not a duration (e.g. 900, 15m, 6h, 2d)")
    return float(m[1]) * _UNITS[m[2] or "s"]


def _run(args: argparse.Namespace, action: str) -> object:
    from postkeep.bans.keeper import BanKeeper
    from postkeep.bans.ledger import open_ledger

    cfg = load_config(args)
    bans = cfg.bans

    async def act(store: Store) -> object:
        ledger = open_ledger(store, cfg.cluster.redis_url, bans.window, bans.max_tracked,
                             bans.forget_after)
        try:
            return await _act(BanKeeper(bans, ledger), args, action)
        finally:
            await ledger.close()

    return with_store(args, act)


async def _act(keeper: BanKeeper, args: argparse.Namespace, action: str) -> object:
    from postkeep.bans.policy import parse_key

    if action == "list":
        return await keeper.ledger.active(time.time())
    try:
        key = parse_key(args.address)
    except ValueError:
        raise CliError(f"{args.address}: not an IP address or network") from None
    if action == "remove":
        return await keeper.remove(key)
    if keeper.policy.exempt(key):
        raise CliError(f"{key} is within bans.never_ban")
    return await keeper.add(key, parse_duration(args.duration), args.reason)


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def cmd_list(args: argparse.Namespace) -> int:
    bans: list[Ban] = _run(args, "list")  # type: ignore[assignment]
    if args.json:
        print(json.dumps([{"ip": b.key, "until": b.until, "reason": b.reason,
                           "strikes": b.strikes, "level": b.level, "created": b.created}
                          for b in bans], indent=1))
        return 0
    if not bans:
        print("no bans in force")
        return 0
    print(f"{'ADDRESS/NETWORK':<44} {'UNTIL (UTC)':<20} {'STRIKES':>7} {'LEVEL':>5}  REASON")
    for b in bans:
        print(f"{b.key:<44} {_utc(b.until):<20} {b.strikes:>7g} {b.level:>5}  {b.reason}")
    print(f"{len(bans)} ban(s) in force")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    ban: Ban = _run(args, "add")  # type: ignore[assignment]
    print(f"banned {ban.key} until {_utc(ban.until)} (level {ban.level}): {ban.reason}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if not _run(args, "remove"):
        raise CliError(f"{args.address}: no ban in force")
    print(f"unbanned {args.address}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ban", help="client addresses banned for brute force and abuse")
    bsub = p.add_subparsers(dest="action", required=True)
    q = bsub.add_parser("list", help="the bans in force")
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(func=cmd_list)
    q = bsub.add_parser("add", help="ban an address or network by hand")
    q.add_argument("address", help="an IP address or a CIDR network")
    q.add_argument("--duration", default="1h", help="seconds, or 15m, 6h, 2d (default 1h)")
    q.add_argument("--reason", default="banned by hand", help="why (shown by list and logged)")
    q.set_defaults(func=cmd_add)
    q = bsub.add_parser("remove", help="end a ban now")
    q.add_argument("address", help="the banned address or network, as listed")
    q.set_defaults(func=cmd_remove)
