"""Real DNS servers for tests: NSD (authoritative) and Unbound (validating resolver) on loopback.

Both are Debian packages (`nsd`, `unbound`, `ldnsutils` for signing; scripts/test-deps.sh
installs them). Each runs in the foreground as a child of the test process, in a directory of
its own, bound to a loopback address only, and is stopped by its PID (SIGTERM, then SIGKILL);
`stop()` returns once the processes it forked are gone too (its ports are free).

Stable API (other test directories build on it; keep it compatible):

Authoritative server (NSD)
    `start_auth_server(directory, address="127.0.0.1", port=None) -> AuthServer`: starts NSD
    on `address` with a free port (UDP and TCP both free), or on `port` if given.
    `start_auth_server_port53(directory, address)`: the same on port 53 of a loopback address
    other than the system's (e.g. "127.0.0.53" is systemd's: use 127.0.0.x, x > 1); needs root.
    `AuthServer` attributes: `address`, `port`, `pid`, `directory`, `nameserver` (the
    "host:port" form of postkeep's `[dns] nameservers`, "[::1]:port" for IPv6).
    `server.add_zone(origin, records, *, ttl=300, negative_ttl=60) -> Path`: serves `origin`
    with an SOA (minimum = `negative_ttl`, itself the SOA record's TTL: RFC 2308 §5 takes the
    lesser), an NS, and `records`: zone-file lines relative to the origin, with `$ORIGIN` and
    `$TTL` (= `ttl`) set, e.g. `"@ MX 10 mx"`, `"mx A 192.0.2.1"`,
    `'sel._domainkey 60 TXT "v=DKIM1; k=ed25519; p=..."'`. Calling it again for the same
    origin replaces every record (the serial goes up). Returns the zone file's path. It returns
    once NSD serves the new serial (over UDP and TCP). Origin "." is the root zone: owner names
    absolute, and every name it does not hold is NXDOMAIN (as from a recursive resolver).
    `server.add_zone_text(origin, text) -> Path`: a complete zone file (e.g. a signed zone);
    waits for its SOA serial, which must be above the one served (ValueError otherwise).
    `server.add_broken_zone(origin)`: a zone NSD is configured for but cannot load, so it
    answers SERVFAIL for every name in it (a real SERVFAIL from a real server).
    `server.remove_zone(origin)`: NSD stops serving it (REFUSED).
    `server.query_count(rdtype=None) -> int`: queries NSD received so far (of one type, e.g.
    "TXT", or all), from `nsd-control stats_noreset`; the loads' own SOA checks count too.
    `server.stats() -> dict[str, float]`: all of NSD's counters ("num.tcp", "num.truncated").
    `server.stop()`: also done by the context manager / fixture.

Validating resolver (Unbound)
    `start_validating_resolver(directory, upstream, address="127.0.0.1", port=None)
    -> Resolver`: Unbound forwarding every name to `upstream` (an AuthServer), validating
    DNSSEC (RFC 4035) against the trust anchors it is given, none at first (so every answer is
    insecure: AD clear). `resolver.trust(anchor)` adds a trust anchor (a DNSKEY or DS line)
    and reloads; `resolver.flush()` empties its cache (reload); `resolver.nameserver`.
    `sign_zone(directory, origin, text) -> SignedZone`: signs a complete zone file with a
    fresh ECDSA P-256 key (ldns-keygen, ldns-signzone; NSEC); `SignedZone.text` is the signed
    zone, `.trust_anchor` its DNSKEY line, `.ds` its DS line.
    `zone_text(origin, records, *, ttl=300, negative_ttl=60, serial=1) -> str`: the text
    `add_zone` serves (to sign it first).
    `corrupt_rrsig(text, owner, covered) -> str`: flips a bit in the signature of the RRSIG
    over (`owner`, `covered`) in a signed zone's text: validation of that RRset fails (bogus),
    which Unbound answers with SERVFAIL.

A nameserver that never answers some names
    `start_dropping_relay(upstream, address="127.0.0.1") -> DroppingRelay`: a relay (a thread
    of the test process; UDP and TCP on one free port) in front of `upstream` (an AuthServer)
    that passes every query on and its reply back, except the queries of the names it is told
    to drop: those get no reply at all, as from a nameserver that times out (the OpenSPF
    suite's TIMEOUT entries). `relay.drop(name, answered=())`: queries for `name` go
    unanswered unless their type is in `answered`; `relay.clear()`; `relay.nameserver`;
    `relay.stop()`.

Pytest fixtures (imported by tests/conftest.py, so every test directory has them)
    `dns_server`: an AuthServer on 127.0.0.1, fresh for each test.
    `validating_resolver`: a Resolver on 127.0.0.1 in front of that test's `dns_server`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

#: How long a start or a zone load may take before the fixture gives up (a liveness bound for
#: a stuck server, not a measurement: normal loads take milliseconds).
READY_WITHIN = 20.0


def free_port(address: str = "127.0.0.1") -> int:
    """A port free on `address` for both UDP and TCP (the kernel's pick for UDP, checked on
    TCP). Another process may take it before the server binds: starts retry on failure."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")


def _check_loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"test DNS servers bind only to loopback, not {address}")


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _query(address: str, port: int, name: str, rdtype: str, *, tcp: bool = False
           ) -> dns.message.Message | None:
    """One probe of a server being started or loading (None: no answer yet). A short timeout:
    a UDP query sent before the server has bound its port gets no answer and no error."""
    query = dns.message.make_query(name, rdtype)
    try:
        if tcp:
            return dns.query.tcp(query, address, port=port, timeout=0.2)
        return dns.query.udp(query, address, port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return None


def _wait(condition: Callable[[], bool], process: subprocess.Popen[bytes], log: Path,
          what: str) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: exited with {process.returncode}\n{_tail(log)}")
        if condition():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what}: not ready within {READY_WITHIN} s\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    """The server in a process group of its own (its PID is the group's ID): NSD forks its
    serving processes, which outlive the main one for a moment after SIGTERM."""
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _group_size(pgid: int) -> int:
    """How many processes of group `pgid` run (zombies, left for init to reap, do not count:
    they hold no port)."""
    size = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            size += 1
    return size


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs."""
    return _group_size(pgid) > 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's PID; returns once it and the processes it forked (its process
    group) are gone, SIGKILLed if they are still there after 10 s. So its ports are free."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 10
    while _group_alive(process.pid):
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.01)


def _origin(origin: str) -> str:
    return dns.name.from_text(origin).to_text(omit_final_dot=True).lower()


def zone_text(origin: str, records: Iterable[str], *, ttl: int = 300, negative_ttl: int = 60,
              serial: int = 1) -> str:
    """A complete zone file: SOA (its TTL and minimum both `negative_ttl`), NS, `records`."""
    name = _origin(origin)
    absolute = "." if name == "." else f"{name}."
    lines = [
        f"$ORIGIN {absolute}",
        f"$TTL {ttl}",
        f"@ {negative_ttl} IN SOA ns.{absolute.lstrip('.')} hostmaster.{absolute.lstrip('.')} "
        f"{serial} 3600 600 86400 {negative_ttl}",
        "@ IN NS ns",
        "ns IN A 127.0.0.1",
        *records,
    ]
    return "\n".join(lines) + "\n"


def _soa_serial(origin: str, text: str) -> int:
    absolute = "." if origin == "." else origin + "."
    zone = dns.zone.from_text(text, origin=absolute, relativize=False, check_origin=True)
    soa = zone.get_rdataset(absolute, "SOA")
    assert soa is not None
    return int(soa[0].serial)  # type: ignore[attr-defined]


@dataclass
class _Daemon:
    """A DNS server the tests started: where it runs, and its process."""

    directory: Path
    address: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def nameserver(self) -> str:
        return _hostport(self.address, self.port)

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class AuthServer(_Daemon):
    """A running NSD (see the module docstring for the API)."""

    _zones: dict[str, str] = field(default_factory=dict)  # origin -> "ok" | "broken"
    _serials: dict[str, int] = field(default_factory=dict)

    @property
    def _conf(self) -> Path:
        return self.directory / "nsd.conf"

    @property
    def _log(self) -> Path:
        return self.directory / "nsd.log"

    def _control(self, *args: str) -> str:
        done = subprocess.run(["nsd-control", "-c", str(self._conf), *args],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0 or done.stdout.startswith("error"):
            raise RuntimeError(f"nsd-control {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def _settled(self) -> bool:
        """Whether NSD runs only its processes of a quiet time (NSD_PROCESSES). A zone change
        reloads: a new serving process starts, and the one of before answers beside it for a
        moment, with the zones of before, so one answer from the new one proves nothing yet."""
        return _group_size(self.pid) == NSD_PROCESSES

    def _zonefile(self, origin: str) -> Path:
        return self.directory / "zones" / f"{origin}.zone"  # the root's: "..zone"

    def _install(self, origin: str, text: str) -> Path:
        path = self._zonefile(origin)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        if origin in self._zones:
            self._control("reload", origin)
        else:
            self._control("addzone", origin, "tests")
        return path

    def add_zone(self, origin: str, records: Iterable[str], *, ttl: int = 300,
                 negative_ttl: int = 60) -> Path:
        name = _origin(origin)
        serial = self._serials.get(name, 0) + 1
        return self.add_zone_text(
            name, zone_text(name, records, ttl=ttl, negative_ttl=negative_ttl, serial=serial))

    def add_zone_text(self, origin: str, text: str) -> Path:
        name = _origin(origin)
        serial = _soa_serial(name, text)
        if self._zones.get(name) == "ok" and serial <= self._serials[name]:
            # NSD's answers could not tell the new text from the old one being served.
            raise ValueError(f"{name}: serial {serial} must be above the served "
                             f"{self._serials[name]}")
        if self._zones.get(name) == "broken":
            self.remove_zone(name)
        path = self._install(name, text)
        self._zones[name] = "ok"
        self._serials[name] = serial

        def serving() -> bool:
            if not self._settled():
                return False
            for tcp in (False, True):
                answer = _query(self.address, self.port, name, "SOA", tcp=tcp)
                if answer is None or not answer.answer:
                    return False
                if int(answer.answer[0][0].serial) != serial:  # type: ignore[attr-defined]
                    return False
            return True

        _wait(serving, self.process, self._log, f"NSD loading {name} serial {serial}")
        return path

    def add_broken_zone(self, origin: str) -> None:
        name = _origin(origin)
        if name in self._zones:
            self.remove_zone(name)
        self._install(name, "this is not a zone file\n")
        self._zones[name] = "broken"

        def failing() -> bool:
            if not self._settled():
                return False
            answer = _query(self.address, self.port, name, "SOA")
            return answer is not None and answer.rcode() == dns.rcode.SERVFAIL

        _wait(failing, self.process, self._log, f"NSD configured for broken zone {name}")

    def remove_zone(self, origin: str) -> None:
        name = _origin(origin)
        self._control("delzone", name)
        del self._zones[name]

        def gone() -> bool:
            if not self._settled():
                return False
            answer = _query(self.address, self.port, name, "SOA")
            return answer is not None and answer.rcode() == dns.rcode.REFUSED

        _wait(gone, self.process, self._log, f"NSD removing {name}")

    def stats(self) -> dict[str, float]:
        """NSD's counters (`nsd-control stats_noreset`): "num.queries", "num.udp", "num.tcp",
        "num.truncated", "num.type.TXT", "num.rcode.SERVFAIL", ..."""
        stats = {}
        for line in self._control("stats_noreset").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                stats[key] = float(value)
        return stats

    def query_count(self, rdtype: str | None = None) -> int:
        key = "num.queries" if rdtype is None else f"num.type.{rdtype.upper()}"
        return int(self.stats()[key])


#: How many processes NSD runs once it serves, with `server-count: 1` (_NSD_CONF); a reload
#: adds some for a moment.
NSD_PROCESSES = 3

_NSD_CONF = """\
server:
    ip-address: {address}@{port}
    port: {port}
    username: ""
    chroot: ""
    zonesdir: "{dir}/zones"
    zonelistfile: "{dir}/zone.list"
    pidfile: "{dir}/nsd.pid"
    xfrdfile: "{dir}/xfrd.state"
    xfrdir: "{dir}"
    database: ""
    logfile: "{dir}/nsd.log"
    server-count: 1
    ipv4-edns-size: 1232
    ipv6-edns-size: 1232
    verbosity: 1
    # no response rate limiting: a benchmark's resolver (rspamd's, which caches nothing)
    # asks far more than NSD's default 200 a second, and its dropped answers were timeouts
    rrl-ratelimit: 0
remote-control:
    control-enable: yes
    control-interface: {dir}/nsd.ctl
pattern:
    name: tests
    zonefile: "%s.zone"
"""


def start_auth_server(directory: Path, address: str = "127.0.0.1",
                      port: int | None = None) -> AuthServer:
    """Starts NSD on loopback `address` (a free port unless `port`); see the module docstring."""
    _check_loopback(address)
    if shutil.which("nsd") is None:
        raise RuntimeError("nsd is not installed (scripts/test-deps.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "zones").mkdir(exist_ok=True)
    for attempt in range(5):
        chosen = port if port is not None else free_port(address)
        (directory / "nsd.conf").write_text(
            _NSD_CONF.format(address=address, port=chosen, dir=directory))
        (directory / "zone.list").unlink(missing_ok=True)
        log = directory / "nsd.log"
        process = _spawn(["nsd", "-d", "-c", str(directory / "nsd.conf")])
        server = AuthServer(directory, address, chosen, process)
        try:
            # NSD answers REFUSED for a zone it does not serve, once it is up (UDP and TCP).
            _wait(lambda p=chosen: all(_query(address, p, "ready.invalid", "SOA", tcp=tcp)  # type: ignore[misc]
                                       for tcp in (False, True)),
                  process, log, f"NSD on {_hostport(address, chosen)}")
        except RuntimeError:
            _stop(process)
            if port is not None or attempt == 4:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def start_auth_server_port53(directory: Path, address: str) -> AuthServer:
    """NSD on port 53 of a loopback `address` (for a peer that cannot be told another port,
    e.g. a referral's glue address). Needs root; use an address nothing else listens on."""
    if os.geteuid() != 0:
        raise PermissionError("binding port 53 needs root")
    return start_auth_server(directory, address, 53)


@contextlib.contextmanager
def auth_server(directory: Path, address: str = "127.0.0.1",
                port: int | None = None) -> Iterator[AuthServer]:
    server = start_auth_server(directory, address, port)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SignedZone:
    text: str
    trust_anchor: str
    ds: str


def sign_zone(directory: Path, origin: str, text: str) -> SignedZone:
    """Signs `text` (a complete zone) with a new ECDSA P-256 key (ldns-keygen, ldns-signzone)."""
    name = _origin(origin)
    directory.mkdir(parents=True, exist_ok=True)
    keygen = subprocess.run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", name],
                            cwd=directory, capture_output=True, text=True, check=True)
    base = keygen.stdout.strip()
    unsigned = directory / f"{name}.zone"
    unsigned.write_text(text)
    signed = directory / f"{name}.zone.signed"
    subprocess.run(["ldns-signzone", "-o", name, "-f", str(signed), str(unsigned), base],
                   cwd=directory, capture_output=True, text=True, check=True)
    key = (directory / f"{base}.key").read_text().strip()
    ds = (directory / f"{base}.ds").read_text().strip()
    return SignedZone(signed.read_text(), key, ds)


def corrupt_rrsig(text: str, owner: str, covered: str) -> str:
    """The signed zone `text` with one bit of the RRSIG over (`owner`, `covered`) flipped.
    The text is ldns-signzone's: one absolute-named record a line."""
    target = dns.name.from_text(owner)
    covered_type = dns.rdatatype.from_text(covered)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        fields = line.split(None, 4)
        if (len(fields) < 5 or fields[3] != "RRSIG"
                or dns.name.from_text(fields[0]) != target):
            continue
        sig = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RRSIG, fields[4])
        if sig.type_covered != covered_type:  # type: ignore[attr-defined]
            continue
        flipped = bytearray(sig.signature)  # type: ignore[attr-defined]
        flipped[len(flipped) // 2] ^= 0x01
        bad = sig.replace(signature=bytes(flipped))
        lines[index] = "\t".join([*fields[:4], bad.to_text()])
        return "\n".join(lines) + "\n"
    raise KeyError(f"no RRSIG over {owner} {covered}")


_UNBOUND_CONF = """\
server:
    interface: {address}@{port}
    port: {port}
    do-ip6: {ip6}
    do-ip4: {ip4}
    access-control: 127.0.0.0/8 allow
    access-control: ::1/128 allow
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    logfile: "{dir}/unbound.log"
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    do-not-query-localhost: no
    module-config: "validator iterator"
    val-permissive-mode: no
    harden-dnssec-stripped: yes
    edns-buffer-size: 1232
    qname-minimisation: no
    aggressive-nsec: no
    # Unbound answers the RFC 6761 names (test., invalid., ...) itself: not "test." here.
    local-zone: "test." nodefault
{anchors}
remote-control:
    control-enable: yes
    control-interface: {dir}/unbound.ctl
    control-use-cert: no
forward-zone:
    name: "."
    forward-addr: {upstream_address}@{upstream_port}
"""


@dataclass
class Resolver(_Daemon):
    """A running Unbound (see the module docstring for the API)."""

    upstream: AuthServer
    anchors: list[str] = field(default_factory=list)

    def _control(self, *args: str) -> None:
        done = subprocess.run(
            ["unbound-control", "-c", str(self.directory / "unbound.conf"), *args],
            capture_output=True, text=True, timeout=30)
        if done.returncode != 0 or not done.stdout.startswith("ok"):
            raise RuntimeError(f"unbound-control {' '.join(args)}: {done.stdout}{done.stderr}")

    def trust(self, anchor: str) -> None:
        """Adds a trust anchor (a DNSKEY or DS line) and reloads (which also flushes)."""
        self.anchors.append(" ".join(anchor.split()))
        _write_unbound_conf(self.directory, self.address, self.port, self.upstream, self.anchors)
        self.flush()

    def flush(self) -> None:
        self._control("reload")
        _wait(lambda: _query(self.address, self.port, "ready.invalid", "A") is not None,
              self.process, self.directory / "unbound.log", "Unbound reloading")


def _write_unbound_conf(directory: Path, address: str, port: int, upstream: AuthServer,
                        anchors: list[str]) -> Path:
    ip6 = ":" in address
    path = directory / "unbound.conf"
    path.write_text(_UNBOUND_CONF.format(
        address=address, port=port, dir=directory, ip6="yes" if ip6 else "no",
        ip4="no" if ip6 else "yes",
        anchors="\n".join(f'    trust-anchor: "{a}"' for a in anchors),
        upstream_address=upstream.address, upstream_port=upstream.port))
    return path


def start_validating_resolver(directory: Path, upstream: AuthServer, address: str = "127.0.0.1",
                              port: int | None = None) -> Resolver:
    """Starts Unbound on loopback `address`, forwarding to `upstream`, validating DNSSEC."""
    _check_loopback(address)
    if shutil.which("unbound") is None:
        raise RuntimeError("unbound is not installed (scripts/test-deps.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        chosen = port if port is not None else free_port(address)
        conf = str(_write_unbound_conf(directory, address, chosen, upstream, []))
        check = subprocess.run(["unbound-checkconf", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")
        process = _spawn(["unbound", "-d", "-c", conf])
        resolver = Resolver(directory, address, chosen, process, upstream)
        try:
            _wait(lambda p=chosen: _query(address, p, "ready.invalid", "A") is not None,  # type: ignore[misc]
                  process, directory / "unbound.log", f"Unbound on {_hostport(address, chosen)}")
        except RuntimeError:
            _stop(process)
            if port is not None or attempt == 4:
                raise
            continue
        return resolver
    raise AssertionError("unreachable")


class DroppingRelay:
    """The relay of `start_dropping_relay` (see the module docstring)."""

    def __init__(self, upstream: AuthServer, address: str) -> None:
        _check_loopback(address)
        self.upstream = upstream
        self.address = address
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for _ in range(20):
            self.port = free_port(address)
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((address, self.port))
                tcp.bind((address, self.port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError(f"no port for the relay on {address}")
        tcp.listen(16)
        udp.settimeout(0.1)
        tcp.settimeout(0.1)
        self._udp, self._tcp = udp, tcp
        self._family = family
        self._dropped: dict[str, frozenset[str]] = {}
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    @property
    def nameserver(self) -> str:
        return _hostport(self.address, self.port)

    def drop(self, name: str, answered: Iterable[str] = ()) -> None:
        self._dropped[name.rstrip(".").lower()] = frozenset(t.upper() for t in answered)

    def clear(self) -> None:
        self._dropped.clear()

    def _dropping(self, wire: bytes) -> bool:
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError):
            return True
        name = question.name.to_text(omit_final_dot=True).lower()
        answered = self._dropped.get(name)
        return answered is not None and dns.rdatatype.to_text(question.rdtype) not in answered

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self._dropping(wire):
                continue
            with socket.socket(self._family, socket.SOCK_DGRAM) as up:
                up.settimeout(2)
                up.sendto(wire, (self.upstream.address, self.upstream.port))
                try:
                    reply = up.recv(65535)
                except TimeoutError:
                    continue
            self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_client, args=(conn,), daemon=True).start()

    def _tcp_client(self, conn: socket.socket) -> None:
        def read(n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data

        with conn:
            conn.settimeout(10)
            try:
                while True:
                    wire = read(struct.unpack("!H", read(2))[0])
                    if self._dropping(wire):
                        continue
                    with socket.create_connection(
                            (self.upstream.address, self.upstream.port), timeout=5) as up:
                        up.sendall(struct.pack("!H", len(wire)) + wire)
                        head = b""
                        while len(head) < 2:
                            head += up.recv(2 - len(head))
                        size = struct.unpack("!H", head)[0]
                        body = b""
                        while len(body) < size:
                            chunk = up.recv(size - len(body))
                            if not chunk:
                                break
                            body += chunk
                    conn.sendall(head + body)
            except (EOFError, OSError):
                return

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._udp.close()
        self._tcp.close()


def start_dropping_relay(upstream: AuthServer, address: str = "127.0.0.1") -> DroppingRelay:
    """A relay in front of `upstream` that drops the queries of chosen names (module
    docstring)."""
    return DroppingRelay(upstream, address)


@pytest.fixture
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A fresh NSD on 127.0.0.1 (free port) for one test."""
    with auth_server(tmp_path_factory.mktemp("nsd")) as server:
        yield server


@pytest.fixture
def validating_resolver(dns_server: AuthServer, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[Resolver]:
    """A validating Unbound on 127.0.0.1 forwarding to this test's `dns_server`."""
    resolver = start_validating_resolver(tmp_path_factory.mktemp("unbound"), dns_server)
    try:
        yield resolver
    finally:
        resolver.stop()


__all__ = [
    "AuthServer",
    "DroppingRelay",
    "Resolver",
    "SignedZone",
    "auth_server",
    "corrupt_rrsig",
    "dns_server",
    "free_port",
    "sign_zone",
    "start_auth_server",
    "start_auth_server_port53",
    "start_dropping_relay",
    "start_validating_resolver",
    "validating_resolver",
    "zone_text",
]
