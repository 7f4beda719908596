#!/usr/bin/env python3
"""SMTP ingest benchmark: postkeep against a private Postfix instance, driven by `smtp-source`.

Every scenario runs on every available target, alternating targets, with the same parameters.
For each run we measure the wall time of `smtp-source` (-> msgs/s), the server CPU time
(utime+stime of the server's whole process tree, including reaped children through
cutime+cstime) per message, and we check that the messages really got through. Per target we
also measure memory: idle, and with 200 connected SMTP sessions that read the greeting and sit.

Targets are plain objects with setup/start/stop/port/root_pid/count_delivered, so adding one is
a matter of writing a class. Run as root (Postfix needs it):

    .venv/bin/python bench/smtp_ingest/run.py [--quick] [--targets postfix,postkeep]

See README.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
from common import (  # noqa: E402
    LOOPBACK,
    Memory,
    TargetUnavailable,
    _cell,
    _fmt,
    _raise_interrupt,
    _tail,
    no_interrupts,
)

sys.path.insert(0, str(HERE))  # targets.py, filtered.py
from filtered import PostfixRspamdTarget, PostkeepChecksTarget, PostkeepFiltersTarget  # noqa: E402
from targets import (  # noqa: E402
    DOMAIN,
    IDLE_SESSIONS,
    RECIPIENT,
    SENDER,
    PostfixTarget,
    PostkeepTarget,
    Target,
    close_sessions,
    open_idle_sessions,
)

SMTP_SOURCE = "/usr/sbin/smtp-source"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- scenarios ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    size: int  # payload bytes (smtp-source -l), headers not included
    sessions: int  # parallel sessions (smtp-source -s)
    reuse: bool  # several messages per connection (smtp-source -d)
    full: int  # messages in a full run
    quick: int  # messages with --quick

    def count(self, quick: bool) -> int:
        return self.quick if quick else self.full


SCENARIOS = [
    Scenario("a", "5 KB, 50 sessions, 1 msg/connection", 5 * 1024, 50, False, 5000, 500),
    Scenario("b", "5 KB, 50 sessions, connection reuse (-d)", 5 * 1024, 50, True, 6000, 600),
    Scenario("c", "100 KB, 50 sessions, 1 msg/connection", 100 * 1024, 50, False, 3000, 300),
]
WARM_UP = Scenario("w", "warm-up", 1024, 10, False, 200, 50)


# -- /proc helpers --------------------------------------------------------------------------------


# -- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    scenario: Scenario
    target: str
    messages: int
    ok: bool
    seconds: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    drain_s: float | None = None  # after smtp-source ended, until the server was done
    counted: int | None = None
    verify: str = ""
    error: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.ok and self.seconds else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.cpu_s / self.messages if self.ok else 0.0


@dataclasses.dataclass
class MemoryResult:
    target: str
    idle: Memory
    busy: Memory | None
    sessions: int


def wait_settled(
    target: Target, mark: object, expected: int, timeout: float
) -> tuple[float | None, bool]:
    """Wait until the target finished the messages of a run and its CPU usage went quiet.

    Returns (seconds until target.drained() held, or None on timeout; whether CPU went quiet).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while not target.drained(mark, expected):
        if time.monotonic() > deadline:
            return None, False
        time.sleep(0.1)
    drained = time.monotonic() - t0
    quiet, last = 0, target.cpu_ticks()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = target.cpu_ticks()
        quiet = quiet + 1 if now - last <= 2 else 0  # <= 2 ticks in 0.5 s: idle
        last = now
    return drained, quiet >= 2


def smtp_source_argv(scn: Scenario, port: int, messages: int) -> list[str]:
    argv = [SMTP_SOURCE, "-c", "-s", str(scn.sessions), "-l", str(scn.size)]
    argv += ["-m", str(messages), "-f", SENDER, "-t", RECIPIENT, "-M", f"client.{DOMAIN}"]
    if scn.reuse:
        argv.append("-d")
    return [*argv, f"{LOOPBACK}:{port}"]


def run_smtp_source(argv: list[str], timeout: float) -> tuple[int, float, float, int, str]:
    """Run smtp-source; returns (returncode, wall s, client CPU s, DATA count, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # timeout, Ctrl-C: never leave it behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = re.findall(rb"(\d+)\r", out)
    data_done = int(counts[-1]) if counts else 0
    return proc.returncode, wall, client, data_done, err.decode("utf-8", "replace").strip()


def run_scenario(target: Target, scn: Scenario, messages: int) -> RunResult:
    res = RunResult(scn, target.name, messages, ok=False)
    if not wait_settled(target, target.mark(), 0, 120)[1]:
        target.notes.append(f"{scn.key}: server was not idle before the run")
    mark = target.mark()
    cpu0 = target.cpu_ticks()
    argv = smtp_source_argv(scn, target.port, messages)
    timeout = max(300.0, messages * 0.5)
    try:
        rc, wall, client, data_done, err = run_smtp_source(argv, timeout)
    except subprocess.TimeoutExpired:
        res.error = f"smtp-source timed out after {timeout:.0f}s"
        return res
    res.seconds, res.client_cpu_s = wall, client
    if rc != 0:
        res.error = f"smtp-source exit {rc} after {data_done} DATA: {_tail(err, 3)}"
        return res
    drained, quiet = wait_settled(target, mark, messages, max(120.0, messages * 0.05))
    res.drain_s = drained
    res.cpu_s = (target.cpu_ticks() - cpu0) / CLK_TCK
    res.counted = target.count_delivered(mark)
    res.ok = True
    verify = [f"smtp-source: {data_done} DATA, all 2xx"]
    if res.counted is not None:
        verify.append(f"server: {res.counted}/{messages}")
        if res.counted != messages:
            res.ok = False
            res.error = f"server accounted for {res.counted} of {messages} messages"
    if isinstance(target, PostfixTarget):
        c = target.log_counts(mark)
        if c["rejected"] or c["bounced"]:
            verify.append(f"rejected {c['rejected']}, bounced/deferred {c['bounced']}")
    if drained is None:
        verify.append("did not drain")
    elif not quiet:
        verify.append("CPU did not go quiet")
    res.verify = "; ".join(verify)
    return res


def safe_run(target: Target, scn: Scenario, messages: int) -> RunResult:
    """run_scenario, turning a broken target (died, /proc gone) into a failed result."""
    try:
        return run_scenario(target, scn, messages)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return RunResult(scn, target.name, messages, ok=False, error=f"{type(e).__name__}: {e}")


def measure_memory(target: Target, sessions: int) -> MemoryResult:
    time.sleep(1)
    idle = target.memory()
    socks: list[socket.socket] = []
    try:
        socks, greeted = open_idle_sessions(target.port, sessions)
        time.sleep(1)
        busy = target.memory() if greeted else None
    finally:
        close_sessions(socks)
    return MemoryResult(target.name, idle, busy, greeted)


# -- reporting ------------------------------------------------------------------------------------


def machine_info(targets: Sequence[Target]) -> list[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    info = [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- host: nproc={os.cpu_count()}, {model}, {mem_kb // 1024} MiB RAM",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- python: {platform.python_version()}",
    ]
    for t in targets:
        status = t.version_str if not t.unavailable else "unavailable"
        info.append(f"- {t.name}: {status}")
    return info


def render(
    mode: str,
    scenarios: Sequence[Scenario],
    targets: Sequence[Target],
    results: dict[tuple[str, str], list[RunResult]],
    memory: list[MemoryResult],
    repeat: int,
    interrupted: bool,
) -> str:
    out = [f"# SMTP ingest benchmark ({mode}{', INTERRUPTED' if interrupted else ''})", ""]
    out += machine_info(targets)
    out += [
        f"- client: `{SMTP_SOURCE}` on the same machine; {repeat} run(s) per cell "
        "(median by msgs/s shown)",
        "",
        "| scenario | target | msgs | seconds | msgs/s | all runs msgs/s | ratio pk/pf "
        "| CPU ms/msg | CPU ratio | client CPU ms/msg | drain s | check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for scn in scenarios:
        medians: dict[str, RunResult] = {}
        for t in targets:
            ok = [r for r in results.get((scn.key, t.name), []) if r.ok]
            if ok:
                medians[t.name] = sorted(ok, key=lambda r: r.rate)[(len(ok) - 1) // 2]
        pf = medians.get("postfix")
        for t in targets:
            runs = results.get((scn.key, t.name), [])
            r = medians.get(t.name)
            row = [f"({scn.key}) {scn.title}", t.name]
            if r is None:
                why = runs[-1].error if runs else "not run"
                why = "unavailable" if t.unavailable else why
                out.append("| " + " | ".join([*row, *["-"] * 9, _cell(why)]) + " |")
                continue
            ratio = cpu_ratio = None
            if pf is not None and t.name != "postfix":
                ratio = r.rate / pf.rate if pf.rate else None
                cpu_ratio = r.cpu_ms_per_msg / pf.cpu_ms_per_msg if pf.cpu_ms_per_msg else None
            row += [
                str(r.messages),
                f"{r.seconds:.2f}",
                f"{r.rate:.0f}",
                " / ".join(f"{x.rate:.0f}" if x.ok else "failed" for x in runs),
                _fmt(ratio, ".2f"),
                f"{r.cpu_ms_per_msg:.2f}",
                _fmt(cpu_ratio, ".2f"),
                f"{1000 * r.client_cpu_s / r.messages:.2f}",
                _fmt(r.drain_s, ".1f"),
                _cell(r.verify),
            ]
            out.append("| " + " | ".join(row) + " |")
    out += [
        "",
        "ratio pk/pf = postkeep msgs/s / Postfix msgs/s (above 1: postkeep faster). "
        "CPU ratio = postkeep CPU/msg / Postfix CPU/msg (above 1: postkeep uses more CPU).",
        "",
        f"## Memory (idle, and with up to {IDLE_SESSIONS} idle SMTP sessions)",
        "",
        "| target | procs idle | RSS idle MiB | PSS idle MiB | sessions | procs busy "
        "| RSS busy MiB | PSS busy MiB | RSS KiB/session | PSS KiB/session |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in memory:
        b = m.busy
        per_rss = (b.rss_kb - m.idle.rss_kb) / m.sessions if b and m.sessions else None
        per_pss = (b.pss_kb - m.idle.pss_kb) / m.sessions if b and m.sessions else None
        out.append(
            f"| {m.target} | {m.idle.processes} | {m.idle.rss_kb / 1024:.1f} "
            f"| {m.idle.pss_kb / 1024:.1f} | {m.sessions} | {b.processes if b else '-'} "
            f"| {_fmt(b.rss_kb / 1024 if b else None, '.1f')} "
            f"| {_fmt(b.pss_kb / 1024 if b else None, '.1f')} "
            f"| {_fmt(per_rss, '.0f')} | {_fmt(per_pss, '.0f')} |"
        )
    notes = [f"- {t.name}: unavailable: {t.unavailable}" for t in targets if t.unavailable]
    notes += [f"- {t.name}: {n}" for t in targets for n in t.notes]
    failed = [r for runs in results.values() for r in runs if not r.ok]
    notes += [f"- failed run ({r.scenario.key}, {r.target}): {r.error}" for r in failed]
    if notes:
        out += ["", "## Notes", "", *notes]
    return "\n".join(out) + "\n"


TARGETS: dict[str, type[Target]] = {
    "postfix": PostfixTarget,
    "postkeep": PostkeepTarget,
    "postkeep-checks": PostkeepChecksTarget,
    "postkeep-filters": PostkeepFiltersTarget,
    "postfix-rspamd": PostfixRspamdTarget,
}

# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small message counts (smoke test)")
    p.add_argument("--targets", default="postfix,postkeep",
                   help="comma list (" + ",".join(TARGETS) + ")")
    p.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS), help="e.g. a,c")
    p.add_argument(
        "--repeat", type=int, default=0, help="runs per scenario and target (default 3; 1 quick)"
    )
    p.add_argument("--postkeep", type=Path, default=REPO / ".venv" / "bin" / "postkeep")
    p.add_argument("--output", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --output")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    scenarios = [s for s in SCENARIOS if s.key in args.scenarios.split(",")]
    if not Path(SMTP_SOURCE).exists():
        print(f"{SMTP_SOURCE} not found (install the postfix package)", file=sys.stderr)
        return 2
    if not scenarios or any(n not in TARGETS for n in names):
        print("unknown scenario or target", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * IDLE_SESSIONS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    # explicit, since a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    base = Path(tempfile.mkdtemp(prefix="smtp-ingest-bench-"))
    base.chmod(0o755)  # the Postfix daemons (user postfix) must reach their queue directory
    targets: list[Target] = []
    for n in names:
        kind = TARGETS[n]
        if issubclass(kind, PostfixTarget):
            targets.append(kind(base / n))
        else:
            targets.append(kind(base / n, args.postkeep))
    results: dict[tuple[str, str], list[RunResult]] = {}
    memory: list[MemoryResult] = []
    interrupted = False
    mode = "quick" if args.quick else "full"
    repeat = args.repeat or (1 if args.quick else 3)
    print(f"work directory {base}; mode {mode}", flush=True)
    try:
        live: list[Target] = []
        for t in targets:
            print(f"[{t.name}] setting up and starting", flush=True)
            try:
                t.setup()
                t.version_str = t.version()
                t.start()
            except (TargetUnavailable, OSError, subprocess.SubprocessError) as e:
                t.unavailable = str(e)
                print(f"[{t.name}] unavailable: {e}", flush=True)
                with no_interrupts():
                    t.stop()
                continue
            print(f"[{t.name}] listening on {LOOPBACK}:{t.port}", flush=True)
            try:
                m = measure_memory(t, IDLE_SESSIONS)
            except (OSError, RuntimeError) as e:
                t.notes.append(f"memory measurement failed: {e}")
            else:
                memory.append(m)
                print(
                    f"[{t.name}] memory idle PSS {m.idle.pss_kb / 1024:.1f} MiB, {m.sessions} "
                    f"sessions PSS {m.busy.pss_kb / 1024 if m.busy else 0:.1f} MiB",
                    flush=True,
                )
            w = safe_run(t, WARM_UP, WARM_UP.count(args.quick))
            if not w.ok:
                t.notes.append(f"warm-up failed: {w.error}")
            live.append(t)
        for scn in scenarios:
            for rep in range(repeat):
                for t in live:
                    n = scn.count(args.quick)
                    if t.root_pid() is None:
                        print(f"[{t.name}] server is gone, skipping ({scn.key})", flush=True)
                        continue
                    print(f"[{t.name}] ({scn.key}) {scn.title}: {n} msgs, run {rep + 1}", end="")
                    r = safe_run(t, scn, n)
                    results.setdefault((scn.key, t.name), []).append(r)
                    if r.ok:
                        print(
                            f" -> {r.seconds:.2f}s, {r.rate:.0f} msgs/s, "
                            f"{r.cpu_ms_per_msg:.2f} CPU ms/msg, {r.verify}",
                            flush=True,
                        )
                    else:
                        print(f" -> FAILED: {r.error}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted, cleaning up", file=sys.stderr)
    finally:
        with no_interrupts():
            for t in targets:
                try:
                    t.stop()
                except Exception as e:  # keep cleaning up the others
                    print(f"[{t.name}] stop failed: {e}", file=sys.stderr)
            if args.keep:
                print(f"kept {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    report = render(mode, scenarios, targets, results, memory, repeat, interrupted)
    print()
    print(report, end="")
    if not args.no_write and not interrupted and (results or memory):
        args.output.write_text(report)
        print(f"\nwritten to {args.output}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
