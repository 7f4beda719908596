#!/usr/bin/env python3
"""Webmail read-side benchmark: the message list and reading view of a huge mailbox.

Builds a postkeep instance whose user has one INBOX of --messages messages (100,000 by
default: synthetic mail with threads, HTML parts and attachments), once: the instance is
kept under /var/tmp (--cache) and reused by later runs of the same size. Then starts the real
server (`postkeep serve`), logs in over HTTPS like a browser (the login form, its CSRF token,
the session cookie) and measures, on one keep-alive TLS connection, the time from request to
the whole answer of --requests requests each (p50, p99; the first, cold one reported apart):

* the inbox's first page (arrival order, newest first: paged in SQL);
* a middle page of it (``?page=N/2``);
* a page sorted by subject (``?sort=subject&page=2``: the sort order from the process cache
  once made; the first request makes it);
* a search (``?q=subject:WORD``, paged: its hits cached once found);
* a message's reading view (a different message each time).

And the octets of the first load of the inbox as a browser fetches it: the page, then every
style sheet, script and image it references (response header and body octets).

Optionally (--dovecot, as root, /usr/sbin/dovecot) the same mailbox in a private Dovecot
(Maildir, bench/imap/run.py's configuration), and the IMAP equivalent of the first page timed
there: ``UID SORT (REVERSE ARRIVAL) UTF-8 ALL`` then ``UID FETCH`` of the first 50 UIDs'
``(FLAGS ENVELOPE RFC822.SIZE)``.

    .venv/bin/python bench/webmail/run.py [--quick] [--messages N] [--dovecot]

Targets: p50 < 50 ms per page, first load < 300 KB. Prints a markdown report; stdlib only
(and postkeep itself, from src/, to build the store).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import html
import http.client
import importlib.util
import json
import os
import random
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # bench/common.py
sys.path.insert(0, str(REPO / "src"))
from common import INIT_AS, LOOPBACK, _tail, pick_port  # noqa: E402

DOMAIN = "bench.test"
USER = f"big@{DOMAIN}"
PASSWORD = "some-long-password-123"
SEED = 20261204
WORDS = ("invoice", "meeting", "report", "holiday", "budget", "release", "question",
         "update", "review", "lunch", "project", "contract", "photos", "ticket", "draft")
NAMES = ("Anna", "Bruno", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun")
POSTKEEP = [sys.executable, "-m", "postkeep"]
READY = "postkeep.server: ready hostname="  # logged once every listener is up
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1"}


# -- the mailbox ----------------------------------------------------------------------------

def make_message(rng: random.Random, i: int) -> bytes:
    """Message `i`: a sender of ten, a subject of fifteen words, every fifth a reply to an
    earlier one (References), every tenth HTML with an inline image, every twentieth an
    attachment."""
    who = NAMES[rng.randrange(len(NAMES))]
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=7 * i)
    subject = " ".join(rng.sample(WORDS, 3))
    head = (f"From: {who} <{who.lower()}@example.org>\r\nTo: {USER}\r\n"
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <m{i}@example.org>\r\n")
    if i % 5 == 4 and i > 10:
        parent = i - rng.randrange(1, 10)
        head += f"In-Reply-To: <m{parent}@example.org>\r\nReferences: <m{parent}@example.org>\r\n"
        subject = "Re: " + subject
    text = "\r\n".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(rng.randrange(5, 40)))
    head += f"Subject: {subject} #{i}\r\nMIME-Version: 1.0\r\n"
    if i % 10 == 0:
        body = (f"--b{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{text}</p>"
                f"<img src=\"cid:i{i}@x\"><img src=\"https://tracker.invalid/p.gif\">\r\n"
                f"--b{i}\r\nContent-Type: image/png\r\nContent-ID: <i{i}@x>\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b{i}--\r\n")
        return (head + f"Content-Type: multipart/related; boundary=b{i}\r\n\r\n"
                + body).encode()
    if i % 20 == 5:
        body = (f"--b{i}\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--b{i}\r\n"
                f"Content-Type: application/pdf; name=doc{i}.pdf\r\nContent-Disposition: "
                f"attachment; filename=doc{i}.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + "JVBERi0xLjQK" * 200 + f"\r\n--b{i}--\r\n")
        return (head + f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n" + body).encode()
    return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n").encode()


def messages(count: int) -> list[bytes]:
    rng = random.Random(SEED)
    return [make_message(rng, i) for i in range(count)]


async def fill_store(instance: Path, mail: Sequence[bytes]) -> None:
    """Deliver `mail` into the user's INBOX through the store (500 to a transaction)."""
    from postkeep import config
    from postkeep.store import open_store
    from postkeep.store.api import Envelope, Flag, LocalDelivery
    from postkeep.store.crypto import load_master_key

    cfg = config.load(instance / "postkeep.toml")
    store = await open_store(cfg.store_url, cfg.data_dir,
                             load_master_key(cfg.data_path(cfg.store.master_key_file)))
    try:
        account = await store.get_account(USER)
        assert account is not None
        base = 1_704_067_200.0
        for start in range(0, len(mail), 500):
            batch = [LocalDelivery(Envelope("", "", [], LOOPBACK, "", base + 420 * n),
                                   [account.id], data,
                                   Flag.SEEN if n % 10 < 7 else Flag(0))
                     for n, data in enumerate(mail[start:start + 500], start)]
            await store.deliver_all(batch)
            if start % 10_000 == 0:
                print(f"  {start + len(batch)} / {len(mail)} delivered", flush=True)
    finally:
        await store.close()


def build(cache: Path, count: int) -> Path:
    """The instance with `count` messages: the cached one, or built (and cached)."""
    instance = cache / "instance"
    marker = cache / "built.json"
    if marker.exists() and json.loads(marker.read_text()).get("messages") == count:
        print(f"reusing {instance}")
        return instance
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    base = pick_port((25, 80, 110, 143, 443, 465, 587, 993, 995, 4190))
    for argv in (["init", str(instance), "--hostname", "localhost", "--domain", DOMAIN,
                  "--base-port", str(base), *INIT_AS],
                 ["--dir", str(instance), "user", "add", USER, "--password-stdin"]):
        r = subprocess.run([*POSTKEEP, *argv], input=PASSWORD + "\n", capture_output=True,
                           text=True, env=ENV, timeout=300, check=False)
        if r.returncode != 0:
            raise SystemExit(f"postkeep {argv[0]} failed: {_tail(r.stdout + r.stderr)}")
    started = time.monotonic()
    print(f"building a {count}-message mailbox in {instance}", flush=True)
    asyncio.run(fill_store(instance, messages(count)))
    marker.write_text(json.dumps({"messages": count,
                                  "seconds": round(time.monotonic() - started, 1)}))
    return instance


# -- the web client -------------------------------------------------------------------------

class Web:
    """One keep-alive HTTPS connection with a browser's cookies."""

    def __init__(self, port: int, ca: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False
        self.port = port
        self.conn = http.client.HTTPSConnection(LOOPBACK, port, context=ctx, timeout=600)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None
                ) -> tuple[int, http.client.HTTPMessage, bytes, int]:
        """(status, headers, body, octets on the wire: status line, header and body)."""
        headers = {"Host": f"localhost:{self.port}", "User-Agent": "postkeep-bench/1"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for line in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = line.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        wire = len(str(response.headers)) + 17 + len(data)
        return response.status, response.headers, data, wire

    def login(self) -> None:
        _s, _h, page, _w = self.request("GET", "/login")
        m = re.search(rb'name="csrf" value="([^"]+)"', page)
        if m is None:
            raise SystemExit("no CSRF token on the login page")
        status, headers, _b, _w = self.request(
            "POST", "/login", {"csrf": html.unescape(m[1].decode()), "address": USER,
                               "password": PASSWORD})
        if status != 303 or headers.get("Location") != "/account":
            raise SystemExit(f"login failed: {status} {headers.get('Location')}")

    def timed(self, path: str) -> float:
        started = time.perf_counter()
        status, _h, _b, _w = self.request("GET", path)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"GET {path}: {status}")
        return elapsed


def first_load(web: Web, path: str) -> tuple[int, list[str]]:
    """Octets of `path` and of every same-origin asset it names, as a browser loads them."""
    _s, _h, page, total = web.request("GET", path)
    assets = sorted(set(re.findall(rb'(?:href|src)="(/static/[^"]+)"', page)))
    names = []
    for asset in assets:
        status, _h, _b, wire = web.request("GET", asset.decode())
        if status != 200:
            raise SystemExit(f"GET {asset.decode()}: {status}")
        total += wire
        names.append(asset.decode())
    return total, names


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def measure(name: str, paths: Callable[[int], str], web: Web, n: int) -> dict[str, object]:
    cold = web.timed(paths(0))
    samples = [web.timed(paths(i + 1)) for i in range(n)]
    p50, p99 = percentiles(samples)
    print(f"  {name}: cold {cold * 1000:.0f} ms, p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms", flush=True)
    return {"name": name, "cold_ms": cold * 1000, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000,
            "requests": n}


def serve(instance: Path) -> tuple[subprocess.Popen[bytes], int]:
    conf = (instance / "postkeep.toml").read_text()
    m = re.search(r'\[web\]\nlisten = \["127\.0\.0\.1:(\d+)"', conf) or re.search(
        r'\[web\][^\[]*?listen = \["[^"]*:(\d+)"', conf)
    if m is None:
        raise SystemExit("no [web] listen in postkeep.toml")
    log_path = instance.parent / "server.log"
    before = log_path.read_text(errors="replace").count(READY) if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen([*POSTKEEP, "--dir", str(instance), "serve"], stdout=log,
                                stderr=log, env=ENV, start_new_session=True)
    deadline = time.monotonic() + 60
    while log_path.read_text(errors="replace").count(READY) <= before:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, int(m[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- Dovecot, the reference -----------------------------------------------------------------

def dovecot_reference(workdir: Path, mail: Sequence[bytes], n: int) -> dict[str, object]:
    """The first page's IMAP equivalent on a private Dovecot holding the same mailbox."""
    spec = importlib.util.spec_from_file_location("imap_bench", HERE.parent / "imap" / "run.py")
    assert spec is not None and spec.loader is not None
    imap_bench = importlib.util.module_from_spec(spec)
    sys.modules["imap_bench"] = imap_bench
    spec.loader.exec_module(imap_bench)
    target = imap_bench.DovecotTarget(workdir / "dovecot", "performance")
    shutil.rmtree(target.workdir, ignore_errors=True)
    target.setup(imap_bench.Limits(users=1, connections=10))
    cur = target.workdir / "home" / imap_bench.BIG_USER / "Maildir" / "cur"
    cur.mkdir(parents=True)
    for sub in ("new", "tmp"):
        (cur.parent / sub).mkdir()
    for i, data in enumerate(mail):
        (cur / f"{1_704_067_200 + 420 * i}.M{i}P1.bench:2,S").write_bytes(data)
    for path in [cur.parents[1], *cur.parents[1].rglob("*")]:
        os.chown(path, 65534, 65534)
    target.start()
    try:
        import imaplib
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        imap = imaplib.IMAP4_SSL(LOOPBACK, target.tls_port, ssl_context=ctx, timeout=600)
        imap.login(imap_bench.BIG_USER, imap_bench.PASSWORD)
        imap.select("INBOX")
        samples = []
        for _ in range(n + 1):
            started = time.perf_counter()
            _t, data = imap.uid("SORT", "(REVERSE ARRIVAL)", "UTF-8", "ALL")
            uids = data[0].split()[:50]
            imap.uid("FETCH", b",".join(uids).decode(), "(FLAGS ENVELOPE RFC822.SIZE)")
            samples.append(time.perf_counter() - started)
        imap.logout()
    finally:
        target.stop()
    p50, p99 = percentiles(samples[1:])
    print(f"  dovecot SORT+FETCH 50: cold {samples[0] * 1000:.0f} ms, p50 {p50 * 1000:.1f} ms,"
          f" p99 {p99 * 1000:.1f} ms", flush=True)
    return {"name": "dovecot UID SORT (REVERSE ARRIVAL) + UID FETCH 50 ENVELOPE",
            "cold_ms": samples[0] * 1000, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000,
            "requests": n}


# -- main -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 30 requests")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the built instance is kept (/var/tmp/...)")
    parser.add_argument("--dovecot", action="store_true", help="also time Dovecot (root)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.requests = 2000, 30
    cache = args.cache or Path(f"/var/tmp/postkeep-bench-webmail-{args.messages}")
    instance = build(cache, args.messages)
    proc, port = serve(instance)
    results: list[dict[str, object]] = []
    try:
        web = Web(port, instance / "tls" / "cert.pem")
        web.login()
        _s, headers, _b, _w = web.request("GET", "/mail")
        inbox = headers.get("Location") or ""
        pages = max(1, -(-args.messages // 50))
        octets, assets = first_load(web, inbox)
        print(f"  first load of the inbox: {octets} octets ({', '.join(assets)})")
        results.append(measure("inbox, first page", lambda i: inbox, web, args.requests))
        results.append(measure(f"inbox, page {pages // 2} of {pages}",
                               lambda i: f"{inbox}?page={pages // 2}", web, args.requests))
        results.append(measure("sorted by subject, page 2", lambda i: f"{inbox}?sort=subject"
                               "&page=2", web, args.requests))
        results.append(measure("search subject:budget, page 1-3",
                               lambda i: f"{inbox}?q=subject:budget&page={1 + i % 3}", web,
                               args.requests))
        results.append(measure("reading view", lambda i: f"{inbox}/{args.messages - 7 * i}",
                               web, args.requests))
    finally:
        stop(proc)
    if args.dovecot:
        if os.geteuid() != 0 or not Path("/usr/sbin/dovecot").exists():
            print("  dovecot: skipped (needs root and /usr/sbin/dovecot)")
        else:
            results.append(dovecot_reference(cache, messages(args.messages), args.requests))
    print(f"\n## Webmail read side, {args.messages} messages, {args.requests} requests each\n")
    print("| request | cold ms | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['cold_ms']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    print(f"\nFirst load of the inbox: {octets / 1024:.1f} KiB (target < 300 KB); "
          "p50 target < 50 ms.")
    if args.json:
        args.json.write_text(json.dumps({"messages": args.messages, "first_load": octets,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
