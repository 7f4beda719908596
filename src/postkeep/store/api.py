"""The store interface: what the rest of postkeep may ask of persistent state.

Owns: domains, accounts, aliases, mailboxes, messages (IMAP UID/UIDVALIDITY/MODSEQ), quota usage,
message blobs (encrypted at rest), account credentials (argon2id password hash, per-SASL-mechanism
secrets, app passwords) and the outbound queue. Callers never see SQL, file paths or keys.

Exposure: the store is reached only by authenticated code paths and by delivery; it trusts its
callers to have validated addresses (lower-cased domain, syntax checked) but re-checks uniqueness
and referential integrity itself.

Every method is a coroutine (but `MailStore.subscribe` and `Store.new_spool`); implementations
run blocking I/O in threads. `deliver()` returns only once the blob and the metadata are
durable (fsync'd files, committed transaction): that is the promise behind SMTP's `250` after
DATA.

`Store` is what SMTP, delivery, authentication and the CLI use; `MailStore` extends it with the
mailbox operations IMAP needs (snapshots, MODSEQ changes, flags, expunge, copy and move, mailbox
management, subscriptions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from postkeep.store.spool import MessageData, Spool

if TYPE_CHECKING:
    from postkeep.store.events import Subscription
from postkeep.store.records import (  # re-exported: callers import them from here
    ALIAS_DEPTH,
    APP_PASSWORD_SCOPES,
    DEFAULT_MAILBOXES,
    DELIMITER,
    MAX_APP_PASSWORDS,
    MAX_WEBAUTHN_CREDENTIALS,
    PIECE_SIZE,
    QUARANTINE_MAILBOX,
    WEB_DONE,
    WEB_SECOND_FACTOR,
    Account,
    Alias,
    AppPassword,
    AuthRecord,
    Ban,
    Changes,
    CopyResult,
    Delivered,
    DeliveryResult,
    DkimKey,
    DmarcFeedback,
    DmarcResultCount,
    Domain,
    DsnRecipient,
    Envelope,
    FilterLine,
    FilterReport,
    Flag,
    FlagChange,
    JunkCounts,
    JunkListEntry,
    JunkLookup,
    LocalDelivery,
    LoginRecord,
    Mailbox,
    MailboxCounts,
    MailboxEvent,
    MessageInfo,
    MessageReader,
    OverQuota,
    QuarantineEntry,
    QuarantineNote,
    QueueEntry,
    QueueNotice,
    QueueRecipient,
    SendingLimits,
    SendingPause,
    SendingUsage,
    Snapshot,
    SpecialUse,
    TlsResultCount,
    TotpState,
    TwoFactorStatus,
    WebAuthnChallenge,
    WebAuthnCredential,
    WebSession,
)

__all__ = [
    "ALIAS_DEPTH",
    "APP_PASSWORD_SCOPES",
    "DEFAULT_MAILBOXES",
    "DELIMITER",
    "MAX_APP_PASSWORDS",
    "MAX_WEBAUTHN_CREDENTIALS",
    "PIECE_SIZE",
    "QUARANTINE_MAILBOX",
    "WEB_DONE",
    "WEB_SECOND_FACTOR",
    "Account",
    "Alias",
    "AppPassword",
    "AuthRecord",
    "Ban",
    "Changes",
    "CopyResult",
    "Delivered",
    "DeliveryResult",
    "DkimKey",
    "DmarcFeedback",
    "DmarcResultCount",
    "Domain",
    "DsnRecipient",
    "Envelope",
    "FilterLine",
    "FilterReport",
    "Flag",
    "FlagChange",
    "JunkCounts",
    "JunkListEntry",
    "JunkLookup",
    "LocalDelivery",
    "LoginRecord",
    "MailStore",
    "Mailbox",
    "MailboxCounts",
    "MailboxEvent",
    "MessageInfo",
    "MessageReader",
    "OverQuota",
    "QuarantineEntry",
    "QuarantineNote",
    "QueueEntry",
    "QueueNotice",
    "QueueRecipient",
    "SendingLimits",
    "SendingPause",
    "SendingUsage",
    "Snapshot",
    "SpecialUse",
    "Store",
    "TlsResultCount",
    "TotpState",
    "TwoFactorStatus",
    "WebAuthnChallenge",
    "WebAuthnCredential",
    "WebSession",
]


class Store(Protocol):
    """The store API. See `postkeep.store.sql.store.SqlStore` for the implementation."""

    async def open(self) -> None:
        """Connect, run pending migrations, start the group-commit writer."""

    async def close(self) -> None:
        """Drain pending writes and release connections."""

    # -- domains ---------------------------------------------------------------------------------
    async def add_domain(self, name: str) -> Domain: ...
    async def get_domain(self, name: str) -> Domain | None: ...
    async def list_domains(self) -> list[Domain]: ...
    async def remove_domain(self, name: str) -> None:
        """Remove a domain; refuses (StoreError) while it has accounts or aliases."""

    # -- accounts --------------------------------------------------------------------------------
    async def add_account(
        self,
        address: str,
        password_hash: str,
        quota_bytes: int = 0,
        secrets: Mapping[str, str] | None = None,
    ) -> Account:
        """Create the account, its data key and its default mailboxes (DEFAULT_MAILBOXES).

        `secrets` are the per-SASL-mechanism secrets derived from the password (mechanism name →
        secret); they are stored encrypted under the account's data key.
        """

    async def get_account(self, address: str) -> Account | None:
        """Look up by address, case-insensitively on the whole address."""

    async def get_account_by_id(self, account_id: int) -> Account | None: ...
    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...
    async def set_password(
        self, address: str, password_hash: str, secrets: Mapping[str, str] | None = None
    ) -> None:
        """Replace the password hash and ALL stored mechanism secrets (None: none are kept)."""

    async def set_quota(self, address: str, quota_bytes: int) -> None: ...
    async def set_app_passwords_only(self, address: str, flag: bool) -> None:
        """When set, only app passwords (not the account password) authenticate mail protocols."""
    async def remove_account(self, address: str) -> None:
        """Remove the account, its mailboxes and messages; delete blobs no longer referenced."""

    # -- authentication --------------------------------------------------------------------------
    async def get_auth(self, address: str) -> AuthRecord | None:
        """Account, mechanism secrets and active app passwords in one read (None: no account)."""

    async def add_app_password(
        self, address: str, name: str, password_hash: str, scopes: Sequence[str]
    ) -> AppPassword:
        """Add an app password; AlreadyExists if a non-revoked one has that name."""

    async def list_app_passwords(
        self, address: str, include_revoked: bool = False
    ) -> list[AppPassword]: ...
    async def revoke_app_password(self, address: str, name: str) -> None:
        """Revoke the active app password `name`; NotFound if there is none."""

    async def touch_app_password(self, app_password_id: int, when: float) -> None:
        """Record a use (batched, fire-and-forget: returns before the write is committed)."""

    # -- two-factor authentication (postkeep.auth.totp, postkeep.auth.webauthn) -------------------
    # Each change that turns 2FA on (a TOTP confirmed, a first passkey) or off (the last one
    # gone) sets or restores `Account.app_passwords_only` in its own transaction.
    async def two_factor_status(self, address: str) -> TwoFactorStatus:
        """NotFound for an unknown account."""

    async def begin_totp(self, address: str, secret: str, now: float) -> None:
        """Keep a new, unconfirmed TOTP secret (sealed), replacing an unconfirmed one;
        AlreadyExists while a confirmed one is on."""

    async def get_totp(self, address: str) -> TotpState | None:
        """The account's TOTP secret and state, None if it has none."""

    async def accept_totp_step(self, address: str, step: int, now: float,
                               recovery_codes: Sequence[str] | None = None) -> bool:
        """Record `step` as used if it is after the last one used (False: a replay, nothing
        changed). With `recovery_codes` (the confirmation): the TOTP is confirmed and these
        codes replace the account's, in the same transaction."""

    async def disable_totp(self, address: str) -> bool:
        """Remove the TOTP secret (False if there was none)."""

    async def set_recovery_codes(self, address: str, codes: Sequence[str], now: float) -> None:
        """Replace the account's recovery codes (kept as keyed hashes only)."""

    async def use_recovery_code(self, address: str, code: str, now: float) -> bool:
        """Mark the unused code `code` used; False if the account has no such unused code."""

    async def disable_two_factor(self, address: str) -> bool:
        """Remove every second factor and recovery code (an operator's reset); False if the
        account had none."""

    async def webauthn_user_handle(self, address: str) -> bytes:
        """The account's opaque WebAuthn user handle (made at the first call)."""

    async def find_webauthn_credential(
        self, credential_id: bytes
    ) -> tuple[WebAuthnCredential, Account, bytes] | None:
        """The credential, its account and the account's user handle."""

    async def add_webauthn_credential(
        self, address: str, credential_id: bytes, public_key: bytes, sign_count: int,
        transports: Sequence[str], name: str, now: float,
    ) -> WebAuthnCredential:
        """AlreadyExists for a known credential id; StoreError beyond
        MAX_WEBAUTHN_CREDENTIALS."""

    async def list_webauthn_credentials(self, address: str) -> list[WebAuthnCredential]: ...
    async def remove_webauthn_credential(self, address: str, credential: int) -> None:
        """Remove the account's credential (by `WebAuthnCredential.id`); NotFound."""

    async def record_webauthn_use(self, credential: int, seen_count: int, new_count: int,
                                  now: float) -> bool:
        """Store the signature counter `new_count` if the stored one is still `seen_count`
        (False: another login moved it meanwhile; nothing changed)."""

    async def put_webauthn_challenge(self, challenge: WebAuthnChallenge, session: bytes,
                                     now: float) -> None:
        """Keep a challenge for the session (`session`: a 32-byte hash of its id); drops
        expired challenges and the session's oldest beyond a few."""

    async def take_webauthn_challenge(self, challenge: bytes, purpose: str, session: bytes,
                                      now: float) -> WebAuthnChallenge | None:
        """Remove and return the session's unexpired challenge (each is taken once)."""

    # -- outbound queue ----------------------------------------------------------------------------
    async def enqueue_outbound(
        self, envelope: Envelope, recipients: Sequence[DsnRecipient], data: MessageData
    ) -> str:
        """Queue a message for remote `recipients`, durably (encrypted blob fsync'd, row
        committed) before returning its queue id."""

    async def grant_send_as(self, address: str, sender: str) -> None:
        """Let the account send as another address on submission (AlreadyExists if granted)."""

    async def revoke_send_as(self, address: str, sender: str) -> None:
        """NotFound if there was no such grant."""

    async def list_send_as(self, address: str) -> list[str]: ...

    async def list_outbound(self) -> list[QueueEntry]: ...
    async def read_outbound(self, queue_id: str) -> bytes:
        """The decrypted queued message; NotFound if no such queue entry."""

    async def get_outbound(self, queue_id: str) -> QueueEntry:
        """One queue entry; NotFound if there is none."""

    async def claim_outbound(
        self, owner: str, now: float, lease: float, limit: int, queue_id: str | None = None
    ) -> list[QueueEntry]:
        """Claim up to `limit` due entries (not held, `next_attempt` <= `now`, no standing
        claim) for `owner` until `now + lease`, the next due first; or the entry `queue_id`
        whatever its schedule (still not a held or claimed one). Several processes and nodes
        claim concurrently without ever getting the same entry (SKIP LOCKED on PostgreSQL)."""

    async def release_outbound_claims(self, owner_prefix: str) -> int:
        """Drop the claims of owners whose name starts with `owner_prefix` (a node starting
        again: its workers of before are gone); how many were dropped."""

    async def update_outbound(
        self,
        entry_id: int,
        owner: str,
        recipients: Sequence[QueueRecipient],
        *,
        reschedule: float | None = None,
        last_error: str | None = None,
        delay_notified: bool = False,
        notices: Sequence[QueueNotice] = (),
    ) -> bool:
        """Record recipients' outcomes on a claimed entry (matched by address) and queue
        `notices`, in one commit. With `reschedule` (the attempt is over): the entry is
        removed if no recipient is pending, else due again then, with its claim released.
        False if `owner` no longer holds the claim (nothing is changed)."""

    async def hold_outbound(self, queue_id: str, held: bool) -> None:
        """Put an entry on hold or release it; NotFound if there is none."""

    async def retry_outbound(self, queue_id: str | None, now: float) -> int:
        """Make an entry (every entry, for None) due at `now`; how many."""

    async def delete_outbound(self, queue_id: str) -> None:
        """Remove an entry and its message without notice; NotFound if there is none."""

    # -- sending quotas --------------------------------------------------------------------------
    async def charge_sending(
        self, scopes: Sequence[tuple[str, SendingLimits]], recipients: int, now: float
    ) -> tuple[str, str, SendingLimits] | None:
        """Count one message to `recipients` recipients against each scope's current hour
        and day, all or nothing: None if every count stays within its limits, else the
        (scope, limit name, limits applied) passed and nothing counted. A scope's exception
        (`set_sending_limits`) replaces the limits given for it, read in the same
        transaction. Exact across processes. An account scope ("a:ID") paused at `now`
        (`pause_sending`) is refused first, with the limit name "paused"."""

    async def sending_usage(self, scope: str, now: float) -> SendingUsage: ...
    async def get_sending_limits(self, scope: str) -> SendingLimits | None:
        """The scope's exception to the configured limits, None if it has none."""

    async def set_sending_limits(self, scope: str, limits: SendingLimits | None) -> None:
        """Set the scope's exception (SendingLimits() is unlimited), or remove it (None)."""

    async def pause_sending(self, account_id: int, until: float, filter: str, reason: str,
                            queue_id: str, now: float) -> None:
        """Refuse the account's submissions until `until` (replacing a pause it had)."""

    async def resume_sending(self, account_id: int) -> bool:
        """End the account's pause; False if it had none."""

    async def sending_pauses(self, now: float) -> list[SendingPause]:
        """The pauses in force at `now`, by address."""

    # -- quarantine (postkeep.delivery.quarantine) -----------------------------------------------
    async def quarantine(self, delivery: LocalDelivery) -> DeliveryResult:
        """Deliver into each account's QUARANTINE_MAILBOX (made where missing) with a
        quarantine row per account from `delivery.quarantine`, in the delivery's commit."""

    async def list_quarantine(self, account_id: int | None = None,
                              direction: str | None = None) -> list[QuarantineEntry]:
        """The entries (of one account, one direction), oldest first."""

    async def get_quarantine(self, entry_id: int) -> QuarantineEntry:
        """NotFound if there is no such entry."""

    async def read_quarantine(self, entry_id: int) -> bytes:
        """The decrypted message; NotFound if there is no such entry."""

    async def release_quarantine(self, entry_id: int, mailbox: str = "INBOX") -> None:
        """Move the message to the account's `mailbox` (the entry goes with it); NotFound."""

    async def delete_quarantine(self, entry_id: int) -> None:
        """Delete the message and its entry; NotFound if there is no such entry."""

    async def expire_quarantine(self, now: float, limit: int) -> int:
        """Delete up to `limit` entries (and messages) expired at `now`; how many."""

    # -- the content filters' record of a message (postkeep.filters) ----------------------------
    async def filter_report(self, account_id: int, message_id: int) -> FilterReport | None:
        """What the content filters said of the account's message (`LocalDelivery.filters`,
        kept with its delivery); None: no record (not scanned, appended, not the account's)."""

    # -- bans (postkeep.bans) --------------------------------------------------------------------
    async def put_ban(self, ban: Ban, forget_after: float) -> None:
        """Record `ban` (replacing the key's row) and drop rows that ended `forget_after`
        seconds before it was made."""

    async def remove_ban(self, key: str) -> bool:
        """End the key's ban now (its row stays for the escalation level); False if none was
        in force."""

    async def get_ban(self, key: str) -> Ban | None:
        """The key's last ban, in force or not."""

    async def list_bans(self, now: float) -> list[Ban]:
        """The bans in force at `now`, by key."""

    async def remember_client(self, address: str, ip_class: str, now: float,
                              forget_before: float) -> None:
        """(address, IP class) logged in at `now` (not durable); rows last seen before
        `forget_before` go."""

    async def known_client(self, address: str, ip_class: str, since: float) -> bool:
        """Whether (address, IP class) logged in at `since` or later."""

    # -- web sessions and the login history (postkeep.web) ---------------------------------------
    async def add_web_session(self, token_hash: str, account_id: int, stage: str, now: float,
                              expires: float, ip: str, user_agent: str,
                              keep: int) -> WebSession:
        """A new session; the account's expired ones go, and its oldest past `keep`."""

    async def get_web_session(self, token_hash: str, now: float,
                              idle_before: float) -> WebSession | None:
        """The session of a token's hash, unless it expired or was last seen before
        `idle_before` (then it is removed)."""

    async def touch_web_session(self, session_id: int, now: float) -> None:
        """Record a request of the session (not durable)."""

    async def advance_web_session(self, session_id: int, token_hash: str, stage: str,
                                  now: float) -> None:
        """The session's login moved to `stage`, under a new token (the old one ends)."""

    async def list_web_sessions(self, account_id: int, now: float) -> list[WebSession]:
        """The account's sessions in force, newest first."""

    async def remove_web_session(self, account_id: int, session_id: int) -> bool:
        """End a session of the account (False: the account has no such session)."""

    async def remove_web_sessions(self, account_id: int, keep_id: int = 0) -> int:
        """End every session of the account but `keep_id`; how many."""

    async def add_login(self, record: LoginRecord, forget_before: float) -> None:
        """Add a line to the account's login history (not durable); its lines older than
        `forget_before` go."""

    async def list_logins(self, account_id: int, limit: int) -> list[LoginRecord]:
        """The account's latest `limit` history lines, newest first."""

    # -- the junk filter (postkeep.filters.junk) -------------------------------------------------
    async def junk_counts(self, scopes: Sequence[int], tokens: Sequence[str],
                          min_messages: int = 0) -> dict[int, JunkCounts]:
        """Each scope's classifier counts (an account id; 0: the instance's), `tokens` read in
        one transaction; only for the scopes that learnt at least `min_messages` of both
        classes: the others' token counts are left empty (they would not be used)."""

    async def junk_learn(self, account_id: int, blob_id: str, spam: bool,
                         tokens: Sequence[str], now: float | None = None) -> str:
        """Learn the account's message `blob_id` (its `tokens`) as spam or ham, in the
        account's classifier and the instance's: "learnt", "relearnt" (it was learnt as the
        other class, now un-learnt from it first) or "already" (nothing done). The tokens
        learnt count as seen on the day of `now` (None: now), for `junk_prune_hapaxes`."""

    async def junk_prune_hapaxes(self, before_day: int, after: tuple[int, int] | None,
                                 limit: int) -> tuple[int, int, tuple[int, int] | None]:
        """Look at up to `limit` token rows in key order after the key `after` (None: from
        the first) and delete the hapaxes among them (in one learnt message only) last seen
        before the day `before_day` (days since the epoch, UTC); in one transaction. (rows
        looked at, rows deleted, the last key looked at or None once the end was reached)."""

    async def junk_token_counts(self) -> dict[int, int]:
        """How many tokens each scope (an account id, 0: the instance's) holds."""

    async def junk_trim(self, scope: int, count: int) -> int:
        """Delete the scope's `count` least informative tokens (in fewest messages, the
        longest unseen of those first), in one transaction; how many went."""

    async def set_junk_entry(self, owner: str, entry: str, kind: str | None) -> bool:
        """Set `owner`'s entry to "allow" or "block", or remove it (None; False if none)."""

    async def junk_entries(self, owner: str | None = None) -> list[JunkListEntry]:
        """The allow and block entries of `owner` (None: of everyone), by owner and entry."""

    async def junk_lookup(self, scopes: Sequence[int], tokens: Sequence[str],
                          min_messages: int, owners: Sequence[str],
                          account_ids: Sequence[int], address: str) -> JunkLookup:
        """`junk_counts` and `junk_sender` in one read."""

    async def junk_sender(self, owners: Sequence[str], account_ids: Sequence[int],
                          address: str) -> tuple[list[JunkListEntry], frozenset[int]]:
        """For a sender's `address`: the entries of `owners` that name it or its domain (or
        a parent domain of it), and which of `account_ids` have written to it."""

    async def add_correspondents(self, account_id: int, addresses: Sequence[str],
                                 now: float) -> None:
        """The account wrote to `addresses` at `now` (not durable: a crash loses at most the
        last ones)."""

    # -- TLS reports (RFC 8460) ------------------------------------------------------------------
    async def add_tls_results(self, counts: Sequence[TlsResultCount]) -> None:
        """Add each count to its (domain, day, detail) (not durable: a crash may lose the
        last few seconds of counts, never a report)."""

    async def tls_report_domains(self, day: int) -> list[str]:
        """The domains with results on `day` whose report is not queued yet."""

    async def tls_results(self, domain: str, day: int) -> list[TlsResultCount]: ...
    async def queue_tls_report(
        self, domain: str, day: int, notice: QueueNotice | None, now: float
    ) -> bool:
        """Mark (domain, day) reported and queue `notice` (None: no one to send it to), in
        one commit; False if it was reported already (then nothing is queued: exactly once
        across processes). Removes the results and marks of days more than a week old."""

    # -- DMARC aggregate reports (RFC 7489 §7.2, RFC 9990) -------------------------------------
    async def add_dmarc_results(self, counts: Sequence[DmarcResultCount]) -> None:
        """Add each count to its (domain, day, detail) (not durable, as `add_tls_results`)."""

    async def dmarc_report_domains(self, day: int) -> list[str]:
        """The policy domains with results on `day` whose report is not queued yet."""

    async def dmarc_results(self, domain: str, day: int) -> list[DmarcResultCount]: ...
    async def queue_dmarc_report(
        self, domain: str, day: int, notice: QueueNotice | None, now: float
    ) -> bool:
        """As `queue_tls_report`, for the DMARC report of (domain, day): marked and queued in
        one commit, False if it was reported already; results older than a week removed."""

    async def add_dmarc_feedback(self, report: DmarcFeedback) -> bool:
        """Keep a report received; False (nothing kept) if one with its org_name, report_id
        and domain is kept already (a duplicate, RFC 9990 §3 "Handling of Duplicates")."""

    async def list_dmarc_feedback(self, domain: str | None = None) -> list[DmarcFeedback]:
        """The reports received (about `domain`, or every domain), the newest period first."""

    # -- DKIM keys -------------------------------------------------------------------------------
    async def add_dkim_key(
        self, domain: str, selector: str, algorithm: str, private_pem: bytes, public_key: str,
        active_from: float,
    ) -> DkimKey:
        """Keep a signing key, its private half sealed; AlreadyExists for a used selector."""

    async def list_dkim_keys(self, domain: str | None = None) -> list[DkimKey]:
        """Keys of `domain` (every domain's if None), by domain then `active_from`."""

    async def dkim_private_key(self, domain: str, selector: str) -> bytes:
        """The unsealed PKCS#8 PEM private key; NotFound if there is no such key."""

    async def remove_dkim_key(self, domain: str, selector: str) -> None:
        """NotFound if there is no such key."""

    # -- aliases ---------------------------------------------------------------------------------
    async def add_alias(self, source: str, targets: Sequence[str]) -> Alias: ...
    async def list_aliases(self, domain: str | None = None) -> list[Alias]: ...
    async def remove_alias(self, source: str) -> None: ...

    async def resolve_local(self, address: str) -> list[Account] | None:
        """Accounts that mail to `address` reaches, or None if the address is not local.

        Order: an account with that address; else an alias with that exact source (targets that are
        local accounts, expanded recursively up to ALIAS_DEPTH levels, each account once); else the
        catch-all alias `@domain`. Returns [] for a local domain alias whose targets are all
        non-local. Returns None when the domain is not local or nothing matches.
        """

    # -- mailboxes and messages ------------------------------------------------------------------
    async def list_mailboxes(self, account_id: int) -> list[Mailbox]: ...
    async def get_mailbox(self, account_id: int, name: str) -> Mailbox | None: ...
    async def list_messages(self, mailbox_id: int) -> list[MessageInfo]: ...
    async def read_message(self, account_id: int, message_id: int) -> bytes:
        """The decrypted message; raises NotFound if it is not the account's."""

    def new_spool(self) -> Spool:
        """A spool for the text of a message on its way in (`postkeep.store.spool`), in the
        store's own temporary directory; it blocks (a file is made): call it in a thread."""

    async def deliver(self, delivery: LocalDelivery) -> DeliveryResult:
        """Store one message durably for all its recipients (group-committed).

        Writes the encrypted blob (tmp → fsync → rename → fsync dir), then in one transaction
        allocates each recipient's UID and MODSEQ, inserts the message rows, adds to quota usage,
        and records the envelope. Returns only after all of it is durable; then publishes a
        MailboxEvent per recipient. On failure nothing is visible and the blob is removed.
        """


class MailStore(Store, Protocol):
    """The store as IMAP uses it: `Store` plus the mailbox operations of RFC 9051 and its
    extensions. A protocol of its own, not part of `Store`, so that SMTP, delivery,
    authentication and the CLI (and their test doubles) depend only on what they use.

    Mailbox and message ids are the caller's to scope: the operations taking an `account_id`
    check ownership, the reads by `mailbox_id` trust the caller (IMAP got the id from the
    account's own mailbox). `ranges` and `uids` are inclusive (low, high) UID runs, ascending.
    """

    # -- events ------------------------------------------------------------------------------------
    def subscribe(self, account_id: int | None, maxsize: int | None = None) -> Subscription:
        """The MailboxEvents of one account (None: of all), for IDLE (RFC 9051 §6.3.13)."""

    # -- reads -------------------------------------------------------------------------------------
    async def get_mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        """The mailbox row (UIDNEXT, HIGHESTMODSEQ, ...), None if it is gone."""

    async def mailbox_snapshot(self, mailbox_id: int, *, keywords: bool = False) -> Snapshot:
        """Row, UIDs and (if asked) keywords in use, in one read (SELECT, RFC 9051 §6.3.2)."""

    async def mailbox_changes(self, mailbox_id: int, modseq: int) -> Changes:
        """Changes after `modseq` (RFC 7162 §3.1.4.1, §3.2.10); NotFound if the mailbox is gone."""

    async def claim_recent(self, mailbox_id: int) -> tuple[int, int]:
        """Take the \\Recent messages for one session: UIDs in [first, end) (RFC 3501 §2.3.2)."""

    async def messages_by_uid(
        self, mailbox_id: int, ranges: Sequence[tuple[int, int]]
    ) -> list[MessageInfo]:
        """The messages with a UID in `ranges`, ascending UID (FETCH, RFC 9051 §6.4.5)."""

    async def messages_with_uids(self, mailbox_id: int, uids: Sequence[int]) -> list[MessageInfo]:
        """The messages with these UIDs, scattered (a page of a sort order; gone ones left
        out), ascending UID: one index seek per UID."""

    async def mailbox_totals(self, mailbox_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """(messages, unseen) of each mailbox, counted from indexes (a web page's sidebar:
        no message row read)."""

    async def messages_page(
        self, mailbox_id: int, offset: int, limit: int, *, newest_first: bool = True
    ) -> list[MessageInfo]:
        """`limit` messages from the `offset`-th in UID order (descending with `newest_first`),
        paged in SQL on the (mailbox, UID) index: a web message list of a huge mailbox reads
        only its page."""

    async def message_flags(
        self, mailbox_id: int, ranges: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int, str, int]]:
        """(uid, flag bits, keywords, modseq) of those messages: a flags-only FETCH's rows."""

    async def first_unseen_uid(self, mailbox_id: int) -> int | None:
        """The lowest UID without \\Seen, None if none (SELECT's UNSEEN, RFC 3501 §6.3.1)."""

    async def changed_since(self, mailbox_id: int, modseq: int) -> list[MessageInfo]:
        """Messages with MODSEQ > `modseq`, ascending UID (CHANGEDSINCE, RFC 7162 §3.1.4.1)."""

    async def expunged_since(self, mailbox_id: int, modseq: int) -> list[int]:
        """UIDs expunged after `modseq`, ascending (VANISHED, RFC 7162 §3.2.10)."""

    async def mailbox_counts(self, mailbox_id: int) -> MailboxCounts:
        """The counts and total size STATUS reports (RFC 9051 §6.3.11, RFC 8438)."""

    async def message_summaries(
        self, account_id: int, message_ids: Sequence[int]
    ) -> dict[int, bytes]:
        """Each message's MIME summary document (`postkeep.mime.summary`); missing ids left out."""

    async def read_messages(
        self,
        account_id: int,
        wanted: Sequence[tuple[int, int | None]],
        *,
        expected_bytes: int | None = None,
    ) -> dict[int, bytes]:
        """(message id, None or prefix length) -> the decrypted bytes; messages gone left out."""

    async def open_message(self, account_id: int, message_id: int) -> MessageReader:
        """The message, open to be read piece by piece (FETCH and SEARCH of messages too large
        to hold); NotFound if it is not the account's or is gone. The caller closes it."""

    # -- flags, expunge, copy and move, append -----------------------------------------------------
    async def set_flags(
        self,
        account_id: int,
        mailbox_id: int,
        uids: Sequence[tuple[int, int]],
        mode: str,
        flags: Flag,
        keywords: Sequence[str] = (),
        unchanged_since: int | None = None,
    ) -> FlagChange:
        """STORE "replace", "add" or "remove" (RFC 9051 §6.4.6; UNCHANGEDSINCE, RFC 7162 §3.1.3)."""

    async def expunge(
        self, account_id: int, mailbox_id: int, uids: Sequence[tuple[int, int]] | None = None
    ) -> list[int]:
        """Remove the \\Deleted messages (in `uids`: RFC 4315 §2.1); UIDs gone (RFC 9051 §6.4.3)."""

    async def copy_messages(
        self,
        account_id: int,
        source_id: int,
        uids: Sequence[tuple[int, int]],
        dest_id: int,
        *,
        move: bool = False,
    ) -> CopyResult:
        """COPY, or MOVE with `move` (RFC 9051 §6.4.7-8, RFC 6851); OverQuota past the quota."""

    async def deliver_all(self, deliveries: Sequence[LocalDelivery]) -> list[DeliveryResult]:
        """Several deliveries in one transaction, all or none (MULTIAPPEND, RFC 3502)."""

    # -- mailboxes and subscriptions ---------------------------------------------------------------
    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None
    ) -> Mailbox:
        """CREATE with its superior names (RFC 9051 §6.3.4, RFC 6154 §3); AlreadyExists."""

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        """DELETE (RFC 9051 §6.3.5); refused for INBOX and for a mailbox with children."""

    async def rename_mailbox(self, account_id: int, old: str, new: str) -> None:
        """RENAME, children included; INBOX's messages move, INBOX stays (RFC 9051 §6.3.6)."""

    async def set_subscribed(self, account_id: int, name: str, subscribed: bool) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (RFC 9051 §6.3.7-8); NotFound unsubscribing an unknown name."""

    async def list_subscriptions(self, account_id: int) -> list[str]:
        """The subscribed names, whether their mailboxes exist or not (RFC 9051 §6.3.7)."""
