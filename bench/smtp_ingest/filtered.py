"""The ingest benchmark's targets with more than SMTP at work (`run.py --targets ...`):

- ``postkeep-checks``: every inbound check on (iprev, a DNS block list, SPF, DKIM, ARC,
  DMARC, a domain list over the links), the records served by NSD on loopback;
- ``postkeep-filters``: the same, plus the content filters: the built-in junk filter (rules
  and its Bayes classifier, which asks the store for the message's tokens) and clamd
  (INSTREAM over its unix socket), `[filters] inbound = ["junk", "antivirus"]`;
- ``postfix-rspamd``: the reference for ``postkeep-filters``: the same private Postfix with
  rspamd as its milter (rspamd's proxy worker in milter mode, scanning itself), rspamd's
  own checks on (SPF, DKIM, ARC, DMARC, its DNS lists, all asked of the same NSD), its Bayes
  on a Redis of its own, and its antivirus module asking the same kind of clamd over a unix
  socket. Fuzzy checks, greylisting and rate limits are off (they need the network, or
  would refuse the load's single client).

CPU per message counts every process doing the work: the server's tree, clamd, and for the
reference rspamd's tree and its Redis (NSD is left out on both sides).
"""

from __future__ import annotations

import atexit
import re
import subprocess
import sys
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
        super().stop()
        log = self.serve_log()
        scanned = len(re.findall(r"antivirus=clean|clamav=clean", log))
        self.notes = [n for n in self.notes if not n.startswith("scanned:")]
        self.notes.append(f"scanned: {scanned} messages found clean by clamd")
        if self.clamd is not None:
            self.clamd.stop()


RSPAMD_PROXY = """\
bind_socket = "{listen}";
milter = yes;
timeout = 120s;
upstream "local" {{ default = yes; self_scan = yes; }}
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
        (local / "worker-proxy.inc").write_text(
            RSPAMD_PROXY.format(listen=f"{LOOPBACK}:{self.milter_port}"))
        (local / "worker-normal.inc").write_text("enabled = false;\n")
        (local / "worker-controller.inc").write_text(
            f'bind_socket = "{LOOPBACK}:{pick_port()}";\n')
        (local / "worker-fuzzy.inc").write_text("enabled = false;\n")
        for module in ("fuzzy_check", "greylist", "ratelimit", "replies"):
            (local / f"{module}.conf").write_text("enabled = false;\n")
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["{host}:{port}"]; timeout = 1s; retransmits = 2; }}\n')
        (local / "redis.conf").write_text(f'servers = "{LOOPBACK}:{self.redis_port}";\n')
        (local / "classifier-bayes.conf").write_text(
            f'backend = "redis";\nservers = "{LOOPBACK}:{self.redis_port}";\n'
            "autolearn = false;\n")
        (local / "antivirus.conf").write_text(
            'clamav { type = "clamav"; action = "reject"; scan_mime_parts = false; '
            f'servers = "{self.workdir / "clamd" / "clamd.sock"}"; symbol = "CLAM_VIRUS"; }}\n')
        (local / "logging.inc").write_text(
            f'type = "file";\nfilename = "{d}/log/rspamd.log";\nlevel = "warning";\n')
        self.notes.append("rspamd as milter (proxy, self_scan), its Bayes on Redis, clamd "
                          "through its antivirus module; DNS from the same NSD")

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
        super().stop()
        for p in reversed(getattr(self, "procs", [])):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if getattr(self, "clamd", None) is not None:
            self.clamd.stop()


def _wait_listen(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import socket
    import time

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
