#!/usr/bin/env python3
"""Outbound benchmark: submission -> DKIM signing -> relay to a local sink, postkeep against
a private Postfix with OpenDKIM as its milter, both signing with the same RSA-2048 key.

One load generator drives every target the same way (asyncio, in this process): C parallel
sessions, each STARTTLS + AUTH PLAIN, then up to M messages per connection (MAIL, RCPT, DATA
pipelined when offered), until N messages are sent. Every target relays to the same Postfix
`smtp-sink` on 127.0.0.1, which dumps what it receives (-D); the run ends when the sink holds
all N messages. We report msgs/s (N over the time from the first connect until the sink had
them all), the CPU time of each target's whole process tree per message (Postfix: the master
and its children plus opendkim), and check in the sink's dump that every message arrived
signed (RSA; Ed25519 too on the dual-signing target), verifying the first and the last
signature of each run with dkimpy.

Targets (alternated, the same parameters): `postfix` (Postfix + OpenDKIM, Cyrus SASL sasldb),
`postkeep` (RSA only, like for like), `postkeep-dual` (postkeep's default: Ed25519 and RSA).
postkeep finds the sink as the MX of the recipient domain, served by NSD (tests/dnsserver.py).
Run as root, with the project's venv (dnspython, dkimpy, pytest for tests/dnsserver.py):

    PYTHONPATH=src .venv/bin/python bench/outbound/run.py [--quick]

See README.md next to this file (RFC 6376 DKIM signing, RFC 6409 submission, RFC 4954 AUTH,
RFC 3207 STARTTLS, RFC 2920 pipelining are what the load generator speaks).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
sys.path.insert(1, str(REPO))  # tests/dnsserver.py
from common import (  # noqa: E402
    INIT_AS,
    LOOPBACK,
    TargetUnavailable,
    _cell,
    _fmt,
    _raise_interrupt,
    _tail,
    no_interrupts,
    pick_port,
    run_cmd,
    set_toml_keys,
    tree_cpu_ticks,
)

sys.path.insert(0, str(HERE))  # loadgen.py
from loadgen import (  # noqa: E402
    DOMAIN,
    PASSWORD,
    SENDER,
    SINK_DOMAIN,
    SMTP_SINK,
    Load,
    LoadError,
    Sink,
    drive,
    wait_for_smtp,
)

SELECTOR = "bench"  # the shared RSA key's selector, on every target
OPENDKIM = "/usr/sbin/opendkim"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- targets --------------------------------------------------------------------------------------


class Target(abc.ABC):
    """A server under test: set up, started, stopped; its process trees; when it is done.
    Subclasses implement setup/start/stop/root_pids."""

    name = "?"
    dual = False  # dual-signed (Ed25519 + RSA)

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.unavailable: str | None = None
        self.notes: list[str] = []
        self.version_str = "?"
        self.records: dict[str, str] = {}  # DKIM key records by name, for verification

    @abc.abstractmethod
    def setup(self, key_pem: bytes, key_record: str, sink: Sink, nameserver: str) -> None:
        """Create the instance (raise TargetUnavailable if that is impossible)."""

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def version(self) -> str:
        return "?"

    @abc.abstractmethod
    def root_pids(self) -> list[int]:
        """PIDs whose process trees are the whole server (empty if it is not running)."""

    def mark(self) -> int:
        return 0

    def drained(self, mark: int, expected: int) -> bool:
        return True

    def cpu_ticks(self) -> int:
        pids = self.root_pids()
        if not pids:
            raise RuntimeError(f"{self.name}: server is not running")
        return sum(tree_cpu_ticks(pid) for pid in pids)


POSTFIX_MASTER_CF = """\
# private benchmark instance: no chroot, submission on loopback only
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN_CF = """\
# private benchmark instance, generated by bench/outbound/run.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mta.{domain}
mydomain = {domain}
myorigin = $mydomain
mynetworks = 127.0.0.0/8
# nothing is local: every message is relayed to the sink
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [{sink_host}]:{sink_port}
# the sink offers no STARTTLS (postkeep, opportunistic, finds none either)
smtp_tls_security_level = none
# submission: STARTTLS required, then AUTH (Cyrus SASL, sasldb), then relaying
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {tls}/cert.pem
smtpd_tls_key_file = {tls}/key.pem
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {sasl}
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
# DKIM signing by OpenDKIM before the 250; a milter failure fails the message
smtpd_milters = inet:{loopback}:{milter_port}
non_smtpd_milters =
milter_default_action = tempfail
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
biff = no
append_dot_mydomain = no
smtpd_client_connection_count_limit = 1000
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
maillog_file = {maillog}
maillog_file_prefixes = {base}
"""

OPENDKIM_CONF = """\
# generated by bench/outbound/run.py: sign mail from {domain} with the shared RSA key
Mode s
Socket inet:{port}@{loopback}
KeyTable file:{dir}/keytable
SigningTable refile:{dir}/signingtable
Canonicalization relaxed/relaxed
# the fields postkeep signs, each over-signed as postkeep does (RFC 6376 §8.15); a field only
# in OversignHeaders would be hashed as absent even where present (dkimpy then fails it)
SignHeaders {headers}
OversignHeaders {headers}
Syslog no
PidFile {dir}/opendkim.pid
UMask 007
# the key is root's, mode 0600, but below /tmp, which is world-writable: OpenDKIM's check of
# the key's directories would refuse it
RequireSafeKeys false
"""

QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold")


class PostfixTarget(Target):
    """A private Postfix (own config, queue and data directories) with OpenDKIM as milter."""

    name = "postfix"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.config_dir = workdir / "etc"
        self.queue_dir = workdir / "spool"
        self.maillog = workdir / "maillog"
        self.dkim_dir = workdir / "opendkim"
        self.started = False
        self.opendkim: subprocess.Popen[bytes] | None = None

    def _postfix(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cmd(["postfix", "-c", str(self.config_dir), *args], timeout=timeout)

    def version(self) -> str:
        pf = run_cmd(["postconf", "-d", "-h", "mail_version"]).stdout.strip() or "?"
        od = run_cmd([OPENDKIM, "-V"]).stdout.splitlines()
        return f"Postfix {pf}, {od[0].strip() if od else 'OpenDKIM ?'}"

    def setup(self, key_pem: bytes, key_record: str, sink: Sink, nameserver: str) -> None:
        from postkeep.mailauth.dkim.sign import DEFAULT_HEADERS

        if os.geteuid() != 0:
            raise TargetUnavailable("Postfix needs root to start")
        for tool in ("postfix", OPENDKIM, SASLPASSWD2):
            if not shutil.which(tool):
                raise TargetUnavailable(f"{tool} is not installed (postfix, opendkim, sasl2-bin)")
        self.port = pick_port()
        milter_port = pick_port()
        self.workdir.mkdir(mode=0o755)
        for d in (self.config_dir, self.queue_dir, self.dkim_dir):
            d.mkdir(mode=0o755)
        tls, sasl = self.config_dir / "tls", self.config_dir / "sasl"
        tls.mkdir()
        sasl.mkdir()
        r = run_cmd([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "30", "-subj", f"/CN=mta.{DOMAIN}",
            "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"),
        ])  # fmt: skip
        if r.returncode != 0:
            raise TargetUnavailable(f"openssl req: {_tail(r.stderr)}")
        # Cyrus SASL for smtpd: sasldb, readable by smtpd (user postfix)
        sasldb = sasl / "sasldb2"
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\n"
            f"sasldb_path: {sasldb}\n"
        )
        user, _, realm = SENDER.partition("@")
        r = run_cmd([SASLPASSWD2, "-f", str(sasldb), "-p", "-c", "-u", realm, user],
                    input_text=PASSWORD)  # fmt: skip
        if r.returncode != 0:
            raise TargetUnavailable(f"saslpasswd2: {_tail(r.stdout + r.stderr)}")
        shutil.chown(sasldb, "root", "postfix")
        sasldb.chmod(0o640)
        # OpenDKIM: the shared key, root's only (it runs as root here)
        key = self.dkim_dir / "bench.private"
        key.write_bytes(key_pem)
        key.chmod(0o600)
        (self.dkim_dir / "keytable").write_text(f"benchkey {DOMAIN}:{SELECTOR}:{key}\n")
        (self.dkim_dir / "signingtable").write_text(f"*@{DOMAIN} benchkey\n")
        (self.dkim_dir / "opendkim.conf").write_text(
            OPENDKIM_CONF.format(
                domain=DOMAIN,
                port=milter_port,
                loopback=LOOPBACK,
                dir=self.dkim_dir,
                headers=",".join(DEFAULT_HEADERS),
            )
        )
        self.milter_port = milter_port
        self.records = {f"{SELECTOR}._domainkey.{DOMAIN}": key_record}
        (self.config_dir / "main.cf").write_text(POSTFIX_MAIN_CF.format(
            queue=self.queue_dir, data=self.workdir / "data", domain=DOMAIN, sink_host=LOOPBACK,
            sink_port=sink.port, tls=tls, sasl=sasl, loopback=LOOPBACK, milter_port=milter_port,
            maillog=self.maillog, base=self.workdir,
        ))  # fmt: skip
        (self.config_dir / "master.cf").write_text(
            POSTFIX_MASTER_CF.format(listen=f"{LOOPBACK}:{self.port}")
        )
        r = self._postfix("check")
        if r.returncode != 0:
            raise TargetUnavailable(f"postfix check failed: {_tail(r.stdout + r.stderr)}")

    def start(self) -> None:
        with open(self.dkim_dir / "opendkim.log", "ab") as log:
            self.opendkim = subprocess.Popen(
                [OPENDKIM, "-f", "-x", str(self.dkim_dir / "opendkim.conf")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            if self.opendkim.poll() is not None:
                log_text = (self.dkim_dir / "opendkim.log").read_text(errors="replace")
                raise TargetUnavailable(f"opendkim exited: {_tail(log_text)}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (LOOPBACK, self.milter_port), timeout=1):  # fmt: skip
                break
            if time.monotonic() > deadline:
                raise TargetUnavailable("opendkim did not listen within 20s")
            time.sleep(0.1)
        self.started = True  # from here on stop() must run, even if start fails half-way
        r = self._postfix("start")
        if r.returncode != 0:
            raise TargetUnavailable(f"postfix start failed: {_tail(r.stdout + r.stderr)}")
        wait_for_smtp(self.port, 30)

    def _master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def root_pids(self) -> list[int]:
        master = self._master_pid()
        if master is None or self.opendkim is None or self.opendkim.poll() is not None:
            return []
        return [master, self.opendkim.pid]

    def stop(self) -> None:
        if self.started:
            pid = self._master_pid()
            r = self._postfix("stop", timeout=60)
            if r.returncode != 0:
                print(f"  postfix stop: {_tail(r.stdout + r.stderr)}", file=sys.stderr)
            if pid is not None:  # `postfix stop` escalates to SIGKILL; make sure of it
                deadline = time.monotonic() + 10
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self.started = False
        if self.opendkim is not None:
            if self.opendkim.poll() is None:
                self.opendkim.terminate()
                try:
                    self.opendkim.wait(10)
                except subprocess.TimeoutExpired:
                    self.opendkim.kill()
                    self.opendkim.wait(10)
            self.opendkim = None

    def mark(self) -> int:
        try:
            return self.maillog.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        try:
            with open(self.maillog, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def drained(self, mark: int, expected: int) -> bool:
        for sub in QUEUE_SUBDIRS:
            d = self.queue_dir / sub
            if d.exists() and any(p.is_file() for p in d.rglob("*")):
                return False
        return len(re.findall(r" status=sent ", self.log_since(mark))) >= expected


class PostkeepTarget(Target):
    """postkeep through its CLI (`init`, `user add`, `serve`); the shared key via its store."""

    PORT_OFFSETS = (25, 80, 110, 143, 443, 465, 587, 993, 995, 4190)

    def __init__(self, workdir: Path, exe: Path, dual: bool) -> None:
        super().__init__(workdir)
        self.name = "postkeep-dual" if dual else "postkeep"
        self.dual = dual
        self.exe = exe
        self.instance = workdir / "instance"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "serve.log"

    def _cli(self, *args: str, input_text: str | None = None) -> str:
        try:
            r = run_cmd([str(self.exe), *args], input_text=input_text, cwd=self.workdir)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetUnavailable(f"{self.exe} {args[0]}: {e}") from e
        if r.returncode != 0:
            raise TargetUnavailable(f"postkeep {' '.join(args[:3])}: {_tail(r.stdout + r.stderr)}")
        return r.stdout

    def version(self) -> str:
        """git HEAD, uncommitted files in src/ and a hash of src/postkeep/**.py."""
        src = REPO / "src" / "postkeep"
        digest = hashlib.sha256()
        for path in sorted(src.rglob("*.py")):
            digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
        head = run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=10)
        dirty = run_cmd(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], timeout=10)
        parts = [f"git {head.stdout.strip() or 'none'}"]
        if n := len(dirty.stdout.splitlines()):
            parts.append(f"{n} uncommitted file(s) in src/")
        return ", ".join([*parts, f"src/postkeep sha256 {digest.hexdigest()[:12]}"])

    def setup(self, key_pem: bytes, key_record: str, sink: Sink, nameserver: str) -> None:
        if not self.exe.exists():
            raise TargetUnavailable(f"{self.exe} not found")
        self.workdir.mkdir(mode=0o755)
        base = pick_port(self.PORT_OFFSETS, 10000, 32000 - max(self.PORT_OFFSETS))
        self._cli("init", str(self.instance), "--hostname", DOMAIN, "--domain", DOMAIN,
                  "--base-port", str(base), *INIT_AS)  # fmt: skip
        self.port = base + 587
        path = self.instance / "postkeep.toml"
        text = path.read_text()
        for table, values in (
            ("dns", {"nameservers": f'["{nameserver}"]', "timeout": "2.0", "attempts": "1"}),
            ("delivery", {"remote_port": str(sink.port)}),
            ("dkim", {"algorithms": '["ed25519", "rsa"]' if self.dual else '["rsa"]'}),
            ("smtp", {"max_connections_per_ip": "1000"}),
            ("sending", {k: "0" for k in (
                "account_messages_per_hour", "account_messages_per_day",
                "account_recipients_per_hour", "account_recipients_per_day")}),
        ):  # fmt: skip
            text = set_toml_keys(text, table, values)
        path.write_text(text)
        listen = re.search(r"^\[submission\]\s*\nlisten = \[\"[\d.]+:(\d+)\"", text, re.M)
        if listen:
            self.port = int(listen.group(1))
        self._cli("--dir", str(self.instance), "user", "add", SENDER, "--password-stdin",
                  input_text=PASSWORD + "\n")  # fmt: skip
        # init made an Ed25519 and an RSA key: the RSA one gives way to the shared key, the
        # Ed25519 one stays on the dual-signing target only
        shown = self._cli("--dir", str(self.instance), "dkim", "show", DOMAIN)
        for selector, algorithm in re.findall(r"^; (\S+) \(([\w-]+)\): signing", shown, re.M):
            if algorithm == "ed25519-sha256" and self.dual:
                continue
            self._cli("--dir", str(self.instance), "dkim", "remove", DOMAIN, selector)
        asyncio.run(self._add_key(key_pem, key_record))
        shown = self._cli("--dir", str(self.instance), "dkim", "show", DOMAIN)
        for name, strings in re.findall(r"^(\S+)\. IN TXT (.*)$", shown, re.M):
            self.records[name.lower()] = "".join(re.findall(r'"([^"]*)"', strings))
        want = {f"{SELECTOR}._domainkey.{DOMAIN}"}
        if not want <= set(self.records) or len(self.records) != (2 if self.dual else 1):
            raise TargetUnavailable(f"unexpected DKIM keys: {shown.strip()}")

    async def _add_key(self, key_pem: bytes, key_record: str) -> None:
        from postkeep import config
        from postkeep.store import load_master_key, open_store

        cfg = config.load(self.instance / "postkeep.toml")
        master = load_master_key(cfg.data_path(cfg.store.master_key_file))
        store = await open_store(cfg.store_url, cfg.data_dir, master, maintenance=False)
        try:
            public = re.search(r"p=([^;\s]+)", key_record)
            assert public is not None
            await store.add_dkim_key(DOMAIN, SELECTOR, "rsa-sha256", key_pem, public.group(1),
                                     time.time() - 60)  # fmt: skip
        finally:
            await store.close()

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    [str(self.exe), "--dir", str(self.instance), "serve"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.workdir, start_new_session=True,
                )  # fmt: skip
            except OSError as e:
                raise TargetUnavailable(f"cannot run postkeep serve: {e}") from e
        try:
            wait_for_smtp(self.port, 60, alive=lambda: bool(self.root_pids()))
        except TargetUnavailable as e:
            raise TargetUnavailable(f"{e}; serve log: {_tail(self.log_since(0))}") from e

    def log_since(self, mark: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def root_pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def drained(self, mark: int, expected: int) -> bool:
        """Every message logged as sent (`queue: sent qid=...`, one line per recipient)."""
        return len(re.findall(r"queue: sent qid=", self.log_since(mark))) >= expected


# -- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    target: str
    messages: int
    ok: bool = False
    seconds: float = 0.0  # first connect until the sink had every message
    accept_s: float = 0.0  # first connect until the last 250
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    verify: str = ""
    error: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.ok and self.seconds else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.cpu_s / self.messages if self.ok else 0.0


def wait_settled(target: Target, mark: int, expected: int, timeout: float) -> bool:
    """Wait until the target finished the run's messages and its CPU use went quiet."""
    deadline = time.monotonic() + timeout
    while not target.drained(mark, expected):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    quiet, last = 0, target.cpu_ticks()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = target.cpu_ticks()
        quiet = quiet + 1 if now - last <= 2 else 0  # <= 2 ticks in 0.5 s: idle
        last = now
    return quiet >= 2


def run_load(target: Target, sink: Sink, load: Load, tag: str) -> RunResult:
    res = RunResult(target.name, load.messages)
    if not wait_settled(target, target.mark(), 0, 120):
        target.notes.append(f"{tag}: server was not idle before the run")
    sink.reset()
    mark = target.mark()
    cpu0 = target.cpu_ticks()
    client0 = time.process_time()
    timeout = max(120.0, load.messages * 0.5)
    try:
        res.accept_s, res.seconds = asyncio.run(drive(target.port, load, tag, sink, timeout))
    except (LoadError, OSError, ssl.SSLError, TimeoutError) as e:
        res.error = f"{type(e).__name__}: {e}; the sink has {sink.count()}"
        return res
    res.client_cpu_s = time.process_time() - client0
    settled = wait_settled(target, mark, load.messages, 120)
    res.cpu_s = (target.cpu_ticks() - cpu0) / CLK_TCK
    check = sink.check(target.records)
    want_sigs = 4 if target.dual else 2  # first and last message, each signature
    verify = [f"sink {check.messages}/{load.messages}, RSA-signed {check.rsa}"]
    if target.dual:
        verify.append(f"Ed25519-signed {check.ed25519}")
    verify.append(f"dkimpy verified {check.verified}/{want_sigs}")
    if not settled:
        verify.append("did not settle")
    res.verify = ", ".join(verify)
    bad = check.messages != load.messages or check.rsa != load.messages
    bad = bad or (target.dual and check.ed25519 != load.messages)
    if bad or check.verified != want_sigs or check.problems:
        res.error = "; ".join([res.verify, *check.problems])
        return res
    res.ok = True
    return res


def safe_run(target: Target, sink: Sink, load: Load, tag: str) -> RunResult:
    """run_load, a broken target (died, /proc gone) turned into a failed result."""
    try:
        return run_load(target, sink, load, tag)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return RunResult(target.name, load.messages, error=f"{type(e).__name__}: {e}")


# -- reporting ------------------------------------------------------------------------------------


def machine_info(targets: Sequence[Target], load_before: str) -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- host: nproc={os.cpu_count()}, {model}; kernel {platform.release()}; "
        f"python {platform.python_version()}",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {loadavg()}",
    ]
    info += [f"- {t.name}: {t.version_str if not t.unavailable else 'unavailable'}"
             for t in targets]  # fmt: skip
    return info


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def render(
    mode: str, load: Load, targets: Sequence[Target], results: dict[str, list[RunResult]],
    repeat: int, interrupted: bool, load_before: str,
) -> str:  # fmt: skip
    out = [f"# Outbound benchmark ({mode}{', INTERRUPTED' if interrupted else ''})", ""]
    out += machine_info(targets, load_before)
    out += [
        f"- load: {load.messages} messages of {load.size // 1024} KB body over "
        f"{load.connections} parallel sessions, {load.per_connection} per connection "
        f"(STARTTLS, AUTH PLAIN, MAIL/RCPT/DATA {'pipelined' if load.pipelining else 'one by one'}"
        f"); {repeat} run(s) per target, "
        "the median by msgs/s shown",
        "",
        "| target | signatures | msgs/s | all runs msgs/s | ratio to postfix | CPU ms/msg "
        "| CPU ratio | 250s done s | sink done s | client CPU ms/msg | check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    medians: dict[str, RunResult] = {}
    for t in targets:
        ok = sorted((r for r in results.get(t.name, []) if r.ok), key=lambda r: r.rate)
        if ok:
            medians[t.name] = ok[(len(ok) - 1) // 2]
    pf = medians.get("postfix")
    for t in targets:
        runs = results.get(t.name, [])
        sigs = "Ed25519 + RSA-2048" if t.dual else "RSA-2048"
        r = medians.get(t.name)
        if r is None:
            why = (
                "unavailable: " + t.unavailable
                if t.unavailable
                else (runs[-1].error if runs else "not run")
            )
            out.append(f"| {t.name} | {sigs} | " + " | ".join(["-"] * 8) + f" | {_cell(why)} |")
            continue
        ratio = cpu_ratio = None
        if pf is not None and t.name != "postfix":
            ratio = r.rate / pf.rate
            cpu_ratio = r.cpu_ms_per_msg / pf.cpu_ms_per_msg if pf.cpu_ms_per_msg else None
        out.append("| " + " | ".join([
            t.name, sigs, f"{r.rate:.0f}",
            " / ".join(f"{x.rate:.0f}" if x.ok else "failed" for x in runs),
            _fmt(ratio, ".2f"), f"{r.cpu_ms_per_msg:.2f}", _fmt(cpu_ratio, ".2f"),
            f"{r.accept_s:.2f}", f"{r.seconds:.2f}",
            f"{1000 * r.client_cpu_s / r.messages:.2f}", _cell(r.verify),
        ]) + " |")  # fmt: skip
    out += [
        "",
        "ratio = target msgs/s / Postfix+OpenDKIM msgs/s (above 1: faster). CPU ratio = target "
        "CPU/msg / Postfix+OpenDKIM CPU/msg (above 1: more CPU).",
    ]
    notes = [f"- {t.name}: unavailable: {t.unavailable}" for t in targets if t.unavailable]
    notes += [f"- {t.name}: {n}" for t in targets for n in t.notes]
    notes += [f"- failed run ({r.target}): {r.error}" for rs in results.values() for r in rs
              if not r.ok]  # fmt: skip
    if notes:
        out += ["", "## Notes", "", *notes]
    return "\n".join(out) + "\n"


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="200 messages, 1 run (smoke test)")
    p.add_argument("--targets", default="postfix,postkeep,postkeep-dual")
    p.add_argument("--messages", type=int, default=0, help="per run (default 2000; 200 quick)")
    p.add_argument("--size", type=int, default=5 * 1024, help="body octets (default 5120)")
    p.add_argument("--connections", type=int, default=10, help="parallel sessions")
    p.add_argument(
        "--per-connection", type=int, default=0, help="messages per connection (50; 10 quick)"
    )
    p.add_argument("--no-pipelining", action="store_true", help="one command per write")
    p.add_argument("--repeat", type=int, default=0, help="runs per target (default 3; 1 quick)")
    p.add_argument("--postkeep", type=Path, default=REPO / ".venv" / "bin" / "postkeep")
    p.add_argument("--output", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --output")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def shared_key() -> tuple[bytes, str]:
    """The RSA-2048 key every target signs with: PKCS #8 PEM and its DNS record's value."""
    from postkeep.mailauth.dkim.keys import dns_record, generate_key, private_key_pem

    key = generate_key("rsa", bits=2048)
    return private_key_pem(key), dns_record(key)


def start_all(targets: list[Target], sink: Sink, base: Path, stack: contextlib.ExitStack) -> None:
    """The sink, NSD (the sink domain's MX) and every target that can run."""
    from tests.dnsserver import auth_server

    sink.start()
    nsd = stack.enter_context(auth_server(base / "nsd"))
    nsd.add_zone(SINK_DOMAIN, ["@ MX 10 mx", f"mx A {LOOPBACK}"])
    key_pem, record = shared_key()
    for t in targets:
        print(f"[{t.name}] setting up and starting", flush=True)
        try:
            t.setup(key_pem, record, sink, nsd.nameserver)
            t.version_str = t.version()
            t.start()
        except (TargetUnavailable, OSError, subprocess.SubprocessError) as e:
            t.unavailable = str(e)
            print(f"[{t.name}] unavailable: {e}", flush=True)
            with no_interrupts():
                t.stop()
            continue
        print(f"[{t.name}] submission on {LOOPBACK}:{t.port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    if any(n not in ("postfix", "postkeep", "postkeep-dual") for n in names):
        print("unknown target", file=sys.stderr)
        return 2
    if not Path(SMTP_SINK).exists():
        print(f"{SMTP_SINK} not found (install the postfix package)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    quick = args.quick
    load = Load(
        args.messages or (200 if quick else 2000),
        args.size,
        args.connections,
        args.per_connection or (10 if quick else 50),
        not args.no_pipelining,
    )
    repeat = args.repeat or (1 if quick else 3)
    mode = "quick" if quick else "full"
    load_before = loadavg()

    base = Path(tempfile.mkdtemp(prefix="outbound-bench-"))
    base.chmod(0o755)  # Postfix's daemons (user postfix) and smtp-sink (nobody) reach into it
    sink = Sink(base / "sink")
    sink.workdir.mkdir()
    targets: list[Target] = [
        PostfixTarget(base / "postfix") if n == "postfix"
        else PostkeepTarget(base / n, args.postkeep, dual=n == "postkeep-dual")
        for n in names
    ]  # fmt: skip
    results: dict[str, list[RunResult]] = {}
    interrupted = False
    print(f"work directory {base}; mode {mode}; load average {load_before}", flush=True)
    try:
        with contextlib.ExitStack() as stack:
            start_all(targets, sink, base, stack)
            live = [t for t in targets if not t.unavailable]
            warm = dataclasses.replace(load, messages=max(load.connections, load.messages // 10))
            for t in live:
                w = safe_run(t, sink, warm, f"warm-{t.name}")
                if not w.ok:
                    t.notes.append(f"warm-up failed: {w.error}")
            for rep in range(repeat):
                for t in live:
                    if not t.root_pids():
                        print(f"[{t.name}] server is gone, skipping", flush=True)
                        continue
                    print(f"[{t.name}] {load.messages} msgs, run {rep + 1}", end="", flush=True)
                    r = safe_run(t, sink, load, f"{t.name}-{rep}")
                    results.setdefault(t.name, []).append(r)
                    if r.ok:
                        print(
                            f" -> {r.seconds:.2f}s, {r.rate:.0f} msgs/s, "
                            f"{r.cpu_ms_per_msg:.2f} CPU ms/msg, {r.verify}",
                            flush=True,
                        )
                    else:
                        print(f" -> FAILED: {r.error}", flush=True)
            with no_interrupts():
                for t in targets:
                    try:
                        t.stop()
                    except Exception as e:  # keep cleaning up the others
                        print(f"[{t.name}] stop failed: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted, cleaning up", file=sys.stderr)
    finally:
        with no_interrupts():
            for t in targets:
                with contextlib.suppress(Exception):
                    t.stop()
            sink.stop()
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    report = render(mode, load, targets, results, repeat, interrupted, load_before)
    print()
    print(report, end="")
    if not args.no_write and not interrupted and results:
        args.output.write_text(report)
        print(f"\nwritten to {args.output}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
