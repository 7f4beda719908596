"""The webmail's side of the store: the account's special-use mailboxes (RFC 6154: \\Sent and
\\Drafts, made when missing), its own messages named by ``MAILBOXID/UID``, and drafts saved,
replaced and removed.

Every id a URL or a form names is looked up among the logged-in account's own mailboxes
(`own`): one of another account, or one that does not exist, is the same None (the pages
answer 404). A draft is a message with \\Draft (RFC 9051 §2.3.2) in the \\Drafts mailbox: a
new version is stored first, then the old one flagged \\Deleted and expunged (RFC 9051
§6.4.3), so a failure leaves the old version rather than none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from postkeep.errors import AlreadyExists
from postkeep.store.api import (
    Account,
    Envelope,
    Flag,
    LocalDelivery,
    Mailbox,
    MailStore,
    MessageInfo,
    SpecialUse,
)

MAX_ID = 18  # digits of a mailbox id or a UID


@dataclass(frozen=True, slots=True)
class Own:
    """One of the account's messages: its mailbox, its row and its text."""

    box: Mailbox
    info: MessageInfo
    data: bytes

    @property
    def ref(self) -> str:
        return f"{self.box.id}/{self.info.uid}"

    @property
    def is_draft(self) -> bool:
        return self.box.special_use == SpecialUse.DRAFTS and bool(self.info.flags & Flag.DRAFT)


class OverQuota(Exception):
    """The account's quota has no room for the message."""


def parse_ref(ref: str) -> tuple[int, int] | None:
    """``MAILBOXID/UID`` as two numbers, None if it is not that."""
    box, _, uid = ref.partition("/")
    if not (box.isdigit() and uid.isdigit() and len(box) <= MAX_ID and len(uid) <= MAX_ID):
        return None
    return int(box), int(uid)


class Mailboxes:
    """The account's mailboxes and messages as the compose pages use them."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def special(self, account: Account, use: SpecialUse, name: str) -> Mailbox:
        """The mailbox with the special use `use`, else the one named `name`, else a new
        one of that name and use."""
        boxes = await self.store.list_mailboxes(account.id)
        for box in boxes:
            if box.special_use == use:
                return box
        for box in boxes:
            if box.name == name:
                return box
        try:
            return await self.store.create_mailbox(account.id, name, use.value)
        except AlreadyExists:  # made meanwhile (another request, an IMAP client)
            found = await self.store.get_mailbox(account.id, name)
            assert found is not None
            return found

    async def inbox(self, account: Account) -> Mailbox | None:
        return await self.store.get_mailbox(account.id, "INBOX")

    async def own(self, account: Account, ref: str) -> Own | None:
        """The account's message `ref` names, None if it names none of its own."""
        ids = parse_ref(ref)
        if ids is None:
            return None
        box = await self.store.get_mailbox_by_id(ids[0])
        if box is None or box.account_id != account.id:
            return None
        found = await self.store.messages_by_uid(box.id, [(ids[1], ids[1])])
        if not found:
            return None
        texts = await self.store.read_messages(account.id, [(found[0].id, None)])
        data = texts.get(found[0].id)
        return None if data is None else Own(box, found[0], data)

    async def append(self, account: Account, box: Mailbox, data: bytes, flags: Flag,
                     ip: str) -> int:
        """Store `data` in `box` with `flags` (as IMAP APPEND does); its UID. OverQuota when
        the account's quota has no room for it."""
        fresh = await self.store.get_account_by_id(account.id)
        if fresh is not None and fresh.quota_bytes and (
                fresh.used_bytes + len(data) > fresh.quota_bytes):
            raise OverQuota
        envelope = Envelope("", "", [], ip, "", time.time())
        result = await self.store.deliver(
            LocalDelivery(envelope, [account.id], data, flags, box.name))
        return result.delivered[0].uid

    async def remove(self, account: Account, message: Own) -> None:
        """Flag the message \\Deleted and expunge it (only it: RFC 4315 §2.1's UID EXPUNGE)."""
        uids = [(message.info.uid, message.info.uid)]
        await self.store.set_flags(account.id, message.box.id, uids, "add", Flag.DELETED)
        await self.store.expunge(account.id, message.box.id, uids)
