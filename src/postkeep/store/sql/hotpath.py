"""The statements of the store's hot path (IMAP commands, login, the sending quota charge of
every submitted message), compiled once per store.

Each is built with SQLAlchemy Core and compiled for the store's dialect at open
(`postkeep.store.sql.prepared` says why and how they are run). Parameter names: ``mid`` a mailbox
id, ``aid`` an account id, ``lo0/hi0...`` UID ranges, ``id0...`` id lists.

`hot_statements` keeps one set per kind of dialect for the process: compiling them runs much of
SQLAlchemy's compiler, and in a worker process forked from the server's main process (which
opened the store first) that would copy 5 MiB of pages shared with it; a `Prepared` is only
SQL text and parameter names, the same for every engine of that dialect.
"""

from __future__ import annotations

from sqlalchemy import Integer, bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from postkeep.store.api import Flag
from postkeep.store.sql.prepared import (
    BySize,
    Prepared,
    id_list,
    id_params,
    range_params,
    uid_ranges,
)
from postkeep.store.sql.rows import ACCOUNT_COLS, APP_PASSWORD_COLS, MAILBOX_COLS, MESSAGE_COLS
from postkeep.store.sql.schema import (
    account_secrets,
    accounts,
    app_passwords,
    blobs,
    envelopes,
    expunged,
    mailboxes,
    messages,
    sending_counts,
    sending_limits,
    subscriptions,
)

_BY_DIALECT: dict[tuple[str, str, str], HotStatements] = {}


def hot_statements(d: Dialect) -> HotStatements:
    """The statements compiled for `d`'s kind of dialect (see the module docstring)."""
    key = (d.name, d.driver, d.paramstyle)
    hot = _BY_DIALECT.get(key)
    if hot is None:
        hot = _BY_DIALECT[key] = HotStatements(d)
    return hot


class HotStatements:
    """See the module docstring; one instance per kind of dialect (`hot_statements`)."""

    def __init__(self, d: Dialect) -> None:
        mid, aid = bindparam("mid"), bindparam("aid")
        seen, deleted = int(Flag.SEEN), int(Flag.DELETED)

        def p(stmt: object) -> Prepared:
            return Prepared(stmt, d)  # type: ignore[arg-type]

        # accounts and mailboxes
        self.account = p(select(*ACCOUNT_COLS).where(accounts.c.id == aid))
        self.account_by_address = p(
            select(*ACCOUNT_COLS, accounts.c.address_key, accounts.c.data_key).where(
                accounts.c.address_key == bindparam("key")
            )
        )
        self.secrets_of = p(
            select(account_secrets.c.mechanism, account_secrets.c.secret).where(
                account_secrets.c.account_id == aid
            )
        )
        self.app_passwords_of = p(
            select(*APP_PASSWORD_COLS)
            .where(app_passwords.c.account_id == aid, app_passwords.c.revoked_at.is_(None))
            .order_by(app_passwords.c.id)
        )
        self.account_keys = p(
            select(accounts.c.address_key, accounts.c.data_key).where(accounts.c.id == aid)
        )
        self.mailbox = p(select(*MAILBOX_COLS).where(mailboxes.c.id == mid))
        # PostgreSQL: a writer's first statement on a mailbox (rendered without FOR UPDATE on
        # SQLite, whose writers take turns anyway)
        self.lock_mailbox = p(select(mailboxes.c.id).where(mailboxes.c.id == mid).with_for_update())
        self.mailbox_named = p(
            select(*MAILBOX_COLS).where(
                mailboxes.c.account_id == aid, mailboxes.c.name == bindparam("name")
            )
        )
        self.mailboxes_of = p(
            select(*MAILBOX_COLS).where(mailboxes.c.account_id == aid).order_by(mailboxes.c.id)
        )
        self.subscriptions_of = p(
            select(subscriptions.c.name)
            .where(subscriptions.c.account_id == aid)
            .order_by(subscriptions.c.name)
        )
        self.recent = p(
            select(mailboxes.c.first_recent_uid, mailboxes.c.uidnext).where(mailboxes.c.id == mid)
        )
        self.take_recent = p(
            update(mailboxes).where(mailboxes.c.id == mid).values(first_recent_uid=bindparam("end"))
        )
        # a mailbox's messages
        self.uids = p(
            select(messages.c.uid).where(messages.c.mailbox_id == mid).order_by(messages.c.uid)
        )
        self.keywords_used = p(
            select(messages.c.keywords)
            .distinct()
            .where(messages.c.mailbox_id == mid, messages.c.keywords != "")
        )
        self.messages_in = BySize(
            lambda n: (
                select(*MESSAGE_COLS)
                .where(messages.c.mailbox_id == mid, uid_ranges(messages.c.uid, n))
                .order_by(messages.c.uid)
            ),
            d,
            range_params,
        )
        # a page of a mailbox's messages, newest or oldest UID first (the web's message
        # list): walks the (mailbox_id, uid) unique index, never the whole mailbox
        def page(order: object) -> Prepared:
            return p(
                select(*MESSAGE_COLS)
                .where(messages.c.mailbox_id == mid)
                .order_by(order)  # type: ignore[arg-type]
                .limit(bindparam("n", type_=Integer))
                .offset(bindparam("o", type_=Integer))
            )

        self.page_desc = page(messages.c.uid.desc())
        self.page_asc = page(messages.c.uid)
        # scattered UIDs (a page of a sort order): one index seek each, where the OR of
        # single-UID ranges above walks the mailbox's index
        self.messages_uid_list = BySize(
            lambda n: (
                select(*MESSAGE_COLS)
                .where(messages.c.mailbox_id == mid, id_list(messages.c.uid, n))
                .order_by(messages.c.uid)
            ),
            d,
            id_params,
        )
        self.flags_in = BySize(
            lambda n: (
                select(messages.c.uid, messages.c.flags, messages.c.keywords, messages.c.modseq)
                .where(messages.c.mailbox_id == mid, uid_ranges(messages.c.uid, n))
                .order_by(messages.c.uid)
            ),
            d,
            range_params,
        )
        self.first_unseen = p(
            select(func.min(messages.c.uid)).where(
                messages.c.mailbox_id == mid, messages.c.flags.op("&")(seen) == 0
            )
        )
        self.changed_since = p(
            select(*MESSAGE_COLS)
            .where(messages.c.mailbox_id == mid, messages.c.modseq > bindparam("modseq"))
            .order_by(messages.c.uid)
        )
        self.expunged_since = p(
            select(expunged.c.uid)
            .where(expunged.c.mailbox_id == mid, expunged.c.modseq > bindparam("modseq"))
            .order_by(expunged.c.uid)
        )
        self.counts = p(
            select(
                func.count(),
                func.coalesce(func.sum(messages.c.flags.op("&")(seen)), 0),
                func.coalesce(func.sum(messages.c.flags.op("&")(deleted)), 0),
                func.coalesce(func.sum(messages.c.size), 0),
                func.coalesce(
                    func.sum(case((messages.c.uid >= mailboxes.c.first_recent_uid, 1), else_=0)),
                    0,
                ),
            )
            .select_from(messages.join(mailboxes))
            .where(messages.c.mailbox_id == mid)
        )
        # message contents: the inline blob (``blobs.data``, NULL for a file) with the key
        self.content_key = p(
            select(
                messages.c.blob_id,
                messages.c.content_key,
                accounts.c.address_key,
                accounts.c.data_key,
                blobs.c.data,
            )
            .select_from(messages.join(mailboxes).join(accounts).join(blobs))
            .where(messages.c.id == bindparam("msg"), mailboxes.c.account_id == aid)
        )
        self.content_keys = BySize(
            lambda n: (
                select(messages.c.id, messages.c.blob_id, messages.c.content_key, blobs.c.data)
                .select_from(messages.join(mailboxes).join(blobs))
                .where(id_list(messages.c.id, n), mailboxes.c.account_id == aid)
            ),
            d,
            id_params,
        )
        self.blob_data = p(select(blobs.c.data).where(blobs.c.id == bindparam("bid")))
        self.structures = BySize(
            lambda n: (
                select(messages.c.id, messages.c.blob_id, messages.c.content_key, blobs.c.structure)
                .select_from(messages.join(mailboxes).join(blobs))
                .where(id_list(messages.c.id, n), mailboxes.c.account_id == aid)
            ),
            d,
            id_params,
        )
        # writes (flags, expunge): run by the writer thread in its transaction
        self.next_modseq = p(
            update(mailboxes)
            .where(mailboxes.c.id == mid)
            .values(
                highestmodseq=mailboxes.c.highestmodseq + 1,
                uidnext=mailboxes.c.uidnext + bindparam("n"),
            )
            .returning(mailboxes.c.highestmodseq, mailboxes.c.uidnext)
        )
        self.set_message_flags = p(
            update(messages)
            .where(messages.c.id == bindparam("msg"))
            .values(flags=bindparam("f"), keywords=bindparam("k"), modseq=bindparam("modseq"))
        )
        removable = (messages.c.id, messages.c.uid, messages.c.size, messages.c.blob_id)
        deleted_flag = messages.c.flags.op("&")(deleted) != 0
        self.deleted = p(
            select(*removable)
            .where(messages.c.mailbox_id == mid, deleted_flag)
            .order_by(messages.c.uid)
        )
        self.deleted_in = BySize(
            lambda n: (
                select(*removable)
                .where(messages.c.mailbox_id == mid, deleted_flag, uid_ranges(messages.c.uid, n))
                .order_by(messages.c.uid)
            ),
            d,
            range_params,
        )
        self.delete_messages = BySize(
            lambda n: delete(messages).where(id_list(messages.c.id, n)), d, id_params
        )
        self.log_expunged = p(
            insert(expunged).values(
                mailbox_id=mid, uid=bindparam("uid"), modseq=bindparam("modseq")
            )
        )
        self.mailbox_owner = p(select(mailboxes.c.account_id).where(mailboxes.c.id == mid))
        used = accounts.c.used_bytes
        self.release_quota = p(
            update(accounts)
            .where(accounts.c.id == aid)
            .values(used_bytes=case((used > bindparam("n"), used - bindparam("n")), else_=0))
        )
        self.unref_blob = p(
            update(blobs)
            .where(blobs.c.id == bindparam("bid"))
            .values(refcount=blobs.c.refcount - bindparam("n"))
        )
        # (id, whether it is a file to delete after the commit)
        self.dead_blobs = BySize(
            lambda n: select(blobs.c.id, blobs.c.data.is_(None)).where(
                id_list(blobs.c.id, n), blobs.c.refcount <= 0
            ),
            d,
            id_params,
        )
        self.delete_envelopes = BySize(
            lambda n: delete(envelopes).where(id_list(envelopes.c.blob_id, n)), d, id_params
        )
        self.delete_blobs = BySize(
            lambda n: delete(blobs).where(id_list(blobs.c.id, n)), d, id_params
        )
        # sending quotas (`postkeep.store.sql.sending`): a scope's exception; one window's
        # counts raised by one message, the new totals returned
        self.sending_exception = p(
            select(sending_limits.c.limits).where(sending_limits.c.scope == bindparam("scope"))
        )
        upsert = (sqlite if d.name == "sqlite" else postgresql).insert(sending_counts).values(
            scope=bindparam("scope"), width=bindparam("width"), window=bindparam("window"),
            messages=1, recipients=bindparam("rcpts"),
        )
        self.charge_window = p(
            upsert.on_conflict_do_update(
                index_elements=["scope", "width", "window"],
                set_={"messages": sending_counts.c.messages + 1,
                      "recipients": sending_counts.c.recipients + upsert.excluded.recipients},
            ).returning(sending_counts.c.messages, sending_counts.c.recipients)
        )
