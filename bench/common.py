"""What the benchmark scripts share: /proc accounting of a server's process tree (CPU ticks,
PSS), free ports, short commands, TOML edits, markdown table cells, signal handling during
cleanup. Imported by `bench/*/run.py` (each adds `bench/` to `sys.path`); stdlib only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


# `postkeep init` for a benchmark's instance: run as root (Postfix's and Dovecot's references
# need it), it would create a service user the server drops to, which could not run a Python
# or a checkout under root's 0700 home; the instance keeps root instead (`server.user = "root"`).
INIT_AS: list[str] = ["--user", "root"] if os.geteuid() == 0 else []


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in clock ticks) for every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                data = f.read()
        except OSError:  # exited meanwhile
            continue
        fields = data[data.rindex(")") + 2 :].split()
        # fields[0] is stat field 3 (state); field N is fields[N - 3].
        ppid = int(fields[1])
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        table[int(entry.name)] = (ppid, ticks)
    return table


def process_tree(root: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """`root` and all its descendants that are alive now."""
    table = table if table is not None else _proc_table()
    if root not in table:
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_ticks(root: int) -> int:
    """CPU ticks used so far by `root` and its descendants.

    utime+stime of live processes plus cutime+cstime, which hold the time of children that
    exited and were reaped (Postfix's master reaps its smtpd/cleanup/... processes), so the
    difference of two samples counts short-lived processes too.
    """
    table = _proc_table()
    return sum(table[pid][1] for pid in process_tree(root, table) if pid in table)


@dataclasses.dataclass
class Memory:
    processes: int
    rss_kb: int
    pss_kb: int


def tree_memory(root: int) -> Memory:
    """Sum of Rss and Pss (smaps_rollup) over `root` and its descendants."""
    rss = pss = n = 0
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        n += 1
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key == "Rss":
                rss += int(rest.split()[0])
            elif key == "Pss":
                pss += int(rest.split()[0])
    return Memory(n, rss, pss)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_port(offsets: Sequence[int] = (0,), low: int = 10000, high: int = 32000) -> int:
    """A base port such that base+offset is free for every offset (below the ephemeral range)."""
    for _ in range(500):
        base = random.randrange(low, high - max(offsets))
        if all(port_free(base + off) for off in offsets):
            return base
    raise RuntimeError("no free port found")


def run_cmd(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command, capturing its output (text); never raises on exit status."""
    return subprocess.run(
        list(argv),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


class TargetUnavailable(Exception):
    """The target cannot be set up or started; it is reported, not fatal."""


def set_toml_keys(text: str, table: str, values: dict[str, str]) -> str:
    """Set `key = value` (raw TOML values) inside `[table]`, adding the table if missing."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        lines += ["", f"[{table}]"]
        start = len(lines) - 1
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines)
    )
    missing = dict(values)
    for i in range(start + 1, end):
        key = lines[i].split("=", 1)[0].strip()
        if "=" in lines[i] and key in missing:
            lines[i] = f"{key} = {missing.pop(key)}"
    lines[start + 1 : start + 1] = [f"{k} = {v}" for k, v in missing.items()]
    return "\n".join(lines) + "\n"


def _tail(text: str, n: int = 4) -> str:
    """The last n non-empty lines on one line (markdown-table safe)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " // ".join(lines[-n:]).replace("|", "/") if lines else "(no output)"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
