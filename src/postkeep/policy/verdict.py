"""Verdicts: what a policy check decided, as a value the session turns into a reply."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.errors import Reply


@dataclass(frozen=True, slots=True)
class Verdict:
    """`reply` is what the client hears; `reason` is for the log line (never sent)."""

    reply: Reply
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.reply.code < 400


def accept(reply: Reply) -> Verdict:
    return Verdict(reply)


def reject(code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
    return Verdict(Reply(code, enhanced, text), reason or text)
