"""The ingest benchmark's targets with more than SMTP at work (`run.py --targets ...`):

- ``postkeep-checks``: every inbound check on (iprev, a DNS block list, SPF, DKIM, ARC,
  DMARC, a domain list over the links), the records served by NSD on loopback;
- ``postkeep-filters``: the same, plus the content filters: the built-in junk filter (rules
  and its Bayes classifier, which asks the store for the message's tokens) and clamd
  (INSTREAM over its unix socket), `[filters] inbound = ["junk", "antivirus"]`;
- ``postfix-rspamd``: the reference for ``postkeep-filters``: the same private Postfix with
  rspamd as its milter (rspamd's proxy worker in milter mode handing each message to its
  normal workers, as Debian configures it), rspamd's
  own checks on (SPF, DKIM, ARC, DMARC, its DNS lists, all asked of the same NSD; made to
  check the load's 127.0.0.1, which rspamd otherwise takes for a local client and passes
  by), its Bayes on a Redis of its own, and its antivirus module asking the same kind of
  clamd over a unix socket for every message (its verdict cache off: keyed by the body's
  digest, it would make one scan serve every message smtp-source sends). Fuzzy checks,
  greylisting, rate limits and DKIM signing are off (they need the network, would refuse
  the load's single client, or are work postkeep does not do on the MX).

CPU per message counts every process doing the work: the server's tree, clamd, and for the
reference rspamd's tree and its Redis (NSD is left out on both sides).
"""

from __future__ import annotations

import atexit
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import LOOPBACK, TargetUnavailable, pick_port, set_toml_keys, tree_cpu_ticks
from targets import DOMAIN, REPO, PostfixTarget, PostkeepTarget

NSD_RECORDS = [
    'bench TXT "v=spf1 ip4:127.0.0.1 -all"',
    '_dmarc.bench TXT "v=DMARC1; p=reject"',
    "client.bench A 127.0.0.1",
]


def _start_nsd(workdir: Path):  # type: ignore[no-untyped-def]
    """NSD on loopback with the bench's records (tests/dnsserver.py, the tests' own)."""
    sys.path.insert(1, str(REPO))
    from tests.dnsserver import start_auth_server

    nsd_dir = workdir / "nsd"
    nsd_dir.mkdir()
    nsd = start_auth_server(nsd_dir)
    atexit.register(nsd.stop)
    nsd.add_zone("test", NSD_RECORDS)
    nsd.add_zone("0.0.127.in-addr.arpa", [f"1 PTR client.{DOMAIN}."])
    nsd.add_zone("zen.test", ["2.0.0.127 A 127.0.0.2"])  # RFC 5782 §5's test entry
    nsd.add_zone("dbl.test", ["listed.example A 127.0.1.2"])
    return nsd


def _start_clamd(workdir: Path):  # type: ignore[no-untyped-def]
    """clamd with the tests' local signatures (tests/clamd.py), on a unix socket."""
    sys.path.insert(1, str(REPO))
    from tests.clamd import Clamd

    (workdir / "clamd").mkdir()
    clamd = Clamd(workdir / "clamd", stream_max="25M")
    clamd.start()
    atexit.register(clamd.stop)
    return clamd


class PostkeepChecksTarget(PostkeepTarget):
    """postkeep with every inbound check on (`[inbound]`: trusted_networks empty, so the
    load's 127.0.0.1 is judged): iprev, a DNS block list, SPF, DMARC (p=reject, SPF-aligned:
    every message passes), DKIM and ARC (none signed: each message is looked at and found unsigned),
    and a domain list over the links. The records are served by NSD on loopback
    (tests/dnsserver.py), so after the first messages every lookup is a cache hit."""

    name = "postkeep-checks"

    def setup(self) -> None:
        super().setup()

        self.nsd = _start_nsd(self.workdir)
        path = self.instance / "postkeep.toml"
        path.write_text(path.read_text() + (
            f'\n[dns]\nnameservers = ["{self.nsd.nameserver}"]\n'
            "\n[inbound]\ntrusted_networks = []\n"
            '\n[[inbound.dnsbl]]\nzone = "zen.test"\n'
            '\n[[inbound.uribl]]\nzone = "dbl.test"\n'))
        self.notes.append("every inbound check on, records served by NSD on loopback")

    def stop(self) -> None:
        super().stop()
        log = self.serve_log()
        judged = len(re.findall(r'auth="iprev=pass spf=pass dkim=none arc=none dmarc=pass"', log))
        other = len(re.findall(r"message qid=", log)) - judged
        self.notes = [n for n in self.notes if not n.startswith("judged:")]
        self.notes.append(f"judged: {judged} messages with iprev, SPF and DMARC passing "
                          f"(DKIM and ARC none: unsigned), {other} otherwise")



class PostkeepFiltersTarget(PostkeepChecksTarget):
    name = "postkeep-filters"

    def setup(self) -> None:
        super().setup()
        self.clamd = None
        path = self.instance / "postkeep.toml"
        text = set_toml_keys(path.read_text(), "filters", {"inbound": '["junk", "antivirus"]'})
        self.clamd_socket = self.workdir / "clamd" / "clamd.sock"
        text = set_toml_keys(text, "antivirus", {"address": f'"{self.clamd_socket}"'})
        path.write_text(text)
        self.notes.append("content filters: junk (rules + Bayes lookups) and clamd")

    def start(self) -> None:
        try:
            self.clamd = _start_clamd(self.workdir)
        except AssertionError as e:
            raise TargetUnavailable(f"clamd: {e}") from e
        super().start()

    def cpu_ticks(self) -> int:
        ticks = super().cpu_ticks()
        if self.clamd is not None and self.clamd.proc is not None:
            ticks += tree_cpu_ticks(self.clamd.proc.pid)
        return ticks

    def stop(self) -> None:
        clamd_s = _seconds(self.clamd.proc.pid) if self.clamd and self.clamd.proc else 0.0
        super().stop()
        log = self.serve_log()
        scanned = len(re.findall(r"antivirus=clean|clamav=clean", log))
        self.notes = [n for n in self.notes if not n.startswith("scanned:")]
        self.notes.append(f"scanned: {scanned} messages found clean by clamd; clamd's CPU "
                          f"{clamd_s:.1f} s in all ({_per(clamd_s, scanned)} ms a message)")
        if self.clamd is not None:
            self.clamd.stop()


# rspamd compiles its regular expressions for Hyperscan in the background after it starts
# (about 25 s here) and meanwhile runs them much slower: the compiled databases are kept
# between runs, and the bench waits for them before it measures
HS_CACHE = Path("/var/tmp/postkeep-bench-rspamd-hs")

# Debian's own setup: the proxy speaks milter and hands each message to the normal workers
# (one per CPU), where the scan runs (in the proxy itself, `self_scan`, it ran about 7x slower
# here, in one process)
RSPAMD_PROXY = """\
bind_socket = "{listen}";
milter = yes;
timeout = 120s;
upstream "local" {{ default = yes; hosts = "{normal}"; }}
"""


class PostfixRspamdTarget(PostfixTarget):
    name = "postfix-rspamd"

    def setup(self) -> None:
        if not Path("/usr/bin/rspamd").exists():
            raise TargetUnavailable("rspamd is not installed")
        super().setup()
        self.milter_port, self.redis_port = pick_port(), pick_port()
        with open(self.config_dir / "main.cf", "a") as f:
            f.write(f"smtpd_milters = inet:{LOOPBACK}:{self.milter_port}\n"
                    "milter_protocol = 6\nmilter_default_action = tempfail\n"
                    "milter_mail_macros = i {mail_addr} {client_addr} {client_name} "
                    "{auth_authen}\n")
        self.nsd = _start_nsd(self.workdir)
        self.clamd = None
        self.procs: list[subprocess.Popen[bytes]] = []
        d = self.rspamd_dir = self.workdir / "rspamd"
        for sub in ("local.d", "db", "run", "log"):
            (d / sub).mkdir(parents=True)
        local = d / "local.d"
        host, _, port = self.nsd.nameserver.rpartition(":")
        normal = f"{LOOPBACK}:{pick_port()}"
        (local / "worker-proxy.inc").write_text(
            RSPAMD_PROXY.format(listen=f"{LOOPBACK}:{self.milter_port}", normal=normal))
        (local / "worker-normal.inc").write_text(f'bind_socket = "{normal}";\n')
        (local / "worker-controller.inc").write_text(
            f'bind_socket = "{LOOPBACK}:{pick_port()}";\n')
        (local / "worker-fuzzy.inc").write_text("enabled = false;\n")
        for module in ("fuzzy_check", "greylist", "ratelimit", "replies", "dkim_signing"):
            (local / f"{module}.conf").write_text("enabled = false;\n")
        # the load comes from 127.0.0.1, which rspamd takes for a local client: without
        # these its SPF, DMARC, DNS list and HELO checks would pass it by, as postkeep-filters
        # (trusted_networks = []) does not; and it would ARC-seal it (postkeep does not
        # sign on the MX)
        for module in ("spf", "dmarc", "rbl", "hfilter", "once_received", "dkim"):
            (local / f"{module}.conf").write_text("check_local = true;\ncheck_authed = true;\n")
        (local / "arc.conf").write_text("sign_local = false;\nsign_authenticated = false;\n")
        HS_CACHE.mkdir(parents=True, exist_ok=True)
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["{host}:{port}"]; timeout = 1s; retransmits = 2; }}\n'
            f'hs_cache_dir = "{HS_CACHE}";\n')
        (local / "redis.conf").write_text(f'servers = "{LOOPBACK}:{self.redis_port}";\n')
        (local / "classifier-bayes.conf").write_text(
            f'backend = "redis";\nservers = "{LOOPBACK}:{self.redis_port}";\n'
            "autolearn = false;\n")
        (local / "antivirus.conf").write_text(
            'clamav { type = "clamav"; action = "reject"; scan_mime_parts = false; '
            # no verdict cache: it is keyed by the body's digest, and smtp-source sends one
            # body for every message, so rspamd would ask clamd once in the whole run
            'no_cache = true; '
            f'servers = "{self.workdir / "clamd" / "clamd.sock"}"; symbol = "CLAM_VIRUS"; }}\n')
        (local / "logging.inc").write_text(
            f'type = "file";\nfilename = "{d}/log/rspamd.log";\nlevel = "warning";\n')
        self.notes.append("rspamd as milter (proxy to its normal workers), its checks made to "
                          "check 127.0.0.1, its Bayes on Redis, clamd through its antivirus "
                          "module for every message (no verdict cache); DNS from the same NSD")

    def start(self) -> None:
        try:
            self.clamd = _start_clamd(self.workdir)
        except AssertionError as e:
            raise TargetUnavailable(f"clamd: {e}") from e
        redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind",
                                  LOOPBACK, "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(redis)
        d = self.rspamd_dir
        with open(d / "stdout.log", "wb") as log:  # the child keeps its own copy
            rspamd = subprocess.Popen(
                ["rspamd", "-f", "-u", "root", "-g", "root", f"--var=LOCAL_CONFDIR={d}",
                 f"--var=DBDIR={d}/db", f"--var=RUNDIR={d}/run", f"--var=LOGDIR={d}/log"],
                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(rspamd)
        _wait_listen(self.milter_port, rspamd, 180)
        _wait_hyperscan(rspamd, 300)
        super().start()

    def cpu_ticks(self) -> int:
        ticks = super().cpu_ticks()
        for p in self.procs:
            if p.poll() is None:
                ticks += tree_cpu_ticks(p.pid)
        if self.clamd is not None and self.clamd.proc is not None:
            ticks += tree_cpu_ticks(self.clamd.proc.pid)
        return ticks

    def stop(self) -> None:
        procs = getattr(self, "procs", [])
        clamd = getattr(self, "clamd", None)
        clamd_s = _seconds(clamd.proc.pid) if clamd is not None and clamd.proc else 0.0
        rspamd_s = _seconds(procs[1].pid) if len(procs) > 1 and procs[1].poll() is None else 0.0
        if self.started:
            sent = self.log_counts(0)["sent"]
            self.notes = [n for n in self.notes if not n.startswith("CPU outside Postfix")]
            self.notes.append(f"CPU outside Postfix: rspamd {rspamd_s:.1f} s "
                              f"({_per(rspamd_s, sent)} ms a message), clamd {clamd_s:.1f} s "
                              f"({_per(clamd_s, sent)} ms a message), over {sent} messages")
        super().stop()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if getattr(self, "clamd", None) is not None:
            self.clamd.stop()


def _seconds(pid: int) -> float:
    """CPU seconds used so far by `pid`'s process tree."""
    return tree_cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def _per(seconds: float, count: int) -> str:
    return f"{1000 * seconds / count:.2f}" if count else "-"


def _wait_hyperscan(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until rspamd's Hyperscan databases are compiled: some exist, and none was written
    for 10 s."""
    deadline = time.monotonic() + timeout
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetUnavailable(f"rspamd exited with {proc.returncode}")
        state = sorted((f.name, f.stat().st_mtime) for f in HS_CACHE.glob("*.hs*"))
        if state != last:
            last, quiet_since = state, time.monotonic()
        elif state and time.monotonic() - quiet_since >= 10:
            return
        time.sleep(0.5)
    raise TargetUnavailable(f"rspamd's Hyperscan databases not ready within {timeout:g}s")


def _wait_listen(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetUnavailable(f"rspamd exited with {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), 0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise TargetUnavailable(f"rspamd did not listen on {port} within {timeout:g}s")
