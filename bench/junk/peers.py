"""SpamAssassin (spamd) and rspamd as the reference judges of the junk-filter evaluation,
each started privately on loopback, kept off the network, its Bayes trained on the same
training half as ours (`run.py`).

- SpamAssassin 4 (Debian's): `spamd --local` (no network tests) with a private site
  config: its Bayes in a temporary directory, no auto-learning, `bayes_min_*_num` lowered
  to what the training half gives; trained with `sa-learn`, asked with `spamc -c` (prints
  ``score/threshold``).
- rspamd 3 (Debian's): a normal and a controller worker on private ports, its own Redis for
  the Bayes statistics (rspamd keeps them nowhere else), its resolver pointed at an NSD on
  loopback that serves no zone (every DNS list query is refused at once: no network, no
  waiting for timeouts), fuzzy checks off; trained by POSTing to the
  controller's `/learnspam` and `/learnham`, asked on the normal worker's `/checkv2` (JSON:
  score, required score, action).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/common.py
from common import LOOPBACK, pick_port


@dataclass
class Verdict:
    score: float
    spam: bool


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:g}s")


class SpamAssassin:
    def __init__(self, workdir: Path, min_learned: int) -> None:
        self.dir = workdir / "spamassassin"
        self.site = self.dir / "site"
        self.site.mkdir(parents=True)
        (self.dir / "bayes").mkdir()
        if os.geteuid() == 0:  # spamd's children run as nobody: let them reach the Bayes files
            for d in (workdir, self.dir, self.site, self.dir / "bayes"):
                d.chmod(0o777 if d.name == "bayes" else 0o755)
        # the site's rules (Debian's /etc/spamassassin: init.pre loads the plugins), and ours
        for f in Path("/etc/spamassassin").glob("*.pre"):
            shutil.copy(f, self.site)
        (self.site / "local.cf").write_text(
            f"bayes_path {self.dir}/bayes/bayes\nbayes_file_mode 0777\nuse_bayes 1\n"
            f"bayes_auto_learn 0\nbayes_min_spam_num {min_learned}\n"
            f"bayes_min_ham_num {min_learned}\nskip_rbl_checks 1\n"
            "dns_available no\n")
        self.port = pick_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def learn(self, spam: Sequence[Path], ham: Sequence[Path]) -> None:
        for kind, files in (("--spam", spam), ("--ham", ham)):
            subprocess.run(["sa-learn", "--siteconfigpath", str(self.site), "--local",
                            "--no-sync", kind, *map(str, files)],
                           check=True, capture_output=True)
        subprocess.run(["sa-learn", "--siteconfigpath", str(self.site), "--sync"],
                       check=True, capture_output=True)

    def start(self) -> None:
        with open(self.dir / "spamd.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["spamd", f"--listen={LOOPBACK}:{self.port}", f"--allowed-ips={LOOPBACK}",
                 "--local", "--nouser-config", "--siteconfigpath", str(self.site),
                 "--max-children=2", "--pidfile", str(self.dir / "spamd.pid"),
                 *(["--username=nobody"] if os.geteuid() == 0 else [])],
                stdout=subprocess.DEVNULL, stderr=log)
        _wait_port(self.port, self.proc, "spamd", 60)

    def judge(self, text: bytes) -> Verdict:
        out = subprocess.run(["spamc", "-d", LOOPBACK, "-p", str(self.port), "-c"],
                             input=text, capture_output=True)
        score, _, threshold = out.stdout.decode().strip().partition("/")
        if not threshold:
            raise RuntimeError(f"spamc: {out.stdout!r} {out.stderr!r}")
        return Verdict(float(score), float(score) >= float(threshold))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Rspamd:
    def __init__(self, workdir: Path, min_learned: int, nameserver: str) -> None:
        self.dir = workdir / "rspamd"
        self.local = self.dir / "local.d"
        for sub in ("local.d", "override.d", "db", "run", "log"):
            (self.dir / sub).mkdir(parents=True)
        self.normal, self.controller, self.redis_port = pick_port(), pick_port(), pick_port()
        w = self.local
        (w / "worker-normal.inc").write_text(f'bind_socket = "{LOOPBACK}:{self.normal}";\n')
        (w / "worker-controller.inc").write_text(
            f'bind_socket = "{LOOPBACK}:{self.controller}";\nsecure_ip = "{LOOPBACK}";\n')
        (w / "worker-proxy.inc").write_text("enabled = false;\n")
        (w / "worker-fuzzy.inc").write_text("enabled = false;\n")
        for module in ("fuzzy_check", "greylist", "ratelimit", "replies"):
            (w / f"{module}.conf").write_text("enabled = false;\n")
        (w / "options.inc").write_text(
            f'dns {{ nameserver = ["{nameserver}"]; timeout = 1s; retransmits = 1; }}\n')
        (w / "redis.conf").write_text(f'servers = "{LOOPBACK}:{self.redis_port}";\n')
        (w / "classifier-bayes.conf").write_text(
            f'backend = "redis";\nservers = "{LOOPBACK}:{self.redis_port}";\n'
            f"min_learns = {min_learned};\nautolearn = false;\n")
        (w / "logging.inc").write_text(f'type = "file";\nfilename = "{self.dir}/log/rspamd.log";\n'
                                       'level = "warning";\n')
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind",
                                  LOOPBACK, "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(redis)
        _wait_port(self.redis_port, redis, "redis-server", 20)
        d = self.dir
        with open(d / "stdout.log", "wb") as log:  # the child keeps its own copy
            rspamd = subprocess.Popen(
                ["rspamd", "-f", "-u", "root", "-g", "root", f"--var=LOCAL_CONFDIR={d}",
                 f"--var=DBDIR={d}/db", f"--var=RUNDIR={d}/run", f"--var=LOGDIR={d}/log"],
                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(rspamd)
        _wait_port(self.normal, rspamd, "rspamd", 120)
        _wait_port(self.controller, rspamd, "rspamd controller", 60)

    def _post(self, port: int, path: str, text: bytes) -> dict[str, object]:
        req = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", data=text,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def learn(self, spam: Sequence[Path], ham: Sequence[Path]) -> None:
        for path, files in (("/learnspam", spam), ("/learnham", ham)):
            for f in files:
                req = urllib.request.Request(f"http://{LOOPBACK}:{self.controller}{path}",
                                             data=f.read_bytes(), method="POST")
                # an HTTPError is 208, already learnt
                with contextlib.suppress(urllib.error.HTTPError), \
                        urllib.request.urlopen(req, timeout=60) as r:
                    r.read()

    def judge(self, text: bytes) -> Verdict:
        answer = self._post(self.normal, "/checkv2", text)
        score = float(answer["score"])  # type: ignore[arg-type]
        action = str(answer.get("action", "no action"))
        # "add header" (6 by default), "rewrite subject" or "reject" (15): junk
        return Verdict(score, action in ("add header", "rewrite subject", "reject"))

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


@contextlib.contextmanager
def running(judge: SpamAssassin | Rspamd) -> Iterator[None]:
    try:
        judge.start()
        yield
    finally:
        judge.stop()
