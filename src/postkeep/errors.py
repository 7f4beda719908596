"""Replies and errors that carry them.

An SMTP reply is a basic code (RFC 5321 §4.2) plus an enhanced status code (RFC 3463) and a text.
Policy and delivery raise `TempFail` / `PermFail` carrying the reply the session must send; only the
session writes to the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: `code` (e.g. 250), `enhanced` (e.g. "2.1.0", may be empty) and `text`."""

    code: int
    enhanced: str
    text: str

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"


class MailError(Exception):
    """An error that knows the reply to give the client."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class TempFail(MailError):
    """A transient failure (4xx): the client should retry later."""


class PermFail(MailError):
    """A permanent failure (5xx): the client must not retry as is."""


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
