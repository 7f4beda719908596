"""`postkeep dkim generate|rotate|show|remove DOMAIN`: DKIM signing keys (RFC 6376, RFC 8463).

- `generate`: the domain's first keys, one per `dkim.algorithms` (Ed25519 and RSA by
  default: mail is dual-signed); they sign at once, so publish the records `show` prints
  before sending mail.
- `rotate`: new keys (new selectors) beside the old ones; they sign from
  `dkim.activate_after` from now (`--now`: at once), and the old ones are then retired, shown
  `dkim.retire_after` more for publishing.
- `show`: the records to publish, as zone-file lines, one per selector, each with its state.
- `remove`: a selector (or every key of the domain), once its record is gone from DNS.

Selectors are `pk<year><letter>` (`pk2026a`, `pk2026b`...), a new letter for each key.
"""

from __future__ import annotations

import argparse
import string
import time
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, check_domain, load_config, with_store

if TYPE_CHECKING:
    from postkeep.config import DkimConfig
    from postkeep.store.api import Store

ALGORITHM = {"ed25519": "ed25519-sha256", "rsa": "rsa-sha256"}


def _selectors(taken: set[str], year: int, count: int) -> list[str]:
    """`count` new selectors for `year`: pk2026a, pk2026b... then pk2026aa..."""
    names = [f"pk{year}{c}" for c in string.ascii_lowercase]
    names += [f"pk{year}{a}{b}" for a in string.ascii_lowercase for b in string.ascii_lowercase]
    free = [n for n in names if n not in taken]
    if len(free) < count:
        raise CliError(f"no free selector left for {year}: remove old keys first")
    return free[:count]


async def make_keys(store: Store, domain: str, cfg: DkimConfig, active_from: float,
                    now: float) -> list[str]:
    """New keys for `domain`, one per configured algorithm; their zone-file lines."""
    from postkeep.dns.names import query_name
    from postkeep.mailauth.dkim.keys import (
        generate_key,
        private_key_pem,
        public_key_value,
        zone_line,
    )

    taken = {k.selector for k in await store.list_dkim_keys(domain)}
    selectors = _selectors(taken, time.gmtime(now).tm_year, len(cfg.algorithms))
    lines = []
    for selector, kind in zip(selectors, cfg.algorithms, strict=True):
        key = generate_key(kind, bits=cfg.rsa_bits)  # type: ignore[arg-type]
        await store.add_dkim_key(domain, selector, ALGORITHM[kind], private_key_pem(key),
                                 public_key_value(key), active_from)
        lines.append(zone_line(selector, query_name(domain), key))
    return lines


async def _domain(store: Store, name: str) -> str:
    if await store.get_domain(name) is None:
        raise CliError(f"{name} is not a local domain")
    return name


def cmd_dkim(args: argparse.Namespace) -> int:
    cfg = load_config(args).dkim
    domain = check_domain(args.domain)
    now = time.time()

    async def act(store: Store) -> list[str]:
        await _domain(store, domain)
        keys = await store.list_dkim_keys(domain)
        if args.action == "generate":
            if keys:
                raise CliError(f"{domain} has keys already: `postkeep dkim rotate {domain}` "
                               "makes new ones")
            lines = await make_keys(store, domain, cfg, now, now)
            return [f"; {domain}: publish these records before sending mail (signing now)",
                    *lines]
        if args.action == "rotate":
            if not keys:
                raise CliError(f"{domain} has no keys: `postkeep dkim generate {domain}`")
            start = now if args.now else now + cfg.activate_after
            lines = await make_keys(store, domain, cfg, start, now)
            when = "now" if args.now else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start))
            return [f"; {domain}: publish these records now; they sign from {when}, and the "
                    "keys they replace are then retired", *lines]
        if args.action == "remove":
            selectors = [args.selector] if args.selector else [k.selector for k in keys]
            if not selectors:
                raise CliError(f"{domain} has no keys")
            for selector in selectors:
                await store.remove_dkim_key(domain, selector)
            return [f"{domain}: removed {', '.join(selectors)}"]
        return await _show(store, domain, now, cfg)

    try:
        print("\n".join(with_store(args, act)))
    except ValueError as e:
        raise CliError(str(e)) from None
    return 0


async def _show(store: Store, domain: str, now: float, cfg: DkimConfig) -> list[str]:
    from postkeep.delivery.signing import key_states
    from postkeep.dns.names import query_name
    from postkeep.mailauth.dkim.keys import load_private_key, zone_line

    keys = await store.list_dkim_keys(domain)
    if not keys:
        return [f"; {domain} has no DKIM keys: `postkeep dkim generate {domain}`"]
    out = []
    for state in key_states(keys, now, cfg.retire_after):
        key = state.key
        if state.state == "expired":
            out.append(f"; {key.selector} ({key.algorithm}): retired, no longer needed in DNS "
                       f"(`postkeep dkim remove {domain} {key.selector}`)")
            continue
        what = {"signing": "signing",
                "next": "signs from " + time.strftime("%Y-%m-%d %H:%M UTC",
                                                      time.gmtime(key.active_from)),
                "retired": "retired, keep published until " + time.strftime(
                    "%Y-%m-%d %H:%M UTC", time.gmtime(state.until or now))}[state.state]
        private = load_private_key(await store.dkim_private_key(domain, key.selector))
        out += [f"; {key.selector} ({key.algorithm}): {what}",
                zone_line(key.selector, query_name(domain), private)]
    return out


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dkim", help="DKIM signing keys of a domain")
    dsub = p.add_subparsers(dest="action", required=True)
    dsub.add_parser("generate", help="the domain's first keys").add_argument("domain")
    q = dsub.add_parser("rotate", help="new keys beside the old ones")
    q.add_argument("domain")
    q.add_argument("--now", action="store_true", help="sign with them at once")
    dsub.add_parser("show", help="the records to publish").add_argument("domain")
    q = dsub.add_parser("remove", help="a selector, or every key of the domain")
    q.add_argument("domain")
    q.add_argument("selector", nargs="?")
    p.set_defaults(func=cmd_dkim)
