#!/usr/bin/env python3
"""Inbound check latency: what SPF, DKIM, DMARC, iprev, the forged-header sweep and the URIBL
link scan add to one message at the MX, with a warm DNS cache (no DNS round trips).

The message: 10 KB, multipart/alternative (text and HTML with a dozen links), signed twice by
the sender domain (RSA-2048 and Ed25519, relaxed/relaxed, postkeep's signer). The sender's
records (SPF `ip4:` the client, DMARC p=reject, both DKIM keys, the client's PTR and A) are
served by NSD on loopback (tests/dnsserver.py) and asked through postkeep's `DnsResolver`;
the first rounds fill its cache, then every lookup is a cache hit, so what is timed is the
checks' own work: parsing, hashing, two signature verifications, the DMARC walk's cache
lookups, Authentication-Results. Each round runs exactly what the MX's ``authenticate`` and
``links`` stages run (`delivery.authentication.judge`, `authres.strip_own`,
`uridomains.body_domains` and the domain lists' lookups) on the event loop, one message at a
time, timed with perf_counter (wall) and process_time (CPU).

    PYTHONPATH=src .venv/bin/python bench/inbound/run.py [--rounds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))  # tests/dnsserver.py

from tests.dnsserver import auth_server  # noqa: E402

from postkeep.config import DnsConfig, DnsListConfig, InboundConfig  # noqa: E402
from postkeep.delivery.authentication import judge  # noqa: E402
from postkeep.delivery.origin import InboundChecks  # noqa: E402
from postkeep.dns import DnsResolver  # noqa: E402
from postkeep.mailauth import authres  # noqa: E402
from postkeep.mailauth.dkim.canon import split_message  # noqa: E402
from postkeep.mailauth.dkim.keys import generate_key, zone_line  # noqa: E402
from postkeep.mailauth.dkim.sign import DkimSigner, sign_all  # noqa: E402
from postkeep.mailauth.dnsbl import check_domains  # noqa: E402
from postkeep.mailauth.uridomains import body_domains  # noqa: E402

CLIENT = "127.0.0.3"
DOMAIN = "sender.test"


def message() -> bytes:
    links = "".join(f'<li><a href="https://www.site{i}.example/p?q={i}">offer {i}</a></li>'
                    for i in range(12))
    text = ("Dear customer,\r\n\r\n" + "This is the text of a newsletter. " * 120 + "\r\n")
    html = f"<html><body><p>{'This is the text of a newsletter. ' * 110}</p><ul>{links}</ul>"
    html += "</body></html>\r\n"
    head = (f"From: News <news@{DOMAIN}>\r\nTo: alice@example.test\r\n"
            "Subject: The December newsletter\r\nDate: Thu, 03 Dec 2026 08:00:00 +0000\r\n"
            f"Message-ID: <bench.1@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            "Received: from a.example (a.example [192.0.2.9]) by b.example; "
            "Thu, 03 Dec 2026 07:59:59 +0000\r\n"
            "Authentication-Results: elsewhere.example; spf=pass smtp.mailfrom=x@y.example\r\n"
            'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n')
    body = (f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}--b1--\r\n")
    return (head + body).encode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(nameserver: str, signed: bytes, rounds: int, warm: int
                  ) -> dict[str, list[float]]:
    resolver = DnsResolver(DnsConfig(nameservers=[nameserver], timeout=2.0, attempts=1))
    cfg = InboundConfig(trusted_networks=[], uribl=[DnsListConfig(zone="dbl.test")])
    checks = InboundChecks(cfg, resolver)
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(warm + rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        client = checks.start(CLIENT)
        block, _ = split_message(signed[:65536])
        authres.strip_own(block, "mx.example.test")
        body = signed[len(block) + 2:]
        judgement = await judge(checks, client, "mx.example.test", helo="mx.sender.test",
                                mail_from=f"bounces@{DOMAIN}", header_block=block,
                                body=[body], clock=time.time)
        domains = body_domains(signed)
        await check_domains(resolver, domains, checks.domain_lists)
        t1, c1 = time.perf_counter(), time.process_time()
        client.cancel()
        if i == 0:
            text = b" ".join(judgement.auth_results.split()).decode()
            for want in ("iprev=pass", "spf=pass", "dkim=pass", "dmarc=pass"):
                if want not in text:
                    raise SystemExit(f"the checks did not pass: {text}")
            print(f"first round: {text}", file=sys.stderr)
        if i >= warm:
            wall.append((t1 - t0) * 1000)
            cpu.append((c1 - c0) * 1000)
    return {"wall": wall, "cpu": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    rsa, ed = generate_key("rsa", bits=2048), generate_key("ed25519")
    text = message()
    signed = sign_all(text, [DkimSigner(DOMAIN, "r1", rsa), DkimSigner(DOMAIN, "e1", ed)]) + text
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, auth_server(Path(tmp)) as nsd:
        nsd.add_zone("test", [
            'sender TXT "v=spf1 ip4:127.0.0.3 -all"',
            '_dmarc.sender TXT "v=DMARC1; p=reject; rua=mailto:agg@sender.test"',
            "mx.sender A 127.0.0.3",
            *(zone_line(sel, DOMAIN, key).replace(f"._domainkey.{DOMAIN}.", "._domainkey.sender")
              for sel, key in (("r1", rsa), ("e1", ed))),
        ])
        nsd.add_zone("0.0.127.in-addr.arpa", ["3 PTR mx.sender.test."])
        nsd.add_zone("dbl.test", ["listed.example A 127.0.1.2"])
        result = asyncio.run(measure(nsd.nameserver, signed, args.rounds, args.warm))
    wall, cpu = result["wall"], result["cpu"]
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.machine())
    lines = [
        "# Inbound check latency (`bench/inbound/run.py`)",
        "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; postkeep git {git}; "
        f"python {platform.python_version()}; nproc={os.cpu_count()}, {cpu_model}",
        f"- load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- message: {len(signed)} octets, 2 DKIM signatures (RSA-2048, Ed25519), 12 links; "
        f"{args.rounds} rounds after {args.warm} warm-up rounds, one at a time",
        "",
        "| measure | p50 ms | p99 ms | mean ms | max ms |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, values in (("wall time per message", wall), ("CPU time per message", cpu)):
        lines.append(f"| {name} | {percentile(values, 50):.3f} | {percentile(values, 99):.3f} "
                     f"| {statistics.fmean(values):.3f} | {max(values):.3f} |")
    lines += ["", "Target: p50 under 2 ms, p99 under 10 ms (wall, excluding DNS round trips)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
