"""The `[server]`, `[log]`, `[store]` and `[tls]` sections."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import setting


@dataclass(frozen=True)
class ServerConfig:
    """`[server]`: identity of this instance."""

    hostname: str = setting(
        "Fully qualified host name: used in the SMTP greeting, EHLO reply and Received headers.",
        default="localhost",
    )
    data_dir: str = setting(
        "Directory for the store, blobs, keys and certificates; relative paths are relative to "
        "the directory holding the config file.",
        default=".",
    )
    processes: int = setting(
        "Worker processes that serve every listener (SMTP MX, submission, IMAP), each on all "
        "of them; the main process starts them (and restarts one that dies), keeps the "
        "connection limits and relays IDLE notifications for all of them, and serves no "
        "connection itself. 0: one per CPU core this process may run on (its affinity, at "
        "most 8).",
        default=0,
    )
    user: str = setting(
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

    level: str = setting("Minimum level: debug, info, warning or error.", default="info")


@dataclass(frozen=True)
class StoreConfig:
    """`[store]`: where metadata and messages live."""

    url: str = setting(
        "SQLAlchemy URL of the metadata database. Empty means the embedded SQLite store "
        "`store.db` in the data directory. PostgreSQL: `postgresql+psycopg://user@host/db`.",
        default="",
    )
    master_key_file: str = setting(
        "File holding the 32-byte master key that wraps every account's data key (mode 0600, "
        "owned by `server.user` when set; relative to the data directory). Losing it loses all "
        "stored mail.",
        default="master.key",
    )


@dataclass(frozen=True)
class TlsCertificate:
    """`[[tls.certificates]]`: a certificate for some virtual hosts, chosen by SNI (RFC 6066 §3)."""

    names: list[str] = setting(
        "Host names served with this certificate: exact (`mail.example.org`) or a wildcard for "
        "one left-most label (`*.example.org`, RFC 6125 §6.4.3); A-labels for IDNs.",
        default_factory=list,
    )
    cert_file: str = setting("PEM certificate chain (leaf first).", default="")
    key_file: str = setting("PEM private key matching `cert_file` (mode 0600).", default="")


@dataclass(frozen=True)
class TlsConfig:
    """`[tls]`: certificates for every listener (policy: BCP 195 / RFC 9325, TLS 1.2 and 1.3).

    Startup refuses missing, unreadable, mismatched, encrypted, expired and not yet valid
    certificates and keys.
    """

    cert_file: str = setting(
        "PEM certificate chain (leaf first), relative to the data directory; served when the "
        "client sends no SNI or a name no `certificates` entry lists.",
        default="tls/cert.pem",
    )
    key_file: str = setting(
        "PEM private key matching `cert_file` (mode 0600, owned by `server.user` when set: it "
        "is read after the privilege drop), relative to the data directory.",
        default="tls/key.pem",
    )
    certificates: list[TlsCertificate] = setting(
        "Per-host certificates chosen by the client's SNI (RFC 6066 §3), as an array of tables "
        "`[[tls.certificates]]` with keys `names` (exact host names or `*.example.org` "
        "wildcards; exact names win), `cert_file` and `key_file` (relative to the data "
        "directory). Each name may appear once.",
        default_factory=list,
    )
    handshake_timeout: float = setting(
        "Seconds a client has to finish its TLS handshake, on implicit-TLS listeners (the "
        "connection holds its slot meanwhile) and after STARTTLS; past it the connection is "
        "closed and logged `tls handshake failed ip=... reason=timeout`.",
        default=10.0,
    )
