"""The `postkeep` command: the argument parser and `main`. Each command family adds its
subcommands from a module of its own: `instance` (init, serve, check,
config-reference), `accounts` (domain, user, alias, app-password, send-as), `queue` (the
outbound queue), `dkim` (signing keys), `dns` (the records a domain needs), `ban` (client
addresses banned, `postkeep.bans`), `junk` (the junk filter's allow and block lists),
`quarantine` (what the content filters held), `message` (what the filters said of a stored
message) and `dmarc` (aggregate reports received and sent); `common`
holds what they share. What only some commands need (dnspython, the DKIM and queue code;
SQLAlchemy, with the store) is imported by them when they run, so parsing the arguments,
`--help` and a usage error stay quick.

Exit status: 0 on success, 1 when an operation fails (e.g. the user exists), 2 for bad usage or a
bad configuration (one clear line naming the key path, never a traceback).
"""

from __future__ import annotations

import argparse
import sys

from postkeep.cli import (
    accounts,
    ban,
    dkim,
    dmarc,
    dns,
    instance,
    junk,
    message,
    quarantine,
    queue,
)
from postkeep.cli.common import CliError
from postkeep.errors import ConfigError, StoreError

DEFAULT_DIR = "var/dev"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postkeep", description="postkeep mail server")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"instance directory ({DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    instance.add_commands(sub)
    accounts.add_commands(sub)
    queue.add_commands(sub)
    dkim.add_commands(sub)
    dns.add_commands(sub)
    dmarc.add_commands(sub)
    ban.add_commands(sub)
    junk.add_commands(sub)
    quarantine.add_commands(sub)
    message.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"postkeep: config error: {e}", file=sys.stderr)
        return 2
    except (CliError, StoreError) as e:
        print(f"postkeep: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
