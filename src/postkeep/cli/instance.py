"""Commands that set up, run and check a `postkeep` instance: init, serve, check,
config-reference."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from postkeep import config as config_mod
from postkeep.auth.passwords import generate_password, hash_password
from postkeep.cli.common import CONFIG_NAME, CliError, check_domain, load_config, with_store
from postkeep.errors import StoreError
from postkeep.sasl.secrets import derive_secrets
from postkeep.smtp.wire.parser import is_domain
from postkeep.store.api import Store
from postkeep.store.crypto import create_master_key, load_master_key

# -- init ---------------------------------------------------------------------------------------


def _config_text(hostname: str, base_port: int) -> str:
    return f"""# postkeep instance configuration: see docs/config.md for every key.
[server]
hostname = "{hostname}"
data_dir = "."

[smtp]
listen = ["127.0.0.1:{base_port + 25}"]

[submission]
listen = ["127.0.0.1:{base_port + 87}"]
tls_listen = ["127.0.0.1:{base_port + 65}"]

[imap]
listen = ["127.0.0.1:{base_port + 143}"]
tls_listen = ["127.0.0.1:{base_port + 993}"]
"""


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.directory or args.dir)
    hostname = args.hostname.strip().lower()
    if not is_domain(hostname):
        raise CliError(f"{hostname!r} is not a valid host name")
    domain = check_domain(args.domain)
    if not (args.base_port > 0 and args.base_port + 993 < 65536):
        raise CliError("--base-port must leave room for base+993 below 65536")
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists():
        raise CliError(f"{cfg_path} exists already: this directory holds an instance")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    cfg_path.write_text(_config_text(hostname, args.base_port))
    cfg = config_mod.load(cfg_path)
    create_master_key(cfg.data_path(cfg.store.master_key_file))
    from postkeep.net.tls import create_self_signed

    create_self_signed(
        hostname, cfg.data_path(cfg.tls.cert_file), cfg.data_path(cfg.tls.key_file)
    )
    password = generate_password()

    async def setup(store: Store) -> None:
        await store.add_domain(domain)
        address = f"postmaster@{domain}"
        await store.add_account(
            address, hash_password(password), secrets=derive_secrets(address, password)
        )

    args.dir = str(directory)
    with_store(args, setup)
    print(f"initialised {directory} for {hostname}, domain {domain}")
    print(f"SMTP listens on 127.0.0.1:{args.base_port + 25}, submission on "
          f"{args.base_port + 87} (STARTTLS) and {args.base_port + 65} (implicit TLS), IMAP on "
          f"{args.base_port + 143} (STARTTLS) and {args.base_port + 993} (implicit TLS)")
    print(f"postmaster@{domain} password: {password}")
    return 0


# -- serve / check ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from postkeep import log
    from postkeep.server.forkserver import ForkServerGone
    from postkeep.server.main import serve
    from postkeep.server.pool import WorkerStartError

    cfg = load_config(args)
    log.setup(cfg.log.level)
    try:
        serve(cfg)
    except (WorkerStartError, ForkServerGone) as e:
        log.get("server").error("%s", e)
        return 1
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from postkeep.net.tls import check_tls

    cfg = load_config(args)
    problems = check_tls(cfg)
    try:
        load_master_key(cfg.data_path(cfg.store.master_key_file))
    except StoreError as e:
        problems.append(f"store.master_key_file: {e}")
    else:

        async def probe(store: Store) -> list[str]:
            found = []
            domains = await store.list_domains()
            if not domains:
                found.append("store: no local domain: add one with `postkeep domain add`")
            for d in domains:
                if await store.resolve_local(f"postmaster@{d.name}") is None:
                    found.append(f"store: postmaster@{d.name} reaches no account (RFC 5321 4.5.1)")
            return found

        try:
            problems += with_store(args, probe)
        except Exception as e:  # report, do not crash: `check` exists to diagnose
            problems.append(f"store: cannot open {cfg.store_url}: {e}")
    for problem in problems:
        print(problem)
    if not problems:
        print("ok")
    return 1 if problems else 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(config_mod.reference_markdown(), end="")
    return 0


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add init, serve, check and config-reference to the `postkeep` subparsers."""
    p = sub.add_parser("init", help="create a new instance")
    p.add_argument("directory", nargs="?", help="instance directory (default: --dir)")
    p.add_argument("--hostname", default="localhost")
    p.add_argument("--domain", default="example.test")
    p.add_argument("--base-port", type=int, default=2500,
                   help="SMTP listens on base+25 (default 2500 → 2525)")
    p.set_defaults(func=cmd_init)

    sub.add_parser("serve", help="run the server").set_defaults(func=cmd_serve)
    sub.add_parser("check", help="validate config, certificates and store").set_defaults(
        func=cmd_check
    )
    sub.add_parser("config-reference", help="print the config reference").set_defaults(
        func=cmd_config_reference
    )
