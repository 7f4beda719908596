"""The `[smtp]` (MX) and `[submission]` sections."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import KiB, MiB, setting


@dataclass(frozen=True)
class SmtpConfig:
    """`[smtp]`: the inbound (MX) SMTP listener and its limits (RFC 5321 §4.5.3)."""

    listen: list[str] = setting(
        'Addresses to listen on, as "ip:port" or "[ipv6]:port".',
        default_factory=lambda: ["127.0.0.1:25"],
    )
    max_message_size: int = setting(
        "Largest message accepted, in bytes, advertised with SIZE (RFC 1870). Larger ones get "
        "552 5.3.4.",
        default=25 * MiB,
    )
    max_header_size: int = setting(
        "Largest header section accepted, in bytes; larger gets 552 5.3.4.", default=100 * KiB
    )
    spool_threshold: int = setting(
        "Bytes of a message's text a session holds in memory while it arrives (MX and "
        "submission); past them the text goes to an encrypted temporary file without a name "
        "(in the blob directory), from which the message's blob is written, so a session's "
        "memory does not grow with the size of its message. 0: every message goes to a file.",
        default=1 * MiB,
    )
    max_data_in_flight: int = setting(
        "Bytes of message text all SMTP sessions of one worker process may hold in memory at "
        "once (MX and submission together): a message that would take more is refused with "
        "451 4.3.1 (the client tries again later), and DATA is refused so while less than "
        "64 KiB is left. At least `spool_threshold`.",
        default=256 * MiB,
    )
    max_recipients: int = setting(
        "Recipients per message (RFC 5321 §4.5.3.1.8 requires at least 100); more get 452 4.5.3.",
        default=100,
    )
    max_received_headers: int = setting(
        "Received headers after which a message is taken to loop: 554 5.4.6 (RFC 5321 §6.3).",
        default=50,
    )
    max_command_line: int = setting(
        "Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4 gives 512 plus what "
        "extensions add); longer gets 500 5.5.2.",
        default=2048,
    )
    max_line_length: int = setting(
        "Longest line of message text in octets, CRLF included (RFC 5321 §4.5.3.1.6 gives 1000); "
        "a message with a longer line is rejected with 550 5.6.0.",
        default=2048,
    )
    command_timeout: float = setting(
        "Seconds a client has for each command, from when the server is ready for it until "
        "its whole line is in, reading the replies to the one before included (RFC 5321 "
        "§4.5.3.2.7 says to wait at least 300); octets that trickle in do not extend it. Past "
        "it: 421 4.4.2 and close.",
        default=300.0,
    )
    data_timeout: float = setting(
        "Seconds of message text (DATA, each BDAT chunk) a client has in hand: it starts with "
        "this many, each read adds its octets divided by `min_data_rate`, never to more than "
        "this many again. So the text may never stop for longer than this (RFC 5321 "
        "§4.5.3.2.5-6), and past this grace it must average `min_data_rate`. Past it: "
        "421 4.4.2 and close.",
        default=180.0,
    )
    min_data_rate: float = setting(
        "Octets per second message text must average once `data_timeout` is spent (as "
        "Postfix's smtpd_min_data_rate): 500 lets a 25 MiB message take 14 hours, and cuts a "
        "client that trickles an octet a second after about 3 minutes.",
        default=500.0,
    )
    max_connections: int = setting(
        "Concurrent SMTP connections in all; more get 421 4.7.0 and are closed.", default=1000
    )
    max_connections_per_ip: int = setting(
        "Concurrent connections from one IPv4 address or IPv6 /64; more get 421 4.7.0.",
        default=20,
    )
    slow_after: float = setting(
        "Seconds after which a connection counts as slow: once it has kept the server waiting "
        "this long for commands in all, since it connected or since its last accepted "
        "message, or once it is this far behind `min_data_rate` in message text.",
        default=10.0,
    )
    slow_share: float = setting(
        "Share of `max_connections` that slow connections may hold (above 0, at most 1). A "
        "connection that turns slow when that many are slow already gets 421 4.4.2 and is "
        "closed, so clients that trickle or idle, from however many addresses, leave the "
        "rest to clients that keep up.",
        default=0.5,
    )
    soft_error_limit: int = setting(
        "Errors in a session after which each error reply is delayed by `error_delay`.",
        default=10,
    )
    hard_error_limit: int = setting(
        "Errors in a session after which the server replies 421 4.7.0 and closes it.", default=20
    )
    error_delay: float = setting("Seconds to delay error replies past the soft limit.", default=1.0)


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

    listen: list[str] = setting(
        'STARTTLS submission addresses (port 587), as "ip:port" or "[ipv6]:port".',
        default_factory=list,
    )
    tls_listen: list[str] = setting(
        "Implicit-TLS submission addresses (port 465, RFC 8314 §3.3).", default_factory=list
    )
    sasl_mechanisms: list[str] = setting(
        "SASL mechanisms offered after TLS, in this order. Also known: DIGEST-MD5 (legacy, "
        "RFC 6331: off unless listed here), GSSAPI (Kerberos, RFC 4752: offered, first, "
        "only when listed here and `gssapi_keytab` is set) and SCRAM-SHA-256-PLUS / "
        "SCRAM-SHA-1-PLUS (off unless listed: they bind with tls-server-end-point, RFC 5929, "
        "offered over TLS 1.2 only; GNU SASL clients such as mutt pick them and then fail, "
        "wanting tls-exporter, which the server cannot give).",
        default_factory=lambda: list(DEFAULT_SASL),
    )
    gssapi_keytab: str = setting(
        "Kerberos keytab with the key of the service principal `smtp/HOST` (HOST: "
        "`server.hostname`), for "
        'SASL GSSAPI (RFC 4752; also list "GSSAPI" in `sasl_mechanisms`, and install the '
        "optional extra postkeep[gssapi]). Empty: GSSAPI off. The principal name@REALM logs in "
        "as the account name@realm (realm lower-cased; principals with an /instance are "
        "refused), which must exist and be enabled.",
        default="",
    )
    max_message_size: int = setting(
        "Largest submitted message in bytes (552 5.3.4).", default=25 * MiB
    )
    max_header_size: int = setting(
        "Largest header section of a submitted message (552 5.3.4).", default=100 * KiB
    )
    max_part_size: int = setting(
        "Largest single MIME part of a submitted message, encoded, in bytes (552 5.3.4).",
        default=20 * MiB,
    )
    max_recipients: int = setting("Recipients per submitted message (452 4.5.3).", default=100)
    auth_delay_after: int = setting(
        "Failed AUTH attempts in a session after which each failure reply is delayed.", default=2
    )
    auth_close_after: int = setting(
        "Failed AUTH attempts after which the session is closed with 421 4.7.0.", default=5
    )
    auth_failure_delay: float = setting("Seconds to delay failure replies past the first.",
                                     default=2.0)
