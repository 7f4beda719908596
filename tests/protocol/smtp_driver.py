"""A minimal in-memory driver for the sans-IO SMTP session, for transcript tests.

It accepts every sender and every recipient whose domain is not `refused.test`, records the
messages, and renders every reply exactly as the real driver does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postkeep.errors import Reply
from postkeep.smtp.wire.session import (
    Capabilities,
    ChunkReceived,
    DataReceived,
    HelloReceived,
    MailReceived,
    MessageReceived,
    RcptReceived,
    Say,
    SessionLimits,
    SmtpSession,
    StartTlsRequested,
)


@dataclass
class Driver:
    session: SmtpSession
    messages: list[MessageReceived] = field(default_factory=list)
    closed: bool = False
    tls_requests: int = 0

    def feed(self, data: bytes) -> bytes:
        self.session.feed(data)
        out = []
        s = self.session
        while not self.closed and (event := s.next_event()) is not None:
            match event:
                case Say(reply=reply, close=close):
                    out.append(s.render(reply))
                    self.closed = close
                case HelloReceived(hello=hello):
                    answer = s.accept_hello(hello)
                    out.append(s.render(answer))
                case MailReceived(mail=mail):
                    out.append(s.render(s.accept_mail(mail)))
                case RcptReceived(rcpt=rcpt):
                    if rcpt.path.domain == "refused.test":
                        out.append(s.render(Reply(550, "5.1.1", "User unknown")))
                    else:
                        out.append(s.render(s.accept_rcpt(rcpt)))
                case DataReceived():
                    out.append(s.render(s.begin_data()))
                case ChunkReceived(size=size):
                    out.append(s.render(s.chunk_reply(size)))
                case MessageReceived(error=error):
                    if error is None:
                        self.messages.append(event)
                        out.append(s.render(Reply(250, "2.0.0", "Ok: queued")))
                    else:
                        out.append(s.render(error))
                case StartTlsRequested():
                    self.tls_requests += 1
                    out.append(s.render(s.starttls_reply()))
                    s.starttls_begin()
                    s.tls_started()
        return b"".join(out)


def make_driver(**limits: int) -> Driver:
    session = SmtpSession("mx.example.test", SessionLimits(**limits), Capabilities(starttls=True))
    return Driver(session)


def codes(output: bytes) -> list[str]:
    """The reply codes of each final reply line ("250", "354", ...)."""
    return [line[:3].decode() for line in output.split(b"\r\n") if line[3:4] == b" "]
