"""Row ↔ dataclass helpers shared by the parts of `postkeep.store.sql.store.SqlStore`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, exists, insert

from postkeep.store.api import Account, FilterLine, FilterReport, Flag, Mailbox, MessageInfo
from postkeep.store.sql.schema import (
    accounts,
    app_passwords,
    filter_results,
    mailboxes,
    messages,
    subscriptions,
)

T = TypeVar("T")

IN_CHUNK = 500  # ids per IN (...) list

#: The columns `account_from_row` expects, in order.
ACCOUNT_COLS = (
    accounts.c.id,
    accounts.c.address,
    accounts.c.domain_id,
    accounts.c.password_hash,
    accounts.c.quota_bytes,
    accounts.c.used_bytes,
    accounts.c.disabled,
    accounts.c.app_passwords_only,
)


#: The columns of an app password row (`postkeep.store.sql.security`).
APP_PASSWORD_COLS = (
    app_passwords.c.id,
    app_passwords.c.account_id,
    app_passwords.c.name,
    app_passwords.c.password_hash,
    app_passwords.c.scopes,
    app_passwords.c.created,
    app_passwords.c.last_used,
    app_passwords.c.revoked_at,
)


def account_from_row(r: Sequence[Any]) -> Account:
    """An `Account` from a row selected with ACCOUNT_COLS."""
    return Account(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), bool(r[7]))


def mailbox_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 9051 §5.1): any spelling of it is stored as "INBOX"."""
    return "INBOX" if name.upper() == "INBOX" else name


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


MAILBOX_COLS = (
    mailboxes.c.id,
    mailboxes.c.account_id,
    mailboxes.c.name,
    mailboxes.c.special_use,
    mailboxes.c.uidvalidity,
    mailboxes.c.uidnext,
    mailboxes.c.highestmodseq,
    exists()
    .where(
        and_(
            subscriptions.c.account_id == mailboxes.c.account_id,
            subscriptions.c.name == mailboxes.c.name,
        )
    )
    .label("subscribed"),
    mailboxes.c.first_recent_uid,
)
MESSAGE_COLS = (
    messages.c.id,
    messages.c.mailbox_id,
    messages.c.uid,
    messages.c.modseq,
    messages.c.size,
    messages.c.internaldate,
    messages.c.flags,
    messages.c.keywords,
    messages.c.blob_id,
    messages.c.savedate,
)
MESSAGE_UID_COLUMN = 2  # where the UID is in a MESSAGE_COLS row


def mailbox_from_row(r: Sequence[Any]) -> Mailbox:
    """A `Mailbox` from a row selected with MAILBOX_COLS."""
    return Mailbox(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])


_FLAGS = tuple(Flag(i) for i in range(32))  # every combination: a lookup, not an enum call
_NO_KEYWORDS: tuple[str, ...] = ()


def message_from_row(r: Sequence[Any]) -> MessageInfo:
    """A `MessageInfo` from a row selected with MESSAGE_COLS."""
    f, k = r[6], r[7]
    return MessageInfo(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        _FLAGS[f] if 0 <= f < 32 else Flag(f),
        tuple(k.split()) if k else _NO_KEYWORDS,
        r[8],
        r[9],
    )


#: The columns `report_from_row` expects, in order.
FILTER_COLS = (
    filter_results.c.direction,
    filter_results.c.queue_id,
    filter_results.c.action,
    filter_results.c.score,
    filter_results.c.results,
    filter_results.c.created,
)


def filter_insert() -> Any:
    """The INSERT of a `filter_row` (the group-commit writer compiles it once)."""
    names = ("blob_id", "direction", "queue_id", "action", "score", "results", "created")
    return insert(filter_results).values({name: bindparam(name) for name in names})


def filter_row(blob_id: str, report: FilterReport) -> dict[str, Any]:
    """The ``filter_results`` row of a delivery's report: each filter's line as a compact
    JSON list ``[filter, action, score, [symbols], status]``."""
    results = json.dumps([[f.filter, f.action, f.score, list(f.symbols), f.status]
                          for f in report.filters], separators=(",", ":"), ensure_ascii=False)
    return {"blob_id": blob_id, "direction": report.direction, "queue_id": report.queue_id,
            "action": report.action, "score": report.score, "results": results,
            "created": report.created}


def report_from_row(row: Sequence[Any]) -> FilterReport:
    direction, queue_id, action, score, results, created = row
    lines = tuple(FilterLine(str(f), str(a), float(s), tuple(map(str, syms)), str(st))
                  for f, a, s, syms, st in json.loads(results))
    return FilterReport(direction, queue_id, action, float(score), lines, float(created))
