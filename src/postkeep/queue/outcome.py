"""What an attempt says about one recipient: an SMTP reply, ours or the remote server's.

A reply is permanent (5yz) or temporary (4yz) by its code (RFC 5321 §4.2.1), and carries an
enhanced status code (RFC 3463) that the DSN reports. Failures found before any server answered
(DNS, connection, TLS policy) are replies of ours, with `remote` None.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int  # 250, 451, 550...
    enhanced: str  # "2.0.0", "4.4.1", "5.1.10"
    text: str
    remote: str | None = None  # "mx.example.org [192.0.2.1]": the server that said it
    relayed: bool = False  # delivered to a server without DSN: no report will come from it

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def line(self) -> str:
        """As the queue records it: "550 5.1.1 No such user"."""
        return f"{self.code} {self.enhanced} {self.text}"


def temporary(enhanced: str, text: str, remote: str | None = None) -> Outcome:
    return Outcome(451, enhanced, text, remote)


def permanent(enhanced: str, text: str, remote: str | None = None) -> Outcome:
    return Outcome(550 if not enhanced.startswith("5.3.4") else 552, enhanced, text, remote)
