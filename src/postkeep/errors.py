"""Replies, and the errors of the store and the config.

An SMTP reply is a basic code (RFC 5321 §4.2) plus an enhanced status code (RFC 3463) and a text.
Policy and the inbound pipeline return the reply the session must send (as a value, often inside
a `policy.verdict.Verdict`); only the session writes to the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: `code` (e.g. 250), `enhanced` (e.g. "2.1.0", may be empty) and `text`."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"


class StoreError(Exception):
    """A store operation failed in a way the caller should report (not a bug)."""


class NotFound(StoreError):
    """The named domain, account, alias or mailbox does not exist."""


class AlreadyExists(StoreError):
    """The domain, account or alias to create exists already."""


class ConfigError(Exception):
    """A configuration problem, with the dotted key path it concerns."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem
