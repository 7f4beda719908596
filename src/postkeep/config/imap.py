"""The `[imap]` section."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import MiB, setting
from postkeep.config.smtp import DEFAULT_SASL


@dataclass(frozen=True)
class ImapConfig:
    """`[imap]`: mailbox access for logged-in users (IMAP4rev2, RFC 9051; IMAP4rev1, RFC 3501)."""

    listen: list[str] = setting(
        'STARTTLS IMAP addresses (port 143; LOGINDISABLED until TLS), as "ip:port".',
        default_factory=list,
    )
    tls_listen: list[str] = setting(
        "Implicit-TLS IMAP addresses (port 993, RFC 8314 §3.3).", default_factory=list
    )
    sasl_mechanisms: list[str] = setting(
        "SASL mechanisms offered by AUTHENTICATE after TLS, in this order (as "
        "`submission.sasl_mechanisms`).",
        default_factory=lambda: list(DEFAULT_SASL),
    )
    gssapi_keytab: str = setting(
        "Kerberos keytab with the key of `imap/HOST`, for SASL GSSAPI (see "
        "`submission.gssapi_keytab`). Empty: GSSAPI off.",
        default="",
    )
    max_append_size: int = setting(
        "Largest message APPEND accepts, in bytes (advertised as APPENDLIMIT, RFC 7889).",
        default=50 * MiB,
    )
    max_append_in_flight: int = setting(
        "Bytes of command literals (APPEND and MULTIAPPEND messages above all) all IMAP "
        "sessions of one worker process may hold in memory at once. A literal that would take "
        "more is refused with NO [LIMIT] (RFC 9051 §7.1; the client tries again later): "
        "before the client sends it when it waits for the server's \"+\", else its octets are "
        "read and dropped. At least `max_append_size`.",
        default=256 * MiB,
    )
    message_cache_size: int = setting(
        "Bytes of memory each worker process may use to keep the decoded summaries and headers "
        "of the messages FETCH served (ENVELOPE, BODYSTRUCTURE, header items), least "
        "recently used out first. 0: no cache.",
        default=16 * MiB,
    )
    max_search_keys: int = setting(
        "Search keys one SEARCH, SORT or THREAD may hold (NOT, OR and parentheses aside); "
        "past it the command is answered NO [LIMIT] (RFC 9051 §7.1).",
        default=1000,
    )
    max_search_work: int = setting(
        "Search key evaluations one SEARCH, SORT or THREAD may cost: its keys times the "
        "messages of the mailbox; past it the command is answered NO [LIMIT] before it runs. "
        "However long a search runs, it lets the other sessions of its process have a turn "
        "every 10 ms.",
        default=10_000_000,
    )
    max_search_content: int = setting(
        "Bytes of message content (headers, text) one SEARCH, SORT or THREAD may read; past "
        "it the command ends with NO [LIMIT].",
        default=1024 * MiB,
    )
    max_connections: int = setting(
        "Simultaneous IMAP connections in all (each worker process needs this many open files "
        "plus 256: the server refuses to start when the hard RLIMIT_NOFILE is lower).",
        default=10000,
    )
    max_connections_per_ip: int = setting(
        "Simultaneous connections from one IPv4 address or IPv6 /64.", default=100
    )
    max_connections_per_account: int = setting(
        "Simultaneous logged-in connections of one account (NO [LIMIT] past it).", default=50
    )
    slow_after: float = setting(
        "Seconds after which a connection counts as slow: before login, once it is this old; "
        "after login, once a command it began is this far behind its allowance of "
        "`min_data_rate` octets a second for literals (silence between commands is not slow).",
        default=10.0,
    )
    slow_share: float = setting(
        "Share of `max_connections` that slow connections may hold (above 0, at most 1), "
        "counted over all worker processes; a connection that turns slow when that many are "
        "slow already gets BYE [UNAVAILABLE] (as `smtp.slow_share`).",
        default=0.5,
    )
    login_timeout: float = setting(
        "Seconds from connecting to being logged in (commands and octets do not extend it); "
        "past it: BYE.",
        default=60.0,
    )
    idle_timeout: float = setting(
        "Seconds of silence between commands (IDLE included) before an authenticated "
        "connection is logged out (RFC 9051 §5.4: at least 30 minutes).",
        default=1860.0,
    )
    command_timeout: float = setting(
        "Seconds a logged-in client has to send a command in full from its first octet, plus "
        "a second for every `min_data_rate` octets of its literals; octets that trickle in do "
        "not extend it. Past it: BYE.",
        default=60.0,
    )
    min_data_rate: float = setting(
        "Octets per second literals (APPEND) must average, beyond `command_timeout`.",
        default=500.0,
    )
    command_rate: float = setting(
        "Commands per second a connection may send on average; past a burst of 10 times this, "
        "commands are slowed down to the rate (flow control, not an error).",
        default=200.0,
    )
    auth_delay_after: int = setting(
        "Failed logins in a connection after which each failure reply is delayed.", default=2
    )
    auth_close_after: int = setting(
        "Failed logins after which the connection is closed with BYE.", default=5
    )
    auth_failure_delay: float = setting(
        "Seconds to delay failure replies past the first.", default=2.0
    )
