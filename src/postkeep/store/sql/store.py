"""SqlStore: `postkeep.store.api.Store` and `MailStore` on SQLAlchemy Core, for SQLite and
PostgreSQL.

The store is assembled from parts: `postkeep.store.sql.base` (engines, lifecycle, the read pool and
the single writer thread, keys), this module (delivery, domains, accounts, aliases, mailboxes and
messages), `postkeep.store.sql.security` (SASL secrets, app passwords, `get_auth`),
`postkeep.store.sql.outbound` (the outbound queue), `postkeep.store.sql.dkim` (DKIM keys),
`postkeep.store.sql.sending` (sending quotas and pauses), `postkeep.store.sql.junk` (the junk
filter's tokens and lists), `postkeep.store.sql.quarantine` (the quarantine) and
`postkeep.store.sql.twofactor` (TOTP, recovery codes, WebAuthn credentials and challenges),
`postkeep.store.sql.web` (web sessions, the login history), `postkeep.store.sql.filtering`
(the content filters' record of each stored message) and `postkeep.store.sql.webmail` (the
webmail's paged reads and counts).
Message bodies are encrypted at rest
(`postkeep.store.crypto`) in blobs: up to `postkeep.store.blobs.INLINE_MAX` octets in their
``blobs`` row, larger ones as files (`postkeep.store.blobs`); the tables are in
`postkeep.store.sql.schema`, kept up to date by `postkeep.store.sql.migrations` when the store
opens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from postkeep.addresses import address_key, canonical_address, canonical_domain
from postkeep.errors import AlreadyExists, NotFound, StoreError
from postkeep.store.api import (
    ALIAS_DEPTH,
    DEFAULT_MAILBOXES,
    PIECE_SIZE,
    Account,
    Alias,
    DeliveryResult,
    Domain,
    LocalDelivery,
    Mailbox,
    MessageInfo,
    MessageReader,
)
from postkeep.store.blobs import BlobMissing
from postkeep.store.crypto import (
    CryptoError,
    account_key_context,
    blob_plaintext_size,
    decrypt_blob,
    decrypt_range,
    message_key_context,
    new_key,
    unwrap_key,
    wrap_key,
)
from postkeep.store.events import Subscription
from postkeep.store.spool import Spool
from postkeep.store.sql.bans import BansMixin
from postkeep.store.sql.base import SqlStoreBase, create_engines
from postkeep.store.sql.dkim import DkimKeysMixin
from postkeep.store.sql.dmarc import DmarcReportsMixin
from postkeep.store.sql.filtering import FilterResultsMixin
from postkeep.store.sql.junk import JunkMixin
from postkeep.store.sql.mailops import MailboxOpsMixin
from postkeep.store.sql.outbound import OutboundQueueMixin
from postkeep.store.sql.prepared import Cursor
from postkeep.store.sql.quarantine import QuarantineMixin
from postkeep.store.sql.rows import (
    ACCOUNT_COLS,
    MESSAGE_COLS,
    account_from_row,
    chunks,
    mailbox_from_row,
    mailbox_name,
    message_from_row,
)
from postkeep.store.sql.schema import (
    account_secrets,
    accounts,
    aliases,
    app_passwords,
    blobs,
    domains,
    envelopes,
    mailboxes,
    messages,
    send_as,
    sending_counts,
    sending_limits,
    subscriptions,
)
from postkeep.store.sql.security import AccountSecurityMixin, check_secrets
from postkeep.store.sql.sending import SendingQuotasMixin
from postkeep.store.sql.tlsrpt import TlsReportsMixin
from postkeep.store.sql.twofactor import TwoFactorMixin
from postkeep.store.sql.web import WebMixin
from postkeep.store.sql.webmail import WebmailReadsMixin

__all__ = ["ALIAS_DEPTH", "SqlStore", "create_engines", "split_address"]

T = TypeVar("T")


def split_address(address: str, *, catch_all: bool = False) -> tuple[str, str, str]:
    """(address as stored, lookup key, domain), in the canonical forms of `postkeep.addresses`
    (NFC local part, IDNA U-label domain; the key's local part lower-cased)."""
    a = address.strip()
    local, sep, domain = a.rpartition("@")
    if not sep or not domain or (not local and not catch_all) or any(c.isspace() for c in a):
        raise StoreError(f"invalid address {address!r}")
    stored = canonical_address(a)
    return stored, address_key(stored), stored.rpartition("@")[2]


INLINE_READ_BYTES = 256 << 10  # `read_messages` of at most this much skips the thread hop


class _BlobReader:
    """`MessageReader` over an open blob file, or an inline blob's bytes. A file's pieces are
    read and decrypted on the read pool (the blob's chunks are 64 KiB, PIECE_SIZE a multiple of
    them, so no chunk is decrypted twice); an inline blob (at most INLINE_MAX octets, already in
    memory) is decrypted right here, which costs less than the hop to the pool."""

    def __init__(self, pool: Executor, source: BinaryIO | bytes, key: bytes, size: int) -> None:
        self._pool = pool
        self._source = source
        self._key = key
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def pieces(self, start: int, end: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        pos, end = max(0, start), min(end, self._size)
        while pos < end:
            stop = min(end, (pos // PIECE_SIZE + 1) * PIECE_SIZE)
            if isinstance(self._source, bytes):
                piece = decrypt_range(self._source, self._key, pos, stop - pos)
            else:
                piece = await loop.run_in_executor(
                    self._pool, decrypt_range, self._source, self._key, pos, stop - pos
                )
            if len(piece) != stop - pos:
                raise CryptoError("blob shorter than its header says")
            yield piece
            pos = stop

    def close(self) -> None:
        if not isinstance(self._source, bytes):
            self._source.close()


def _alias(r: Sequence[Any]) -> Alias:
    return Alias(r[0], r[1], tuple(json.loads(r[2])))


class SqlStore(
    QuarantineMixin, MailboxOpsMixin, AccountSecurityMixin, TlsReportsMixin, DmarcReportsMixin,
    OutboundQueueMixin, DkimKeysMixin, SendingQuotasMixin, BansMixin, JunkMixin, TwoFactorMixin,
    WebMixin, FilterResultsMixin, WebmailReadsMixin,
    SqlStoreBase,
):
    """The store on SQLite (default) or PostgreSQL; see the module docstring for the design.

    Construct, then ``await open()``; ``await close()`` drains pending writes. `events` is the
    bus MailboxEvents are published on (one is created if not given).
    """

    # -- delivery ----------------------------------------------------------------------------------

    def new_spool(self) -> Spool:
        """A spool in ``<data_dir>/blobs/tmp`` (see the Store protocol)."""
        self._check_open()
        try:
            return Spool(self._blobs.tmp)
        except OSError as exc:
            raise StoreError(f"cannot make a spool file: {exc}") from exc

    async def deliver(self, delivery: LocalDelivery) -> DeliveryResult:
        """Store a message for its recipients, durably, group-committed (see the Store protocol).

        Cancelling the caller does not undo a delivery the writer has already taken.
        """
        self._check_open()
        account_ids = tuple(dict.fromkeys(delivery.account_ids))
        if not account_ids:
            raise StoreError("a delivery needs at least one recipient account")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DeliveryResult] = loop.create_future()
        assert self._writer_thread is not None
        mailbox = mailbox_name(delivery.mailbox_name)
        self._writer_thread.submit_delivery(delivery, account_ids, mailbox, future, loop)
        return await future

    async def deliver_all(self, deliveries: Sequence[LocalDelivery]) -> list[DeliveryResult]:
        """Store several messages in ONE transaction: all of them, or none (RFC 3502
        MULTIAPPEND: a failure leaves nothing appended). Results in the order given."""
        self._check_open()
        if not deliveries:
            return []
        loop = asyncio.get_running_loop()
        items = []
        for delivery in deliveries:
            account_ids = tuple(dict.fromkeys(delivery.account_ids))
            if not account_ids:
                raise StoreError("a delivery needs at least one recipient account")
            future: asyncio.Future[DeliveryResult] = loop.create_future()
            items.append((delivery, account_ids, mailbox_name(delivery.mailbox_name), future))
        assert self._writer_thread is not None
        self._writer_thread.submit_group(items, loop)
        return list(await asyncio.gather(*(f for *_, f in items)))

    def subscribe(self, account_id: int | None, maxsize: int | None = None) -> Subscription:
        """Shortcut for ``store.events.subscribe(...)``."""
        return self.events.subscribe(account_id, maxsize)

    # -- domains -----------------------------------------------------------------------------------

    async def add_domain(self, name: str) -> Domain:
        name = canonical_domain(name)
        if not name or "@" in name or any(c.isspace() for c in name):
            raise StoreError(f"invalid domain name {name!r}")

        def fn(conn: Connection) -> Domain:
            if conn.execute(select(domains.c.id).where(domains.c.name == name)).first():
                raise AlreadyExists(f"domain {name} exists already")
            try:
                stmt = insert(domains).values(name=name, created=time.time())
                return Domain(conn.execute(stmt.returning(domains.c.id)).scalar_one(), name)
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"domain {name} exists already") from None

        return await self._write(fn)

    async def get_domain(self, name: str) -> Domain | None:
        key = canonical_domain(name)
        q = select(domains.c.id, domains.c.name).where(domains.c.name == key)
        row = await self._read(lambda conn: conn.execute(q).first())
        return Domain(row[0], row[1]) if row else None

    async def list_domains(self) -> list[Domain]:
        q = select(domains.c.id, domains.c.name).order_by(domains.c.name)
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [Domain(r[0], r[1]) for r in rows]

    async def remove_domain(self, name: str) -> None:
        key = canonical_domain(name)

        def fn(conn: Connection) -> None:
            domain_id = conn.execute(select(domains.c.id).where(domains.c.name == key)).scalar()
            if domain_id is None:
                raise NotFound(f"domain {key} does not exist")
            n_acc = conn.execute(
                select(func.count()).where(accounts.c.domain_id == domain_id)
            ).scalar_one()
            n_ali = conn.execute(
                select(func.count()).where(aliases.c.domain_id == domain_id)
            ).scalar_one()
            if n_acc or n_ali:
                raise StoreError(f"domain {key} still has {n_acc} account(s) and {n_ali} alias(es)")
            conn.execute(delete(domains).where(domains.c.id == domain_id))

        await self._write(fn)

    # -- accounts ----------------------------------------------------------------------------------

    @staticmethod
    def _domain_id(conn: Connection, domain: str) -> int:
        domain_id = conn.execute(select(domains.c.id).where(domains.c.name == domain)).scalar()
        if domain_id is None:
            raise NotFound(f"domain {domain} is not a local domain")
        return int(domain_id)

    async def add_account(
        self,
        address: str,
        password_hash: str,
        quota_bytes: int = 0,
        secrets: Mapping[str, str] | None = None,
    ) -> Account:
        """Create the account, its wrapped data key, its DEFAULT_MAILBOXES (RFC 6154) and its
        SASL mechanism `secrets` (sealed under the data key), in one transaction."""
        stored, key, domain = split_address(address)
        if quota_bytes < 0:
            raise StoreError("quota_bytes must be >= 0")
        clean = check_secrets(secrets)

        def fn(conn: Connection) -> Account:
            domain_id = self._domain_id(conn, domain)
            if conn.execute(select(accounts.c.id).where(accounts.c.address_key == key)).first():
                raise AlreadyExists(f"account {stored} exists already")
            if conn.execute(select(aliases.c.id).where(aliases.c.source_key == key)).first():
                raise AlreadyExists(f"{stored} is an alias")
            data_key = new_key()
            wrapped = wrap_key(self._master, data_key, account_key_context(key))
            stmt = (
                insert(accounts)
                .values(
                    address=stored,
                    address_key=key,
                    domain_id=domain_id,
                    password_hash=password_hash,
                    quota_bytes=quota_bytes,
                    used_bytes=0,
                    data_key=wrapped,
                    disabled=False,
                    created=time.time(),
                    app_passwords_only=False,
                )
                .returning(accounts.c.id)
            )
            try:
                account_id = int(conn.execute(stmt).scalar_one())
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"account {stored} exists already") from None
            validities = self._allocate_uidvalidity(conn, len(DEFAULT_MAILBOXES))
            conn.execute(
                insert(mailboxes),
                [
                    {
                        "account_id": account_id,
                        "name": name,
                        "special_use": use.value if use else None,
                        "uidvalidity": v,
                        "uidnext": 1,
                        "highestmodseq": 1,
                    }
                    for (name, use), v in zip(DEFAULT_MAILBOXES, validities, strict=True)
                ],
            )
            conn.execute(
                insert(subscriptions),
                [{"account_id": account_id, "name": name} for name, _ in DEFAULT_MAILBOXES],
            )
            self._put_secrets(conn, account_id, data_key, clean)
            return Account(account_id, stored, domain_id, password_hash, quota_bytes, 0, False)

        return await self._write(fn)

    async def get_account(self, address: str) -> Account | None:
        key = address_key(address)
        q = select(*ACCOUNT_COLS).where(accounts.c.address_key == key)
        row = await self._read(lambda conn: conn.execute(q).first())
        return account_from_row(row) if row else None

    async def get_account_by_id(self, account_id: int) -> Account | None:
        hot = self.hot
        row = await self._read_raw(lambda cur: cur.first(hot.account, aid=account_id))
        return account_from_row(row) if row else None

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        q = select(*ACCOUNT_COLS).order_by(accounts.c.address_key)
        if domain is not None:
            q = q.join(domains).where(domains.c.name == canonical_domain(domain))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [account_from_row(r) for r in rows]

    async def _update_account(self, address: str, **values: Any) -> None:
        key = address_key(address)
        stmt = update(accounts).where(accounts.c.address_key == key).values(**values)

        def fn(conn: Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise NotFound(f"account {address} does not exist")

        await self._write(fn)

    async def set_password(
        self, address: str, password_hash: str, secrets: Mapping[str, str] | None = None
    ) -> None:
        """Replace the password hash and, in the same transaction, ALL mechanism secrets."""
        key = address_key(address)
        clean = check_secrets(secrets)
        stmt = (
            update(accounts)
            .where(accounts.c.address_key == key)
            .values(password_hash=password_hash)
            .returning(accounts.c.id, accounts.c.address_key, accounts.c.data_key)
        )

        def fn(conn: Connection) -> None:
            row = conn.execute(stmt).first()
            if row is None:
                raise NotFound(f"account {address} does not exist")
            account_id, address_key, wrapped = row
            conn.execute(delete(account_secrets).where(account_secrets.c.account_id == account_id))
            self._put_secrets(conn, account_id, self._data_key(address_key, wrapped), clean)

        await self._write(fn)

    async def set_quota(self, address: str, quota_bytes: int) -> None:
        if quota_bytes < 0:
            raise StoreError("quota_bytes must be >= 0")
        await self._update_account(address, quota_bytes=quota_bytes)

    async def set_disabled(self, address: str, disabled: bool) -> None:
        """Disable or re-enable an account (not in the Store protocol; for the admin tools)."""
        await self._update_account(address, disabled=disabled)

    async def remove_account(self, address: str) -> None:
        """Delete the account's rows; blobs whose last message row went are deleted after commit."""
        key = address_key(address)

        def fn(conn: Connection) -> list[str]:
            # lock the account row first, as deliveries do (account, then mailboxes): no deadlock
            account_id = conn.execute(
                select(accounts.c.id).where(accounts.c.address_key == key).with_for_update()
            ).scalar()
            if account_id is None:
                raise NotFound(f"account {address} does not exist")
            boxes = select(mailboxes.c.id).where(mailboxes.c.account_id == account_id)
            refs = conn.execute(
                select(messages.c.blob_id, func.count())
                .where(messages.c.mailbox_id.in_(boxes.scalar_subquery()))
                .group_by(messages.c.blob_id)
            ).all()
            conn.execute(delete(messages).where(messages.c.mailbox_id.in_(boxes.scalar_subquery())))
            conn.execute(delete(mailboxes).where(mailboxes.c.account_id == account_id))
            conn.execute(delete(subscriptions).where(subscriptions.c.account_id == account_id))
            conn.execute(delete(account_secrets).where(account_secrets.c.account_id == account_id))
            conn.execute(delete(app_passwords).where(app_passwords.c.account_id == account_id))
            conn.execute(delete(send_as).where(send_as.c.account_id == account_id))
            scope = f"a:{account_id}"  # its sending quota's counts and exception
            conn.execute(delete(sending_counts).where(sending_counts.c.scope == scope))
            conn.execute(delete(sending_limits).where(sending_limits.c.scope == scope))
            self._forget_junk(conn, account_id)
            conn.execute(delete(accounts).where(accounts.c.id == account_id))
            if not refs:
                return []
            conn.execute(
                update(blobs)
                .where(blobs.c.id == bindparam("bid"))
                .values(refcount=blobs.c.refcount - bindparam("n")),
                [{"bid": blob_id, "n": n} for blob_id, n in refs],
            )
            dead: list[str] = []
            files: list[str] = []  # the dead blobs that are files (inline ones go with the rows)
            for chunk in chunks([blob_id for blob_id, _ in refs]):
                for blob_id, is_file in conn.execute(
                    select(blobs.c.id, blobs.c.data.is_(None)).where(
                        blobs.c.id.in_(chunk), blobs.c.refcount <= 0
                    )
                ):
                    dead.append(blob_id)
                    if is_file:
                        files.append(blob_id)
            for chunk in chunks(dead):
                conn.execute(delete(envelopes).where(envelopes.c.blob_id.in_(chunk)))
                conn.execute(delete(blobs).where(blobs.c.id.in_(chunk)))
            return files

        def after(files: list[str]) -> None:
            self._blobs.delete_many(files)  # an admin command: gone when it returns

        await self._write(fn, after)

    # -- aliases -----------------------------------------------------------------------------------

    async def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        """Add an alias `local@domain` or catch-all `@domain` (the domain must be local)."""
        stored, key, domain = split_address(source, catch_all=True)
        clean = list(dict.fromkeys(split_address(t)[0] for t in targets))
        if not clean:
            raise StoreError("an alias needs at least one target")

        def fn(conn: Connection) -> Alias:
            domain_id = self._domain_id(conn, domain)
            if conn.execute(select(aliases.c.id).where(aliases.c.source_key == key)).first():
                raise AlreadyExists(f"alias {stored} exists already")
            if conn.execute(select(accounts.c.id).where(accounts.c.address_key == key)).first():
                raise AlreadyExists(f"{stored} is an account")
            stmt = (
                insert(aliases)
                .values(
                    source=stored,
                    source_key=key,
                    domain_id=domain_id,
                    targets=json.dumps(clean),
                    created=time.time(),
                )
                .returning(aliases.c.id)
            )
            try:
                return Alias(int(conn.execute(stmt).scalar_one()), stored, tuple(clean))
            except sa_exc.IntegrityError:
                raise AlreadyExists(f"alias {stored} exists already") from None

        return await self._write(fn)

    async def list_aliases(self, domain: str | None = None) -> list[Alias]:
        q = select(aliases.c.id, aliases.c.source, aliases.c.targets).order_by(aliases.c.source_key)
        if domain is not None:
            q = q.join(domains).where(domains.c.name == canonical_domain(domain))
        rows = await self._read(lambda conn: conn.execute(q).all())
        return [_alias(r) for r in rows]

    async def remove_alias(self, source: str) -> None:
        key = address_key(source)

        def fn(conn: Connection) -> None:
            if conn.execute(delete(aliases).where(aliases.c.source_key == key)).rowcount == 0:
                raise NotFound(f"alias {source} does not exist")

        await self._write(fn)

    async def resolve_local(self, address: str) -> list[Account] | None:
        """See the Store protocol. Targets expand through accounts and exact aliases only (a
        catch-all applies to the address looked up, not to alias targets); loops are cut by
        remembering visited aliases, depth by ALIAS_DEPTH."""
        key = address_key(address)
        local, sep, domain = key.rpartition("@")
        if not sep or not local or not domain:
            return None
        return await self._read(lambda conn: self._resolve(conn, key, domain))

    def _resolve(self, conn: Connection, key: str, domain: str) -> list[Account] | None:
        if conn.execute(select(domains.c.id).where(domains.c.name == domain)).first() is None:
            return None
        account_q = select(*ACCOUNT_COLS).where(accounts.c.address_key == bindparam("k"))
        alias_q = select(aliases.c.targets).where(aliases.c.source_key == bindparam("k"))
        row = conn.execute(account_q, {"k": key}).first()
        if row is not None:
            return [account_from_row(row)]
        seen_aliases: set[str] = set()
        found: dict[int, Account] = {}

        def expand(source: str, depth: int) -> bool:
            targets = conn.execute(alias_q, {"k": source}).scalar()
            if targets is None:
                return False
            seen_aliases.add(source)
            for target in json.loads(targets):
                tkey = address_key(target)
                acc = conn.execute(account_q, {"k": tkey}).first()
                if acc is not None:
                    found.setdefault(acc[0], account_from_row(acc))
                elif depth < ALIAS_DEPTH and tkey not in seen_aliases:
                    expand(tkey, depth + 1)
            return True

        if expand(key, 1) or expand(f"@{domain}", 1):
            return list(found.values())
        return None

    # -- mailboxes and messages --------------------------------------------------------------------

    async def list_mailboxes(self, account_id: int) -> list[Mailbox]:
        hot = self.hot
        rows = await self._read_raw(lambda cur: cur.all(hot.mailboxes_of, aid=account_id))
        return [mailbox_from_row(r) for r in rows]

    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None:
        hot, stored = self.hot, mailbox_name(name)
        row = await self._read_raw(
            lambda cur: cur.first(hot.mailbox_named, aid=account_id, name=stored)
        )
        return mailbox_from_row(row) if row else None

    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]:
        q = select(*MESSAGE_COLS).where(messages.c.mailbox_id == mailbox_id)
        rows = await self._read(lambda conn: conn.execute(q.order_by(messages.c.uid)).all())
        return [message_from_row(r) for r in rows]

    def _content_key(
        self, cur: Cursor, account_id: int, message_id: int
    ) -> tuple[str, bytes, bytes | None]:
        """(blob id, content key, the blob if inline else None) of the account's message."""
        row = cur.first(self.hot.content_key, msg=message_id, aid=account_id)
        if row is None:
            raise NotFound(f"message {message_id} not found")
        blob_id, wrapped, address_key, data_key, inline = row
        key = unwrap_key(
            self._data_key(address_key, bytes(data_key)),
            bytes(wrapped),
            message_key_context(account_id, blob_id),
        )
        return blob_id, key, None if inline is None else bytes(inline)

    async def read_message(self, account_id: int, message_id: int) -> bytes:
        """The decrypted message (every chunk authenticated); NotFound if not the account's."""

        def fn(cur: Cursor) -> bytes:
            blob_id, key, inline = self._content_key(cur, account_id, message_id)
            return decrypt_blob(inline if inline is not None else self._blobs.read(blob_id), key)

        return await self._read_raw(fn, inline=False)

    async def read_messages(
        self,
        account_id: int,
        wanted: Sequence[tuple[int, int | None]],
        *,
        expected_bytes: int | None = None,
    ) -> dict[int, bytes]:
        """Several messages in one read: (message id, None for all of it or the length of the
        prefix wanted, e.g. the header) -> bytes. Messages gone meanwhile are left out; the
        caller bounds the total size, and says it in `expected_bytes` when it knows it (up to
        INLINE_READ_BYTES are read without a thread hop on SQLite)."""

        hot = self.hot

        def fn(cur: Cursor) -> dict[int, bytes]:
            out: dict[int, bytes] = {}
            acc = cur.first(hot.account_keys, aid=account_id)
            if acc is None:
                return out
            data_key = self._data_key(acc[0], bytes(acc[1]))
            found: dict[int, tuple[str, bytes, bytes | None]] = {}
            for part in chunks([m for m, _ in wanted], 256):
                stmt, params = hot.content_keys(part)
                for mid, blob_id, wrapped, inline in cur.all(stmt, aid=account_id, **params):
                    found[mid] = (blob_id, bytes(wrapped), inline)
            for message_id, length in wanted:
                if message_id not in found:
                    continue  # expunged by another session meanwhile
                blob_id, wrapped, inline = found[message_id]
                key = unwrap_key(data_key, wrapped, message_key_context(account_id, blob_id))
                if inline is not None:  # read with its row
                    blob = bytes(inline)
                    out[message_id] = (
                        decrypt_blob(blob, key)
                        if length is None
                        else decrypt_range(blob, key, 0, length)
                    )
                    continue
                try:
                    if length is None:
                        out[message_id] = decrypt_blob(self._blobs.read(blob_id), key)
                    else:
                        with self._blobs.open(blob_id) as f:
                            out[message_id] = decrypt_range(f, key, 0, length)
                except BlobMissing:
                    continue  # expunged (and its blob deleted) meanwhile
            return out

        small = expected_bytes is not None and expected_bytes <= INLINE_READ_BYTES
        return await self._read_raw(fn, inline=small)

    async def open_message(self, account_id: int, message_id: int) -> MessageReader:
        """The blob opened and its content key unwrapped in one read (on the event loop's
        thread on SQLite: a row, a key and a 24-octet header, or an inline blob of at most
        INLINE_MAX octets); NotFound if it is gone."""

        def fn(cur: Cursor) -> _BlobReader:
            blob_id, key, inline = self._content_key(cur, account_id, message_id)
            assert self._pool is not None
            if inline is not None:
                return _BlobReader(self._pool, inline, key, blob_plaintext_size(inline))
            try:
                file = self._blobs.open(blob_id)
            except BlobMissing:
                raise NotFound(f"message {message_id} not found") from None
            try:
                size = blob_plaintext_size(file)
            except BaseException:
                file.close()
                raise
            return _BlobReader(self._pool, file, key, size)

        return await self._read_raw(fn)
