"""Slow clients cannot take every connection slot (issue 12), on a real `postkeep serve` with
two worker processes: the slots of the slow connections are counted in the main process
for both workers (`SlowSlot` over the worker channel), so however the kernel spreads the
trickling connections over the workers, no more than `imap.slow_share` of
`imap.max_connections` stay, and a client from a fresh address logs in."""

from __future__ import annotations

import re

from tests.interop.conftest import PASSWORD, Instance
from tests.interop.test_imap import ALICE, ctx
from tests.trickle import Tricklers, connect, read_line


def test_a_fresh_address_logs_in_while_trickling_connections_fill_imap(fresh: Instance) -> None:
    fresh.set_config("server", processes=2)
    fresh.set_config("imap", max_connections=6, max_connections_per_ip=3,
                     slow_after=1.0, slow_share=0.5)
    fresh.start()
    fresh.wait_log(r"worker=2 ready")
    socks = [connect(fresh.imap_port, f"127.0.0.{2 + i // 3}") for i in range(6)]
    for sock in socks:
        assert read_line(sock).startswith(b"* OK "), "a trickler was refused"
    tricklers = Tricklers(socks)
    try:
        closed = tricklers.wait_closed(3)
        for i in closed:
            assert tricklers.said[i] == b"* BYE [UNAVAILABLE] Too many slow connections\r\n"
        rejects = re.findall(r'postkeep\.imap\[w[12]\]: reject ip=127\.0\.0\.[23] user=- '
                             r'reason="too many slow connections"', fresh.log())
        assert len(rejects) == 3
        with ctx().wrap_socket(connect(fresh.imaps_port, "127.0.0.4")) as sock:
            assert read_line(sock).startswith(b"* OK ")
            sock.sendall(f'a1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
            while not (line := read_line(sock)).startswith(b"a1 "):
                pass
            assert line.startswith(b"a1 OK "), line
        assert tricklers.closed() == closed  # the other three still hold their slots
    finally:
        tricklers.stop()
