#!/usr/bin/env python3
"""DKIM signing benchmark: postkeep's signer against OpenSSL's raw signing rate and dkimpy.

For RSA-2048 and Ed25519 it measures, on one core (the process and the `openssl` it starts
are pinned to one CPU, no -multi, no threads): `openssl speed -seconds S rsa2048` and
`ed25519` (the sign/s column: the key operation alone, the ceiling), then signatures per
second of `postkeep.mailauth.dkim.DkimSigner.sign` over a realistic ~5 KB message and a 100 KB
one (body hash, header canonicalisation, signing, folding: the whole DKIM-Signature field),
then dkimpy's `dkim.sign` over the same messages. OpenSSL runs before and after the Python
measurements; the better of the two is the reference (a conservative ratio).

    .venv/bin/python bench/dkim/run.py [--seconds 3] [--output bench/dkim/last-run.md]

See README.md next to this file.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "src"))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from postkeep.mailauth.dkim.keys import SigningKey, generate_key  # noqa: E402
from postkeep.mailauth.dkim.sign import DkimSigner  # noqa: E402

DOMAIN = "example.com"
HEADERS = (
    b"Return-Path: <alice@example.com>\r\n"
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>, Carol Someone <carol@example.net>,\r\n"
    b" Dave <dave@example.org>\r\n"
    b"Cc: team@example.com\r\n"
    b"Subject: Re: Quarterly planning notes and the action items from\r\n"
    b" Tuesday's meeting\r\n"
    b"Date: Tue, 02 Dec 2025 12:34:56 +0100\r\n"
    b"Message-ID: <20251202113456.GA12345@mail.example.com>\r\n"
    b"In-Reply-To: <CAF=abc123@mail.example.org>\r\n"
    b"References: <CAF=xyz789@mail.example.org>\r\n <CAF=abc123@mail.example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"User-Agent: Mutt/2.2.9\r\n"
)
LINE = (b"The numbers for the third quarter look better than expected, but the  team "
        b"asked\r\n")


def message(size: int) -> bytes:
    """A plain-text reply of about `size` bytes: the headers above and 80-column lines, a
    double space in each (relaxed canonicalisation has work to do), a quoted part."""
    lines = []
    total = len(HEADERS) + 2
    index = 0
    while total < size:
        line = (b"> " if index % 7 == 3 else b"") + LINE
        lines.append(line)
        total += len(line)
        index += 1
    return HEADERS + b"\r\n" + b"".join(lines)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second over at least `seconds` (after a short warm-up)."""
    for _ in range(20):
        operation()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            operation()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def openssl_speed(algorithm: str, seconds: int) -> float:
    """The sign/s column of `openssl speed -seconds N ALGORITHM`, one process, one core."""
    done = subprocess.run(["openssl", "speed", "-seconds", str(seconds), algorithm],
                          capture_output=True, text=True, check=True)
    pattern = {"rsa2048": r"^rsa 2048 bits\s+\S+s\s+\S+s\s+([\d.]+)",
               "ed25519": r"EdDSA \(Ed25519\)\s+\S+s\s+\S+s\s+([\d.]+)"}[algorithm]
    match = re.search(pattern, done.stdout, re.M)
    if match is None:
        raise RuntimeError(f"no sign/s for {algorithm} in:\n{done.stdout}")
    return float(match[1])


def dkimpy_signer(key: SigningKey, selector: str) -> Callable[[bytes], bytes]:
    import dkim  # the test extra

    headers = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to",
               b"references", b"mime-version", b"content-type", b"content-transfer-encoding"]
    if selector == "ed":
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        private = base64.b64encode(seed)
        algorithm = b"ed25519-sha256"
    else:
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        algorithm = b"rsa-sha256"

    def sign(text: bytes) -> bytes:
        return bytes(dkim.sign(text, selector.encode(), DOMAIN.encode(), private,
                               canonicalize=(b"relaxed", b"relaxed"),
                               signature_algorithm=algorithm, include_headers=headers))

    return sign


def pin_to_one_cpu() -> int:
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seconds", type=int, default=3, help="per measurement (default 3)")
    p.add_argument("--output", type=Path, default=HERE / "last-run.md")
    p.add_argument("--no-write", action="store_true", help="do not write --output")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = pin_to_one_cpu()
    keys: dict[str, tuple[str, SigningKey]] = {
        "RSA-2048": ("rsa2048", generate_key("rsa", bits=2048)),
        "Ed25519": ("ed25519", generate_key("ed25519")),
    }
    messages = {"5 KB": message(5 * 1024), "100 KB": message(100 * 1024)}
    openssl = {name: [openssl_speed(alg, args.seconds)] for name, (alg, _) in keys.items()}
    postkeep: dict[tuple[str, str], float] = {}
    dkimpy: dict[tuple[str, str], float] = {}
    for name, (_, key) in keys.items():
        selector = "ed" if name == "Ed25519" else "rsa"
        signer = DkimSigner(DOMAIN, selector, key)
        reference = dkimpy_signer(key, selector)
        for label, text in messages.items():
            postkeep[name, label] = rate(lambda s=signer, t=text: s.sign(t), args.seconds)
            dkimpy[name, label] = rate(lambda r=reference, t=text: r(t), args.seconds)
    for name, (alg, _) in keys.items():
        openssl[name].append(openssl_speed(alg, args.seconds))

    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    lines = [
        f"DKIM signing, {dt.date.today()}, one core (CPU {cpu}), {args.seconds} s per "
        f"measurement; {version.strip()}, Python {platform.python_version()}, "
        f"message sizes {', '.join(f'{k} = {len(v)} B' for k, v in messages.items())}.",
        "",
        "| key | openssl speed sign/s (before, after) | message | postkeep sign/s | "
        "postkeep / openssl | dkimpy sign/s | postkeep / dkimpy |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in keys:
        best = max(openssl[name])
        for label in messages:
            ours, theirs = postkeep[name, label], dkimpy[name, label]
            lines.append(
                f"| {name} | {best:,.0f} ({openssl[name][0]:,.0f}, {openssl[name][1]:,.0f}) "
                f"| {label} | {ours:,.0f} | {ours / best:.0%} | {theirs:,.0f} "
                f"| {ours / theirs:.1f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
