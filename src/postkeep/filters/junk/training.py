"""Training the junk classifier from what users do over IMAP (RFC 6154 §2: the ``\\Junk``
special-use mailbox).

A COPY or MOVE (RFC 9051 §6.4.7-8, RFC 6851) into the account's Junk mailbox (special use
``\\Junk``, or named `[junk] mailbox`) learns the messages as spam; one out of Junk into
any other mailbox but Trash (``\\Trash``: deleting is no opinion) as ham. The IMAP session
hands each committed COPY or MOVE to `JunkTrainer.filed`, which only queues it: the command
is answered at once, the learning runs after, in the background, at most `BATCH` messages
of a command and `MAX_PENDING` commands waiting (more are dropped, logged). Each message is
read from the store (its first `[junk] max_size` octets), tokenized in a thread, and learnt
in one store transaction (`Store.junk_learn`): idempotent per message and class, a message
moved back out of Junk un-learns its spam first.

The keywords ``$Junk`` and ``$NotJunk`` (RFC 5788's registry; Thunderbird and Apple Mail set
them when the user marks a message) teach the same: a STORE that adds ``$Junk`` to messages
(and not ``$NotJunk`` with it) hands them to `JunkTrainer.marked` as spam, one adding
``$NotJunk`` as ham; only the messages whose flags the STORE changed (one that had the
keyword already teaches nothing again). The record `junk_learn` keeps per message (its
class, by blob) is shared with the moves: a message marked ``$Junk`` and then moved into Junk
is learnt once, and marking it ``$NotJunk`` later un-learns the spam before learning ham.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from postkeep import log
from postkeep.config.junk import JunkConfig
from postkeep.filters.junk import classifier
from postkeep.filters.junk.message import parse
from postkeep.store.api import Mailbox, MailStore, SpecialUse

logger = log.get("junk")

BATCH = 500  # messages of one command learnt at most
MAX_PENDING = 64  # commands waiting to be learnt at most


def _tokens(data: bytes, max_tokens: int) -> list[str]:
    return classifier.tokens(parse(data), max_tokens)


class JunkTrainer:
    """Learns from COPY and MOVE (see the module docstring), for one process's sessions."""

    def __init__(self, store: MailStore, cfg: JunkConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one command learnt at a time

    def is_junk(self, box: Mailbox) -> bool:
        return box.special_use == SpecialUse.JUNK or box.name == self.cfg.mailbox

    def filed(self, account_id: int, source_id: int, dest: Mailbox,
              pairs: Sequence[tuple[int, int]]) -> None:
        """`pairs` (source UID, destination UID) were copied or moved from the mailbox
        `source_id` into `dest`, committed: queue what it teaches."""
        if not pairs:
            return
        uids = [d for _, d in pairs[:BATCH]]
        self._queue(account_id, len(pairs), self._learn(account_id, source_id, dest, uids))

    def marked(self, account_id: int, mailbox: Mailbox, uids: Sequence[int],
               spam: bool) -> None:
        """`uids` of `mailbox` were given ``$Junk`` (`spam`) or ``$NotJunk``, committed:
        queue learning them so."""
        if uids:
            self._queue(account_id, len(uids), self._learn_marked(account_id, mailbox,
                                                                  list(uids[:BATCH]), spam))

    async def _learn_marked(self, account_id: int, mailbox: Mailbox, uids: list[int],
                            spam: bool) -> None:
        try:
            async with self._lock:
                await self._learn_messages(account_id, mailbox, uids, spam, "keyword")
        except Exception:  # a failure here must never reach the session
            logger.exception("junk training failed account=%d mailbox=%s", account_id,
                             log.quote(mailbox.name))

    def _queue(self, account_id: int, count: int, job: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= MAX_PENDING:
            job.close()
            logger.warning("junk training dropped account=%d messages=%d reason=%s",
                           account_id, count, log.quote("too many waiting"))
            return
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the learning queued so far (at shutdown, and for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _learn(self, account_id: int, source_id: int, dest: Mailbox,
                     uids: list[int]) -> None:
        try:
            if self.is_junk(dest):
                spam = True
            else:
                source = await self.store.get_mailbox_by_id(source_id)
                if source is None or not self.is_junk(source) or \
                        dest.special_use == SpecialUse.TRASH:
                    return
                spam = False
            async with self._lock:
                await self._learn_messages(account_id, dest, uids, spam, "move")
        except Exception:  # a failure here must never reach the session
            logger.exception("junk training failed account=%d mailbox=%s", account_id,
                             log.quote(dest.name))

    async def _learn_messages(self, account_id: int, dest: Mailbox, uids: list[int],
                              spam: bool, via: str) -> None:
        ranges = [(u, u) for u in uids]
        infos = await self.store.messages_by_uid(dest.id, ranges)
        done: dict[str, int] = {}
        for info in infos:
            texts = await self.store.read_messages(account_id, [(info.id, self.cfg.max_size)])
            data = texts.get(info.id)
            if data is None:
                continue  # expunged meanwhile
            tokens = await asyncio.to_thread(_tokens, data, self.cfg.max_tokens)
            what = await self.store.junk_learn(account_id, info.blob_id, spam, tokens)
            done[what] = done.get(what, 0) + 1
        logger.info("junk trained account=%d class=%s mailbox=%s %s via=%s", account_id,
                    "spam" if spam else "ham", log.quote(dest.name),
                    " ".join(f"{k}={v}" for k, v in sorted(done.items())) or "messages=0", via)
