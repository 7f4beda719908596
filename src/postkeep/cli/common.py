"""What the `postkeep` command families share: the operator-facing error, loading the instance
configuration, running an action on the store, address and domain checks, password reading."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from postkeep import config as config_mod
from postkeep.addresses import canonical_domain, canonical_local
from postkeep.auth.passwords import generate_password
from postkeep.server.privileges import become_service_user
from postkeep.smtp.wire.parser import CommandError, is_domain, parse_path
from postkeep.store import open_store
from postkeep.store.api import MailStore
from postkeep.store.crypto import load_master_key

CONFIG_NAME = "postkeep.toml"


class CliError(Exception):
    """An operation failed; the message is shown to the operator (exit 1)."""


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The configuration of the instance in `--dir`."""
    return config_mod.load(Path(args.dir) / CONFIG_NAME)


def with_store(args: argparse.Namespace, action: Callable[[MailStore], Awaitable[Any]]) -> Any:
    """Open the instance's store, run `action` on it, close it; returns what `action` returns.

    Run by root, the command first drops to `server.user` as the server does
    (`postkeep.server.privileges`), so what the store creates (SQLite's files, the writer
    lock, blobs) belongs to the user the server runs as; with `server.user` empty, root is
    refused."""
    cfg = load_config(args)
    become_service_user(cfg, serving=False)
    master_key = load_master_key(cfg.data_path(cfg.store.master_key_file))

    async def run() -> Any:
        store = await open_store(cfg.store_url, cfg.data_dir, master_key, maintenance=False)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def check_domain(name: str) -> str:
    """`name` in canonical form (`postkeep.addresses.canonical_domain`: IDNA U-labels, no
    trailing dot); CliError unless it is a domain name."""
    try:
        canonical = canonical_domain(name, strict=True)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not is_domain(canonical, utf8=True) or "." not in canonical:
        raise CliError(f"{name.strip()!r} is not a valid domain name")
    return canonical


def check_address(address: str, allow_catch_all: bool = False) -> str:
    """`address` in canonical form (`postkeep.addresses`: local part in NFC, domain in IDNA
    U-labels); CliError unless it is a mailbox address (RFC 5321 path syntax, no address
    literal). `@domain` passes if `allow_catch_all`."""
    address = address.strip()
    if allow_catch_all and address.startswith("@"):
        return "@" + check_domain(address[1:])
    try:
        path = parse_path(f"<{address}>", utf8=True, allow_null=False)
    except CommandError as e:
        raise CliError(f"{address!r} is not a valid address: {e.reply.text}") from None
    if path.domain.startswith("["):
        raise CliError(f"{address!r}: address literals cannot be local addresses")
    return f"{canonical_local(path.local)}@{check_domain(path.domain)}"


def read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated): one line of standard input with `--password-stdin`, else a new
    generated password."""
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliError("no password on standard input")
        return line, False
    return generate_password(), True
