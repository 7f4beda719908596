"""Typed IMAP commands: what `imap_parser.parse()` returns (sans-IO, no behaviour).

One frozen dataclass per command of RFC 9051 §6 (IMAP4rev2) and RFC 3501 §6 (IMAP4rev1), with
the arguments of the extensions the server accepts: SASL-IR (RFC 4959), ENABLE (RFC 5161),
CONDSTORE/QRESYNC (RFC 7162), SPECIAL-USE (RFC 6154), LIST-EXTENDED (RFC 5258), LIST-STATUS
(RFC 5819), MULTIAPPEND (RFC 3502), BINARY (RFC 3516), UTF8=ACCEPT (RFC 6855), ESEARCH
(RFC 4731), SEARCHRES (RFC 5182), SORT/THREAD (RFC 5256), ESORT (RFC 5267), WITHIN (RFC 5032),
SAVEDATE (RFC 8514), OBJECTID (RFC 8474), QUOTA (RFC 9208), ID (RFC 2971), COMPRESS (RFC 4978),
UIDPLUS (RFC 4315, UID EXPUNGE) and MOVE (RFC 6851).

Names of keywords (search keys, fetch items, status items, options) are upper-cased; mailbox
names are decoded `str` (see `imap_mailbox`); message data and SASL responses stay bytes/base64.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

# "*" in a sequence set: the largest number in use (RFC 9051 §9 seq-number). It sorts above
# every real message number or UID (nz-number is at most 4294967295).
STAR: Final = 4294967296


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set (RFC 9051 §9), normalized.

    `ranges` are inclusive (low, high) pairs, sorted, with overlapping and adjacent ranges
    merged; `STAR` stands for "*" ("4:*" and "*:4" both give (4, STAR); "*" alone is
    (STAR, STAR)). Merging is exact for any mailbox since "n:*" covers n..largest (or just the
    largest when n is above it). `saved` is set when the set names "$", the result saved by
    SEARCH RETURN (SAVE) (RFC 5182 §2.1); the saved result is added to `ranges` by the caller.
    """

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    @classmethod
    def normalized(cls, pairs: list[tuple[int, int]], saved: bool = False) -> SequenceSet:
        """Build a set from unordered (a, b) pairs (either order, `STAR` allowed)."""
        ordered = sorted((min(a, b), max(a, b)) for a, b in pairs)
        merged: list[tuple[int, int]] = []
        for low, high in ordered:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return cls(tuple(merged), saved)

    def resolve(self, largest: int) -> tuple[tuple[int, int], ...]:
        """The ranges with "*" replaced by `largest` (0 for an empty mailbox), re-normalized.

        Ranges are not clipped to `largest`; "$" is not included. In an empty mailbox a range
        with "*" names nothing.
        """
        pairs = []
        for low, high in self.ranges:
            if largest < 1 and high == STAR:
                continue  # "*" names nothing in an empty mailbox
            a = largest if low == STAR else low
            b = largest if high == STAR else high
            a, b = min(a, b), max(a, b)
            if b >= 1:
                pairs.append((max(a, 1), b))
        return SequenceSet.normalized(pairs).ranges

    def iter_numbers(self, largest: int) -> Iterator[int]:
        """Every number named, "*" resolved and clipped to `largest` (for small mailboxes)."""
        for low, high in self.resolve(largest):
            yield from range(low, min(high, largest) + 1)

    def __str__(self) -> str:
        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        parts = [one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges]
        if self.saved:
            parts.append("$")
        return ",".join(parts)


# -- FETCH (RFC 9051 §6.4.5) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A body section (RFC 9051 §6.4.5 BODY[<section>]; RFC 3516 §4.1 section-binary).

    `part` is the MIME part path ("1.2.3" → (1, 2, 3)); `text` is HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT, MIME or None (the whole part); `fields` the header field names of
    HEADER.FIELDS[.NOT], as sent.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        items = [".".join(map(str, self.part))] if self.part else []
        if self.text:
            items.append(self.text)
        spec = ".".join(items)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One fetch attribute (RFC 9051 §6.4.5, RFC 3501 §6.4.5, RFC 3516, 7162, 8474, 8514).

    `name` is one of ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT
    BODY BODYSTRUCTURE UID BINARY BINARY.SIZE MODSEQ SAVEDATE EMAILID THREADID. BODY with a
    `section` is BODY[...]; BODY without one is the non-extensible body structure. `peek` marks
    BODY.PEEK / BINARY.PEEK; `partial` is "<offset.length>".
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


# -- SEARCH (RFC 9051 §6.4.4) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """A key without argument: ALL, ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, UNANSWERED,
    UNDELETED, UNDRAFT, UNFLAGGED, UNSEEN; NEW, OLD, RECENT (RFC 3501); SAVEDATESUPPORTED
    (RFC 8514)."""

    key: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BCC, BODY, CC, FROM, SUBJECT, TEXT or TO with its (charset-decoded) string."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """HEADER field-name string."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchKeyword:
    """KEYWORD flag (`present`) or UNKEYWORD flag."""

    keyword: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE, ON, SINCE, SENTBEFORE, SENTON, SENTSINCE, SAVEDBEFORE, SAVEDON, SAVEDSINCE."""

    key: str
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    """LARGER n or SMALLER n (octets, RFC 9051 number64)."""

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class SearchAge:
    """OLDER n or YOUNGER n (seconds, RFC 5032 WITHIN)."""

    key: str
    seconds: int


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A sequence set (message numbers) or UID set."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ [entry-name entry-type] mod-sequence (RFC 7162 §3.1.5)."""

    modseq: int
    entry: str | None = None  # e.g. "/flags/\\draft"
    entry_type: str | None = None  # PRIV, SHARED or ALL


@dataclass(frozen=True, slots=True)
class SearchObjectId:
    """EMAILID or THREADID objectid (RFC 8474 §6)."""

    key: str
    object_id: str


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    """OR: any of `keys` (two or more; nested ORs are flattened)."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """All of `keys`: several keys in a row, or a parenthesized list."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchFlag
    | SearchText
    | SearchHeader
    | SearchKeyword
    | SearchDate
    | SearchSize
    | SearchAge
    | SearchSet
    | SearchModSeq
    | SearchObjectId
    | SearchNot
    | SearchOr
    | SearchAnd
)

# -- other arguments --------------------------------------------------------------------------


class StoreMode(enum.Enum):
    """FLAGS (replace), +FLAGS (add) or -FLAGS (remove) — RFC 9051 §6.4.6."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids] [seq-match])) — RFC 7162 §3.2.5."""

    uid_validity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (sequence numbers, UIDs)


@dataclass(frozen=True, slots=True)
class ListReturn:
    """LIST ... RETURN (...) options (RFC 5258 §3, RFC 5819, RFC 6154 §2)."""

    subscribed: bool = False
    children: bool = False
    special_use: bool = False
    status: tuple[str, ...] | None = None  # STATUS (items) — RFC 5819


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of APPEND / MULTIAPPEND (RFC 9051 §6.3.12, RFC 3502).

    `binary` when sent as literal8 (RFC 3516 §4.2), `utf8` when wrapped in UTF8 (...)
    (RFC 6855 §4). `data` is exactly the literal's octets.
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class SortCriterion:
    """One sort key, optionally REVERSE (RFC 5256 §3)."""

    key: str
    reverse: bool = False


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 9051 §6.2.2, SASL-IR RFC 4959).

    `initial` is still base64 ("=" means an empty initial response); None when absent.
    """

    tag: str
    mechanism: str
    initial: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Enable:
    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT, or EXAMINE when `read_only` (RFC 9051 §6.3.2-3, RFC 7162 §3.1.8, §3.2.5)."""

    tag: str
    mailbox: str
    read_only: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None


@dataclass(frozen=True, slots=True)
class Create:
    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Drafts ...)) — RFC 6154 §3


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST (RFC 9051 §6.3.9), with the LIST-EXTENDED syntax of RFC 5258 §3.

    `patterns` are decoded mailbox patterns with "*" and "%" wildcards (INBOX is not
    normalized); `select` holds the selection options (SUBSCRIBED, REMOTE, RECURSIVEMATCH,
    SPECIAL-USE); `extended` tells whether any extended syntax was used (RFC 5258 §3).
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    returns: ListReturn = field(default_factory=ListReturn)
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub:
    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class Idle:
    tag: str


@dataclass(frozen=True, slots=True)
class Check:
    """CHECK (IMAP4rev1 only, RFC 3501 §6.4.1)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE uid-set when `uids` is set (RFC 9051 §6.4.3, §6.4.9)."""

    tag: str
    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Search:
    """[UID] SEARCH [RETURN (...)] [CHARSET c] keys (RFC 9051 §6.4.4, RFC 4731, RFC 5182).

    `returns` is None without RETURN (IMAP4rev1 SEARCH response), else the upper-cased result
    options with "RETURN ()" given as ("ALL",) (RFC 4731 §3.1). `key` is the whole program,
    a `SearchAnd` when several keys were given.
    """

    tag: str
    key: SearchKey
    uid: bool = False
    charset: str | None = None
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch:
    """[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])] (RFC 9051 §6.4.5, RFC 7162).

    Macros are expanded (ALL, FAST, FULL); `macro` remembers which one was used.
    """

    tag: str
    sequence_set: SequenceSet
    attributes: tuple[FetchAtt, ...]
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False
    macro: str | None = None


@dataclass(frozen=True, slots=True)
class Store:
    """[UID] STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags (RFC 9051 §6.4.6)."""

    tag: str
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    uid: bool = False
    silent: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Sort:
    """[UID] SORT [RETURN (...)] (criteria) charset keys (RFC 5256 §3, ESORT RFC 5267)."""

    tag: str
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    uid: bool = False
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Thread:
    """[UID] THREAD algorithm charset keys (RFC 5256 §3)."""

    tag: str
    algorithm: str
    charset: str
    key: SearchKey
    uid: bool = False


@dataclass(frozen=True, slots=True)
class GetQuota:
    tag: str
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """SETQUOTA root ((resource limit)*) (RFC 9208 §4.1.4); resources upper-cased."""

    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Id:
    """ID (field value ...) or ID NIL (RFC 2971 §3.1); None values are NIL."""

    tag: str
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Compress:
    """COMPRESS mechanism (RFC 4978 §3); the driver accepts only DEFLATE."""

    tag: str
    mechanism: str


Command = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Append
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
    | Sort
    | Thread
    | GetQuota
    | GetQuotaRoot
    | SetQuota
    | Id
    | Compress
)


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command that cannot be executed as sent.

    `tag` is None when no valid tag could be read (answer untagged, "* BAD ..."). `text` is the
    whole response after the tag, status first: "BAD Unknown command FROB", or
    "NO [BADCHARSET (US-ASCII UTF-8)] ..." for an unsupported SEARCH charset (RFC 9051 §6.4.4).
    """

    tag: str | None
    text: str

    @property
    def status(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def limit(self) -> bool:
        """A refusal for size (NO [LIMIT], RFC 9051 §7.1: too many search keys), which the
        driver logs as a rejection."""
        return self.text.startswith("NO [LIMIT]")

    def response(self) -> bytes:
        """The response line, CRLF included."""
        return f"{self.tag or '*'} {self.text}\r\n".encode()
