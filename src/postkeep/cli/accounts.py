"""Account administration commands of `postkeep`: domain, user, alias, app-password, send-as
(sending limits: `postkeep.cli.sending`; `user 2fa`: `postkeep.cli.twofactor`)."""

from __future__ import annotations

import argparse
import time

from postkeep.auth.passwords import generate_app_password, hash_app_password, hash_password
from postkeep.cli import sending, twofactor
from postkeep.cli.common import (
    CliError,
    check_address,
    check_domain,
    load_config,
    read_password,
    with_store,
)
from postkeep.cli.dkim import make_keys
from postkeep.policy.passwords import PasswordRejected, address_inputs, check_password_policy
from postkeep.sasl.secrets import derive_secrets
from postkeep.store.api import APP_PASSWORD_SCOPES, Store


def cmd_domain(args: argparse.Namespace) -> int:
    if args.action == "limits":
        return sending.cmd_limits(args, "domain")
    if args.action == "list":
        for d in with_store(args, lambda s: s.list_domains()):
            print(d.name)
        return 0
    name = check_domain(args.name)
    if args.action == "add":
        dkim = load_config(args).dkim

        async def add(store: Store) -> None:
            await store.add_domain(name)
            if not args.no_dkim:
                now = time.time()
                await make_keys(store, name, dkim, now, now)

        with_store(args, add)
        print(f"added domain {name}")
        if not args.no_dkim:
            print(f"DKIM keys made: `postkeep dkim show {name}` prints the records to publish")
    else:
        with_store(args, lambda s: s.remove_domain(name))
        print(f"removed domain {name}")
    return 0


async def _existing(store: Store) -> list[tuple[str, str]]:
    """Every address there is, as (address, "account" or "alias")."""
    return ([(a.address, "account") for a in await store.list_accounts()]
            + [(a.source, "alias") for a in await store.list_aliases()])


def check_new(args: argparse.Namespace, address: str) -> None:
    """CliError unless `address` may be created (`policy.addresses.check_new_address`)."""
    from postkeep.policy.addresses import check_new_address  # ICU: not for `serve`

    refused = check_new_address(address, with_store(args, _existing), force=args.force)
    if refused is not None:
        raise CliError(refused)


def visible(address: str) -> str:
    """`address`, or CliError if it has an invisible character (`policy.addresses`)."""
    from postkeep.policy.addresses import check_visible  # ICU: not for `serve`

    refused = check_visible(address)
    if refused is not None:
        raise CliError(refused)
    return address


def cmd_user(args: argparse.Namespace) -> int:
    """`user add|passwd|set|remove|list`: passwords pass the policy (the address counts as known
    to attackers) and are stored as an argon2id hash plus the derived SASL mechanism secrets."""
    if args.action == "show":
        return sending.cmd_user_show(args)
    if args.action == "2fa":
        return twofactor.cmd_two_factor(args)
    if args.action == "limits":
        return sending.cmd_limits(args, "user")
    if args.action == "list":
        domain = check_domain(args.domain) if args.domain else None
        for a in with_store(args, lambda s: s.list_accounts(domain)):
            quota = f"{a.quota_bytes}" if a.quota_bytes else "unlimited"
            print(f"{a.address}\tused={a.used_bytes}\tquota={quota}"
                  + ("\tdisabled" if a.disabled else "")
                  + ("\tapp-passwords-only" if a.app_passwords_only else ""))
        return 0
    address = check_address(args.address)
    if args.action == "remove":
        with_store(args, lambda s: s.remove_account(address))
        print(f"removed {address}")
        return 0
    if args.action == "set":
        if args.app_passwords_only is None:
            raise CliError("nothing to set: give --app-passwords-only yes|no")
        flag = args.app_passwords_only == "yes"
        with_store(args, lambda s: s.set_app_passwords_only(address, flag))
        print(f"{address}: app passwords only: {args.app_passwords_only}")
        return 0
    if args.action == "add":
        check_new(args, address)
    password, generated = read_password(args)
    try:
        check_password_policy(password, address_inputs(address))
    except PasswordRejected as e:
        raise CliError(str(e)) from None
    password_hash = hash_password(password)
    secrets = derive_secrets(address, password)
    if args.action == "add":

        async def add(store: Store) -> None:
            domain = address.rpartition("@")[2]
            if await store.get_domain(domain) is None:
                raise CliError(f"{domain} is not a local domain: `postkeep domain add {domain}`")
            await store.add_account(address, password_hash, args.quota, secrets=secrets)

        with_store(args, add)
        print(f"added {address}")
    else:
        with_store(args, lambda s: s.set_password(address, password_hash, secrets))
        print(f"changed password of {address}")
    if generated:
        print(f"password: {password}")
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def cmd_app_password(args: argparse.Namespace) -> int:
    """`app-password add|list|revoke`: per-device passwords, generated and shown once, limited to
    scopes (smtp, imap), stored as argon2id hashes."""
    address = check_address(args.address)
    if args.action == "list":
        rows = with_store(args, lambda s: s.list_app_passwords(address, args.all))
        for ap in rows:
            print(f"{ap.name}\tscopes={','.join(ap.scopes)}\tcreated={_when(ap.created)}"
                  f"\tlast_used={_when(ap.last_used)}" + ("\trevoked" if ap.revoked else ""))
        return 0
    name = args.name.strip()
    if args.action == "revoke":
        with_store(args, lambda s: s.revoke_app_password(address, name))
        print(f"revoked app password {name!r} of {address}")
        return 0
    scopes = list(dict.fromkeys(args.scope or APP_PASSWORD_SCOPES))
    password = generate_app_password()
    password_hash = hash_app_password(password)
    with_store(args, lambda s: s.add_app_password(address, name, password_hash, scopes))
    print(f"added app password {name!r} of {address} for {' and '.join(scopes)}")
    print(f"app password (shown only this once): {password}")
    return 0


def cmd_send_as(args: argparse.Namespace) -> int:
    address = check_address(args.address)
    if args.action == "list":
        for sender in with_store(args, lambda s: s.list_send_as(address)):
            print(sender)
        return 0
    sender = check_address(args.sender)
    if args.action == "add":
        visible(sender)
        with_store(args, lambda s: s.grant_send_as(address, sender))
        print(f"{address} may send as {sender}")
    else:
        with_store(args, lambda s: s.revoke_send_as(address, sender))
        print(f"{address} may no longer send as {sender}")
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    if args.action == "list":
        for a in with_store(args, lambda s: s.list_aliases()):
            print(f"{a.source}\t{', '.join(a.targets)}")
        return 0
    source = check_address(args.source, allow_catch_all=True)
    if args.action == "remove":
        with_store(args, lambda s: s.remove_alias(source))
        print(f"removed alias {source}")
        return 0
    targets = [visible(check_address(t)) for t in args.targets]
    check_new(args, source)

    async def add(store: Store) -> None:
        domain = source.rpartition("@")[2]
        if await store.get_domain(domain) is None:
            raise CliError(f"{domain} is not a local domain")
        await store.add_alias(source, targets)

    with_store(args, add)
    print(f"added alias {source} -> {', '.join(targets)}")
    return 0


# -- argument parsing ---------------------------------------------------------------------------

_FORCE_HELP = ("add it even if it looks like an existing address or mixes scripts (UTS #39); "
               "invisible characters are refused all the same")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add domain, user, app-password, alias and send-as to the `postkeep` subparsers."""
    p = sub.add_parser("domain", help="manage local domains")
    dsub = p.add_subparsers(dest="action", required=True)
    q = dsub.add_parser("add")
    q.add_argument("name")
    q.add_argument("--no-dkim", action="store_true", help="make no DKIM keys for it")
    dsub.add_parser("remove").add_argument("name")
    dsub.add_parser("list")
    q = dsub.add_parser("limits", help="show or set the domain's sending limits")
    q.add_argument("name")
    sending.add_limit_options(q)
    p.set_defaults(func=cmd_domain)

    p = sub.add_parser("user", help="manage accounts")
    usub = p.add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        q = usub.add_parser(action)
        q.add_argument("address")
        q.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input (else one is generated)")
        if action == "add":
            q.add_argument("--quota", type=int, default=0, help="quota in bytes (0: none)")
            q.add_argument("--force", action="store_true", help=_FORCE_HELP)
    q = usub.add_parser("set", help="change account settings")
    q.add_argument("address")
    q.add_argument("--app-passwords-only", choices=("yes", "no"),
                   help="refuse the account password for mail protocols (app passwords only)")
    usub.add_parser("remove").add_argument("address")
    usub.add_parser("list").add_argument("--domain")
    usub.add_parser("show", help="an account's settings and sending").add_argument("address")
    q = usub.add_parser("limits", help="show or set the account's sending limits")
    q.add_argument("address")
    sending.add_limit_options(q)
    twofactor.add_commands(usub)
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("app-password", help="manage an account's app passwords")
    apsub = p.add_subparsers(dest="action", required=True)
    q = apsub.add_parser("add", help="generate an app password (shown once)")
    q.add_argument("address")
    q.add_argument("name", help="what it is for, e.g. the device")
    q.add_argument("--scope", action="append", choices=APP_PASSWORD_SCOPES,
                   help="protocol it may be used with; repeat for several (default: all)")
    q = apsub.add_parser("list")
    q.add_argument("address")
    q.add_argument("--all", action="store_true", help="include revoked app passwords")
    q = apsub.add_parser("revoke")
    q.add_argument("address")
    q.add_argument("name")
    p.set_defaults(func=cmd_app_password)

    p = sub.add_parser("alias", help="manage aliases (source @domain is a catch-all)")
    asub = p.add_subparsers(dest="action", required=True)
    q = asub.add_parser("add")
    q.add_argument("source")
    q.add_argument("targets", nargs="+")
    q.add_argument("--force", action="store_true", help=_FORCE_HELP)
    asub.add_parser("remove").add_argument("source")
    asub.add_parser("list")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("send-as", help="let an account send as another address (submission)")
    ssub = p.add_subparsers(dest="action", required=True)
    for action in ("add", "remove"):
        q = ssub.add_parser(action)
        q.add_argument("address", help="the account")
        q.add_argument("sender", help="the address it may send as")
    ssub.add_parser("list").add_argument("address")
    p.set_defaults(func=cmd_send_as)
