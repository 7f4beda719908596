"""Commands that set up, run and check a `postkeep` instance: init, serve, check,
config-reference.

`init` run by root also creates the system user the server runs as (`server.user`,
`postkeep.server.privileges`) and hands the instance's files over to it."""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from postkeep import config as config_mod
from postkeep.auth.passwords import generate_password, hash_password
from postkeep.cli.common import CONFIG_NAME, CliError, check_domain, load_config, with_store
from postkeep.cli.dkim import make_keys
from postkeep.config.reference import reference_markdown
from postkeep.errors import ConfigError, StoreError
from postkeep.sasl.secrets import derive_secrets
from postkeep.server.privileges import ROOT_USER, service_account
from postkeep.smtp.wire.parser import is_domain
from postkeep.store.api import Store
from postkeep.store.crypto import create_master_key, load_master_key

# -- init ---------------------------------------------------------------------------------------


DEFAULT_USER = "postkeep"


def _config_text(hostname: str, base_port: int, user: str) -> str:
    return f"""# postkeep instance configuration: see docs/config.md for every key.
[server]
hostname = "{hostname}"
data_dir = "."
# started as root, postkeep binds its ports, then runs as this user (empty: never as root)
user = "{user}"

[smtp]
listen = ["127.0.0.1:{base_port + 25}"]

[submission]
listen = ["127.0.0.1:{base_port + 87}"]
tls_listen = ["127.0.0.1:{base_port + 65}"]

[imap]
listen = ["127.0.0.1:{base_port + 143}"]
tls_listen = ["127.0.0.1:{base_port + 993}"]

[web]
listen = ["127.0.0.1:{base_port + 443}"]
http_listen = ["127.0.0.1:{base_port + 80}"]
"""


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.directory or args.dir)
    hostname = args.hostname.strip().lower()
    if not is_domain(hostname):
        raise CliError(f"{hostname!r} is not a valid host name")
    domain = check_domain(args.domain)
    if not (args.base_port > 0 and args.base_port + 993 < 65536):
        raise CliError("--base-port must leave room for base+993 below 65536")
    root = os.geteuid() == 0
    if args.user is not None and not root:
        raise CliError("--user: only init run as root creates and sets the system user")
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists():
        raise CliError(f"{cfg_path} exists already: this directory holds an instance")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    as_root = root and args.user == ROOT_USER  # explicit: a development instance, no drop
    account = (ensure_system_user(args.user or DEFAULT_USER, directory.resolve())
               if root and not as_root else None)
    user = ROOT_USER if as_root else account.pw_name if account else ""
    cfg_path.write_text(_config_text(hostname, args.base_port, user))
    cfg = config_mod.load(cfg_path)
    create_master_key(cfg.data_path(cfg.store.master_key_file))
    from postkeep.net.tls import create_self_signed

    create_self_signed(
        hostname, cfg.data_path(cfg.tls.cert_file), cfg.data_path(cfg.tls.key_file)
    )
    if account is not None:
        _hand_over(cfg, cfg_path, account)
    password = generate_password()

    async def setup(store: Store) -> None:
        await store.add_domain(domain)
        address = f"postmaster@{domain}"
        await store.add_account(
            address, hash_password(password), secrets=derive_secrets(address, password)
        )
        now = time.time()
        await make_keys(store, domain, cfg.dkim, now, now)

    args.dir = str(directory)
    with_store(args, setup)
    print(f"initialised {directory} for {hostname}, domain {domain}")
    print(f"DKIM keys made for {domain}: `postkeep dkim show {domain}` prints the records "
          "to publish")
    print(f"SMTP listens on 127.0.0.1:{args.base_port + 25}, submission on "
          f"{args.base_port + 87} (STARTTLS) and {args.base_port + 65} (implicit TLS), IMAP on "
          f"{args.base_port + 143} (STARTTLS) and {args.base_port + 993} (implicit TLS), "
          f"the web pages on https://{hostname}:{args.base_port + 443}/ (HTTP on "
          f"{args.base_port + 80} redirects there)")
    if account is not None:
        print(f"started as root, the server runs as {account.pw_name} (server.user)")
    if as_root:
        print('server.user = "root": the server will not drop its privileges (development '
              "only; `postkeep init` as root without --user root creates a service user)")
    print(f"postmaster@{domain} password: {password}")
    return 0


def ensure_system_user(name: str, home: Path) -> pwd.struct_passwd:
    """The user `name`, created as a system user (its own group, no login, `home` as home
    directory, not created) when it does not exist; an existing one is reused."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)),
                     "/bin/false")
        r = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", str(home),
             "--shell", shell, name],
            capture_output=True, text=True, check=False,
        )
        try:
            pwd.getpwnam(name)  # created, or by another init meanwhile
        except KeyError:
            problem = r.stderr.strip() or f"exit status {r.returncode}"
            raise CliError(f"cannot create the system user {name!r}: {problem}") from None
        if r.returncode == 0:
            print(f"created system user {name}")
    try:
        return service_account(name)
    except ConfigError as e:
        raise CliError(f"--user: {e.problem}") from None


def _hand_over(cfg: config_mod.Config, cfg_path: Path, account: pwd.struct_passwd) -> None:
    """init run by root: the data directory, the keys and the certificate go to the service
    user (the keys stay 0600); postkeep.toml stays root's, readable by the user's group (it
    names whom root drops to, so the user must not write it). The directory is 0711: a root
    without CAP_DAC_OVERRIDE (the systemd unit's) must still reach postkeep.toml in it; its
    files are 0600 or 0640, and so is what the server creates (umask 0077)."""
    uid, gid = account.pw_uid, account.pw_gid
    data_dir = cfg.data_dir
    os.chown(data_dir, uid, gid)
    os.chmod(data_dir, 0o711)
    for key in (cfg.store.master_key_file, cfg.tls.key_file, cfg.tls.cert_file):
        path = cfg.data_path(key)
        for owned in (path, *path.parents):
            if owned == data_dir or data_dir not in owned.parents:
                break
            os.chown(owned, uid, gid)
    os.chown(cfg_path, 0, gid)
    os.chmod(cfg_path, 0o640)


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
    from postkeep.filters.setup import probe as probe_filters
    from postkeep.net.tls import check_tls

    cfg = load_config(args)
    problems = check_tls(cfg)
    warnings = resolver_warnings(cfg)
    now = time.time()
    try:
        load_master_key(cfg.data_path(cfg.store.master_key_file))
    except StoreError as e:
        problems.append(f"store.master_key_file: {e}")
    else:

        async def held(store: Store) -> list[str]:
            """Warnings: accounts paused after an outbound filter hit, messages held."""
            found = [f"{p.address}: sending paused until {_utc(p.until)} after content "
                     f"filter {p.filter} held {p.queue_id} ({p.reason}); `postkeep "
                     "quarantine resume` ends it" for p in await store.sending_pauses(now)]
            entries = await store.list_quarantine()
            out = sum(e.direction == "out" for e in entries)
            if out:
                found.append(f"{out} outbound message(s) held for review: `postkeep "
                             "quarantine list --direction out`")
            if len(entries) > out:
                found.append(f"{len(entries) - out} inbound message(s) in quarantine")
            return found

        async def probe(store: Store) -> list[str]:
            warnings.extend(await held(store))
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
    problems += asyncio.run(probe_filters(cfg))  # a configured clamd that does not answer
    for problem in problems:
        print(problem)
    for warning in warnings:
        print(f"warning: {warning}")
    if not problems:
        print("ok")
    return 1 if problems else 0


#: Well-known public recursive resolvers (Google, Cloudflare, Quad9, OpenDNS, AdGuard,
#: CleanBrowsing, Level3, Verisign, Comodo, Yandex, DNS.WATCH): DNSBL operators such as
#: Spamhaus answer their queries with 127.255.255.254 ("query via public resolver").
PUBLIC_RESOLVERS = frozenset({
    "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844",
    "1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9",
    "208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53",
    "94.140.14.14", "94.140.15.15", "185.228.168.9", "185.228.169.9",
    "4.2.2.1", "4.2.2.2", "64.6.64.6", "64.6.65.6", "8.26.56.26", "8.20.247.20",
    "77.88.8.8", "77.88.8.1", "84.200.69.80", "84.200.70.40",
})


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def resolver_warnings(cfg: config_mod.Config, resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """A warning for each configured nameserver (or resolv.conf's, with `dns.nameservers`
    empty) that is a well-known public resolver."""
    if cfg.dns.nameservers:
        hosts = [config_mod.parse_nameserver(n)[0] for n in cfg.dns.nameservers]
        where = "dns.nameservers"
    else:
        try:
            text = Path(resolv_conf).read_text()
        except OSError:
            return []
        hosts = [line.split()[1] for line in text.splitlines()
                 if line.startswith("nameserver") and len(line.split()) > 1]
        where = f"{resolv_conf} (dns.nameservers is empty)"
    return [f"{where}: {host} is a public resolver; DNS block lists (Spamhaus and others) "
            "refuse queries from those, so their listings would be missed: run a resolver "
            "of your own (e.g. unbound on 127.0.0.1) and set dns.nameservers"
            for host in hosts if host in PUBLIC_RESOLVERS]


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(reference_markdown(), end="")
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
    p.add_argument("--user", help="run by root: the system user the server runs as (default "
                                  f"{DEFAULT_USER}; created if missing), set as server.user; "
                                  "`root`: no drop (a development instance only)")
    p.set_defaults(func=cmd_init)

    sub.add_parser("serve", help="run the server").set_defaults(func=cmd_serve)
    sub.add_parser("check", help="validate config, certificates and store").set_defaults(
        func=cmd_check
    )
    sub.add_parser("config-reference", help="print the config reference").set_defaults(
        func=cmd_config_reference
    )
