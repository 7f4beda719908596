"""Brute-force protection (`postkeep.bans`) over the wire, on a real `postkeep serve` with two
worker processes: loopback addresses (127.0.x.y, bound as the client's source) stand for
different clients.

A few thousand wrong passwords from one address over SMTP AUTH and IMAP LOGIN, from parallel
connections, are cut off within the configured count; the ban holds on every listener (plain
ones answer 421 4.7.1 / BYE, implicit-TLS ones close) and across a restart; the real user logs
in throughout from another address, and one that logged in before is never slowed while the
account is under attack; bans escalate; unknown recipients, the SMTP error limit and pre-auth
closes are strikes; `postkeep ban` adds, lists and removes; fail2ban's own `fail2ban-regex`
matches the log lines. Assertions count, they do not time.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import (
    PASSWORD,
    Instance,
    RedisServer,
    dual_stack,
    make_instance,
    require_tool,
)

ALICE = "alice@example.test"
ATTACKER = "127.0.0.66"
REAL = "127.0.1.77"  # another /24: the attacker's network bans never cover it
KNOWN = "127.0.1.88"  # logs in before the attack: a known client of alice's
CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "fail2ban"
MAX_STRIKES = 10
PARALLEL = 4
BAN_CONFIG = {
    "max_strikes": float(MAX_STRIKES),
    "max_strikes_network": 30.0,
    "account_max_failures": 5,
    "account_failure_delay": 0.05,
    "sync_interval": 0.2,
}


def _ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connect(src: str, port: int, tls: bool = False) -> socket.socket:
    """A connection from `src` (an IPv6 one, ::1, to the listeners on ::1)."""
    host = "::1" if ":" in src else "127.0.0.1"
    sock = socket.create_connection((host, port), timeout=10, source_address=(src, 0))
    return _ctx().wrap_socket(sock) if tls else sock


class _Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> bytes:
        """A whole SMTP reply: its last line."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def smtp_auth(inst: Instance, src: str, password: str, tries: int = 1) -> list[bytes]:
    """AUTH PLAIN over implicit TLS `tries` times in one connection; the replies (a refused or
    closed connection ends the list)."""
    replies: list[bytes] = []
    try:
        with _connect(src, inst.submissions_port, tls=True) as sock:
            conn = _Lines(sock)
            conn.reply()
            conn.send(b"EHLO client.test\r\n")
            conn.reply()
            for _ in range(tries):
                conn.send(f"AUTH PLAIN {_plain(ALICE, password)}\r\n".encode())
                reply = conn.reply()
                replies.append(reply)
                if not reply.startswith(b"535"):
                    break
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return replies


def imap_login(inst: Instance, src: str, password: str, tries: int = 1) -> list[bytes]:
    """LOGIN over implicit TLS `tries` times in one connection; the tagged replies."""
    replies: list[bytes] = []
    try:
        with _connect(src, inst.imaps_port, tls=True) as sock:
            conn = _Lines(sock)
            conn.line()
            for i in range(tries):
                conn.send(f'a{i} LOGIN {ALICE} "{password}"\r\n'.encode())
                while not (line := conn.line()).startswith(f"a{i} ".encode()):
                    if line.startswith(b"* BYE"):
                        replies.append(line)
                        return replies
                replies.append(line)
                if b" OK " in line:
                    conn.send(b"z LOGOUT\r\n")
                    break
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return replies


def greeting(src: str, port: int, tls: bool = False) -> bytes:
    """The first line a client from `src` gets, b"" if the connection is closed first."""
    try:
        with _connect(src, port, tls) as sock:
            return _Lines(sock).line()
    except (ConnectionError, ssl.SSLError, OSError):
        return b""


def refused_everywhere(inst: Instance, src: str) -> bool:
    plain = [greeting(src, inst.smtp_port), greeting(src, inst.submission_port)]
    imap = greeting(src, inst.imap_port)
    implicit = [greeting(src, inst.submissions_port, True), greeting(src, inst.imaps_port, True)]
    return (all(g.startswith(b"421 4.7.1") for g in plain)
            and imap.startswith(b"* BYE [UNAVAILABLE]") and implicit == [b"", b""])


def wait_for(check: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {check}")


def attack(inst: Instance, src: str, attempts: int, proto: str = "smtp") -> int:
    """`attempts` wrong passwords from `src` over PARALLEL connections at a time (each up to 5
    per connection: the per-connection limit); how many the server answered as failures."""
    failed = 0
    lock = threading.Lock()
    left = [attempts]

    def run() -> None:
        nonlocal failed
        while True:
            with lock:
                if left[0] <= 0:
                    return
                n = min(5, left[0])
                left[0] -= n
            login = smtp_auth if proto == "smtp" else imap_login
            replies = login(inst, src, "wrong-password", n)
            bad = sum(r.startswith(b"535") or b"AUTHENTICATIONFAILED" in r for r in replies)
            with lock:
                failed += bad

    threads = [threading.Thread(target=run) for _ in range(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def lines(inst: Instance, pattern: str) -> list[str]:
    return [ln for ln in inst.log().splitlines() if re.search(pattern, ln)]


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instance]:
    inst = make_instance(tmp_path)
    inst.set_config("server", processes=2)
    inst.set_config("submission", auth_failure_delay=0.01)
    inst.set_config("imap", auth_failure_delay=0.01)
    inst.set_config("bans", **BAN_CONFIG)
    yield inst
    inst.stop()


def test_brute_force_is_cut_off_and_the_real_user_logs_in(inst: Instance) -> None:
    inst.start()
    assert imap_login(inst, KNOWN, PASSWORD)[-1].endswith(b"Logged in")  # known before
    assert smtp_auth(inst, KNOWN, PASSWORD) == [b"235 2.7.0 Authentication successful"]

    logins: list[bool] = []
    stop = threading.Event()

    def real_user() -> None:  # logs in all along, from an address no ban covers
        while not stop.is_set():
            logins.append(smtp_auth(inst, REAL, PASSWORD) == [
                b"235 2.7.0 Authentication successful"])
            replies = imap_login(inst, REAL, PASSWORD)
            logins.append(bool(replies) and replies[-1].endswith(b"Logged in"))

    user = threading.Thread(target=real_user)
    user.start()
    try:
        failed = attack(inst, ATTACKER, 2000)
        # the account is under attack now: the known client's typo is not slowed, a new one is
        assert imap_login(inst, KNOWN, "typo")[-1].endswith(b"Authentication failed")
        assert imap_login(inst, "127.0.2.99", "typo")[-1].endswith(b"Authentication failed")
    finally:
        stop.set()
        user.join()
    assert logins and all(logins), logins.count(False)
    # cut off within the count: what the connections in flight had started, at most
    assert MAX_STRIKES <= failed <= MAX_STRIKES + PARALLEL * 5, failed
    bans = lines(inst, rf"bans: ban ip={re.escape(ATTACKER)}/32 ")
    assert len(bans) == 1 and 'reason="auth failures"' in bans[0] and "level=0" in bans[0]
    assert len(lines(inst, rf"reject ip={re.escape(ATTACKER)} .*reason=banned")) >= 300
    assert refused_everywhere(inst, ATTACKER)
    assert lines(inst, r"auth delayed ip=127\.0\.2\.99 ")
    assert not lines(inst, rf"auth delayed ip={re.escape(KNOWN)} ")
    # IMAP from a second attacker: the same
    assert MAX_STRIKES <= attack(inst, "127.0.11.67", 500, "imap") <= MAX_STRIKES + PARALLEL * 5

    inst.stop()
    inst.start()  # the bans survive a restart
    assert refused_everywhere(inst, ATTACKER)
    assert not greeting(REAL, inst.smtp_port).startswith(b"421")
    assert smtp_auth(inst, REAL, PASSWORD) == [b"235 2.7.0 Authentication successful"]


def test_network_ban_and_escalation(inst: Instance) -> None:
    inst.set_config("bans", durations=[1.0, 3600.0], max_strikes_network=25.0)
    inst.start()
    for src in ("127.0.3.1", "127.0.3.2", "127.0.3.3"):  # no more than the ones that ban:
        attack(inst, src, MAX_STRIKES)  # none left for once a 1-second ban is over
    wait_for(lambda: lines(inst, r"bans: ban ip=127\.0\.3\.0/24 "))
    # the first bans last a second: the addresses come back, and a second run bans them longer
    wait_for(lambda: greeting("127.0.3.1", inst.smtp_port).startswith(b"220"))
    attack(inst, "127.0.3.1", 40)
    again = lines(inst, r"bans: ban ip=127\.0\.3\.1/32 ")
    assert len(again) == 2 and "level=1 " in again[1] and "duration=3600 " in again[1]
    assert refused_everywhere(inst, "127.0.3.1")


def test_ipv6_client_counted_per_network_and_banned_everywhere(inst: Instance) -> None:
    dual_stack(inst)
    # one address never reaches its own threshold here: its /64 and /48 do
    inst.set_config("bans", max_strikes=1000.0, max_strikes_network=float(MAX_STRIKES))
    inst.start()
    failed = attack(inst, "::1", 300)
    assert MAX_STRIKES <= failed <= MAX_STRIKES + PARALLEL * 5, failed
    assert len(lines(inst, r"bans: ban ip=::/64 .*reason=\"auth failures\"")) == 1
    assert len(lines(inst, r"bans: ban ip=::/48 .*reason=\"auth failures\"")) == 1
    assert not lines(inst, r"bans: ban ip=::1/128 ")
    assert refused_everywhere(inst, "::1")
    assert lines(inst, r"reject ip=::1 .*reason=banned ban=::/64 until=")
    assert greeting("127.0.0.44", inst.smtp_port).startswith(b"220")  # IPv4 apart
    listed = inst.cli("ban", "list").stdout
    assert re.search(r"^::/64 +\S+ +\d+ +0  auth failures$", listed, re.M), listed
    assert re.search(r"^::/48 +\S+ +\d+ +0  auth failures$", listed, re.M), listed
    assert inst.cli("ban", "remove", "::/64").stdout == "unbanned ::/64\n"
    assert inst.cli("ban", "remove", "0:0::/48").stdout == "unbanned 0:0::/48\n"
    wait_for(lambda: greeting("::1", inst.smtp_port).startswith(b"220"))
    assert smtp_auth(inst, "::1", PASSWORD) == [b"235 2.7.0 Authentication successful"]
    assert inst.cli("ban", "remove", "::/64", check=False).returncode == 1

    # by hand: the address (as any spelling of it), then a network of no class's length
    assert inst.cli("ban", "add", "0:0:0::1", "--reason", "by hand").stdout.startswith(
        "banned ::1/128 until ")
    wait_for(lambda: refused_everywhere(inst, "::1"))
    inst.cli("ban", "remove", "::1")
    wait_for(lambda: greeting("::1", inst.imap_port).startswith(b"* OK"))
    assert inst.cli("ban", "add", "::/16", "--duration", "2h").stdout.startswith(
        "banned ::/16 until ")
    wait_for(lambda: refused_everywhere(inst, "::1"))
    assert lines(inst, r"reject ip=::1 .*reason=banned ban=::/16 until=")
    assert re.search(r"^::/16 +\S+ +0 +0  banned by hand$", inst.cli("ban", "list").stdout,
                     re.M)
    assert greeting("127.0.0.44", inst.smtp_port).startswith(b"220")
    inst.cli("ban", "remove", "::/16")
    wait_for(lambda: greeting("::1", inst.smtp_port).startswith(b"220"))
    assert "no bans in force" in inst.cli("ban", "list").stdout


def _rcpts(inst: Instance, src: str, count: int) -> list[bytes]:
    replies = []
    with _connect(src, inst.smtp_port) as sock:
        conn = _Lines(sock)
        conn.reply()
        conn.send(b"EHLO client.test\r\nMAIL FROM:<x@client.test>\r\n")
        conn.reply()
        conn.reply()
        for i in range(count):
            conn.send(f"RCPT TO:<nobody{i}@example.test>\r\n".encode())
            replies.append(conn.reply())
    return replies


def test_harvesting_errors_and_preauth_floods_are_strikes(inst: Instance) -> None:
    inst.set_config("smtp", error_delay=0.0)
    inst.start()
    for _ in range(4):  # 20 unknown users at 0.5: 10 strikes
        assert all(r.startswith(b"550 5.1.1") for r in _rcpts(inst, "127.0.8.1", 5))
    wait_for(lambda: refused_everywhere(inst, "127.0.8.1"))
    assert 'reason="unknown recipients"' in lines(inst, r"ban ip=127\.0\.8\.1/32")[0]

    for _ in range(4):  # the hard error limit (20 errors) reached 4 times: 12 strikes
        with _connect("127.0.9.2", inst.smtp_port) as sock:
            conn = _Lines(sock)
            conn.reply()
            conn.send(b"BOGUS\r\n" * 20)
            while not conn.reply().startswith(b"421"):
                pass
    wait_for(lambda: refused_everywhere(inst, "127.0.9.2"))
    assert 'reason="protocol errors"' in lines(inst, r"ban ip=127\.0\.9\.2/32")[0]

    for _ in range(110):  # connections closed at once: 0.1 each
        greeting("127.0.10.3", inst.imap_port)
    wait_for(lambda: refused_everywhere(inst, "127.0.10.3"))
    assert "connections closed before login" in lines(inst, r"ban ip=127\.0\.10\.3/32")[0]


def _fail_handshake(inst: Instance, src: str, how: str) -> None:
    """One TLS handshake from `src` that fails the way `how` says: on an implicit-TLS port
    (submissions, IMAPS) plaintext, garbage, an abort or silence; or after STARTTLS (SMTP
    submission, IMAP) plaintext where the ClientHello belongs."""
    port = {"plaintext": inst.submissions_port, "garbage": inst.imaps_port,
            "abort": inst.submissions_port, "silence": inst.imaps_port,
            "smtp-starttls": inst.submission_port, "imap-starttls": inst.imap_port}[how]
    with _connect(src, port) as sock:
        conn = _Lines(sock)
        if how == "abort":  # a reset at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if how == "plaintext":
            sock.sendall(b"EHLO client.test\r\n")
        elif how == "garbage":  # a handshake record that holds no ClientHello
            sock.sendall(b"\x16\x03\x01\x00\x08" + b"\xff" * 8)
        elif how == "smtp-starttls":
            conn.reply()
            conn.send(b"EHLO client.test\r\n")
            conn.reply()
            conn.send(b"STARTTLS\r\n")
            assert conn.reply().startswith(b"220 ")
            conn.send(b"EHLO still.plaintext\r\n")
        elif how == "imap-starttls":
            conn.line()
            conn.send(b"a STARTTLS\r\n")
            assert conn.line().startswith(b"a OK")
            conn.send(b"b LOGIN alice secret\r\n")
        with contextlib.suppress(OSError):  # the server closes (silence: at its deadline)
            while sock.recv(4096):
                pass


def test_failed_tls_handshakes_are_strikes(inst: Instance) -> None:
    inst.set_config("tls", handshake_timeout=1.0)
    inst.set_config("bans", tls_failure_weight=1.0)
    inst.start()
    src = "127.0.13.1"
    ways = ["plaintext", "garbage", "abort", "silence", "smtp-starttls", "imap-starttls"]
    for how in [*ways, *ways[: MAX_STRIKES - len(ways)]]:
        _fail_handshake(inst, src, how)
    (ban,) = [inst.wait_log(rf"bans: ban ip={re.escape(src)}/32 .*")[0]]
    # one strike per connection: the STARTTLS ones are no pre-auth closes as well
    assert f"strikes={MAX_STRIKES} " in ban and 'reason="failed TLS handshakes"' in ban, ban
    assert refused_everywhere(inst, src)
    failures = lines(inst, rf"tls handshake failed ip={re.escape(src)} reason=")
    assert len(failures) == MAX_STRIKES, failures
    assert sum("postkeep.imap" in ln for ln in failures) == 5  # garbage, silence, STARTTLS
    assert any("reason=timeout" in ln for ln in failures)
    # a good handshake is no strike: the real user from elsewhere is never banned for it
    for _ in range(MAX_STRIKES + 2):
        assert imap_login(inst, REAL, PASSWORD)[-1].endswith(b"Logged in")
    assert not lines(inst, rf"ban ip={re.escape(REAL)}/")


def test_ban_cli_round_trip(inst: Instance) -> None:
    inst.set_config("bans", never_ban=["127.0.5.0/24"])
    inst.start()
    src = "127.0.6.1"
    out = inst.cli("ban", "add", src, "--duration", "2h", "--reason", "seen in a honeypot").stdout
    assert out.startswith(f"banned {src}/32 until ")
    wait_for(lambda: refused_everywhere(inst, src))
    listed = inst.cli("ban", "list").stdout
    assert re.search(rf"^{re.escape(src)}/32 +\S+ +0 +0  seen in a honeypot$", listed, re.M)
    assert inst.cli("ban", "add", "127.0.5.9", check=False).returncode == 1  # never_ban
    attack(inst, "127.0.5.9", 60)  # never counted
    assert greeting("127.0.5.9", inst.smtp_port).startswith(b"220")
    assert inst.cli("ban", "remove", src).stdout == f"unbanned {src}\n"
    wait_for(lambda: greeting(src, inst.smtp_port).startswith(b"220"))
    assert "no bans in force" in inst.cli("ban", "list").stdout
    assert inst.cli("ban", "remove", src, check=False).returncode == 1


def test_fail2ban_matches_the_log(inst: Instance) -> None:
    regex = require_tool("fail2ban-regex", "fail2ban")
    dual_stack(inst)
    inst.set_config("tls", handshake_timeout=1.0)
    inst.start()
    attack(inst, "127.0.7.1", 30)
    attack(inst, "127.0.7.2", 30, "imap")
    attack(inst, "::1", 15)
    for how in ("plaintext", "garbage", "abort", "silence", "smtp-starttls", "imap-starttls"):
        _fail_handshake(inst, "127.0.14.3", how)
    inst.stop()
    log = inst.log()
    expected = sum(bool(re.search(r": auth failure ip=|: reject ip=\S+ .*reason=banned|"
                                  r': reject ip=\S+ cmd=\S+ code=421 4\.7\.0 reason="too many|'
                                  r": tls handshake failed ip=", ln))
                   for ln in log.splitlines())
    assert log.count("tls handshake failed ip=127.0.14.3 ") == 6
    assert lines(inst, r"bans: ban ip=::1/128 .*reason=\"auth failures\"")  # the address
    result = subprocess.run([regex, "--print-all-matched", str(inst.log_path),
                             str(CONTRIB / "filter.d" / "postkeep.conf")],
                            capture_output=True, text=True, timeout=120, check=True)
    matched = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", result.stdout, re.M)
    assert matched is not None, result.stdout
    assert int(matched[1]) == expected > 2 * MAX_STRIKES
    for client in ("127.0.7.1", "127.0.7.2", "127.0.14.3", "::1"):
        assert f"ip={client} " in result.stdout, client  # among the matched lines


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def test_bans_shared_through_redis(inst: Instance, redis_url: str, tmp_path: Path) -> None:
    other = make_instance(tmp_path / "other")
    other.set_config("bans", **BAN_CONFIG)
    try:
        for node in (inst, other):
            node.set_config("cluster", redis_url=redis_url)
            node.start()
        # one address guesses on both nodes: their strikes add up in Redis
        attack(inst, "127.0.12.1", 6)
        attack(other, "127.0.12.1", 6)
        wait_for(lambda: refused_everywhere(inst, "127.0.12.1")
                 and refused_everywhere(other, "127.0.12.1"))
        # made once, by one node; each node logs it once (the other when it loads it)
        made = [lines(node, r"ban ip=127\.0\.12\.1/32 ") for node in (inst, other)]
        assert [len(m) for m in made] == [1, 1]
        assert {m[0].split("ban ip=")[1] for m in made} == {made[0][0].split("ban ip=")[1]}
        # a ban made by hand on one node's CLI holds on the other
        inst.cli("ban", "add", "127.0.12.2", "--duration", "1h", "--reason", "by hand")
        wait_for(lambda: refused_everywhere(other, "127.0.12.2"))
        listed = other.cli("ban", "list").stdout
        assert "127.0.12.1/32" in listed and "127.0.12.2/32" in listed
        other.cli("ban", "remove", "127.0.12.2")
        wait_for(lambda: greeting("127.0.12.2", inst.smtp_port).startswith(b"220"))
        assert lines(inst, r"bans: unban ip=127\.0\.12\.2/32$")
        # the store has none of them: Redis holds the bans
        assert not (inst.dir / "store.db").exists() or "127.0.12" not in subprocess.run(
            ["sqlite3", str(inst.dir / "store.db"), "SELECT key FROM bans"],
            capture_output=True, text=True).stdout
    finally:
        other.stop()
