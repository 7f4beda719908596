"""Both ends of the worker channel (postkeep.server.pool, .worker, .channel) without worker
processes, where the wire tests cannot reach: how the main process answers a worker's messages
and gives back what it held, how a worker takes the main process's answers, how a frame is
read off the stream, and (on real sockets, with a real child process standing in for a worker:
`sleep`) that a worker that stops reading its channel (hung) does not make the main process
queue events for it without bound."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import time
from collections import Counter

import pytest

from postkeep.auth.passwords import PasswordVerifier
from postkeep.bans.keeper import BanKeeper, BanList
from postkeep.bans.ledger import StoreLedger
from postkeep.bans.policy import Policy
from postkeep.config.bans import BansConfig
from postkeep.net.slots import LocalSlots
from postkeep.server.channel import EventBatch as _EventBatch
from postkeep.server.channel import Outbox as _Outbox
from postkeep.server.channel import read_message as _read_message
from postkeep.server.ipc import (
    EVENTS_PER_FRAME,
    HEADER_SIZE,
    MAX_FRAME,
    AccountSlot,
    Answer,
    BanChange,
    ChannelError,
    Events,
    Hello,
    IpSlot,
    Message,
    PasswordLearned,
    PasswordQuery,
    Ready,
    SlotRelease,
    SlotRequest,
    SlowSlot,
    Strike,
    decode,
    encode,
)
from postkeep.server.pool import WorkerPool
from postkeep.server.worker import RemoteStrikes, WorkerChannel
from postkeep.store.api import MailboxEvent
from postkeep.store.events import EventBus

EVENT = MailboxEvent(1, 2, "flags", 3, 4)


def _pool(slots: LocalSlots, verifier: PasswordVerifier, count: int) -> WorkerPool:
    """A pool whose workers are not forked (no fork server: these tests drive its channels)."""
    others = {"mx": LocalSlots(10, 10, 0), "submission": LocalSlots(10, 10, 0)}
    keeper = BanKeeper(BansConfig(), StoreLedger(None, 600, 1000, 0))  # type: ignore[arg-type]
    return WorkerPool(None, {**others, "imap": slots}, verifier, count,  # type: ignore[arg-type]
                      keeper)


def _fed(*data: bytes) -> asyncio.StreamReader:
    """A stream that yields `data`, then ends."""
    reader = asyncio.StreamReader()
    for chunk in data:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def _pipe() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
]:
    """Both ends of a channel (a writer closes its socket once it is collected: keep both)."""
    ours, theirs = socket.socketpair()
    return (
        await asyncio.open_unix_connection(sock=ours),
        await asyncio.open_unix_connection(sock=theirs),
    )


async def _received(reader: asyncio.StreamReader, count: int) -> list[Message | None]:
    return [await asyncio.wait_for(_read_message(reader), 5) for _ in range(count)]


def test_read_message_reads_frames_until_the_end_of_the_stream() -> None:
    async def go() -> None:
        frames = [encode(Ready(7)), encode(Events((EVENT,)))]
        reader = _fed(b"".join(frames))
        assert await _read_message(reader) == Ready(7)
        assert await _read_message(reader) == Events((EVENT,))
        assert await _read_message(reader) is None

    asyncio.run(go())


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x00", "truncated frame"),  # in the header
        (encode(Ready(7))[:-1], "truncated frame"),  # in the body
        (struct.pack("!I", 10), "truncated frame"),  # no body at all
        (struct.pack("!I", MAX_FRAME + 1) + b"{}", "frame of 65537 octets"),
        (struct.pack("!I", 2) + b"[]", "frame is a JSON list"),
        (struct.pack("!I", 10) + b'{"t":"no"}', "unknown message kind 'no'"),
    ],
    ids=["header", "body", "no-body", "oversized", "not-object", "unknown"],
)
def test_read_message_refuses_a_malformed_frame(data: bytes, error: str) -> None:
    async def go() -> None:
        with pytest.raises(ChannelError, match=error):
            await _read_message(_fed(data))

    asyncio.run(go())


def test_the_main_process_answers_a_worker_and_gives_back_what_it_held() -> None:
    async def go() -> None:
        slots = LocalSlots(10, 1, 1, max_slow=1)
        verifier = PasswordVerifier()
        pool = _pool(slots, verifier, 2)
        worker, other = pool.workers
        (_, writer), (answers, _peer) = await _pipe()
        (_, other_writer), (forwarded, _other_peer) = await _pipe()
        outbox = _Outbox(writer)
        worker.outbox, other.outbox = outbox, _Outbox(other_writer)  # as _run_once sets them
        digest = bytes(32)
        ip, account = IpSlot("imap", "192.0.2.0"), AccountSlot("imap", 7)
        requests: list[Message] = [
            SlotRequest(1, ip),
            SlotRequest(2, ip),  # past the per-IP limit of 1
            SlotRequest(3, account),
            SlotRequest(4, account),  # past the per-account limit of 1
            SlotRelease(account),
            SlotRelease(AccountSlot("imap", 8)),  # not taken by this worker: not released
            SlotRelease(IpSlot("imap", "198.51.100.0")),
            SlotRequest(10, IpSlot("mx", "192.0.2.0")),  # another service: its own limits
            PasswordQuery(5, digest),
            PasswordLearned(digest),
            PasswordQuery(6, digest),
            SlotRequest(7, SlowSlot("imap")),
            SlotRequest(8, SlowSlot("imap")),  # past the slow limit of 1
            SlotRelease(SlowSlot("imap")),
            SlotRequest(9, SlowSlot("imap")),
            Events((EVENT,)),
            Ready(4242),
        ]
        await pool._serve_channel(worker, _fed(*map(encode, requests)), outbox)
        assert await _received(answers, 10) == [
            Answer(1, True),
            Answer(2, False),
            Answer(3, True),
            Answer(4, False),
            Answer(10, True),
            Answer(5, False),
            Answer(6, True),
            Answer(7, True),
            Answer(8, False),
            Answer(9, True),
        ]
        assert await _received(forwarded, 1) == [Events((EVENT,))]  # to the others
        assert worker.ready.is_set()
        mx = IpSlot("mx", "192.0.2.0")
        assert worker.held == Counter({ip: 1, mx: 1, SlowSlot("imap"): 1})
        assert slots.connections.count == 1 and slots.accounts == Counter()
        assert slots.connections.slow == 1 and pool.slots["mx"].connections.count == 1
        pool._release_all(worker)  # what _run_once does when the channel closes
        assert slots.connections.count == 0 and worker.held == Counter()
        assert slots.connections.slow == 0 and pool.slots["mx"].connections.count == 0
        writer.close()
        assert await _received(answers, 1) == [None]  # not its own events: nothing else
        verifier.close()

    asyncio.run(go())


@pytest.mark.parametrize("message", [Answer(1, True), Hello(b"k")], ids=lambda m: type(m).__name__)
def test_the_main_process_refuses_what_only_it_sends(message: Message) -> None:
    async def go() -> None:
        verifier = PasswordVerifier()
        pool = _pool(LocalSlots(10, 10, 10), verifier, 1)
        (_, writer), _peer = await _pipe()
        with pytest.raises(ChannelError, match=f"a worker sent {type(message).__name__}"):
            await pool._serve_channel(pool.workers[0], _fed(encode(message)), _Outbox(writer))
        verifier.close()

    asyncio.run(go())


def test_a_worker_takes_the_main_process_answers_and_events() -> None:
    async def go() -> None:
        bus = EventBus()
        (reader, writer), (main_reader, main_writer) = await _pipe()
        bans = BanList(Policy(BansConfig()))
        channel = WorkerChannel(reader, writer, bus, bans)
        slots = channel.slots("imap")
        reading = asyncio.create_task(channel.run())
        with bus.subscribe(None) as sub:
            asked = asyncio.create_task(slots.acquire_account(7))
            cached = asyncio.create_task(channel.password_cached(b"\x01"))
            slow = asyncio.create_task(channel.slots("submission").acquire_slow())
            slots.release_ip("192.0.2.0")
            slots.release_slow()
            bus.publish(EVENT)  # relayed to the main process
            sent = await _received(main_reader, 6)
            assert sent == [  # the requests are sent once their tasks run
                SlotRelease(IpSlot("imap", "192.0.2.0")),
                SlotRelease(SlowSlot("imap")),
                SlotRequest(1, AccountSlot("imap", 7)),
                PasswordQuery(2, b"\x01"),
                SlotRequest(3, SlowSlot("submission")),
                Events((EVENT,)),
            ]
            main_writer.write(encode(Answer(2, True)) + encode(Answer(1, False)))
            main_writer.write(encode(Answer(3, True)))
            main_writer.write(encode(Events((MailboxEvent(5, 6, "exists", 7, 8),))))
            assert await asyncio.wait_for(asked, 5) is False
            assert await asyncio.wait_for(cached, 5) is True
            assert await asyncio.wait_for(slow, 5) is True
            assert await asyncio.wait_for(sub.get(), 5) == EVENT  # published here at once
            assert await asyncio.wait_for(sub.get(), 5) == MailboxEvent(5, 6, "exists", 7, 8)
            # bans pushed by the main process fill the worker's copy; a strike goes out
            main_writer.write(encode(BanChange("192.0.2.0/24", time.time() + 60)))
            main_writer.write(encode(BanChange("198.51.100.1/32", time.time() + 60)))
            main_writer.write(encode(BanChange("198.51.100.1/32", 0)))
            strikes = RemoteStrikes(channel)
            under_attack = asyncio.create_task(strikes.strike("192.0.2.9", "auth", "a@b.test"))
            strikes.notify("192.0.2.9", "harvest")
            assert await _received(main_reader, 2) == [  # the strike asked once its task runs
                Strike(0, "192.0.2.9", "harvest", ""), Strike(4, "192.0.2.9", "auth", "a@b.test")]
            main_writer.write(encode(Answer(4, True)))
            assert await asyncio.wait_for(under_attack, 5) is True
            assert bans.refused("192.0.2.9") is not None and bans.refused("198.51.100.1") is None
            pending = asyncio.create_task(slots.acquire_ip("192.0.2.0"))
            await asyncio.sleep(0)
            main_writer.write(encode(SlotRequest(9, IpSlot("mx", "x"))))  # only a worker sends that
            with pytest.raises(ChannelError, match="the main process sent SlotRequest"):
                await asyncio.wait_for(reading, 5)
            assert channel.closed and bus.relay is None
            assert await asyncio.wait_for(pending, 5) is False  # unanswered: refused
        main_writer.close()
        writer.close()

    asyncio.run(go())


def test_a_worker_that_stops_reading_its_channel_is_killed() -> None:
    async def go() -> None:
        ours, theirs = socket.socketpair()
        _reader, writer = await asyncio.open_unix_connection(sock=ours)
        peer_reader, _peer_writer = await asyncio.open_unix_connection(sock=theirs)
        proc = await asyncio.create_subprocess_exec("sleep", "60")
        verifier = PasswordVerifier()
        pool = _pool(LocalSlots(10, 10, 10), verifier, 1)
        pool.max_backlog = 256 * 1024
        worker = pool.workers[0]
        outbox = _Outbox(writer)
        worker.pid, worker.outbox = proc.pid, outbox
        message = Events((EVENT,))
        try:
            for _ in range(10):  # a worker that reads keeps its channel
                pool._forward(message, exclude=None)
            for _ in range(10):
                got = await asyncio.wait_for(_read_message(peer_reader), 5)
                assert got == message
            assert worker.outbox is outbox and proc.returncode is None
            frames = 0
            while worker.outbox is not None:  # ... one that stops reading is killed
                pool._forward(message, exclude=None)
                frames += 1
                assert frames < 100_000, "never killed"
            assert frames * len(encode(message)) > pool.max_backlog  # killed past it, not before
            assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGKILL
            assert writer.transport.is_closing()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            verifier.close()

    asyncio.run(go())


def test_a_pass_with_more_events_than_one_frame_holds_is_sent_in_several() -> None:
    """A STORE on 3,000 messages publishes 3,000 events in one pass of the event loop: they
    must reach the other end complete, in frames it accepts (one frame of them all would be
    past MAX_FRAME and cost the worker its channel)."""
    longest = MailboxEvent(2**31 - 1, 2**31 - 1, "mailboxes", 2**32 - 1, 2**63 - 1)
    assert len(encode(Events((longest,) * EVENTS_PER_FRAME))) - HEADER_SIZE <= MAX_FRAME
    frames: list[bytes] = []

    async def publish() -> None:
        batch = _EventBatch(lambda message: frames.append(encode(message)))
        for uid in range(1, 3001):
            batch.add(MailboxEvent(2**31 - 1, 2**31 - 1, "flags", uid, 2**63 - uid))
        await asyncio.sleep(0)  # the end of the pass

    asyncio.run(publish())
    assert len(frames) > 1
    received = [decode(frame[HEADER_SIZE:]) for frame in frames]
    uids = [e.uid for m in received if isinstance(m, Events) for e in m.events]
    assert uids == list(range(1, 3001))


def test_a_slot_granted_after_its_asker_was_cancelled_is_given_back() -> None:
    """A connection ended (the server stops) while its slot request is on its way: when the
    main process's answer is yes, the worker releases that slot at once, instead of the main
    process counting it as held until the worker exits."""

    async def go() -> None:
        (reader, writer), (main_reader, main_writer) = await _pipe()
        channel = WorkerChannel(reader, writer, EventBus(), BanList(Policy(BansConfig())))
        reading = asyncio.create_task(channel.run())
        slots = channel.slots("mx")
        granted = asyncio.create_task(slots.acquire_ip("192.0.2.0"))
        refused = asyncio.create_task(slots.acquire_slow())
        assert await _received(main_reader, 2) == [
            SlotRequest(1, IpSlot("mx", "192.0.2.0")), SlotRequest(2, SlowSlot("mx"))]
        granted.cancel()
        refused.cancel()
        await asyncio.gather(granted, refused, return_exceptions=True)
        main_writer.write(encode(Answer(1, True)) + encode(Answer(2, False)))
        assert await _received(main_reader, 1) == [SlotRelease(IpSlot("mx", "192.0.2.0"))]
        await asyncio.sleep(0.05)
        channel.send(Ready(1))  # next on the wire: nothing was given back for the refusal
        assert await _received(main_reader, 1) == [Ready(1)]
        main_writer.close()
        await asyncio.wait_for(reading, 5)
        writer.close()

    asyncio.run(go())
