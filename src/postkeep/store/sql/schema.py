"""The current relational schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

This module describes the schema *as the code expects it now*; the database gets there through
the numbered migrations in `postkeep.store.sql.migrations` (migration 1 holds a frozen copy of the
version-1 tables; a test checks that the migrated database matches these definitions).

Notes on the design:

* Addresses are unique case-insensitively: ``accounts.address`` keeps the spelling given at
  creation (local part as created, domain lower-cased), ``address_key`` its lower-case form,
  which carries the unique index and is what lookups use. The same for alias sources.
* IMAP numbering (RFC 9051 §2.3.1.1): ``mailboxes.uidvalidity`` comes from an instance-wide
  counter (``meta`` row ``uidvalidity``, at least the current time in seconds, strictly
  increasing), so every mailbox — including one re-created under an old name — gets a distinct
  positive 32-bit value. ``uidnext`` and ``highestmodseq`` (RFC 7162 §3.1) are advanced with
  ``UPDATE … RETURNING`` under the row lock, which keeps them strictly increasing with several
  writers on PostgreSQL too. UIDs and MODSEQs are unsigned 32/63-bit values: BIGINT columns.
* ``messages.content_key`` is the message's blob content key wrapped with the account's data key
  (see `postkeep.store.crypto`); ``blobs.refcount`` counts the message rows that use a blob, so a
  blob shared by several recipients is deleted when its last message row goes.
* ``envelopes`` record what SMTP knew about each accepted message (RFC 5321 envelope plus the RFC
  3461 DSN parameters, recipients as JSON).
* Credentials (migration 2): ``accounts.password_hash`` is an argon2id PHC string;
  ``account_secrets`` holds one row per SASL mechanism (SCRAM-SHA-*, CRAM-MD5, DIGEST-MD5) with the
  password-derived secret *sealed* (AES-256-GCM) under the account's data key, bound to the account
  id and mechanism — CRAM-MD5 and DIGEST-MD5 secrets are password equivalents, so a database dump
  alone must not reveal them. The rows are replaced wholesale when the password changes.
  ``app_passwords`` are argon2id hashes of generated per-device passwords with their scopes (a
  space-separated list, e.g. ``"smtp imap"``); revoking sets ``revoked_at`` (the row stays for the
  record) and a name is unique among an account's non-revoked app passwords (partial index).
  ``accounts.app_passwords_only`` refuses the account password for mail protocols.
* ``outbound_queue`` (migration 2) holds messages accepted by authenticated submission for remote
  recipients: the blob is encrypted under a fresh content key, wrapped by the instance's "queue"
  data key (``meta`` row ``queue_data_key``, itself wrapped by the master key); recipients are
  JSON objects ``{address, notify, orcpt, status}``. Migration 7 adds the delivery workers'
  state: ``held``, the claim (``lease_owner``, ``lease_until``), ``delay_notified``,
  ``requiretls``; a recipient's JSON gains ``reply`` (the last answer about it, or why it
  failed), ``remote`` (the MTA that gave it) and ``updated`` (when).
* ``dkim_keys`` (migration 8): DKIM signing keys per (domain, selector), the private key sealed
  under the instance's DKIM data key (``meta`` row ``dkim_data_key``) with domain and selector
  as AAD; ``active_from`` is when a key starts signing.
* Sending quotas (migration 9): ``sending_counts`` per scope ("a:<account id>", "d:<domain>"),
  window width (3600 or 86400) and window start; ``sending_limits`` the per-scope exceptions
  (JSON).
* TLS reports (migration 10, RFC 8460): ``tlsrpt_results`` counts per policy domain, UTC day
  and result (``detail`` JSON, ``key`` its SHA-256); ``tlsrpt_sent`` one row per (domain, day)
  reported, inserted in the transaction that queues the report (so it is queued once).
* Inline queued messages (migration 11): ``outbound_queue.data`` holds the encrypted message
  itself when it is at most `postkeep.store.blobs.INLINE_MAX` octets; NULL: a blob file.
* DMARC aggregate reports (migration 12, RFC 7489 §7.2, RFC 9990): ``dmarc_results`` and
  ``dmarc_sent`` as the TLS report tables, for the MX's DMARC evaluations (``detail``: one
  report row as JSON); ``dmarc_feedback`` the reports received, unique per (org_name,
  report_id, domain), their records as JSON.
* IMAP (migration 4): ``blobs.structure`` is the message's MIME summary (`postkeep.mime.summary`:
  part tree with byte offsets, ENVELOPE, BODYSTRUCTURE), computed once at delivery and sealed
  under the blob's content key; ``expunged`` logs expunged UIDs with the MODSEQ of their expunge
  for QRESYNC (RFC 7162 §3.2.10); ``mailboxes.first_recent_uid`` is where \\Recent messages start
  (RFC 3501 §2.3.2); ``subscriptions`` holds subscribed names, which outlive their mailboxes
  (RFC 9051 §6.3.7). Mailbox hierarchy is by name, delimiter "/".
* Inline blobs (migration 6): ``blobs.data`` holds the encrypted blob itself when it is at most
  `postkeep.store.blobs.INLINE_MAX` octets (written in the delivery's transaction); NULL means
  the blob is a file under ``<data_dir>/blobs/`` (larger ones, and every blob stored before).
* Ids exposed to callers use AUTOINCREMENT on SQLite so that a deleted row's id is never reused.
* Bans (migration 13, `postkeep.bans`): ``bans`` one row per banned address or network
  (``key``, CIDR), in force while ``until`` is ahead, kept past it until `bans.forget_after`
  for the escalation level of the next one; ``known_clients`` the (account address, IP class)
  pairs that logged in successfully, with when they last did (``seen``).
* The junk filter (migration 14, `postkeep.store.sql.junk`): token counts per scope (an
  account, 0 for the instance) as keyed hashes (``meta`` row ``junk_token_key``), never as
  words; messages learnt per scope; what each message (blob) was learnt as; allow and block
  lists; the addresses each account has written to.
* Quarantine (migration 15, `postkeep.delivery.quarantine`): ``quarantine`` one row per
  message a content filter held, pointing at the message row in the account's "Quarantine"
  mailbox (``message_id``, ON DELETE CASCADE: an expunge or a MOVE out of the mailbox
  releases the row with it), with the direction, the filter and its reason, the envelope
  and ``expires``; ``sending_pauses`` the accounts that may not send until ``until`` after
  an outbound filter hit (ON DELETE CASCADE with the account).
* Two-factor authentication (migration 17, `postkeep.store.sql.twofactor`): ``two_factor``
  one row per account that began to use a second factor: the TOTP secret sealed under the
  account's data key, whether it is confirmed, the last time step accepted, the opaque
  WebAuthn user handle, and whether 2FA is enforced (``accounts.app_passwords_only`` set by
  it, ``prior_app_passwords_only`` the flag as it was); ``recovery_codes`` keyed hashes
  (HMAC-SHA256 under the account's data key) of one-time codes; ``webauthn_credentials`` the
  passkeys (public keys and signature counters: nothing secret); ``webauthn_challenges`` the
  challenges handed out, single use, bound to a hash of the web session, until ``expires``.
* The webmail (migration 19, `postkeep.web.mail`): ``ix_messages_mailbox_flags`` counts a
  mailbox's unseen messages from the index (`mailbox_totals`).
  All ON DELETE CASCADE with the account.
* Filter results (migration 18, `postkeep.store.sql.filtering`): ``filter_results`` one row
  per stored message the content filters scanned, keyed by its blob (shared by the
  recipients' copies, kept by COPY and MOVE; ON DELETE CASCADE with the blob): direction,
  queue id, the combined action and score, each filter's result as compact JSON, when.
  ``junk_tokens.seen`` is the day a token was last learnt, for pruning.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

#: BIGINT on PostgreSQL; plain INTEGER on SQLite so the column aliases the rowid (autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Double, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("number", BigInteger, nullable=True),
    Column("value", LargeBinary, nullable=True),
)

domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created", Double, nullable=False),
    sqlite_autoincrement=True,
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(320), nullable=False),
    Column("address_key", String(320), nullable=False, unique=True),
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False, index=True),
    Column("password_hash", Text, nullable=False),
    Column("quota_bytes", BigInteger, nullable=False, default=0),
    Column("used_bytes", BigInteger, nullable=False, default=0),
    Column("data_key", LargeBinary, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created", Double, nullable=False),
    Column("app_passwords_only", Boolean, nullable=False, default=False, server_default=false()),
    sqlite_autoincrement=True,
)

account_secrets = Table(
    "account_secrets",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("mechanism", String(32), primary_key=True),
    Column("secret", LargeBinary, nullable=False),
)

app_passwords = Table(
    "app_passwords",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("last_used", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
    sqlite_autoincrement=True,
)
Index(
    "uq_app_passwords_active_name",
    app_passwords.c.account_id,
    app_passwords.c.name,
    unique=True,
    sqlite_where=app_passwords.c.revoked_at.is_(None),
    postgresql_where=app_passwords.c.revoked_at.is_(None),
)

send_as = Table(
    "send_as",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    # lookup key (`postkeep.addresses.address_key`) the account may send as (submission checks)
    Column("address_key", String(320), primary_key=True),
    Column("created", Double, nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(320), nullable=False),
    Column("source_key", String(320), nullable=False, unique=True),
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False, index=True),
    Column("targets", Text, nullable=False),
    Column("created", Double, nullable=False),
    sqlite_autoincrement=True,
)

mailboxes = Table(
    "mailboxes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("special_use", String(32), nullable=True),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False, default=1),
    Column("highestmodseq", BigInteger, nullable=False, default=1),
    Column("first_recent_uid", BigInteger, nullable=False, default=1, server_default="1"),
    UniqueConstraint("account_id", "name", name="uq_mailboxes_account_name"),
    sqlite_autoincrement=True,
)

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("refcount", Integer, nullable=False),
    Column("created", Double, nullable=False),
    Column("structure", LargeBinary, nullable=True),  # sealed MIME summary (migration 4)
    Column("data", LargeBinary, nullable=True),  # the blob itself if inline (migration 6)
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Column("blob_id", String(64), ForeignKey("blobs.id"), nullable=False),
    Column("content_key", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("internaldate", Double, nullable=False),
    Column("flags", Integer, nullable=False, default=0),
    Column("keywords", Text, nullable=False, default=""),
    Column("savedate", Double, nullable=True),
    UniqueConstraint("mailbox_id", "uid", name="uq_messages_mailbox_uid"),
    Index("ix_messages_mailbox_modseq", "mailbox_id", "modseq"),
    Index("ix_messages_mailbox_flags", "mailbox_id", "flags"),  # migration 19
    sqlite_autoincrement=True,
)

envelopes = Table(
    "envelopes",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("queue_id", String(64), nullable=False, index=True),
    Column("mail_from", Text, nullable=False),
    Column("recipients", Text, nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("helo", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    Column("ret", String(8), nullable=True),
    Column("envid", Text, nullable=True),
    Column("body", String(16), nullable=True),
    Column("smtputf8", Boolean, nullable=False, default=False),
    Column("blob_id", String(64), ForeignKey("blobs.id"), nullable=True, index=True),
    sqlite_autoincrement=True,
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("name", Text, primary_key=True),
)

expunged = Table(
    "expunged",
    metadata,
    Column("mailbox_id", Integer, primary_key=True, autoincrement=False),
    Column("uid", BigInteger, primary_key=True, autoincrement=False),
    Column("modseq", BigInteger, nullable=False),
    Index("ix_expunged_mailbox_modseq", "mailbox_id", "modseq"),
)

outbound_queue = Table(
    "outbound_queue",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("queue_id", String(64), nullable=False, unique=True),
    Column("blob_id", String(64), nullable=False),
    Column("content_key", LargeBinary, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mail_from", Text, nullable=False),
    Column("recipients", Text, nullable=False),
    Column("ret", String(8), nullable=True),
    Column("envid", Text, nullable=True),
    Column("body", String(16), nullable=True),
    Column("smtputf8", Boolean, nullable=False, default=False),
    Column("created", Double, nullable=False),
    Column("next_attempt", Double, nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("held", Boolean, nullable=False, default=False),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Double, nullable=True),
    Column("delay_notified", Boolean, nullable=False, default=False),
    Column("requiretls", Boolean, nullable=False, default=False),
    Column("data", LargeBinary, nullable=True),  # the message itself if inline (migration 11)
    Index("ix_outbound_queue_due", "held", "next_attempt"),
    sqlite_autoincrement=True,
)

dkim_keys = Table(
    "dkim_keys",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("domain", String(255), nullable=False),
    Column("selector", String(63), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("private_key", LargeBinary, nullable=False),
    Column("public_key", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("active_from", Double, nullable=False),
    UniqueConstraint("domain", "selector", name="uq_dkim_keys_domain_selector"),
    sqlite_autoincrement=True,
)

sending_counts = Table(
    "sending_counts",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("width", Integer, primary_key=True),
    Column("window", BigInteger, primary_key=True),
    Column("messages", Integer, nullable=False),
    Column("recipients", Integer, nullable=False),
)

sending_limits = Table(
    "sending_limits",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("limits", Text, nullable=False),
)

tlsrpt_results = Table(
    "tlsrpt_results",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("detail", Text, nullable=False),
    Column("count", Integer, nullable=False),
)

tlsrpt_sent = Table(
    "tlsrpt_sent",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("queue_id", String(64), nullable=True),
    Column("sent_at", Double, nullable=False),
)

dmarc_results = Table(
    "dmarc_results",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("detail", Text, nullable=False),
    Column("count", Integer, nullable=False),
)

dmarc_sent = Table(
    "dmarc_sent",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("queue_id", String(64), nullable=True),
    Column("sent_at", Double, nullable=False),
)

dmarc_feedback = Table(
    "dmarc_feedback",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("org_name", String(255), nullable=False),
    Column("email", String(320), nullable=False),
    Column("report_id", String(255), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("begin", BigInteger, nullable=False),
    Column("end", BigInteger, nullable=False),
    Column("passed", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("records", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    UniqueConstraint("org_name", "report_id", "domain", name="uq_dmarc_feedback_report"),
    sqlite_autoincrement=True,
)

bans = Table(
    "bans",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("until", Double, nullable=False, index=True),
    Column("reason", String(255), nullable=False),
    Column("strikes", Double, nullable=False),
    Column("level", Integer, nullable=False),
    Column("created", Double, nullable=False),
)

known_clients = Table(
    "known_clients",
    metadata,
    Column("address", String(320), primary_key=True),
    Column("ip_class", String(64), primary_key=True),
    Column("seen", Double, nullable=False, index=True),
)

# -- the junk filter (migration 14, `postkeep.store.sql.junk`) --------------------------------

junk_tokens = Table(
    "junk_tokens",
    metadata,
    Column("scope", Integer, primary_key=True, autoincrement=False),  # account id, 0: global
    Column("token", BigInteger, primary_key=True, autoincrement=False),  # keyed hash
    Column("spam", Integer, nullable=False),
    Column("ham", Integer, nullable=False),
    Column("seen", Integer, nullable=False),  # day last learnt (migration 18)
)

junk_messages = Table(
    "junk_messages",
    metadata,
    Column("scope", Integer, primary_key=True, autoincrement=False),
    Column("spam", Integer, nullable=False),
    Column("ham", Integer, nullable=False),
)

junk_trained = Table(
    "junk_trained",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True,
           autoincrement=False),
    Column("blob_id", String(64), primary_key=True),
    Column("class", String(4), nullable=False),  # "spam" or "ham"
)

junk_lists = Table(
    "junk_lists",
    metadata,
    Column("owner", String(260), primary_key=True),  # "a:<account id>" or "d:<domain>"
    Column("entry", String(320), primary_key=True),  # an address, or a domain
    Column("kind", String(5), nullable=False),  # "allow" or "block"
)

junk_correspondents = Table(
    "junk_correspondents",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True,
           autoincrement=False),
    Column("address", String(320), primary_key=True),
    Column("seen", Double, nullable=False),
)

#: Names of `meta` rows.
META_UIDVALIDITY = "uidvalidity"
META_KEY_CHECK = "master_key_check"
META_QUEUE_KEY = "queue_data_key"
META_DKIM_KEY = "dkim_data_key"
META_JUNK_KEY = "junk_token_key"

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False,
           unique=True),
    Column("direction", String(3), nullable=False),
    Column("queue_id", String(64), nullable=False),
    Column("filter", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("mail_from", Text, nullable=False),
    Column("recipients", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created", Double, nullable=False),
    Column("expires", Double, nullable=False, index=True),
    sqlite_autoincrement=True,
)

sending_pauses = Table(
    "sending_pauses",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
           primary_key=True),
    Column("until", Double, nullable=False, index=True),
    Column("filter", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("queue_id", String(64), nullable=False),
    Column("created", Double, nullable=False),
)


# -- the content filters' record of a message (migration 18) ---------------------------------

filter_results = Table(
    "filter_results",
    metadata,
    Column("blob_id", String(64), ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("direction", String(3), nullable=False),  # "in", "out"
    Column("queue_id", String(64), nullable=False),
    Column("action", String(10), nullable=False),
    Column("score", Double, nullable=False),
    Column("results", Text, nullable=False),  # JSON: [[filter, action, score, [symbols], status]]
    Column("created", Double, nullable=False),
)


def _account_fk() -> ForeignKey:
    return ForeignKey("accounts.id", ondelete="CASCADE")


two_factor = Table(
    "two_factor",
    metadata,
    Column("account_id", Integer, _account_fk(), primary_key=True),
    Column("totp_secret", LargeBinary, nullable=True),  # sealed under the account's data key
    Column("totp_confirmed", Boolean, nullable=False, server_default=false()),
    Column("totp_last_step", BigInteger, nullable=True),
    Column("totp_created", Double, nullable=True),
    Column("webauthn_user", LargeBinary(64), nullable=True, unique=True),
    Column("enforced", Boolean, nullable=False, server_default=false()),
    Column("prior_app_passwords_only", Boolean, nullable=False, server_default=false()),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, _account_fk(), nullable=False, index=True),
    Column("code_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created", Double, nullable=False),
    Column("used_at", Double, nullable=True),
    sqlite_autoincrement=True,
)

webauthn_credentials = Table(
    "webauthn_credentials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, _account_fk(), nullable=False, index=True),
    Column("credential_id", LargeBinary(1023), nullable=False, unique=True),
    Column("public_key", LargeBinary, nullable=False),  # COSE_Key
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", String(255), nullable=False),  # space-separated
    Column("name", String(64), nullable=False),
    Column("created", Double, nullable=False),
    Column("last_used", Double, nullable=True),
    sqlite_autoincrement=True,
)

webauthn_challenges = Table(
    "webauthn_challenges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("challenge", LargeBinary(64), nullable=False, unique=True),
    Column("purpose", String(16), nullable=False),  # "register" or "authenticate"
    Column("session", LargeBinary(32), nullable=False, index=True),  # SHA-256 of the session
    Column("account_id", Integer, _account_fk(), nullable=True),
    Column("expires", Double, nullable=False, index=True),
    sqlite_autoincrement=True,
)

# -- the web listener (migration 16, `postkeep.store.sql.web`) ---------------------------------

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("stage", String(16), nullable=False),
    Column("created", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("expires", Double, nullable=False, index=True),
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(255), nullable=False),
    sqlite_autoincrement=True,
)

login_history = Table(
    "login_history",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"),
           nullable=False),
    Column("time", Double, nullable=False),
    Column("ip", String(64), nullable=False),
    Column("method", String(64), nullable=False),
    Column("result", String(32), nullable=False),
    Column("detail", String(255), nullable=False),
    Index("ix_login_history_account_time", "account_id", "time"),
    sqlite_autoincrement=True,
)
