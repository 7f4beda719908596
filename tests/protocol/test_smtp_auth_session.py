"""AUTH sequencing in the sans-IO session (RFC 4954, RFC 6409 §4.3, RFC 3207)."""

from __future__ import annotations

from postkeep.smtp.wire.session import (
    AuthRequested,
    AuthResponse,
    Capabilities,
    Mode,
    Say,
    SessionLimits,
    SmtpSession,
)

CAPS = Capabilities(
    starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=True, auth_required=True
)


def session(tls: bool) -> SmtpSession:
    s = SmtpSession("msa.example.test", SessionLimits(), CAPS, tls_active=tls)
    s.feed(b"EHLO c\r\n")
    hello = s.next_event()
    s.accept_hello(hello.hello)  # type: ignore[union-attr]
    return s


def reply_of(s: SmtpSession, line: bytes) -> bytes:
    s.feed(line)
    event = s.next_event()
    assert isinstance(event, Say), event
    return s.render(event.reply)


def test_before_tls_no_auth_and_mail_needs_starttls() -> None:
    s = session(tls=False)
    assert not any(e.startswith("AUTH") for e in s.extensions())
    assert reply_of(s, b"AUTH PLAIN\r\n").startswith(b"538 5.7.11")
    assert reply_of(s, b"MAIL FROM:<a@b.test>\r\n").startswith(b"530 5.7.0 Must issue a STARTTLS")


def test_after_tls_auth_offered_and_required() -> None:
    s = session(tls=True)
    assert "AUTH PLAIN LOGIN" in s.extensions()
    assert reply_of(s, b"MAIL FROM:<a@b.test>\r\n").startswith(b"530 5.7.0 Authentication")
    assert reply_of(s, b"AUTH CRAM-MD5\r\n").startswith(b"504 5.5.4")


def test_exchange_lines_are_responses_not_commands() -> None:
    s = session(tls=True)
    s.feed(b"AUTH LOGIN\r\n")
    assert isinstance(s.next_event(), AuthRequested)
    assert s.auth_challenge(b"VXNlcm5hbWU6") == b"334 VXNlcm5hbWU6\r\n"
    s.feed(b"QUIT\r\n")  # during the exchange this is a (malformed) response, not QUIT
    event = s.next_event()
    assert event == AuthResponse(b"QUIT")
    s.auth_finished("alice@example.test")
    assert s.mode is Mode.COMMAND and s.authenticated == "alice@example.test"
    assert reply_of(s, b"AUTH PLAIN\r\n").startswith(b"503 5.5.1 Already")


def test_over_long_response_refused() -> None:
    s = session(tls=True)
    s.feed(b"AUTH PLAIN\r\n")
    s.next_event()
    s.auth_challenge(b"")
    s.feed(b"A" * 13000)
    event = s.next_event()
    assert isinstance(event, Say) and event.reply.code == 500
    s.feed(b"AAAA\r\nNOOP\r\n")  # the rest of the long line is skipped
    assert reply_of(s, b"").startswith(b"250")


def test_auth_not_in_transaction_and_reset_by_starttls() -> None:
    s = SmtpSession("msa.example.test", SessionLimits(),
                    Capabilities(auth_mechanisms=("PLAIN",), auth_requires_tls=False))
    s.feed(b"EHLO c\r\n")
    s.accept_hello(s.next_event().hello)  # type: ignore[union-attr]
    s.feed(b"MAIL FROM:<a@b.test>\r\n")
    s.accept_mail(s.next_event().mail)  # type: ignore[union-attr]
    assert reply_of(s, b"AUTH PLAIN\r\n").startswith(b"503 5.5.1 AUTH not permitted")
    s.authenticated = "x"
    s.tls_started()
    assert s.authenticated is None


def test_auth_initial_response_may_exceed_command_line_limit() -> None:
    s = SmtpSession("msa.example.test", SessionLimits(max_command_line=512), CAPS, tls_active=True)
    s.feed(b"EHLO c\r\n")
    s.accept_hello(s.next_event().hello)  # type: ignore[union-attr]
    s.feed(b"AUTH PLAIN " + b"A" * 4000 + b"\r\n")
    event = s.next_event()
    assert isinstance(event, AuthRequested) and len(event.auth.initial or "") == 4000
    s.feed(b"NOOP " + b"x" * 600 + b"\r\n")
    event = s.next_event()
    assert isinstance(event, Say) and event.reply.code == 500  # other commands keep the limit


def test_auth_lines_get_the_longer_limit_only_where_auth_is_offered() -> None:
    """RFC 4954 §4 lets an AUTH line with an initial response run to 12,288 octets; a server
    that offers no AUTH (the MX) keeps its command-line limit for lines that start "AUTH "."""
    line = b"AUTH PLAIN " + b"A" * 2000 + b"\r\n"
    mx = SmtpSession("mx.example.test", SessionLimits(max_command_line=512),
                     Capabilities(starttls=True), tls_active=True)
    mx.feed(b"EHLO c\r\n")
    hello = mx.next_event()
    mx.accept_hello(hello.hello)  # type: ignore[union-attr]
    assert reply_of(mx, line).startswith(b"500 5.5.2")  # line too long
    msa = SmtpSession("msa.example.test", SessionLimits(max_command_line=512), CAPS,
                      tls_active=True)
    msa.feed(b"EHLO c\r\n")
    hello = msa.next_event()
    msa.accept_hello(hello.hello)  # type: ignore[union-attr]
    msa.feed(line)
    assert isinstance(msa.next_event(), AuthRequested)
