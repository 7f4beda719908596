"""Sending quota counts: exact under concurrency, all or nothing, per window (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from postkeep.store.api import SendingLimits, SendingUsage
from postkeep.store.sql.store import SqlStore

Run = Callable[[Awaitable[Any]], Any]
NOON = 1_800_000_000.0 // 86400 * 86400 + 12 * 3600  # a UTC noon


def test_charges_stop_at_the_limit_and_count_nothing_refused(
    run: Run, make_store: Callable[..., SqlStore], store: SqlStore
) -> None:
    account = ("a:1", SendingLimits(messages_per_hour=10, recipients_per_day=25))
    domain = ("d:example.org", SendingLimits(messages_per_day=1000))
    other = make_store()  # a second process

    async def burst() -> list[Any]:
        return await asyncio.gather(*(
            s.charge_sending([account, domain], 2, NOON + i)
            for i, s in enumerate([store, other] * 8)
        ))

    results = run(burst())
    assert results.count(None) == 10  # exactly the limit, across both
    assert set(r for r in results if r) == {("a:1", "messages_per_hour", account[1])}
    assert run(store.sending_usage("a:1", NOON)) == SendingUsage(10, 10, 20, 20)
    assert run(store.sending_usage("d:example.org", NOON)) == SendingUsage(10, 10, 20, 20)
    later = NOON + 3600  # a new hour: messages again, until the day's recipients run out
    assert run(store.charge_sending([account, domain], 5, later)) is None
    assert run(store.charge_sending([account, domain], 1, later)) == (
        "a:1", "recipients_per_day", account[1])
    assert run(store.sending_usage("a:1", later)) == SendingUsage(1, 11, 5, 25)
    assert run(store.sending_usage("d:example.org", later)).messages_day == 11
    assert run(store.charge_sending([account], 1, NOON + 86400)) is None  # the next day


def test_exceptions(run: Run, store: SqlStore) -> None:
    assert run(store.get_sending_limits("a:7")) is None
    run(store.set_sending_limits("a:7", SendingLimits(messages_per_hour=5)))
    run(store.set_sending_limits("a:7", SendingLimits()))  # replaced: unlimited
    assert run(store.get_sending_limits("a:7")) == SendingLimits()
    run(store.set_sending_limits("a:7", None))
    assert run(store.get_sending_limits("a:7")) is None


def test_an_exception_replaces_the_given_limits_in_the_charge(run: Run, store: SqlStore) -> None:
    given = ("a:8", SendingLimits(messages_per_hour=1))
    assert run(store.charge_sending([given], 1, NOON)) is None
    assert run(store.charge_sending([given], 1, NOON)) == ("a:8", "messages_per_hour", given[1])
    run(store.set_sending_limits("a:8", SendingLimits(messages_per_hour=3)))
    assert run(store.charge_sending([given], 1, NOON)) is None  # 2 of the exception's 3
    raised = SendingLimits(messages_per_hour=3)
    assert run(store.charge_sending([given], 1, NOON)) is None
    assert run(store.charge_sending([given], 1, NOON)) == ("a:8", "messages_per_hour", raised)
    run(store.set_sending_limits("a:8", SendingLimits()))  # unlimited
    assert run(store.charge_sending([given], 100, NOON)) is None
