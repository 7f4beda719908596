"""The asyncio ends of a worker channel (a socketpair between the main process and one worker):
reading framed messages (`postkeep.server.ipc`), and writing what one pass of the event loop
sends in one write.

Every write on the channel wakes the other process; a profile had the channel's writes at 7 %
of a worker's busy time when each message was written on its own. So both ends queue frames
(`Outbox`) and write them together at the end of the event loop's pass, and mailbox events go
in batches (`EventBatch`: a STORE on 100 messages publishes 100 events: one frame, not 100).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from postkeep.server import ipc
from postkeep.store.api import MailboxEvent


async def read_message(reader: asyncio.StreamReader) -> ipc.Message | None:
    """The next message, or None at end of stream; ipc.ChannelError for a malformed frame."""
    try:
        header = await reader.readexactly(ipc.HEADER_SIZE)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ipc.ChannelError("truncated frame") from None
        return None
    try:
        body = await reader.readexactly(ipc.frame_length(header))
    except asyncio.IncompleteReadError:
        raise ipc.ChannelError("truncated frame") from None
    return ipc.decode(body)


class Outbox:
    """Frames for the other end of a channel, written together at the end of the event loop's
    pass: one write, and one wake-up of the other process, for everything a pass sends (the
    slot requests of several new connections, the releases of others, their events)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []
        self._pending = 0

    def send(self, frame: bytes) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(frame)
        self._pending += len(frame)

    def flush(self) -> None:
        if not self._frames:
            return
        data = b"".join(self._frames)
        self._frames.clear()
        self._pending = 0
        if not self.writer.is_closing():
            self.writer.write(data)

    def queued(self) -> int:
        """Octets not yet taken by the other end: waiting for the flush or in the transport."""
        return self._pending + self.writer.transport.get_write_buffer_size()


class EventBatch:
    """Events published during one pass of the event loop, sent together at its end, in frames
    of at most `ipc.EVENTS_PER_FRAME` (a STORE on 20,000 messages must not make a frame the
    other end refuses, which would cost the worker its channel and its sessions)."""

    def __init__(self, send: Callable[[ipc.Events], None]) -> None:
        self._send = send
        self._events: list[MailboxEvent] = []

    def add(self, event: MailboxEvent) -> None:
        if not self._events:
            asyncio.get_running_loop().call_soon(self._flush)
        self._events.append(event)

    def _flush(self) -> None:
        events, self._events = self._events, []
        for start in range(0, len(events), ipc.EVENTS_PER_FRAME):
            self._send(ipc.Events(tuple(events[start : start + ipc.EVENTS_PER_FRAME])))
