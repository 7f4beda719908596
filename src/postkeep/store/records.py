"""The store's records: the values `postkeep.store.api.Store` and `MailStore` take and give
(domains, accounts, mailboxes, messages, envelopes, the outbound queue, reports, bans, the
junk filter's counts, quarantine entries, web sessions, second factors), with the constants
they use. `postkeep.store.api` re-exports every one: callers import them from there."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from postkeep.errors import StoreError
from postkeep.store.spool import MessageData

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
class FilterLine:
    """One content filter's result for a stored message (`FilterReport`): its name, its
    action ("accept", "tag", "quarantine", "reject", "tempfail"), score, the symbols that
    fired, and its status (what its header field said: "clean", "spam", ...)."""

    filter: str
    action: str
    score: float
    symbols: tuple[str, ...]
    status: str


@dataclass(frozen=True, slots=True)
class FilterReport:
    """The content filters' results for a stored message (`Store.filter_report`): the
    direction ("in": arriving at the MX, "out": submitted), the SMTP queue id, the combined
    action and score, each filter's line in the order they ran, and when it was scanned."""

    direction: str
    queue_id: str
    action: str
    score: float
    filters: tuple[FilterLine, ...]
    created: float

    @property
    def symbols(self) -> tuple[str, ...]:
        """Every filter's symbols, in order."""
        return tuple(s for line in self.filters for s in line.symbols)


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
    filters: FilterReport | None = None  # every filter's result (None: held before m0018)


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
    filters: FilterReport | None = None  # the content filters' results, kept in the same commit


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
