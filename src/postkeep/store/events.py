"""A tiny in-process asyncio event bus for committed mailbox changes.

The store publishes a `MailboxEvent` after each committed change (for now: ``exists`` per
delivered message); IMAP sessions in IDLE (RFC 2177, RFC 9051 §6.3.13) subscribe to their
account's events and turn them into untagged responses.

A publisher must never wait for a slow subscriber: each subscription holds a bounded queue; when it
is full the oldest event is dropped and the subscription is marked `overflowed`, telling the
subscriber to resynchronise from the store (e.g. re-SELECT / CONDSTORE, RFC 7162) instead of
trusting the event stream. All methods must be called on the event loop's thread; the store hops
there with ``loop.call_soon_threadsafe`` before publishing.

With worker processes (`postkeep.server.worker`) each process has its own bus: `relay`
is then set to a function that forwards every locally published event to the other processes, whose
buses take it with `publish_local` (which does not relay again).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from postkeep.store.api import MailboxEvent

DEFAULT_QUEUE_SIZE = 256


class Subscription:
    """One subscriber's bounded queue of events; an async iterator and a context manager."""

    def __init__(self, bus: EventBus, account_id: int | None, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.account_id = account_id
        self.maxsize = maxsize
        self.dropped = 0
        self._overflowed = False
        self._bus = bus
        self._items: deque[MailboxEvent] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    # -- publisher side ----------------------------------------------------------------------------

    def _push(self, event: MailboxEvent) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            self._overflowed = True
        self._items.append(event)
        self._ready.set()

    # -- subscriber side ---------------------------------------------------------------------------

    @property
    def overflowed(self) -> bool:
        """True once events were dropped since the last `reset_overflow()`."""
        return self._overflowed

    def reset_overflow(self) -> bool:
        """Clear the overflow mark (after a resync); returns whether it was set."""
        was, self._overflowed = self._overflowed, False
        return was

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def get_nowait(self) -> MailboxEvent | None:
        """The next queued event, or None if none is queued."""
        if not self._items:
            return None
        event = self._items.popleft()
        if not self._items:
            self._ready.clear()
        return event

    def drain(self) -> list[MailboxEvent]:
        """All queued events, oldest first."""
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        return items

    async def get(self) -> MailboxEvent:
        """Wait for the next event; raises EOFError once the subscription is closed and empty."""
        while not self._items:
            if self._closed:
                raise EOFError("subscription closed")
            await self._ready.wait()
        event = self._items.popleft()
        if not self._items and not self._closed:
            self._ready.clear()
        return event

    def close(self) -> None:
        """Unsubscribe; queued events can still be read, then `get()` raises EOFError."""
        if not self._closed:
            self._closed = True
            self._bus._unsubscribe(self)
            self._ready.set()

    def __aiter__(self) -> AsyncIterator[MailboxEvent]:
        return self

    async def __anext__(self) -> MailboxEvent:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of MailboxEvents to subscriptions by account (or to all, account_id=None)."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subs: dict[int | None, set[Subscription]] = {}
        self.relay: Callable[[MailboxEvent], None] | None = None

    def subscribe(self, account_id: int | None, maxsize: int | None = None) -> Subscription:
        """Receive events of `account_id` (None: of every account) from now on."""
        sub = Subscription(self, account_id, maxsize or self.queue_size)
        self._subs.setdefault(account_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.account_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.account_id]

    def publish(self, event: MailboxEvent) -> None:
        """Queue `event` for its account's subscribers and the catch-all ones, and hand it to
        `relay` if set; never blocks."""
        self.publish_local(event)
        if self.relay is not None:
            self.relay(event)

    def publish_local(self, event: MailboxEvent) -> None:
        """Queue `event` for this process's subscribers only (an event relayed from another)."""
        for key in (event.account_id, None):
            subs = self._subs.get(key)
            if subs:
                for sub in subs:
                    sub._push(event)

    def subscriber_count(self, account_id: int | None = None) -> int:
        return len(self._subs.get(account_id, ()))
