"""`postkeep junk allow|block|remove|list|prune`: the junk filter's allow and block lists
(`postkeep.filters.junk`), per account or per local domain, and its classifier's pruning.

`allow ENTRY --for OWNER` and `block ENTRY --for OWNER` set an entry, `remove ENTRY --for
OWNER` removes it; ENTRY is a sender's address or a domain (which covers its subdomains),
OWNER an account's address or a local domain (whose entries count for all its accounts,
after the account's own). `list [--for OWNER]` shows them. A running server reads the
lists at each message: a change counts at once. `prune` prunes the classifier's tokens now
as `[junk]` says (`postkeep.filters.junk.pruning`: the hapaxes, then each scope's cap),
without the hourly run's bound, its progress on standard error, and prints the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, with_store

if TYPE_CHECKING:
    from postkeep.store.api import JunkListEntry, Store


async def _owner(store: Store, name: str) -> tuple[str, dict[str, str]]:
    """The owner key of an account or domain, and a map back from keys to names."""
    if "@" in name:
        account = await store.get_account(name)
        if account is None:
            raise CliError(f"{name}: no such account")
        return f"a:{account.id}", {f"a:{account.id}": account.address}
    domain = await store.get_domain(name.lower().rstrip("."))
    if domain is None:
        raise CliError(f"{name}: no such local domain")
    return f"d:{domain.name}", {f"d:{domain.name}": domain.name}


async def _names(store: Store) -> dict[str, str]:
    return {f"a:{a.id}": a.address for a in await store.list_accounts()} | {
        f"d:{d.name}": d.name for d in await store.list_domains()}


def _set(args: argparse.Namespace, kind: str | None) -> bool:
    async def act(store: Store) -> bool:
        owner, _ = await _owner(store, args.owner)
        try:
            return await store.set_junk_entry(owner, args.entry, kind)
        except ValueError as e:
            raise CliError(f"{args.entry}: {e}") from None

    return bool(with_store(args, act))


def cmd_allow(args: argparse.Namespace) -> int:
    _set(args, "allow")
    print(f"allowed {args.entry} for {args.owner}")
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    _set(args, "block")
    print(f"blocked {args.entry} for {args.owner}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if not _set(args, None):
        raise CliError(f"{args.entry}: no entry for {args.owner}")
    print(f"removed {args.entry} for {args.owner}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def act(store: Store) -> tuple[list[JunkListEntry], dict[str, str]]:
        if args.owner:
            owner, names = await _owner(store, args.owner)
            return await store.junk_entries(owner), names
        return await store.junk_entries(), await _names(store)

    entries, names = with_store(args, act)
    rows = [(names.get(e.owner, e.owner), e.kind, e.entry) for e in entries]
    if args.json:
        print(json.dumps([{"owner": o, "kind": k, "entry": e} for o, k, e in rows], indent=1))
        return 0
    if not rows:
        print("no entries")
        return 0
    print(f"{'FOR':<40} {'KIND':<6} ENTRY")
    for owner, kind, entry in rows:
        print(f"{owner:<40} {kind:<6} {entry}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from postkeep.cli.common import load_config
    from postkeep.filters.junk.pruning import JunkPruner, PruneCounts

    cfg = load_config(args).junk

    def progress(counts: PruneCounts) -> None:
        print(f"\r{counts.summary()}", end="", file=sys.stderr, flush=True)

    counts: PruneCounts = with_store(args, lambda s: JunkPruner(s, cfg).run(limit=0,
                                                                            progress=progress))
    print(file=sys.stderr)
    print(f"looked at {counts.examined} token(s): {counts.hapaxes} hapax(es) deleted, "
          f"{counts.trimmed} past the caps")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("junk", help="the junk filter's allow and block lists, its pruning")
    jsub = p.add_subparsers(dest="action", required=True)
    for name, func, text in (("allow", cmd_allow, "never junk mail from a sender"),
                             ("block", cmd_block, "always junk mail from a sender"),
                             ("remove", cmd_remove, "remove an entry")):
        q = jsub.add_parser(name, help=text)
        q.add_argument("entry", help="a sender's address, or a domain")
        q.add_argument("--for", dest="owner", required=True,
                       help="the account (an address) or local domain the entry is for")
        q.set_defaults(func=func)
    q = jsub.add_parser("list", help="the entries")
    q.add_argument("--for", dest="owner", help="only this account's or domain's")
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(func=cmd_list)
    jsub.add_parser("prune", help="prune the classifier's tokens now (junk.hapax_days, caps)"
                    ).set_defaults(func=cmd_prune)
