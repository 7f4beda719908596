#!/usr/bin/env python3
"""Firewall benchmark: what `[firewall]` costs at accept, and what it protects under a flood.

Two measurements on two postkeep instances made by `postkeep init`, both running at once
(only one is loaded at a time), in the same run:

1. Connections accepted per second, firewall on versus off: `--clients` concurrent clients
   each connect, read the greeting, send QUIT, read the 221 and close, for `--seconds` per
   round; `--rounds` rounds, alternating on / off. "On" counts every connection (no allow
   list: loopback is limited too) against limits too high to refuse any, so the whole path
   runs (lists, IP classes, buckets, the report to the main process); "off" is
   `firewall.enabled = false`. Reported: the median of each side's rounds, every round's
   rate, and the overhead of "on" in percent (the target: under 5 %).
2. A bounded connection flood from 127.0.0.66 (`--flood` concurrent connectors, connect and
   close as fast as they can; the firewall's default 60 new connections a minute per address
   refuses most of them) while a client from 127.0.0.77 runs `--probes` probes, each an SMTP
   transaction on the MX (EHLO, MAIL, RCPT, DATA, QUIT) and an IMAP login over implicit TLS
   (LOGIN, LOGOUT). Reported: p50 and p99 of the probes' latency without and with the flood,
   and how many flood connections were greeted and refused. Every probe must succeed.

Run it on an otherwise idle machine (client and server share the CPUs), one benchmark at a
time, as root or not (root: the instance keeps root, `--user root`):

    .venv/bin/python bench/firewall/run.py            # 5 rounds of 5 s, 25 probes
    .venv/bin/python bench/firewall/run.py --quick    # a smoke test: numbers mean nothing

Options: `--postkeep PATH` (default `.venv/bin/postkeep`), `--rounds`, `--seconds`,
`--clients`, `--flood`, `--probes`, `--keep` (keep the temporary directory and its logs).
Everything lives in a fresh /tmp/firewall-bench-* directory; the servers listen on 127.0.0.1
only and are stopped (and the directory removed) at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
from common import INIT_AS, LOOPBACK, pick_port, run_cmd, set_toml_keys  # noqa: E402

DOMAIN = "bench.test"
USER = f"user@{DOMAIN}"
PASSWORD = "some-long-password-123"
FLOODER, PROBER = "127.0.0.66", "127.0.0.77"
OFFSETS = (25, 80, 110, 143, 443, 465, 587, 993, 995, 4190)


@dataclass
class Server:
    """One postkeep instance: made, configured, started and stopped here."""

    name: str
    directory: Path
    exe: Path
    firewall: dict[str, str]
    classes: dict[str, dict[str, str]] = field(default_factory=dict)  # [firewall.ipv4_32]...
    smtp_port: int = 0
    imaps_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def setup(self) -> None:
        base = pick_port(OFFSETS)
        r = run_cmd([str(self.exe), "init", str(self.directory), "--hostname", "localhost",
                     "--domain", DOMAIN, "--base-port", str(base), *INIT_AS])
        if r.returncode:
            raise SystemExit(f"{self.name}: postkeep init failed: {r.stdout}{r.stderr}")
        self.smtp_port, self.imaps_port = base + 25, base + 993
        r = run_cmd([str(self.exe), "--dir", str(self.directory), "user", "add", USER,
                     "--password-stdin"], input_text=PASSWORD + "\n")
        if r.returncode:
            raise SystemExit(f"{self.name}: user add failed: {r.stdout}{r.stderr}")
        path = self.directory / "postkeep.toml"
        text = set_toml_keys(path.read_text(), "firewall", self.firewall)
        for name, values in self.classes.items():
            text = set_toml_keys(text, f"firewall.{name}", values)
        for section in ("smtp", "imap"):  # concurrency is not what is measured
            text = set_toml_keys(text, section, {"max_connections": "2000",
                                                 "max_connections_per_ip": "2000"})
        text = set_toml_keys(text, "imap", {"command_rate": "1000000.0"})
        # the accept-rate clients (127.0.0.1) connect and QUIT: pre-auth closes, which bans
        # count as strikes; the flood's 127.0.0.66 is not exempt (a ban is protection too)
        text = set_toml_keys(text, "bans", {"never_ban": '["127.0.0.1/32"]'})
        text += '\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 0.2\nattempts = 1\n'
        path.write_text(text)

    def start(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.proc = subprocess.Popen([str(self.exe), "--dir", str(self.directory), "serve"],
                                     stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name}: server exited; see {log.name}")
            if "postkeep.server: ready" in (self.directory / "server.log").read_text():
                return
            time.sleep(0.1)
        raise SystemExit(f"{self.name}: server not ready after 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# -- clients --------------------------------------------------------------------------------------


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply (its last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def accept_rate(port: int, clients: int, seconds: float) -> float:
    """Connections per second: connect, greeting, QUIT, 221, close; `clients` at once."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            greeting = await _reply(reader)
            if not greeting.startswith(b"220"):
                raise SystemExit(f"refused during the rate test: {greeting!r}")
            writer.write(b"QUIT\r\n")
            await _reply(reader)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.monotonic() - started)


async def smtp_transaction(port: int) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(PROBER, 0))
    try:
        for command in (None, b"EHLO probe.test", b"MAIL FROM:<probe@probe.test>",
                        f"RCPT TO:<{USER}>".encode(), b"DATA"):
            if command is not None:
                writer.write(command + b"\r\n")
            reply = await _reply(reader)
            if reply[:1] not in (b"2", b"3"):
                raise SystemExit(f"probe refused: {command!r}: {reply!r}")
        writer.write(b"Subject: probe\r\n\r\nprobe\r\n.\r\nQUIT\r\n")
        if not (await _reply(reader)).startswith(b"250"):
            raise SystemExit("probe message refused")
        await _reply(reader)
    finally:
        writer.close()


async def imap_login(port: int, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context,
                                                   local_addr=(PROBER, 0))
    try:
        if not (await reader.readline()).startswith(b"* OK"):
            raise SystemExit("IMAP probe not greeted")
        writer.write(f'a LOGIN {USER} "{PASSWORD}"\r\nb LOGOUT\r\n'.encode())
        while not (line := await reader.readline()).startswith((b"a ", b"")):
            pass
        if not line.startswith(b"a OK"):
            raise SystemExit(f"IMAP probe login failed: {line!r}")
    finally:
        writer.close()


async def probes(server: Server, count: int) -> list[float]:
    """Latency in ms of `count` probes (an SMTP transaction and an IMAP login each)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await smtp_transaction(server.smtp_port)
        await imap_login(server.imaps_port, context)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def flood(port: int, connectors: int, stop: asyncio.Event) -> tuple[int, int]:
    """Connections from FLOODER until `stop`: (greeted, refused)."""
    greeted = refused = 0

    async def connector() -> None:
        nonlocal greeted, refused
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, port,
                                                               local_addr=(FLOODER, 0))
            except OSError:
                await asyncio.sleep(0.01)
                continue
            try:
                line = await reader.readline()
                if line.startswith(b"220"):
                    greeted += 1
                else:
                    refused += 1
            except ConnectionError:
                refused += 1
            writer.close()

    await asyncio.gather(*(connector() for _ in range(connectors)))
    return greeted, refused


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(on: Server, off: Server, flooded: Server, args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(args.rounds):
        for name, server in (("on", on), ("off", off)) if i % 2 == 0 else (("off", off),
                                                                         ("on", on)):
            rates[name].append(await accept_rate(server.smtp_port, args.clients, args.seconds))
    median_on, median_off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print("## Connections accepted per second (connect, greeting, QUIT)\n")
    print("| firewall | median/s | rounds |\n| --- | --- | --- |")
    for name in ("on", "off"):
        print(f"| {name} | {statistics.median(rates[name]):.0f} | "
              f"{', '.join(f'{r:.0f}' for r in rates[name])} |")
    print(f"\noverhead of the firewall: {(median_off - median_on) / median_off * 100:+.1f} %\n")

    quiet = await probes(flooded, args.probes)
    stop = asyncio.Event()
    flooding = asyncio.create_task(flood(flooded.smtp_port, args.flood, stop))
    await asyncio.sleep(0.5)  # the flood is under way
    loaded = await probes(flooded, args.probes)
    stop.set()
    greeted, refused = await flooding
    print(f"## {PROBER} under a flood from {FLOODER} ({args.flood} connectors)\n")
    print("| | probes | p50 ms | p99 ms |\n| --- | --- | --- | --- |")
    for name, values in (("no flood", quiet), ("flood", loaded)):
        print(f"| {name} | {len(values)} | {percentile(values, 0.5):.1f} | "
              f"{percentile(values, 0.99):.1f} |")
    print(f"\nflood connections: {greeted} greeted, {refused} refused; every probe succeeded")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postkeep", type=Path, default=REPO / ".venv" / "bin" / "postkeep")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--flood", type=int, default=100)
    parser.add_argument("--probes", type=int, default=25)  # the prober has the default limits too
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.clients, args.flood, args.probes = 2, 0.5, 4, 4, 5
    workdir = Path(tempfile.mkdtemp(prefix="firewall-bench-"))
    workdir.chmod(0o755)
    high = str(10**9)
    # on: every connection counted, against limits that refuse none; off: no firewall
    on = Server("on", workdir / "on", args.postkeep,
                {"allow": "[]", "connections_per_minute": high},
                {"ipv4_32": {"connections": high, "commands": high},
                 "ipv4_24": {"connections": high, "commands": high}})
    off = Server("off", workdir / "off", args.postkeep, {"enabled": "false"})
    # the flooded instance keeps the default per-address limits; its /24 is lifted, so that
    # only the flooder's own /32 is refused (127.0.0.66 and 127.0.0.77 share a /24)
    flooded = Server("flood", workdir / "flood", args.postkeep, {"allow": "[]"},
                     {"ipv4_24": {"connections": high}})
    servers = (on, off, flooded)
    try:
        for server in servers:
            server.setup()
            server.start()
        asyncio.run(measure(on, off, flooded, args))
    finally:
        for server in servers:
            server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
