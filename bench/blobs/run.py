"""Blob storage micro-benchmarks: the store's delivery path alone, and IMAP FETCH of small
messages, as CPU seconds per message (user + kernel time, `resource.getrusage`).

``writer``: N messages of one size through `SqlStore.deliver` (durable: each call returns once
its batch is committed), C deliveries in flight at a time (C sessions waiting for their 250),
on SQLite in a fresh temporary directory. Reported: CPU of the whole process (event loop,
files thread, writer thread) per message, and messages per second (the machine may be shared:
judge by CPU). ``fetch``: the in-process servers of `tests/harness.py`, M small messages in
one INBOX, then ``FETCH 1:* BODY[]`` through imaplib R times; reported: CPU of the servers'
threads per FETCH of the mailbox over implicit TLS (the process's CPU minus the client
thread's).

    PYTHONPATH=src .venv/bin/python bench/blobs/run.py writer --size 5000 -n 2000 -c 32
    PYTHONPATH=src .venv/bin/python bench/blobs/run.py fetch -m 1000 -r 5

Run it with another tree's ``src`` on PYTHONPATH to compare two versions of the store.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.harness

from postkeep.store.api import DsnRecipient, Envelope, LocalDelivery
from postkeep.store.sql.store import SqlStore


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def message(i: int, size: int) -> bytes:
    head = f"From: a@remote.test\r\nSubject: bench {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n"
    body = (b"The quick brown fox jumps over the lazy dog. " * (size // 45 + 1))
    return (head.encode() + body)[:size]


def envelope(i: int) -> Envelope:
    return Envelope(f"Q{i}", "a@remote.test", [DsnRecipient("u@bench.test")], "127.0.0.1",
                    "client.test", time.time())


async def writer(size: int, count: int, concurrency: int, root: Path) -> tuple[float, float]:
    store = SqlStore(f"sqlite:///{root / 'store.db'}", root, secrets.token_bytes(32))
    await store.open()
    try:
        await store.add_domain("bench.test")
        account = await store.add_account("u@bench.test", "x")
        for i in range(20):  # warm up: statements compiled, directories made
            await store.deliver(LocalDelivery(envelope(i), [account.id], message(i, size)))
        texts = [message(i, size) for i in range(count)]
        todo = iter(range(count))

        async def session() -> None:
            for i in todo:
                await store.deliver(LocalDelivery(envelope(i), [account.id], texts[i]))

        c0, t0 = cpu(), time.perf_counter()
        await asyncio.gather(*(session() for _ in range(concurrency)))
        c1, t1 = cpu(), time.perf_counter()
    finally:
        await store.close()
    return (c1 - c0) / count, count / (t1 - t0)


def fetch(messages: int, repeat: int, root: Path) -> tuple[float, float]:
    from tests.harness import PASSWORD, running_harness

    with running_harness(root) as h:
        h.add_domain("bench.test")
        account = h.add_user("u@bench.test")

        async def fill() -> None:
            await asyncio.gather(*(
                h.db.deliver(LocalDelivery(envelope(i), [account.id], message(i, 3000 + i % 4000)))
                for i in range(messages)
            ))

        h.run(fill(), timeout=600)
        client = imaplib.IMAP4_SSL("127.0.0.1", h.imaps_port, ssl_context=h.client_context())
        client.login("u@bench.test", PASSWORD)
        client.select("INBOX", readonly=True)
        client.fetch("1:*", "(BODY.PEEK[])")  # warm up: caches, connections
        times: list[float] = []
        for _ in range(repeat):
            c0, own0, t0 = cpu(), time.thread_time(), time.perf_counter()
            typ, data = client.fetch("1:*", "(BODY.PEEK[])")
            c1, own1, t1 = cpu(), time.thread_time(), time.perf_counter()
            assert typ == "OK" and len(data) == 2 * messages, (typ, len(data))
            times.append((c1 - c0) - (own1 - own0))
            del t0, t1
        client.logout()
    times.sort()
    return times[len(times) // 2], times[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("writer")
    w.add_argument("--size", type=int, default=5000)
    w.add_argument("-n", "--count", type=int, default=2000)
    w.add_argument("-c", "--concurrency", type=int, default=32)
    f = sub.add_parser("fetch")
    f.add_argument("-m", "--messages", type=int, default=1000)
    f.add_argument("-r", "--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blob-bench-") as tmp:
        if args.mode == "writer":
            per, rate = asyncio.run(writer(args.size, args.count, args.concurrency, Path(tmp)))
            print(f"writer size={args.size} n={args.count} c={args.concurrency}: "
                  f"{per * 1e3:.3f} ms CPU/msg, {rate:.0f} msgs/s")
        else:
            median, best = fetch(args.messages, args.repeat, Path(tmp) / "h")
            print(f"fetch m={args.messages}: server CPU per FETCH 1:* BODY[] median "
                  f"{median * 1e3:.1f} ms, best {best * 1e3:.1f} ms "
                  f"({median / args.messages * 1e6:.0f} us/msg)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
