"""The firewall over the wire (`postkeep.net.firewall`, `[firewall]`): deny and allow lists,
rate limits per IP class and server-wide, global over worker processes. Loopback addresses
stand for different clients (127.0.0.66, 127.0.0.77, ...: a client socket binds its source)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
from pathlib import Path

from tests.interop.conftest import Instance, RedisServer, dual_stack, free_port, make_instance


def connect(port: int, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, sock.recv(1024)


def greeted(port: int, source: str) -> bytes:
    """Connect from `source`, read the greeting, QUIT (or just close)."""
    sock, greeting = connect(port, source)
    if greeting.startswith(b"220 "):
        sock.sendall(b"QUIT\r\n")
        sock.recv(1024)
    sock.close()
    return greeting


def lines(sock: socket.socket, count: int) -> list[bytes]:
    """Read until `count` complete lines are in (or the server closes)."""
    got = b""
    while got.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.split(b"\r\n")[:count]


def one_process(inst: Instance) -> None:
    inst.set_config("server", processes=1)  # every connection in the one worker: exact counts


def test_deny_allow_and_connection_rate_per_address(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=["127.0.0.77/32"], deny=["127.0.0.99/32"])
    fresh.set_config("firewall.ipv4_32", connections=3)
    fresh.set_config("firewall.ipv4_24", connections=1000)
    fresh.start()

    # denied: 421 before any greeting, one log line; on IMAP a BYE
    assert greeted(fresh.smtp_port, "127.0.0.99").startswith(b"421 4.7.0 Refused (denied)")
    fresh.wait_log(r'reject ip=127\.0\.0\.99 code=421 4\.7\.0 reason=denied '
                   r'limit="deny=127\.0\.0\.99/32"')
    sock, bye = connect(fresh.imap_port, "127.0.0.99")
    assert bye.startswith(b"* BYE [UNAVAILABLE] Refused (denied)")
    sock.close()

    # 3 new connections a minute from 127.0.0.66, then 421; 127.0.0.55 still connects
    assert [greeted(fresh.smtp_port, "127.0.0.66")[:4] for _ in range(3)] == [b"220 "] * 3
    assert greeted(fresh.smtp_port, "127.0.0.66").startswith(
        b"421 4.7.0 Refused (connection rate)")
    fresh.wait_log(r'reject ip=127\.0\.0\.66 code=421 4\.7\.0 reason="connection rate" '
                   r'limit="firewall\.ipv4_32\.connections=3"')
    assert greeted(fresh.smtp_port, "127.0.0.55").startswith(b"220 ")

    # allow-listed: no rate limit
    assert all(greeted(fresh.smtp_port, "127.0.0.77").startswith(b"220 ") for _ in range(8))
    # each service counts apart: IMAP from 127.0.0.66 is still welcome
    sock, ok = connect(fresh.imap_port, "127.0.0.66")
    assert ok.startswith(b"* OK")
    sock.close()


def test_connection_rate_per_24_and_server_wide(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=[], connections_per_minute=6)
    fresh.set_config("firewall.ipv4_32", connections=100)
    fresh.set_config("firewall.ipv4_24", connections=4)
    fresh.start()
    # four addresses of 127.0.0.0/24, then the fifth is refused for the /24
    assert all(greeted(fresh.smtp_port, f"127.0.0.{10 + i}").startswith(b"220 ")
               for i in range(4))
    assert greeted(fresh.smtp_port, "127.0.0.20").startswith(b"421 4.7.0")
    fresh.wait_log(r'reject ip=127\.0\.0\.20 code=421 4\.7\.0 reason="connection rate" '
                   r'limit="firewall\.ipv4_24\.connections=4"')
    # another /24 is still in; the refused attempt took nothing from the server-wide 6
    assert greeted(fresh.smtp_port, "127.0.1.1").startswith(b"220 ")
    assert greeted(fresh.smtp_port, "127.0.2.1").startswith(b"220 ")
    # server-wide: the 7th connection of the minute is refused, whoever it comes from
    assert greeted(fresh.smtp_port, "127.0.3.1").startswith(b"421 4.7.0")
    fresh.wait_log(r'reject ip=127\.0\.3\.1 code=421 4\.7\.0 reason="server connection rate" '
                   r'limit="firewall\.connections_per_minute=6"')


def test_messages_and_recipients_per_minute(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=[], tarpit_delay=0.05)
    fresh.set_config("firewall.ipv4_32", messages=2, recipients=3, commands=1000)
    fresh.start()

    # messages: the third MAIL FROM of the minute gets 421 4.7.0 and the connection closes
    sock, _ = connect(fresh.smtp_port, "127.0.0.66")
    sock.sendall(b"HELO a.test\r\n")
    assert lines(sock, 1)[0].startswith(b"250")
    for _ in range(2):
        sock.sendall(b"MAIL FROM:<>\r\nRSET\r\n")
        assert [line[:3] for line in lines(sock, 2)] == [b"250", b"250"]
    sock.sendall(b"MAIL FROM:<>\r\n")
    assert lines(sock, 1)[0].startswith(b"421 4.7.0 Too much traffic (message rate)")
    assert sock.recv(1024) == b""
    sock.close()
    fresh.wait_log(r'reject ip=127\.0\.0\.66 cmd=MAIL code=421 4\.7\.0 reason="message rate" '
                   r'limit="firewall\.ipv4_32\.messages=2"')

    # recipients: three accepted, the fourth closes the connection
    sock, _ = connect(fresh.smtp_port, "127.0.0.67")
    sock.sendall(b"HELO a.test\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<alice@example.test>\r\n" * 4)
    got = lines(sock, 6)
    assert [line[:3] for line in got[:5]] == [b"250"] * 5
    assert got[5].startswith(b"421 4.7.0 Too much traffic (recipient rate)")
    sock.close()
    fresh.wait_log(r'reject ip=127\.0\.0\.67 cmd=RCPT code=421 4\.7\.0 reason="recipient rate" '
                   r'limit="firewall\.ipv4_32\.recipients=3"')


def test_bytes_per_minute(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=[])
    fresh.set_config("firewall.ipv4_32", bytes=100)
    fresh.start()
    sock, _ = connect(fresh.smtp_port, "127.0.0.66")
    sock.sendall(b"HELO a.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [line[:3] for line in lines(sock, 4)] == [b"250", b"250", b"250", b"354"]
    sock.sendall(b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n")
    assert lines(sock, 1)[0].startswith(b"421 4.7.0 Too much traffic (data rate)")
    sock.close()
    fresh.wait_log(r'reject ip=127\.0\.0\.66 cmd=DATA code=421 4\.7\.0 reason="data rate" '
                   r'limit="firewall\.ipv4_32\.bytes=100"')
    assert fresh.messages("alice@example.test") == []


def test_ipv6_client(fresh: Instance) -> None:
    one_process(fresh)
    port = free_port()
    fresh.set_config("smtp", listen=[f"127.0.0.1:{fresh.smtp_port}", f"[::1]:{port}"])
    fresh.set_config("firewall", allow=[])
    fresh.set_config("firewall.ipv6_128", connections=2)
    fresh.start()

    def greet6() -> bytes:
        with socket.create_connection(("::1", port), timeout=10) as sock:
            return sock.recv(1024)

    assert [greet6()[:4] for _ in range(2)] == [b"220 "] * 2
    assert greet6().startswith(b"421 4.7.0 Refused (connection rate)")
    fresh.wait_log(r'reject ip=::1 code=421 4\.7\.0 reason="connection rate" '
                   r'limit="firewall\.ipv6_128\.connections=2"')
    assert greeted(fresh.smtp_port, "127.0.0.66").startswith(b"220 ")  # IPv4 apart


def test_ipv6_networks_on_every_listener(fresh: Instance) -> None:
    """::1 counts for its /128, /64 (::/64) and /48 (::/48), on each service's listeners."""
    one_process(fresh)
    dual_stack(fresh)
    fresh.set_config("firewall", allow=[])
    fresh.set_config("firewall.ipv6_128", connections=100)
    fresh.set_config("firewall.ipv6_64", connections=2)
    fresh.start()

    def first_line(port: int) -> bytes:
        with socket.create_connection(("::1", port), timeout=10) as sock:
            return sock.recv(1024)

    for port, welcome, refused in (
        (fresh.smtp_port, b"220 ", b"421 4.7.0 Refused (connection rate)"),
        (fresh.submission_port, b"220 ", b"421 4.7.0 Refused (connection rate)"),
        (fresh.imap_port, b"* OK", b"* BYE [UNAVAILABLE] Refused (connection rate)"),
    ):
        assert [first_line(port)[:4] for _ in range(2)] == [welcome[:4]] * 2
        assert first_line(port).startswith(refused)
    fresh.wait_log(r'reject ip=::1 code=421 4\.7\.0 reason="connection rate" '
                   r'limit="firewall\.ipv6_64\.connections=2"')
    fresh.wait_log(r'reject ip=::1 reason="connection rate" limit="firewall\.ipv6_64\.'
                   r'connections=2"')  # IMAP: no status code
    # submission's implicit-TLS listener shares the submission budget: closed without a word
    with socket.create_connection(("::1", fresh.submissions_port), timeout=10) as sock:
        assert sock.recv(1024) == b""
    smtp_refusals = (r'reject ip=::1 code=421 4\.7\.0 reason="connection rate" '
                     r'limit="firewall\.ipv6_64')
    fresh.wait_log(rf"(?s)({smtp_refusals}.*){{3}}")  # MX, submission, submissions
    assert greeted(fresh.smtp_port, "127.0.0.66").startswith(b"220 ")  # IPv4 apart

    fresh.stop()
    fresh.set_config("firewall.ipv6_64", connections=100)
    fresh.set_config("firewall.ipv6_48", connections=3)
    fresh.start()
    assert [first_line(fresh.smtp_port)[:4] for _ in range(3)] == [b"220 "] * 3
    assert first_line(fresh.smtp_port).startswith(b"421 4.7.0 Refused (connection rate)")
    fresh.wait_log(r'reject ip=::1 code=421 4\.7\.0 reason="connection rate" '
                   r'limit="firewall\.ipv6_48\.connections=3"')


def test_commands_tarpit_then_cut(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=[], tarpit_delay=0.02)
    fresh.set_config("firewall.ipv4_32", commands=4)
    fresh.start()
    sock, _ = connect(fresh.smtp_port, "127.0.0.66")
    # 4 within the allowance, 4 more slowed down (answered all the same), then cut off
    sock.sendall(b"NOOP\r\n" * 9)
    got = lines(sock, 9)
    assert got[:8] == [b"250 2.0.0 Ok"] * 8
    assert got[8].startswith(b"421 4.7.0 Too much traffic (command rate)")
    sock.close()
    fresh.wait_log(r'tarpit ip=127\.0\.0\.66 cmd=- reason="command rate" '
                   r'limit="firewall\.ipv4_32\.commands=4" delay=0\.0')
    fresh.wait_log(r'reject ip=127\.0\.0\.66 cmd=- code=421 4\.7\.0 reason="command rate"')
    assert fresh.log().count("tarpit ip=127.0.0.66") == 1  # one line per connection


def test_imap_commands_tarpit_then_bye(fresh: Instance) -> None:
    one_process(fresh)
    fresh.set_config("firewall", allow=[], tarpit_delay=0.02)
    fresh.set_config("firewall.ipv4_32", commands=3)
    fresh.start()
    sock, greeting = connect(fresh.imap_port, "127.0.0.66")
    assert greeting.startswith(b"* OK")
    sock.sendall(b"".join(b"a%d NOOP\r\n" % i for i in range(7)))
    got = lines(sock, 7)
    assert [line.split(b" ")[:2] for line in got[:6]] == [[b"a%d" % i, b"OK"] for i in range(6)]
    assert got[6].startswith(b"* BYE [UNAVAILABLE] Too many commands")
    sock.close()
    fresh.wait_log(r'tarpit ip=127\.0\.0\.66 reason="command rate" '
                   r'limit="firewall\.ipv4_32\.commands=3"')
    fresh.wait_log(r'reject ip=127\.0\.0\.66 user=- reason="command rate" '
                   r'limit="firewall\.ipv4_32\.commands=3"')


def test_connection_rate_is_global_over_workers(fresh: Instance) -> None:
    fresh.set_config("server", processes=2)
    fresh.set_config("firewall", allow=[])
    fresh.set_config("firewall.ipv4_32", connections=4)
    fresh.start()
    held, accepted = [], 0
    for _ in range(12):  # kept open, so both workers take some
        sock, greeting = connect(fresh.smtp_port, "127.0.0.66")
        held.append(sock)
        accepted += greeting.startswith(b"220 ")
        time.sleep(0.05)  # a block reaches the other worker within REPORT_EVERY and a pass
    for sock in held:
        sock.close()
    # each worker alone would let 4 in: 8 in all; the global count stops at 4 (and at most
    # what the other worker let in while a block was on its way)
    assert 4 <= accepted <= 5, accepted


def test_connection_rate_shared_by_nodes_through_redis(
        fresh: Instance, redis_server: RedisServer, tmp_path: Path) -> None:
    """Two instances naming one Redis count one budget per address; Redis hung or gone, each
    counts alone (accepts never wait on it), and shares again once it is back."""
    other = make_instance(tmp_path / "other")
    nodes = (fresh, other)
    for node in nodes:
        one_process(node)
        node.set_config("firewall", allow=[])
        node.set_config("firewall.ipv4_32", connections=4)
        node.set_config("cluster", redis_url=redis_server.url)

    def alternate(source: str, count: int) -> int:
        accepted = 0
        for i in range(count):  # each node alone would let 4 in
            accepted += greeted(nodes[i % 2].smtp_port, source).startswith(b"220 ")
            time.sleep(0.05)  # a block reaches the other node within a Redis round trip
        return accepted

    try:
        for node in nodes:
            node.start()
        # 8 connections, 4 per node: one budget of 4 (and at most one let in while a block
        # was on its way)
        assert 4 <= alternate("127.0.0.66", 8) <= 5
        for node in nodes:
            node.wait_log(r'reject ip=127\.0\.0\.66 code=421 4\.7\.0 reason="connection rate" '
                          r'limit="firewall\.ipv4_32\.connections=4"')
        assert greeted(other.smtp_port, "127.0.0.55").startswith(b"220 ")  # its own budget

        # Redis hung (stopped, its sockets open): the calls time out, the accepts go on
        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            assert [greeted(fresh.smtp_port, "127.0.0.69")[:4] for _ in range(4)] == [b"220 "] * 4
            fresh.wait_log(r'postkeep\.firewall: redis unreachable, rates counted per node '
                           r'reason="Timeout')
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        for node in nodes:  # each outage ends once Redis answers (a ping, a report)
            while node.log().count("redis unreachable") != node.log().count(
                    "redis reachable again"):
                assert time.monotonic() < deadline, node.log()[-2000:]
                time.sleep(0.1)
        outages = [node.log().count("redis unreachable") for node in nodes]

        redis_server.stop()
        for node in nodes:
            node.wait_log(r"postkeep\.firewall: redis unreachable, rates counted per node "
                          r"reason=(?!\"Timeout)")
        # failing open: each node counts alone again, and accepts go on meanwhile
        assert [greeted(fresh.smtp_port, "127.0.0.67")[:4] for _ in range(4)] == [b"220 "] * 4
        assert greeted(fresh.smtp_port, "127.0.0.67").startswith(b"421 4.7.0")
        assert [greeted(other.smtp_port, "127.0.0.67")[:4] for _ in range(4)] == [b"220 "] * 4
        # one line for the outage
        assert [node.log().count("redis unreachable") for node in nodes] == [
            n + 1 for n in outages]

        redis_server.start()
        for node, n in zip(nodes, outages, strict=True):
            node.wait_log(rf"(?s)(firewall: redis reachable again, rates shared seconds=\d+"
                          rf".*){{{n + 1}}}")
        assert 4 <= alternate("127.0.0.68", 8) <= 5
    finally:
        other.stop()


# -- PROXY protocol ------------------------------------------------------------------------------

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(source: str, port: int, local: bool = False) -> bytes:
    if local:
        return V2 + bytes([0x20, 0x00]) + (0).to_bytes(2, "big")
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    dest = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    addresses = (socket.inet_pton(family, source) + socket.inet_pton(family, dest)
                 + port.to_bytes(2, "big") + (25).to_bytes(2, "big"))
    tlv = b"\x04\x00\x02hi"  # a TLV (PP2_TYPE_NOOP), skipped
    kind = 0x11 if family == socket.AF_INET else 0x21
    return V2 + bytes([0x21, kind]) + len(addresses + tlv).to_bytes(2, "big") + addresses + tlv


def behind_proxy(inst: Instance) -> None:
    one_process(inst)
    inst.set_config("firewall", allow=[], trusted_proxies=["127.0.0.1/32"], proxy_timeout=1.0)
    inst.set_config("firewall.ipv4_32", connections=2)
    path = inst.dir / "postkeep.toml"
    path.write_text(path.read_text() + "".join(
        f'\n[[firewall.listener]]\nrole = "{role}"\nproxy_protocol = true\n'
        for role in ("mx", "submissions", "imap")
    ))


def proxied(port: int, header: bytes, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(header)
    return sock, sock.recv(1024)


def test_proxy_protocol(fresh: Instance) -> None:
    behind_proxy(fresh)
    fresh.start()
    port = fresh.smtp_port

    # v1 from the trusted proxy: the client in the header is the one logged, in Received,
    # and counted
    sock, greeting = proxied(port, b"PROXY TCP4 192.0.2.7 192.0.2.1 4444 25\r\n")
    assert greeting.startswith(b"220 ")
    sock.sendall(b"HELO client.test\r\nMAIL FROM:<s@client.test>\r\n"
                 b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert [line[:3] for line in lines(sock, 4)] == [b"250", b"250", b"250", b"354"]
    sock.sendall(b"Subject: proxied\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    assert lines(sock, 1)[0].startswith(b"250")
    sock.close()
    fresh.wait_log(r"message qid=\S+ ip=192\.0\.2\.7 ")
    (message,) = fresh.messages("alice@example.test")
    received = message.split(b"\r\n\r\n", 1)[0]
    assert b"Received: from client.test ([192.0.2.7])" in received
    assert b"policy.iprev=192.0.2.7" in received  # the checks see the client too
    sock, greeting = proxied(port, b"PROXY TCP4 192.0.2.7 192.0.2.1 4445 25\r\n")
    assert greeting.startswith(b"220 ")
    sock.close()
    sock, greeting = proxied(port, b"PROXY TCP4 192.0.2.7 192.0.2.1 4446 25\r\n")
    assert greeting.startswith(b"421 4.7.0 Refused (connection rate)")
    sock.close()
    fresh.wait_log(r'reject ip=192\.0\.2\.7 code=421 4\.7\.0 reason="connection rate"')
    # another client behind the same proxy is not affected
    sock, greeting = proxied(port, v2_header("192.0.2.8", 5555))
    assert greeting.startswith(b"220 ")
    sock.close()

    # v2 with an IPv6 client; LOCAL (a health check): the proxy's own address
    sock, greeting = proxied(port, v2_header("2001:db8::5", 6666))
    assert greeting.startswith(b"220 ")
    sock.sendall(b"QUIT\r\n")
    lines(sock, 1)
    sock.close()
    fresh.wait_log(r"disconnect ip=2001:db8::5 port=6666 role=mx")
    sock, greeting = proxied(port, v2_header("", 0, local=True))
    assert greeting.startswith(b"220 ")
    sock.sendall(b"QUIT\r\n")
    lines(sock, 1)
    sock.close()
    fresh.wait_log(r"disconnect ip=127\.0\.0\.1 port=\d+ role=mx")

    # STARTTLS on a listener behind a proxy
    sock, greeting = proxied(port, v2_header("192.0.2.9", 5656))
    assert greeting.startswith(b"220 ")
    sock.sendall(b"EHLO client.test\r\n")
    got = b""
    while b"\r\n250 " not in got:  # the EHLO reply's last line
        got += sock.recv(4096)
    sock.sendall(b"STARTTLS\r\n")
    assert lines(sock, 1)[0].startswith(b"220")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(sock) as tls:
        tls.sendall(b"QUIT\r\n")
        assert tls.recv(1024).startswith(b"221")
    fresh.wait_log(r"disconnect ip=192\.0\.2\.9 port=5656 role=mx tls=TLSv1")

    # IMAP behind a proxy, IPv6 in v1
    sock, greeting = proxied(fresh.imap_port, b"PROXY TCP6 2001:db8::6 2001:db8::1 7 143\r\n")
    assert greeting.startswith(b"* OK")
    sock.close()


def test_proxy_refusals(fresh: Instance) -> None:
    behind_proxy(fresh)
    fresh.start()
    port = fresh.smtp_port
    header = b"PROXY TCP4 192.0.2.7 192.0.2.1 4444 25\r\n"
    for source, data, reason in (
        ("127.0.0.66", header, "not a trusted proxy"),  # a header from anyone else
        ("127.0.0.1", b"EHLO no.header\r\n", "not a PROXY header"),  # none on a proxy listener
        ("127.0.0.1", b"PROXY TCP4 999.0.2.7 192.0.2.1 1 25\r\n", "is not an IP address"),
        ("127.0.0.1", b"PROXY TCP4 192.0.2.7 192.0.2.1 1 25" + b" " * 80 + b"\r\n", "107"),
        ("127.0.0.1", V2[:12] + bytes([0x21, 0x11, 0xFF, 0xFF]), "at most"),
        ("127.0.0.1", b"PROXY TCP4 192.0.2.7", "timeout"),  # cut short: the deadline
    ):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                        source_address=(source, 0))
        sock.sendall(data)
        try:
            answer = sock.recv(1024)
        except ConnectionResetError:  # closed with the octets unread
            answer = b""
        assert answer == b"", (data, answer)  # closed without a word
        sock.close()
        fresh.wait_log(rf'proxy refused ip={re.escape(source)} reason="?[^"]*{reason}')


def test_implicit_tls_behind_proxy(fresh: Instance) -> None:
    behind_proxy(fresh)
    fresh.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", fresh.submissions_port), timeout=10)
    raw.sendall(v2_header("198.51.100.9", 4321))  # before the ClientHello
    with context.wrap_socket(raw) as tls:
        assert tls.recv(1024).startswith(b"220 ")
        tls.sendall(b"QUIT\r\n")
        tls.recv(1024)
    fresh.wait_log(r"disconnect ip=198\.51\.100\.9 port=4321 role=submission tls=TLSv1")
