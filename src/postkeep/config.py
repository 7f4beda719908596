"""Typed configuration, loaded from TOML (the instance's `postkeep.toml`).

Every key is a dataclass field below with its default and a `doc`; `reference_markdown()` renders
them all into `docs/config.md`, so defaults live in one place. `load()` reports the first problem
as a `ConfigError` naming the dotted key path (e.g. `smtp.max_recipients: expected an integer`);
unknown keys are errors too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postkeep.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


def _doc(text: str, **kw: Any) -> Any:
    """A dataclass field carrying its documentation."""
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata={"doc": text})
    return field(default=kw["default"], metadata={"doc": text})


@dataclass(frozen=True)
class ServerConfig:
    """`[server]`: identity of this instance."""

    hostname: str = _doc(
        "Fully qualified host name: used in the SMTP greeting, EHLO reply and Received headers.",
        default="localhost",
    )
    data_dir: str = _doc(
        "Directory for the store, blobs, keys and certificates; relative paths are relative to "
        "the directory holding the config file.",
        default=".",
    )
    processes: int = _doc(
        "Worker processes that serve every listener (SMTP MX, submission, IMAP), each on all "
        "of them; the main process starts them (and restarts one that dies), keeps the "
        "connection limits and relays IDLE notifications for all of them, and serves no "
        "connection itself. 0: one per CPU core this process may run on (its affinity, at "
        "most 8).",
        default=0,
    )
    user: str = _doc(
        "Unprivileged user the server runs as. Started as root (to bind ports below 1024), "
        "`postkeep serve` binds every listener, then drops to this user for good (its groups, "
        "umask 0077) before it reads the TLS keys and the master key and opens the store; its "
        "worker processes run as it too, and so does the CLI run by root (`postkeep user "
        "add`, ...) before it opens the store. Empty: postkeep refuses to run as root; `root`: "
        "it runs as root, no drop, with a warning (a development instance: `make run` started "
        "by root sets it). Started as any other user, it must be empty or name that user. "
        "The data directory, the master key and the TLS keys must belong to it; started as "
        "root, `postkeep.toml` must be owned by root and writable by no one else (it names the "
        "user root drops to). `postkeep init` run as root creates the system user `postkeep` "
        "and sets it.",
        default="",
    )


@dataclass(frozen=True)
class LogConfig:
    """`[log]`: logging."""

    level: str = _doc("Minimum level: debug, info, warning or error.", default="info")


@dataclass(frozen=True)
class StoreConfig:
    """`[store]`: where metadata and messages live."""

    url: str = _doc(
        "SQLAlchemy URL of the metadata database. Empty means the embedded SQLite store "
        "`store.db` in the data directory. PostgreSQL: `postgresql+psycopg://user@host/db`.",
        default="",
    )
    master_key_file: str = _doc(
        "File holding the 32-byte master key that wraps every account's data key (mode 0600, "
        "owned by `server.user` when set; relative to the data directory). Losing it loses all "
        "stored mail.",
        default="master.key",
    )


@dataclass(frozen=True)
class TlsCertificate:
    """`[[tls.certificates]]`: a certificate for some virtual hosts, chosen by SNI (RFC 6066 §3)."""

    names: list[str] = _doc(
        "Host names served with this certificate: exact (`mail.example.org`) or a wildcard for "
        "one left-most label (`*.example.org`, RFC 6125 §6.4.3); A-labels for IDNs.",
        default_factory=list,
    )
    cert_file: str = _doc("PEM certificate chain (leaf first).", default="")
    key_file: str = _doc("PEM private key matching `cert_file` (mode 0600).", default="")


@dataclass(frozen=True)
class TlsConfig:
    """`[tls]`: certificates for every listener (policy: BCP 195 / RFC 9325, TLS 1.2 and 1.3).

    Startup refuses missing, unreadable, mismatched, encrypted, expired and not yet valid
    certificates and keys.
    """

    cert_file: str = _doc(
        "PEM certificate chain (leaf first), relative to the data directory; served when the "
        "client sends no SNI or a name no `certificates` entry lists.",
        default="tls/cert.pem",
    )
    key_file: str = _doc(
        "PEM private key matching `cert_file` (mode 0600, owned by `server.user` when set: it "
        "is read after the privilege drop), relative to the data directory.",
        default="tls/key.pem",
    )
    certificates: list[TlsCertificate] = _doc(
        "Per-host certificates chosen by the client's SNI (RFC 6066 §3), as an array of tables "
        "`[[tls.certificates]]` with keys `names` (exact host names or `*.example.org` "
        "wildcards; exact names win), `cert_file` and `key_file` (relative to the data "
        "directory). Each name may appear once.",
        default_factory=list,
    )
    handshake_timeout: float = _doc(
        "Seconds a client has to finish its TLS handshake, on implicit-TLS listeners (the "
        "connection holds its slot meanwhile) and after STARTTLS; past it the connection is "
        "closed and logged `tls handshake failed ip=... reason=timeout`.",
        default=10.0,
    )


@dataclass(frozen=True)
class SmtpConfig:
    """`[smtp]`: the inbound (MX) SMTP listener and its limits (RFC 5321 §4.5.3)."""

    listen: list[str] = _doc(
        'Addresses to listen on, as "ip:port" or "[ipv6]:port".',
        default_factory=lambda: ["127.0.0.1:25"],
    )
    max_message_size: int = _doc(
        "Largest message accepted, in bytes, advertised with SIZE (RFC 1870). Larger ones get "
        "552 5.3.4.",
        default=25 * MiB,
    )
    max_header_size: int = _doc(
        "Largest header section accepted, in bytes; larger gets 552 5.3.4.", default=100 * KiB
    )
    spool_threshold: int = _doc(
        "Bytes of a message's text a session holds in memory while it arrives (MX and "
        "submission); past them the text goes to an encrypted temporary file without a name "
        "(in the blob directory), from which the message's blob is written, so a session's "
        "memory does not grow with the size of its message. 0: every message goes to a file.",
        default=1 * MiB,
    )
    max_data_in_flight: int = _doc(
        "Bytes of message text all SMTP sessions of one worker process may hold in memory at "
        "once (MX and submission together): a message that would take more is refused with "
        "451 4.3.1 (the client tries again later), and DATA is refused so while less than "
        "64 KiB is left. At least `spool_threshold`.",
        default=256 * MiB,
    )
    max_recipients: int = _doc(
        "Recipients per message (RFC 5321 §4.5.3.1.8 requires at least 100); more get 452 4.5.3.",
        default=100,
    )
    max_received_headers: int = _doc(
        "Received headers after which a message is taken to loop: 554 5.4.6 (RFC 5321 §6.3).",
        default=50,
    )
    max_command_line: int = _doc(
        "Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4 gives 512 plus what "
        "extensions add); longer gets 500 5.5.2.",
        default=2048,
    )
    max_line_length: int = _doc(
        "Longest line of message text in octets, CRLF included (RFC 5321 §4.5.3.1.6 gives 1000); "
        "a message with a longer line is rejected with 550 5.6.0.",
        default=2048,
    )
    command_timeout: float = _doc(
        "Seconds a client has for each command, from when the server is ready for it until "
        "its whole line is in, reading the replies to the one before included (RFC 5321 "
        "§4.5.3.2.7 says to wait at least 300); octets that trickle in do not extend it. Past "
        "it: 421 4.4.2 and close.",
        default=300.0,
    )
    data_timeout: float = _doc(
        "Seconds of message text (DATA, each BDAT chunk) a client has in hand: it starts with "
        "this many, each read adds its octets divided by `min_data_rate`, never to more than "
        "this many again. So the text may never stop for longer than this (RFC 5321 "
        "§4.5.3.2.5-6), and past this grace it must average `min_data_rate`. Past it: "
        "421 4.4.2 and close.",
        default=180.0,
    )
    min_data_rate: float = _doc(
        "Octets per second message text must average once `data_timeout` is spent (as "
        "Postfix's smtpd_min_data_rate): 500 lets a 25 MiB message take 14 hours, and cuts a "
        "client that trickles an octet a second after about 3 minutes.",
        default=500.0,
    )
    max_connections: int = _doc(
        "Concurrent SMTP connections in all; more get 421 4.7.0 and are closed.", default=1000
    )
    max_connections_per_ip: int = _doc(
        "Concurrent connections from one IPv4 address or IPv6 /64; more get 421 4.7.0.",
        default=20,
    )
    slow_after: float = _doc(
        "Seconds after which a connection counts as slow: once it has kept the server waiting "
        "this long for commands in all, since it connected or since its last accepted "
        "message, or once it is this far behind `min_data_rate` in message text.",
        default=10.0,
    )
    slow_share: float = _doc(
        "Share of `max_connections` that slow connections may hold (above 0, at most 1). A "
        "connection that turns slow when that many are slow already gets 421 4.4.2 and is "
        "closed, so clients that trickle or idle, from however many addresses, leave the "
        "rest to clients that keep up.",
        default=0.5,
    )
    soft_error_limit: int = _doc(
        "Errors in a session after which each error reply is delayed by `error_delay`.",
        default=10,
    )
    hard_error_limit: int = _doc(
        "Errors in a session after which the server replies 421 4.7.0 and closes it.", default=20
    )
    error_delay: float = _doc("Seconds to delay error replies past the soft limit.", default=1.0)


# No -PLUS by default: the only channel binding Python's ssl lets us give is
# tls-server-end-point (RFC 5929 §4), and the clients that choose a -PLUS mechanism when offered
# (GNU SASL 2.x: mutt, neomutt, msmtp) bind with tls-exporter (RFC 9266) over TLS 1.2 and 1.3
# alike, then give up: offered -PLUS, mutt could not send at all.
DEFAULT_SASL = ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]


@dataclass(frozen=True)
class SubmissionConfig:
    """`[submission]`: mail submission for logged-in users (RFC 6409, RFC 8314).

    The protocol limits of `[smtp]` (line lengths, timeouts, connections, error budget) apply
    here too; the message limits below replace the MX ones for submitted mail.
    """

    listen: list[str] = _doc(
        'STARTTLS submission addresses (port 587), as "ip:port" or "[ipv6]:port".',
        default_factory=list,
    )
    tls_listen: list[str] = _doc(
        "Implicit-TLS submission addresses (port 465, RFC 8314 §3.3).", default_factory=list
    )
    sasl_mechanisms: list[str] = _doc(
        "SASL mechanisms offered after TLS, in this order. Also known: DIGEST-MD5 (legacy, "
        "RFC 6331: off unless listed here), GSSAPI (Kerberos, RFC 4752: offered, first, "
        "only when listed here and `gssapi_keytab` is set) and SCRAM-SHA-256-PLUS / "
        "SCRAM-SHA-1-PLUS (off unless listed: they bind with tls-server-end-point, RFC 5929, "
        "offered over TLS 1.2 only; GNU SASL clients such as mutt pick them and then fail, "
        "wanting tls-exporter, which the server cannot give).",
        default_factory=lambda: list(DEFAULT_SASL),
    )
    gssapi_keytab: str = _doc(
        "Kerberos keytab with the key of the service principal `smtp/HOST` (HOST: "
        "`server.hostname`), for "
        'SASL GSSAPI (RFC 4752; also list "GSSAPI" in `sasl_mechanisms`, and install the '
        "optional extra postkeep[gssapi]). Empty: GSSAPI off. The principal name@REALM logs in "
        "as the account name@realm (realm lower-cased; principals with an /instance are "
        "refused), which must exist and be enabled.",
        default="",
    )
    max_message_size: int = _doc(
        "Largest submitted message in bytes (552 5.3.4).", default=25 * MiB
    )
    max_header_size: int = _doc(
        "Largest header section of a submitted message (552 5.3.4).", default=100 * KiB
    )
    max_part_size: int = _doc(
        "Largest single MIME part of a submitted message, encoded, in bytes (552 5.3.4).",
        default=20 * MiB,
    )
    max_recipients: int = _doc("Recipients per submitted message (452 4.5.3).", default=100)
    auth_delay_after: int = _doc(
        "Failed AUTH attempts in a session after which each failure reply is delayed.", default=2
    )
    auth_close_after: int = _doc(
        "Failed AUTH attempts after which the session is closed with 421 4.7.0.", default=5
    )
    auth_failure_delay: float = _doc("Seconds to delay failure replies past the first.",
                                     default=2.0)


@dataclass(frozen=True)
class ImapConfig:
    """`[imap]`: mailbox access for logged-in users (IMAP4rev2, RFC 9051; IMAP4rev1, RFC 3501)."""

    listen: list[str] = _doc(
        'STARTTLS IMAP addresses (port 143; LOGINDISABLED until TLS), as "ip:port".',
        default_factory=list,
    )
    tls_listen: list[str] = _doc(
        "Implicit-TLS IMAP addresses (port 993, RFC 8314 §3.3).", default_factory=list
    )
    sasl_mechanisms: list[str] = _doc(
        "SASL mechanisms offered by AUTHENTICATE after TLS, in this order (as "
        "`submission.sasl_mechanisms`).",
        default_factory=lambda: list(DEFAULT_SASL),
    )
    gssapi_keytab: str = _doc(
        "Kerberos keytab with the key of `imap/HOST`, for SASL GSSAPI (see "
        "`submission.gssapi_keytab`). Empty: GSSAPI off.",
        default="",
    )
    max_append_size: int = _doc(
        "Largest message APPEND accepts, in bytes (advertised as APPENDLIMIT, RFC 7889).",
        default=50 * MiB,
    )
    max_append_in_flight: int = _doc(
        "Bytes of command literals (APPEND and MULTIAPPEND messages above all) all IMAP "
        "sessions of one worker process may hold in memory at once. A literal that would take "
        "more is refused with NO [LIMIT] (RFC 9051 §7.1; the client tries again later): "
        "before the client sends it when it waits for the server's \"+\", else its octets are "
        "read and dropped. At least `max_append_size`.",
        default=256 * MiB,
    )
    message_cache_size: int = _doc(
        "Bytes of memory each worker process may use to keep the decoded summaries and headers "
        "of the messages FETCH served (ENVELOPE, BODYSTRUCTURE, header items), least "
        "recently used out first. 0: no cache.",
        default=16 * MiB,
    )
    max_search_keys: int = _doc(
        "Search keys one SEARCH, SORT or THREAD may hold (NOT, OR and parentheses aside); "
        "past it the command is answered NO [LIMIT] (RFC 9051 §7.1).",
        default=1000,
    )
    max_search_work: int = _doc(
        "Search key evaluations one SEARCH, SORT or THREAD may cost: its keys times the "
        "messages of the mailbox; past it the command is answered NO [LIMIT] before it runs. "
        "However long a search runs, it lets the other sessions of its process have a turn "
        "every 10 ms.",
        default=10_000_000,
    )
    max_search_content: int = _doc(
        "Bytes of message content (headers, text) one SEARCH, SORT or THREAD may read; past "
        "it the command ends with NO [LIMIT].",
        default=1024 * MiB,
    )
    max_connections: int = _doc(
        "Simultaneous IMAP connections in all (each worker process needs this many open files "
        "plus 256: the server refuses to start when the hard RLIMIT_NOFILE is lower).",
        default=10000,
    )
    max_connections_per_ip: int = _doc(
        "Simultaneous connections from one IPv4 address or IPv6 /64.", default=100
    )
    max_connections_per_account: int = _doc(
        "Simultaneous logged-in connections of one account (NO [LIMIT] past it).", default=50
    )
    slow_after: float = _doc(
        "Seconds after which a connection counts as slow: before login, once it is this old; "
        "after login, once a command it began is this far behind its allowance of "
        "`min_data_rate` octets a second for literals (silence between commands is not slow).",
        default=10.0,
    )
    slow_share: float = _doc(
        "Share of `max_connections` that slow connections may hold (above 0, at most 1), "
        "counted over all worker processes; a connection that turns slow when that many are "
        "slow already gets BYE [UNAVAILABLE] (as `smtp.slow_share`).",
        default=0.5,
    )
    login_timeout: float = _doc(
        "Seconds from connecting to being logged in (commands and octets do not extend it); "
        "past it: BYE.",
        default=60.0,
    )
    idle_timeout: float = _doc(
        "Seconds of silence between commands (IDLE included) before an authenticated "
        "connection is logged out (RFC 9051 §5.4: at least 30 minutes).",
        default=1860.0,
    )
    command_timeout: float = _doc(
        "Seconds a logged-in client has to send a command in full from its first octet, plus "
        "a second for every `min_data_rate` octets of its literals; octets that trickle in do "
        "not extend it. Past it: BYE.",
        default=60.0,
    )
    min_data_rate: float = _doc(
        "Octets per second literals (APPEND) must average, beyond `command_timeout`.",
        default=500.0,
    )
    command_rate: float = _doc(
        "Commands per second a connection may send on average; past a burst of 10 times this, "
        "commands are slowed down to the rate (flow control, not an error).",
        default=200.0,
    )
    auth_delay_after: int = _doc(
        "Failed logins in a connection after which each failure reply is delayed.", default=2
    )
    auth_close_after: int = _doc(
        "Failed logins after which the connection is closed with BYE.", default=5
    )
    auth_failure_delay: float = _doc(
        "Seconds to delay failure replies past the first.", default=2.0
    )


@dataclass(frozen=True)
class DnsConfig:
    """DNS lookups (outbound MX, MTA-STS and DANE, inbound checks) by a stub resolver with a
    cache, as docs/architecture.md ("DNS") tells."""

    nameservers: list[str] = _doc(
        'Recursive resolvers to ask, in order: "ip" or "ip:port" ("[ipv6]:port" for a port '
        'on IPv6, e.g. "[::1]:5353"). Empty: the nameservers of /etc/resolv.conf, read at '
        "start.",
        default_factory=list,
    )
    timeout: float = _doc(
        "Seconds to wait for one reply from one nameserver before trying the next.",
        default=5.0,
    )
    attempts: int = _doc(
        "Rounds over the nameservers when they time out, before the lookup is a temporary "
        "failure (the message is deferred, never bounced). A SERVFAIL or REFUSED is not "
        "retried: the resolver said so.",
        default=2,
    )
    cache_size: int = _doc(
        "Lookup outcomes kept per process (least recently used evicted first): answers for "
        "their TTL, NXDOMAIN and NODATA for their negative TTL (RFC 2308 §5); temporary "
        "failures never. An outcome whose records exceed 4 KiB is not kept. 0: no cache.",
        default=4096,
    )
    max_ttl: int = _doc(
        "Longest time in seconds an outcome is kept, whatever its TTL (negative ones at most "
        "3 hours, RFC 2308 §5).",
        default=86400,
    )
    trust_ad: bool = _doc(
        "Trust the AD (authenticated data) bit of replies: DNSSEC-validated answers are then "
        "marked authenticated (DANE needs this). Only for a validating resolver on this host: "
        "every nameserver must be listed and on loopback (the path to it must be one no one "
        "can tamper with, RFC 4035 §4.9.3).",
        default=False,
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})
    source: Path | None = field(default=None, metadata={"internal": True})  # the file read

    def processes(self) -> int:
        """How many worker processes serve the listeners (`server.processes`, 0: one per
        core, at most 8)."""
        return self.server.processes or max(1, min(len(os.sched_getaffinity(0)), 8))

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.server.data_dir).resolve()

    def data_path(self, relative: str) -> Path:
        """A path from the config, resolved against the data directory."""
        return (self.data_dir / relative).resolve()

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.data_path('store.db')}"


# -- loading ------------------------------------------------------------------------------------

_LEVELS = ("debug", "info", "warning", "error")


def parse_listen(value: str) -> tuple[str, int]:
    """Split "ip:port" / "[ipv6]:port" into (host, port); raises ValueError with a reason."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f'"{value}" is not "[ipv6]:port"')
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f'"{value}" is not "ip:port"')
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f'"{host}" is not an IP address') from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{port}" is not a port number')
    return host, int(port)


def parse_nameserver(value: str) -> tuple[str, int]:
    """Split "ip", "ip:port", "ipv6" or "[ipv6]:port" into (host, port), port 53 by default;
    raises ValueError with a reason."""
    if not value.startswith("[") and value.count(":") != 1:
        value = f"[{value}]:53" if ":" in value else f"{value}:53"
    return parse_listen(value)


def _validate_dns(cfg: Config) -> None:
    dns = cfg.dns
    hosts = []
    for i, item in enumerate(dns.nameservers):
        try:
            hosts.append(parse_nameserver(item)[0])
        except ValueError as e:
            raise ConfigError(f"dns.nameservers[{i}]", str(e)) from None
    if not 0 < dns.timeout <= 60:
        raise ConfigError("dns.timeout", "must be greater than 0 and at most 60")
    if not 1 <= dns.attempts <= 10:
        raise ConfigError("dns.attempts", "must be 1 to 10")
    if not 0 <= dns.cache_size <= 1_000_000:
        raise ConfigError("dns.cache_size", "must be 0 (no cache) to 1000000")
    if not 0 <= dns.max_ttl <= 7 * 86400:
        raise ConfigError("dns.max_ttl", "must be 0 to 604800 (a week)")
    if dns.trust_ad and not hosts:
        raise ConfigError("dns.trust_ad", "needs dns.nameservers to list the validating "
                          "resolver on loopback (not /etc/resolv.conf's)")
    for i, host in enumerate(hosts if dns.trust_ad else []):
        if not ipaddress.ip_address(host).is_loopback:
            raise ConfigError("dns.trust_ad", f"refused: nameserver {dns.nameservers[i]} is "
                              "not on loopback, so its AD bit crosses a network anyone on the "
                              "path can rewrite")


def _convert(path: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, "expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, "expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, "expected a string")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(path, "expected a list")
        return [_convert(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(path, "expected a table")
        return _build(hint, value, path)
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug, not user input


# keys of earlier releases that live elsewhere now: their error names the new place
MOVED_KEYS = {"imap.processes": "server.processes"}


def _build(cls: Any, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in known:
            moved = MOVED_KEYS.get(path)
            raise ConfigError(path, f"moved to {moved}" if moved else "unknown key")
        kwargs[key] = _convert(path, value, hints[key])
    return cls(**kwargs)


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _sni_name_problem(name: str) -> str | None:
    """Why `name` cannot be matched against an SNI host name (RFC 6066 §3), or None."""
    labels = name.lower().split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return f"{name!r}: a wildcard needs at least two labels after '*.'"
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"{name!r}: SNI carries host names, not IP addresses"
    for label in labels:
        valid = 0 < len(label) < 64 and set(label) <= _HOST_CHARS
        if not valid or label.startswith("-") or label.endswith("-"):
            return (f"{name!r} is not a host name (letters, digits and '-' per label; "
                    "A-labels for IDNs; a wildcard only as the whole first label)")
    return None


def _validate_tls(cfg: Config) -> None:
    """`[tls]` checks that need no files; startup checks the files (postkeep.net.tls)."""
    for key in ("cert_file", "key_file"):
        if not getattr(cfg.tls, key):
            raise ConfigError(f"tls.{key}", "must name a PEM file")
    served_by: dict[str, str] = {}
    for i, item in enumerate(cfg.tls.certificates):
        prefix = f"tls.certificates[{i}]"
        if not item.names:
            raise ConfigError(f"{prefix}.names", "must list at least one host name")
        for j, name in enumerate(item.names):
            problem = _sni_name_problem(name)
            if problem:
                raise ConfigError(f"{prefix}.names[{j}]", problem)
            if name.lower() in served_by:
                raise ConfigError(f"{prefix}.names[{j}]",
                                  f"{name} is already served by {served_by[name.lower()]}")
            served_by[name.lower()] = prefix
        for key in ("cert_file", "key_file"):
            if not getattr(item, key):
                raise ConfigError(f"{prefix}.{key}", "must name a PEM file")
    if not 0 < cfg.tls.handshake_timeout <= 300:
        raise ConfigError("tls.handshake_timeout", "must be greater than 0 and at most 300")


def _validate(cfg: Config) -> None:
    if cfg.log.level not in _LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(_LEVELS)}")
    if not cfg.server.hostname or " " in cfg.server.hostname:
        raise ConfigError("server.hostname", "must be a host name")
    _validate_tls(cfg)
    _validate_dns(cfg)
    for i, item in enumerate(cfg.smtp.listen):
        try:
            parse_listen(item)
        except ValueError as e:
            raise ConfigError(f"smtp.listen[{i}]", str(e)) from None
    known = {*DEFAULT_SASL, "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "DIGEST-MD5", "GSSAPI"}
    for section, part in (("submission", cfg.submission), ("imap", cfg.imap)):
        for key in ("listen", "tls_listen"):
            for i, item in enumerate(getattr(part, key)):
                try:
                    parse_listen(item)
                except ValueError as e:
                    raise ConfigError(f"{section}.{key}[{i}]", str(e)) from None
        for i, mech in enumerate(part.sasl_mechanisms):
            if mech not in known:
                raise ConfigError(
                    f"{section}.sasl_mechanisms[{i}]",
                    f"unknown mechanism {mech!r} (known: {', '.join(sorted(known))})",
                )
        if part.gssapi_keytab:
            keytab = cfg.data_path(part.gssapi_keytab)
            try:
                found = keytab.is_file()
            except OSError as e:  # a directory on the way this user may not search
                raise ConfigError(f"{section}.gssapi_keytab",
                                  f"cannot reach {keytab}: {e.strerror}") from None
            if not found:
                raise ConfigError(f"{section}.gssapi_keytab", f"no such file: {keytab}")
    imap = cfg.imap
    for key in ("max_append_size", "max_connections", "max_connections_per_ip",
                "max_connections_per_account", "login_timeout", "command_timeout",
                "min_data_rate", "slow_after", "command_rate", "max_search_keys",
                "max_search_work", "max_search_content"):
        if getattr(imap, key) <= 0:
            raise ConfigError(f"imap.{key}", "must be greater than 0")
    for section, share in (("imap", imap.slow_share), ("smtp", cfg.smtp.slow_share)):
        if not 0 < share <= 1:
            raise ConfigError(f"{section}.slow_share", "must be greater than 0 and at most 1")
    if not 0 <= cfg.server.processes <= 64:
        raise ConfigError("server.processes", "must be 0 (one per CPU core) to 64")
    if imap.idle_timeout < 1800:
        raise ConfigError("imap.idle_timeout", "must be at least 1800 (RFC 9051 §5.4)")
    if not 0 <= imap.message_cache_size <= 1 << 34:
        raise ConfigError("imap.message_cache_size", "must be 0 (off) to 16 GiB")
    if imap.max_append_size > 1 << 30:
        raise ConfigError("imap.max_append_size", "must be at most 1 GiB")
    if imap.max_append_in_flight < imap.max_append_size:
        raise ConfigError("imap.max_append_in_flight", "must be at least max_append_size")
    sub = cfg.submission
    if sub.max_recipients < 1 or sub.max_message_size <= 0 or sub.max_header_size <= 0:
        raise ConfigError("submission", "message limits must be greater than 0")
    if sub.max_part_size <= 0:
        raise ConfigError("submission.max_part_size", "must be greater than 0")
    smtp = cfg.smtp
    positive = {
        "max_message_size": smtp.max_message_size,
        "max_header_size": smtp.max_header_size,
        "max_received_headers": smtp.max_received_headers,
        "max_connections": smtp.max_connections,
        "max_connections_per_ip": smtp.max_connections_per_ip,
        "hard_error_limit": smtp.hard_error_limit,
        "command_timeout": smtp.command_timeout,
        "data_timeout": smtp.data_timeout,
        "min_data_rate": smtp.min_data_rate,
        "slow_after": smtp.slow_after,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"smtp.{key}", "must be greater than 0")
    if smtp.max_recipients < 100:
        raise ConfigError("smtp.max_recipients", "must be at least 100 (RFC 5321 §4.5.3.1.8)")
    if smtp.max_command_line < 512:
        raise ConfigError("smtp.max_command_line", "must be at least 512 (RFC 5321 §4.5.3.1.4)")
    if smtp.max_line_length < 1000:
        raise ConfigError("smtp.max_line_length", "must be at least 1000 (RFC 5321 §4.5.3.1.6)")
    if smtp.error_delay < 0 or smtp.soft_error_limit < 0:
        raise ConfigError("smtp.error_delay", "must not be negative")
    if smtp.spool_threshold < 0:
        raise ConfigError("smtp.spool_threshold", "must not be negative")
    if smtp.max_data_in_flight < max(smtp.spool_threshold, 64 * KiB):
        raise ConfigError("smtp.max_data_in_flight", "must be at least spool_threshold and 64 KiB")


def load(path: Path) -> Config:
    """Read and validate a config file; raise ConfigError on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None
    cfg = _build(Config, table, "")
    base_dir = path.parent.resolve()
    cfg = dataclasses.replace(cfg, base_dir=base_dir, source=base_dir / path.name)
    _validate(cfg)
    return cfg


# -- reference documentation --------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _sentence(doc: str) -> str:
    text = " ".join(doc.split(":", 1)[-1].split())
    return text[:1].upper() + text[1:]


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the dataclasses above."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `postkeep config-reference` from `src/postkeep/config.py`; do not edit.",
        "The instance's config file is `postkeep.toml` in the instance directory (TOML).",
        "Unknown keys are errors. Relative paths are relative to `server.data_dir`.",
        "",
    ]
    root_hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if section.metadata.get("internal"):
            continue
        cls = root_hints[section.name]
        lines += [f"## `[{section.name}]`", "", _sentence(cls.__doc__ or ""), ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            factory = f.default_factory
            default = factory() if factory is not dataclasses.MISSING else f.default
            hint = hints[f.name]
            tname = hint.__name__ if isinstance(hint, type) and not isinstance(
                hint, types.GenericAlias
            ) else str(hint)
            lines.append(
                f"| `{f.name}` | {tname} | `{_toml_value(default)}` | {f.metadata['doc']} |"
            )
        lines.append("")
    return "\n".join(lines)
