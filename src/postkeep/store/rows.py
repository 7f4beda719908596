"""Row ↔ dataclass helpers shared by the parts of `postkeep.store.sql.SqlStore`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postkeep.store.api import Account
from postkeep.store.schema import accounts

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


def account_from_row(r: Sequence[Any]) -> Account:
    """An `Account` from a row selected with ACCOUNT_COLS."""
    return Account(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), bool(r[7]))
