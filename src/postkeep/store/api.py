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

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from postkeep.errors import StoreError
from postkeep.store.spool import MessageData, Spool

if TYPE_CHECKING:
    from postkeep.store.events import Subscription


ALIAS_DEPTH = 8  # levels of aliases `resolve_local` follows (and sender ownership with it)


class SpecialUse(enum.StrEnum):
    """RFC 6154 special-use attributes of the default mailboxes."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    JUNK = "\\Junk"
    TRASH = "\\Trash"
    ARCHIVE = "\\Archive"


#: Mailboxes every new account gets: (name, special use).
DEFAULT_MAILBOXES: tuple[tuple[str, SpecialUse | None], ...] = (
    ("INBOX", None),
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Junk", SpecialUse.JUNK),
    ("Trash", SpecialUse.TRASH),
    ("Archive", SpecialUse.ARCHIVE),
)


class Flag(enum.IntFlag):
    """IMAP system flags (RFC 9051 §2.3.2), stored as a bit field; keywords are stored apart."""

    SEEN = 1
    ANSWERED = 2
    FLAGGED = 4
    DELETED = 8
    DRAFT = 16


@dataclass(frozen=True, slots=True)
class Domain:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # localpart@domain, domain lower-cased; local part as created
    domain_id: int
    password_hash: str  # argon2id PHC string
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    disabled: bool
    app_passwords_only: bool = False  # the account password is refused for mail protocols


#: Scopes an app password may carry: the protocols it may be used with.
APP_PASSWORD_SCOPES: tuple[str, ...] = ("smtp", "imap")

#: Most app passwords (not revoked) one account may have: each one can cost an argon2 verification
#: per login attempt.
MAX_APP_PASSWORDS = 20


@dataclass(frozen=True, slots=True)
class AppPassword:
    """A per-device password of an account, usable only for its `scopes` ("smtp", "imap")."""

    id: int
    account_id: int
    name: str
    password_hash: str  # argon2id PHC string
    scopes: tuple[str, ...]
    created: float  # POSIX seconds
    last_used: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class AuthRecord:
    """Everything authentication needs about one account, read in one consistent snapshot.

    `secrets` maps SASL mechanism names ("SCRAM-SHA-256", "CRAM-MD5", ...) to the stored secret
    derived from the password; `app_passwords` lists only the non-revoked app passwords.
    """

    account: Account
    secrets: dict[str, str]
    app_passwords: tuple[AppPassword, ...]


@dataclass(frozen=True, slots=True)
class Alias:
    id: int
    source: str  # "local@domain", or "@domain" for a catch-all
    targets: tuple[str, ...]  # addresses (local accounts or, later, remote)


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    account_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool
    first_recent_uid: int = 1  # messages from this UID on are \Recent (RFC 3501 §2.3.2)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    id: int
    mailbox_id: int
    uid: int
    modseq: int
    size: int
    internaldate: float  # POSIX seconds
    flags: Flag
    keywords: tuple[str, ...]
    blob_id: str
    savedate: float | None = None  # RFC 8514: when the message was put into this mailbox


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One envelope recipient with its RFC 3461 parameters (kept for the outbound queue / DSNs)."""

    address: str
    notify: str | None = None  # "NEVER" or comma list of SUCCESS,FAILURE,DELAY
    orcpt: str | None = None  # "rfc822;addr" as given (xtext decoded)


@dataclass(slots=True)
class Envelope:
    """What SMTP knew about a message when it was accepted."""

    queue_id: str
    mail_from: str  # "" for the null reverse-path
    recipients: list[DsnRecipient]
    client_ip: str
    helo: str
    received_at: float
    ret: str | None = None  # RFC 3461 RET=FULL|HDRS
    envid: str | None = None  # RFC 3461 ENVID (xtext decoded)
    body: str | None = None  # BODY=7BIT|8BITMIME|BINARYMIME
    smtputf8: bool = False
    requiretls: bool = False  # RFC 8689 MAIL FROM REQUIRETLS


#: The mailbox of an account's quarantined messages (`postkeep.delivery.quarantine`): made by
#: the store at the first one, filled only by it.
QUARANTINE_MAILBOX: Final = "Quarantine"


@dataclass(frozen=True, slots=True)
class QuarantineNote:
    """Why a delivery goes to the quarantine (`LocalDelivery.quarantine`): the direction
    ("in": arriving at the MX, "out": submitted), the filter that held it, its reason, and
    until when it is kept."""

    direction: str
    filter: str
    reason: str
    expires: float


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A quarantined message: the account whose Quarantine mailbox holds it (`address`),
    the message there, and what the note and the envelope said."""

    id: int
    account_id: int
    address: str
    message_id: int
    direction: str
    queue_id: str
    filter: str
    reason: str
    mail_from: str
    recipients: tuple[str, ...]
    size: int
    created: float
    expires: float


@dataclass(frozen=True, slots=True)
class SendingPause:
    """An account that may not send until `until` (an outbound content filter hit)."""

    account_id: int
    address: str
    until: float
    filter: str
    reason: str
    queue_id: str
    created: float


@dataclass(slots=True)
class LocalDelivery:
    """A message to put into local mailboxes, shared by all its recipients as one blob.

    `account_ids` lists each local account once (alias expansion already done). The message goes to
    each account's INBOX (or `mailbox_name`). `data` is the whole message as it will be stored
    (trace headers added): bytes, or a `SpooledText` (an SMTP message too large to hold in
    memory), read a chunk at a time. IMAP APPEND uses this too, with an envelope whose
    `queue_id` is empty (no envelope row is recorded), `received_at` as the INTERNALDATE, and
    its flags and keywords.
    """

    envelope: Envelope
    account_ids: Sequence[int]
    data: MessageData
    flags: Flag = Flag(0)  # noqa: RUF009 - an immutable int flag, safe as a shared default
    mailbox_name: str = "INBOX"
    keywords: tuple[str, ...] = ()
    quarantine: QuarantineNote | None = None  # held: a quarantine row per account, same commit


@dataclass(frozen=True, slots=True)
class Delivered:
    account_id: int
    mailbox_id: int
    uid: int
    message_id: int


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    blob_id: str
    delivered: tuple[Delivered, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    """One recipient of an outbound queue entry, with its RFC 3461 parameters and state."""

    address: str
    notify: str | None = None
    orcpt: str | None = None
    status: str = "pending"  # "pending" until "delivered" or "failed" (permanently)
    reply: str | None = None  # the last answer about it ("250 2.0.0 Ok", "451 4.4.1 ...")
    remote: str | None = None  # the MTA that gave `reply` ("mx1.example.org [192.0.2.1]")
    updated: float | None = None  # when `reply` came


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A message waiting in the outbound queue (authenticated submission to remote recipients)."""

    id: int
    queue_id: str
    blob_id: str
    size: int
    mail_from: str
    recipients: tuple[QueueRecipient, ...]
    ret: str | None
    envid: str | None
    body: str | None
    smtputf8: bool
    created: float
    next_attempt: float
    attempts: int
    last_error: str | None
    held: bool = False
    lease_owner: str | None = None
    lease_until: float | None = None
    delay_notified: bool = False
    requiretls: bool = False

    @property
    def pending(self) -> tuple[QueueRecipient, ...]:
        return tuple(r for r in self.recipients if r.status == "pending")


@dataclass(frozen=True, slots=True)
class SendingLimits:
    """Sending quotas of one scope (an account or a domain); 0: no limit."""

    messages_per_hour: int = 0
    messages_per_day: int = 0
    recipients_per_hour: int = 0
    recipients_per_day: int = 0


@dataclass(frozen=True, slots=True)
class SendingUsage:
    """What a scope sent in the current hour and UTC day."""

    messages_hour: int = 0
    messages_day: int = 0
    recipients_hour: int = 0
    recipients_day: int = 0


@dataclass(frozen=True, slots=True)
class TlsResultCount:
    """How many sessions of a UTC day (`day`: its start) to a policy domain had one TLS
    result (RFC 8460): `detail` is the result as JSON (`postkeep.queue.tlsrpt_report`)."""

    domain: str
    day: int
    detail: str
    count: int


@dataclass(frozen=True, slots=True)
class DmarcResultCount:
    """How many messages of a UTC day (`day`: its start) whose DMARC policy domain is
    `domain` made one aggregate report row (RFC 7489 §7.2, RFC 9990): `detail` is the row
    as JSON (`postkeep.mailauth.dmarc.aggregate.ReportRow`)."""

    domain: str
    day: int
    detail: str
    count: int


@dataclass(frozen=True, slots=True)
class DmarcFeedback:
    """A DMARC aggregate report received (RFC 7489 §7.2, RFC 9990 §3): who sent it
    (`org_name`, `email`), its `report_id`, the policy domain and the period (`begin`,
    `end`, seconds since the epoch), how many messages passed and failed DMARC, and its
    records as JSON (`postkeep.mailauth.dmarc.feedback`). `id` is 0 before it is stored."""

    org_name: str
    email: str
    report_id: str
    domain: str
    begin: int
    end: int
    passed: int
    failed: int
    records: str
    received_at: float
    id: int = 0


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A DKIM signing key of a domain (its private half stays sealed in the store)."""

    id: int
    domain: str
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256" (RFC 6376 §3.3, RFC 8463)
    public_key: str  # the p= value as published (base64)
    created: float
    active_from: float  # when it starts signing


@dataclass(frozen=True, slots=True)
class QueueNotice:
    """A message the queue sends about another (a DSN, RFC 3464): queued in the transaction
    that records the outcome it reports, so it is sent exactly once."""

    envelope: Envelope
    data: bytes


@dataclass(frozen=True, slots=True)
class MailboxEvent:
    """Published on the event bus after a change is committed (wakes IMAP IDLE)."""

    account_id: int
    mailbox_id: int
    kind: str  # "exists", "expunge", "flags", "mailboxes" (created, deleted or renamed)
    uid: int | None = None
    modseq: int | None = None


# -- IMAP mailbox operations (`MailStore`) ---------------------------------------------------------

#: The hierarchy delimiter of mailbox names (RFC 9051 §5.1).
DELIMITER = "/"


class OverQuota(StoreError):
    """The operation would take the account over its quota (IMAP [OVERQUOTA], RFC 9208 §4.3)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A mailbox as of one read: its row, its UIDs ascending, the keywords in use (if asked)."""

    mailbox: Mailbox
    uids: list[int]
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a mailbox after a MODSEQ, read in one transaction: the mailbox row, the
    messages with a greater MODSEQ (new ones included, RFC 7162 §3.1.4.1) ascending by UID,
    and the UIDs expunged after it (§3.2.10), ascending."""

    mailbox: Mailbox
    changed: list[MessageInfo]
    expunged: list[int]


@dataclass(frozen=True, slots=True)
class MailboxCounts:
    """What STATUS reports (RFC 9051 §6.3.11, RFC 8438 SIZE)."""

    messages: int
    unseen: int
    deleted: int
    size: int
    recent: int = 0


@dataclass(frozen=True, slots=True)
class FlagChange:
    """Result of `set_flags`: the messages whose flags changed (new MODSEQ) and, with
    UNCHANGEDSINCE, the UIDs that failed the test (RFC 7162 §3.1.3 MODIFIED)."""

    changed: tuple[MessageInfo, ...]
    modified: tuple[int, ...] = ()
    unchanged: tuple[MessageInfo, ...] = ()  # matched, flags already as asked


@dataclass(frozen=True, slots=True)
class CopyResult:
    """UIDPLUS COPYUID data (RFC 4315 §3): the destination's UIDVALIDITY and UID pairs."""

    uidvalidity: int
    pairs: tuple[tuple[int, int], ...]  # (source uid, destination uid), source order


#: The most octets `MessageReader.pieces` yields at a time (four 64 KiB blob chunks).
PIECE_SIZE: Final = 256 << 10


class MessageReader(Protocol):
    """An open message (`MailStore.open_message`) read piece by piece: each piece is read and
    decrypted (every blob chunk it touches authenticated) only when it is asked for. The blob
    stays open until `close()`, so an expunge meanwhile does not cut a reader short."""

    @property
    def size(self) -> int:
        """The message's length in octets."""

    def pieces(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Octets [start, end) of the message (clamped to it) in pieces of at most PIECE_SIZE;
        StoreError if the blob fails authentication or is shorter than its header says."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban of `key` (an address or network, CIDR) until `until` (Unix time) for `reason`,
    made at `created` after `strikes` strikes, at escalation `level` (0: the first)
    (`postkeep.bans`)."""

    key: str
    until: float
    reason: str
    strikes: float
    level: int
    created: float


#: The stages of a web session's login (`postkeep.web.login`): the password was right and a
#: second factor is due; or the login is done.
WEB_SECOND_FACTOR = "second-factor"
WEB_DONE = "done"


@dataclass(frozen=True, slots=True)
class WebSession:
    """A web session (`postkeep.web`): the account it is of, its login `stage`, when it was
    made, last seen and ends at the latest, and the client it was made by. Found by the hash
    of its token, which is never stored itself."""

    id: int
    account_id: int
    stage: str
    created: float
    last_seen: float
    expires: float
    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class LoginRecord:
    """One line of an account's login history: when, from where, how ("web password", "imap
    LOGIN", "smtp PLAIN") and with which result ("ok", "failed", "second factor needed")."""

    account_id: int
    time: float
    ip: str
    method: str
    result: str
    detail: str


@dataclass(frozen=True, slots=True)
class JunkCounts:
    """One junk classifier's counts (`Store.junk_counts`): the messages learnt as spam and
    as ham, and for each token asked that any message held, (spam, ham) message counts."""

    spam: int
    ham: int
    tokens: Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class JunkLookup:
    """What the junk filter reads of the store for one message, in one read
    (`Store.junk_lookup`): the classifiers' counts, the recipients' list entries about the
    sender, and which recipients have written to it."""

    counts: Mapping[int, JunkCounts]
    entries: list[JunkListEntry]
    wrote: frozenset[int]


@dataclass(frozen=True, slots=True)
class JunkListEntry:
    """An allow or block entry of the junk filter: `owner` is ``a:<account id>`` or
    ``d:<domain>``, `entry` an address or a domain (which covers its subdomains), `kind`
    "allow" or "block"."""

    owner: str
    entry: str
    kind: str


#: Most WebAuthn credentials (passkeys, security keys) one account may have.
MAX_WEBAUTHN_CREDENTIALS = 20


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    """An account's second factors (`postkeep.auth.totp`, `postkeep.auth.webauthn`): TOTP
    "off", "pending" (enrolled, no valid code yet) or "on"; how many passkeys and unused
    recovery codes; `enforced` while 2FA is on (a confirmed TOTP or a passkey): then the mail
    protocols take app passwords only."""

    totp: str
    totp_created: float | None
    passkeys: int
    recovery_codes_left: int
    enforced: bool


@dataclass(frozen=True, slots=True)
class TotpState:
    """What verifying a TOTP code needs: the (unsealed) base32 secret, whether a first code
    confirmed it, and the last time step accepted (RFC 6238 §5.2: a code is accepted once)."""

    account_id: int
    secret: str
    confirmed: bool
    last_step: int | None


@dataclass(frozen=True, slots=True)
class WebAuthnCredential:
    """A registered public key credential (W3C WebAuthn Level 3 §6.5.1 "credential record")."""

    id: int
    account_id: int
    credential_id: bytes
    public_key: bytes  # COSE_Key (RFC 9052 §7)
    sign_count: int
    transports: tuple[str, ...]
    name: str
    created: float
    last_used: float | None


@dataclass(frozen=True, slots=True)
class WebAuthnChallenge:
    """A challenge handed out for a ceremony ("register" or "authenticate"), to the account
    `account_id` (None: a passwordless login, the account comes from the credential)."""

    challenge: bytes
    purpose: str
    account_id: int | None
    expires: float


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
                         tokens: Sequence[str]) -> str:
        """Learn the account's message `blob_id` (its `tokens`) as spam or ham, in the
        account's classifier and the instance's: "learnt", "relearnt" (it was learnt as the
        other class, now un-learnt from it first) or "already" (nothing done)."""

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
