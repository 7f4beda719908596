"""Where the text of a message goes while it arrives: memory, then an encrypted spool.

The session core hands the driver each piece of a message's text as it is read
(`smtp.wire.session.TextReceived`). An `Intake` keeps them in memory up to
`smtp.spool_threshold` octets; past that, the text goes into an encrypted, nameless spool file
(`postkeep.store.spool`), which the store then turns into the message's blob a chunk at a time.
So what a session holds of a message is at most the threshold, whatever the message's size.

Past the threshold, a piece that does not complete one of the spool's chunks only joins the
chunk in memory (`Spool.room`): it is written right away, on the event loop. Only a piece that
completes a chunk, which is then encrypted and written, costs a hop to a worker thread: at most
one per chunk (64 KiB) of text, however small the client's reads.

A process-wide `DataBudget` (`smtp.max_data_in_flight`) counts the octets of message text the
intakes of all sessions keep in memory (a text until it is spooled, then the spool's partial
chunk), MX and submission alike; besides, each session has the piece being read (at most a
read, `READ_SIZE` of the driver, and a line). A piece that does not fit refuses its message
with ``451 4.3.1`` (RFC 3463: mail system full; the client tries again later), and DATA
itself is refused so while less than `ROOM` is left. An intake gives back all
it holds, and closes its spool (which removes it), when it is discarded: the driver discards it
once the message is stored or refused, when its transaction is reset (RSET, EHLO, STARTTLS, a
refused chunk) and when the connection ends, however it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from postkeep.errors import Reply
from postkeep.net.budget import DataBudget
from postkeep.store.spool import MessageData, Spool, SpooledText

R_NO_ROOM = Reply(451, "4.3.1", "Insufficient system resources, try again later")
R_SPOOL_FAILED = Reply(451, "4.3.0", "Local error in processing, try again later")

ROOM = 64 * 1024  # DATA is refused at once while less than this is left of the budget
_NO_ROOM = "message data in flight past smtp.max_data_in_flight"


class Intake:
    """The text of one message, as it arrives (see the module docstring). `stream` names it
    (`SmtpSession.message_stream`); `new_spool` makes a spool (it blocks: run in a thread)."""

    def __init__(
        self, budget: DataBudget, threshold: int, new_spool: Callable[[], Spool], stream: int
    ) -> None:
        self.stream = stream
        self.refusal: tuple[Reply, str] | None = None  # the reply and the reason to log
        self._budget = budget
        self._threshold = threshold
        self._new_spool = new_spool
        self._memory = bytearray()
        self._spool: Spool | None = None
        self._held = 0  # octets counted in the budget for this message
        self._discarded = False

    @property
    def spooled(self) -> bool:
        return self._spool is not None

    def _hold(self, octets: int) -> bool:
        """Count `octets` in the budget instead of what was counted."""
        if octets > self._held and not self._budget.take(octets - self._held):
            return False
        if octets < self._held:
            self._budget.give(self._held - octets)
        self._held = octets
        return True

    async def add(self, data: bytes) -> bool:
        """Store the next piece of text; False if the message is refused (`refusal` says
        why; what it held is given back and its spool removed)."""
        if self._spool is None and len(self._memory) + len(data) <= self._threshold:
            if not self._hold(self._held + len(data)):
                return self._refuse(R_NO_ROOM, _NO_ROOM)
            self._memory += data
            return True
        try:  # to the spool (the first time with what was in memory)
            if self._spool is not None and len(data) < self._spool.room:
                self._spool.write(data)  # no I/O: it joins the partial chunk
            else:
                await asyncio.to_thread(self._write, data)
        except Exception as exc:  # the store's StoreError, OSError (disk full...)
            return self._refuse(R_SPOOL_FAILED, f"spool write failed: {exc}")
        assert self._spool is not None
        if not self._hold(self._spool.buffered):  # what it keeps: less than a chunk
            return self._refuse(R_NO_ROOM, _NO_ROOM)
        return True

    def _write(self, data: bytes) -> None:
        """Worker thread: make the spool the first time, with the text held until then. If
        the intake was discarded meanwhile (the session was cancelled while this ran), the
        spool is closed here, since `discard` may have run before the spool existed."""
        try:
            if self._spool is None:
                self._spool = self._new_spool()
                self._spool.write(self._memory)
                self._memory = bytearray()
            self._spool.write(data)
        finally:
            if self._discarded and self._spool is not None:
                self._spool.close()

    def _refuse(self, reply: Reply, reason: str) -> bool:
        self.refusal = (reply, reason)
        self.discard()
        return False

    def text(self) -> MessageData:
        """The whole text, once the message is complete: bytes, or the spool's."""
        if self._spool is not None:
            return SpooledText(self._spool)
        text, self._memory = bytes(self._memory), bytearray()
        return text

    def discard(self) -> None:
        """Give back what is held and remove the spool (idempotent)."""
        self._discarded = True
        self._budget.give(self._held)
        self._held = 0
        self._memory = bytearray()
        if self._spool is not None:
            self._spool.close()
