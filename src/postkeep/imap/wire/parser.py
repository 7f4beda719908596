"""IMAP command parser (sans-IO): one complete command in, one typed command or error out.

`parse()` takes the bytes of one command as `ImapReader` assembled them (tag, lines and literal
octets, final CRLF removed) and returns a `Command` dataclass (see `imap_commands`) or a
`ParseError` carrying the response text. It implements the command syntax of RFC 9051 §6 and
§9 (IMAP4rev2) and RFC 3501 §6 and §9 (IMAP4rev1), with the extended syntax of RFC 4466
(select, create, fetch and store parameters), LITERAL+ / LITERAL- literals (RFC 7888), literal8
(RFC 3516) and the extensions listed in `imap_commands`.

Exposure: this is the first code that interprets bytes from an unauthenticated peer. It does no
I/O and no policy (it does not know what is selected, enabled or allowed); it only says what
was asked. Bad input never raises: every failure is a `ParseError`, tagged when a valid tag
(RFC 9051 §9: 1*<ASTRING-CHAR except "+">) could be read, untagged otherwise. Recursion is
bounded: parenthesized lists by `max_depth`, search programs by `max_search_depth` (and parsed
without recursion).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from postkeep.imap.wire.commands import (
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Fetch,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListReturn,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    ParseError,
    QresyncParams,
    Rename,
    Search,
    Select,
    SequenceSet,
    SetQuota,
    Sort,
    StartTls,
    Status,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
)
from postkeep.imap.wire.fetch import fetch_items, fetch_modifiers, store_action, store_modifiers
from postkeep.imap.wire.lexer import (
    LPAREN,
    MAX_NUMBER64,
    RPAREN,
    STAR,
    Lexer,
    ParseFail,
    read_tag,
)
from postkeep.imap.wire.mailbox import decode_mailbox, encode_mailbox_utf7
from postkeep.imap.wire.search import (
    SEARCH_RETURN_OPTIONS,
    return_options,
    search_criteria,
    sort_criteria,
    thread_algorithm,
)

__all__ = ["ParseError", "decode_mailbox", "encode_mailbox_utf7", "parse"]

DEFAULT_MAX_DEPTH: Final = 32
DEFAULT_MAX_SEARCH_DEPTH: Final = 64

# RFC 9051 §6.3.11 status-att, plus RECENT (RFC 3501), HIGHESTMODSEQ (RFC 7162 §3.1.6),
# APPENDLIMIT (RFC 7889 §4), MAILBOXID (RFC 8474 §4.2).
STATUS_ITEMS: Final = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "SIZE",
        "RECENT",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
        "MAILBOXID",
    }
)
# RFC 5258 §3.1 selection options, RFC 6154 §2 SPECIAL-USE.
LIST_SELECT_OPTIONS: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
# RFC 6154 §2 use-attr, in canonical case.
SPECIAL_USE: Final = {
    a.upper(): a
    for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
# RFC 2971 §3.3 limits (the reader's pre-auth ID allowance, `reader.ID_LIMITS`, is sized on them).
ID_MAX_PAIRS: Final = 30
ID_MAX_FIELD: Final = 30
ID_MAX_VALUE: Final = 1024
_BASE64 = re.compile(
    rb"=|(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
    rb"|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}="
)


def parse(
    data: bytes,
    *,
    utf8: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_search_depth: int = DEFAULT_MAX_SEARCH_DEPTH,
    max_search_keys: int | None = None,
) -> Command | ParseError:
    """Parse one command (without its final CRLF).

    `utf8` selects UTF-8 mailbox names (IMAP4rev2, or UTF8=ACCEPT enabled) instead of modified
    UTF-7 (RFC 3501 §5.1.3). `max_depth` bounds the nesting of parenthesized lists;
    `max_search_depth` the depth of a search program's tree (NOT, OR, parentheses);
    `max_search_keys` its keys (past it: NO [LIMIT], `ParseError.limit`).
    """
    tag, pos = read_tag(data)
    if tag is None:
        text = "Invalid or missing tag" if data.strip() else "Empty command line"
        return ParseError(None, "BAD " + text)
    lx = Lexer(data, pos, utf8=utf8, max_depth=max_depth)
    try:
        if lx.at_end():
            raise ParseFail("BAD Missing command")
        lx.sp()
        name = lx.keyword("a command name")
        return _Parser(lx, tag, max_search_depth, max_search_keys).command(name)
    except ParseFail as e:
        return ParseError(tag, e.text)


class _Parser:
    """Per-command argument parsers; each consumes the whole rest of the command."""

    __slots__ = ("lx", "max_search_depth", "max_search_keys", "tag")

    def __init__(
        self, lx: Lexer, tag: str, max_search_depth: int, max_search_keys: int | None
    ) -> None:
        self.lx = lx
        self.tag = tag
        self.max_search_depth = max_search_depth
        self.max_search_keys = max_search_keys

    def command(self, name: str) -> Command:
        lx = self.lx
        uid = False
        if name == "UID":  # RFC 9051 §6.4.9
            lx.command = "UID"
            lx.sp()
            name = lx.keyword("a command after UID")
            if name not in _UID_COMMANDS:
                raise lx.fail(f"Unknown UID command {name[:40]}")
            uid = True
        bare = _NO_ARGUMENTS.get(name)
        if bare is not None:  # never after UID: none of them is in _UID_COMMANDS
            lx.command = name
            lx.end()
            return bare(self.tag)
        handler = _HANDLERS.get(name)
        if handler is None:
            raise lx.fail(f"Unknown command {name[:40]}")
        lx.command = f"UID {name}" if uid else name
        return handler(self, uid)

    # -- any state (RFC 9051 §6.1) ------------------------------------------------------------

    def id(self, uid: bool) -> Command:
        """ID ("(" *(string SP nstring) ")" / NIL) — RFC 2971 §3.1, limits of §3.3."""
        lx = self.lx
        lx.sp()
        if lx.skip_keyword("NIL"):
            lx.end()
            return Id(self.tag, None)
        lx.open_paren()
        params: list[tuple[str, str | None]] = []
        while lx.peek() != RPAREN:
            if params:
                lx.sp()
            name = lx.text(lx.string(), "ID field")
            lx.sp()
            raw = lx.nstring()
            value = None if raw is None else lx.text(raw, "ID value")
            if len(name.encode()) > ID_MAX_FIELD:
                raise lx.fail(f"ID field longer than {ID_MAX_FIELD} octets (RFC 2971 3.3)")
            if len(raw or b"") > ID_MAX_VALUE:
                raise lx.fail(f"ID value longer than {ID_MAX_VALUE} octets (RFC 2971 3.3)")
            params.append((name, value))
            if len(params) > ID_MAX_PAIRS:
                raise lx.fail(f"Too many ID fields (more than {ID_MAX_PAIRS}, RFC 2971 3.3)")
        lx.close_paren()
        lx.end()
        return Id(self.tag, tuple(params))

    # -- not authenticated (RFC 9051 §6.2) ----------------------------------------------------

    def authenticate(self, uid: bool) -> Command:
        """AUTHENTICATE mechanism [SP initial-resp] (RFC 9051 §6.2.2, RFC 4959 §3)."""
        lx = self.lx
        lx.sp()
        mechanism = lx.keyword("a SASL mechanism")
        initial = None
        if lx.maybe_sp():
            m = _BASE64.match(lx.data, lx.pos)
            if m is None or m.end() != len(lx.data):
                raise lx.fail("Initial response must be base64 or = (RFC 4959)")
            initial = m.group().decode("ascii")
            lx.pos = m.end()
        lx.end()
        return Authenticate(self.tag, mechanism, initial)

    def login(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        username = lx.text(lx.astring("a user name"), "User name")
        lx.sp()
        password = lx.text(lx.astring("a password"), "Password")
        lx.end()
        return Login(self.tag, username, password)

    # -- authenticated (RFC 9051 §6.3) --------------------------------------------------------

    def enable(self, uid: bool) -> Command:
        """ENABLE 1*(SP capability) (RFC 9051 §6.3.1, RFC 5161)."""
        lx = self.lx
        capabilities = []
        lx.sp()
        capabilities.append(lx.keyword("a capability"))
        while lx.maybe_sp():
            capabilities.append(lx.keyword("a capability"))
        lx.end()
        return Enable(self.tag, tuple(dict.fromkeys(capabilities)))

    def select(self, uid: bool) -> Command:
        return self._select(read_only=False)

    def examine(self, uid: bool) -> Command:
        return self._select(read_only=True)

    def _select(self, read_only: bool) -> Command:
        """mailbox [SP "(" select-param *(SP select-param) ")"] (RFC 4466 §2.2, RFC 7162)."""
        lx = self.lx
        lx.sp()
        mailbox = lx.mailbox()
        condstore = False
        qresync = None
        if lx.maybe_sp():
            lx.open_paren()
            while True:
                name = lx.keyword("a SELECT parameter")
                if name == "CONDSTORE" and not condstore:
                    condstore = True
                elif name == "QRESYNC" and qresync is None:
                    lx.sp()
                    qresync = self._qresync()
                else:
                    raise lx.fail(f"Unknown or repeated {lx.command} parameter {name[:40]}")
                if not lx.maybe_sp():
                    break
            lx.close_paren()
        lx.end()
        return Select(self.tag, mailbox, read_only, condstore, qresync)

    def _qresync(self) -> QresyncParams:
        """ "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")"
        (RFC 7162 §3.2.5)."""
        lx = self.lx
        lx.open_paren()
        uid_validity = lx.number(nonzero=True, what="a UIDVALIDITY")
        lx.sp()
        modseq = lx.number(MAX_NUMBER64, nonzero=True, what="a mod-sequence")
        known_uids = None
        seq_match = None
        if lx.maybe_sp() and lx.peek() != LPAREN:
            known_uids = self._plain_set()
            lx.maybe_sp()
        if lx.peek() == LPAREN:
            lx.open_paren()
            known_seqs = self._plain_set()
            lx.sp()
            seq_match = (known_seqs, self._plain_set())
            lx.close_paren()
        lx.close_paren()
        return QresyncParams(uid_validity, modseq, known_uids, seq_match)

    def _plain_set(self) -> SequenceSet:
        """A sequence set without "*" or "$" (RFC 7162 §7 known-uids)."""
        seq = self.lx.sequence_set()
        if seq.saved or any(high == STAR for _, high in seq.ranges):
            raise self.lx.fail('"*" and "$" are not allowed in QRESYNC sets')
        return seq

    def create(self, uid: bool) -> Command:
        """CREATE mailbox [SP "(" USE (use-attrs) ")"] (RFC 4466 §2.2, RFC 6154 §3)."""
        lx = self.lx
        lx.sp()
        mailbox = lx.mailbox()
        uses: list[str] = []
        if lx.maybe_sp():
            lx.open_paren()
            name = lx.keyword("a CREATE parameter")
            if name != "USE":
                raise lx.fail(f"Unknown CREATE parameter {name[:40]}")
            lx.sp()
            lx.open_paren()
            while lx.peek() != RPAREN:
                if uses:
                    lx.sp()
                lx.expect(b"\\", "a special-use attribute")
                attr = "\\" + lx.atom("a special-use attribute")
                uses.append(SPECIAL_USE.get(attr.upper(), attr))
            lx.close_paren()
            lx.close_paren()
        lx.end()
        return Create(self.tag, mailbox, tuple(dict.fromkeys(uses)))

    def _one_mailbox(self) -> str:
        lx = self.lx
        lx.sp()
        mailbox = lx.mailbox()
        lx.end()
        return mailbox

    def delete(self, uid: bool) -> Command:
        return Delete(self.tag, self._one_mailbox())

    def subscribe(self, uid: bool) -> Command:
        return Subscribe(self.tag, self._one_mailbox())

    def unsubscribe(self, uid: bool) -> Command:
        return Unsubscribe(self.tag, self._one_mailbox())

    def getquotaroot(self, uid: bool) -> Command:
        return GetQuotaRoot(self.tag, self._one_mailbox())

    def rename(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        old = lx.mailbox()
        lx.sp()
        new = lx.mailbox()
        lx.end()
        return Rename(self.tag, old, new)

    def list(self, uid: bool) -> Command:
        """LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
        (RFC 9051 §6.3.9, RFC 5258 §3, RFC 5819, RFC 6154)."""
        lx = self.lx
        lx.sp()
        extended = False
        select: list[str] = []
        if lx.peek() == LPAREN:
            extended = True
            lx.open_paren()
            while lx.peek() != RPAREN:
                if select:
                    lx.sp()
                option = lx.keyword("a LIST selection option")
                if option not in LIST_SELECT_OPTIONS:
                    raise lx.fail(f"Unknown LIST selection option {option[:40]}")
                select.append(option)
            lx.close_paren()
            lx.sp()
            if "RECURSIVEMATCH" in select and len(set(select)) == 1:
                raise lx.fail("RECURSIVEMATCH needs another selection option (RFC 5258 3.1)")
        reference = lx.decode_mailbox(lx.astring("a reference name"), inbox=False)
        lx.sp()
        patterns: list[str] = []
        if lx.peek() == LPAREN:
            extended = True
            lx.open_paren()
            patterns.append(lx.list_mailbox())
            while lx.maybe_sp():
                patterns.append(lx.list_mailbox())
            lx.close_paren()
        else:
            patterns.append(lx.list_mailbox())
        returns = ListReturn()
        if lx.maybe_sp():
            extended = True
            if not lx.skip_keyword("RETURN"):
                raise lx.error("RETURN")
            lx.sp()
            returns = self._list_returns()
        lx.end()
        return List(self.tag, reference, tuple(patterns), frozenset(select), returns, extended)

    def _list_returns(self) -> ListReturn:
        """ "(" [return-option *(SP return-option)] ")" (RFC 5258 §3.2, RFC 5819 §2)."""
        lx = self.lx
        lx.open_paren()
        subscribed = children = special_use = False
        status: tuple[str, ...] | None = None
        first = True
        while lx.peek() != RPAREN:
            if not first:
                lx.sp()
            first = False
            option = lx.keyword("a LIST return option")
            if option == "SUBSCRIBED":
                subscribed = True
            elif option == "CHILDREN":
                children = True
            elif option == "SPECIAL-USE":
                special_use = True
            elif option == "STATUS" and status is None:
                lx.sp()
                status = self._status_items()
            else:
                raise lx.fail(f"Unknown or repeated LIST return option {option[:40]}")
        lx.close_paren()
        return ListReturn(subscribed, children, special_use, status)

    def lsub(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        reference = lx.decode_mailbox(lx.astring("a reference name"), inbox=False)
        lx.sp()
        pattern = lx.list_mailbox()
        lx.end()
        return Lsub(self.tag, reference, pattern)

    def status(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        mailbox = lx.mailbox()
        lx.sp()
        items = self._status_items()
        lx.end()
        return Status(self.tag, mailbox, items)

    def _status_items(self) -> tuple[str, ...]:
        items = self.lx.atom_list("a STATUS item")
        for item in items:
            if item not in STATUS_ITEMS:
                raise self.lx.fail(f"Unknown STATUS item {item[:40]}")
        return tuple(dict.fromkeys(items))

    def append(self, uid: bool) -> Command:
        """APPEND mailbox 1*(SP [flag-list SP] [date-time SP] append-data)
        (RFC 9051 §6.3.12, MULTIAPPEND RFC 3502 §6, literal8 RFC 3516 §4.2, UTF8 RFC 6855 §4).
        """
        lx = self.lx
        lx.sp()
        mailbox = lx.mailbox()
        messages: list[AppendMessage] = []
        while not messages or not lx.at_end():
            lx.sp()
            flags: tuple[str, ...] = ()
            if lx.peek() == LPAREN:
                flags = lx.flag_list()
                lx.sp()
            internal_date = None
            if lx.peek() == 0x22:
                internal_date = lx.date_time()
                lx.sp()
            utf8 = lx.skip_keyword("UTF8")
            if utf8:
                lx.sp()
                lx.open_paren()
                data, binary = lx.literal(allow8=True, allow_nul=True)
                if not binary:
                    raise lx.fail("UTF8 APPEND data must be a literal8 (RFC 6855 4)")
                lx.close_paren()
            else:
                data, binary = lx.literal(allow8=True, allow_nul=True)
            messages.append(AppendMessage(data, flags, internal_date, binary, utf8))
        return Append(self.tag, mailbox, tuple(messages))

    def getquota(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        root = lx.text(lx.astring("a quota root"), "Quota root")
        lx.end()
        return GetQuota(self.tag, root)

    def setquota(self, uid: bool) -> Command:
        """SETQUOTA quota-root-name SP setquota-list (RFC 9208 §4.1.4, §8)."""
        lx = self.lx
        lx.sp()
        root = lx.text(lx.astring("a quota root"), "Quota root")
        lx.sp()
        lx.open_paren()
        limits: list[tuple[str, int]] = []
        while lx.peek() != RPAREN:
            if limits:
                lx.sp()
            resource = lx.keyword("a quota resource")
            lx.sp()
            limits.append((resource, lx.number64()))
        lx.close_paren()
        lx.end()
        return SetQuota(self.tag, root, tuple(limits))

    def compress(self, uid: bool) -> Command:
        lx = self.lx
        lx.sp()
        mechanism = lx.keyword("a compression mechanism")
        lx.end()
        return Compress(self.tag, mechanism)

    # -- selected (RFC 9051 §6.4) -------------------------------------------------------------

    def expunge(self, uid: bool) -> Command:
        lx = self.lx
        uids = None
        if uid:  # UID EXPUNGE sequence-set (RFC 9051 §6.4.9, RFC 4315 §2.1)
            lx.sp()
            uids = lx.sequence_set()
        lx.end()
        return Expunge(self.tag, uids)

    def search(self, uid: bool) -> Command:
        """[UID] SEARCH [SP RETURN (...)] SP [CHARSET c SP] keys (RFC 9051 §6.4.4)."""
        lx = self.lx
        lx.sp()
        returns = None
        if lx.skip_keyword("RETURN"):
            lx.sp()
            returns = return_options(lx, SEARCH_RETURN_OPTIONS)
            lx.sp()
        charset, key = search_criteria(
            lx, self.max_search_depth, charset_required=False, max_keys=self.max_search_keys
        )
        lx.end()
        return Search(self.tag, key, uid, charset, returns)

    def sort(self, uid: bool) -> Command:
        """[UID] SORT [SP RETURN (...)] SP (criteria) SP charset SP keys (RFC 5256, 5267)."""
        lx = self.lx
        lx.sp()
        returns = None
        if lx.skip_keyword("RETURN"):
            lx.sp()
            returns = return_options(lx, SEARCH_RETURN_OPTIONS)
            lx.sp()
        criteria = sort_criteria(lx)
        lx.sp()
        charset, key = search_criteria(
            lx, self.max_search_depth, charset_required=True, max_keys=self.max_search_keys
        )
        lx.end()
        assert charset is not None
        return Sort(self.tag, criteria, charset, key, uid, returns)

    def thread(self, uid: bool) -> Command:
        """[UID] THREAD algorithm SP charset SP keys (RFC 5256 §3)."""
        lx = self.lx
        lx.sp()
        algorithm = thread_algorithm(lx)
        lx.sp()
        charset, key = search_criteria(
            lx, self.max_search_depth, charset_required=True, max_keys=self.max_search_keys
        )
        lx.end()
        assert charset is not None
        return Thread(self.tag, algorithm, charset, key, uid)

    def fetch(self, uid: bool) -> Command:
        """[UID] FETCH set SP items [SP (modifiers)] (RFC 9051 §6.4.5, RFC 7162 §3.1.4)."""
        lx = self.lx
        lx.sp()
        sequence_set = lx.sequence_set()
        lx.sp()
        attributes, macro = fetch_items(lx)
        changed_since = None
        vanished = False
        if lx.maybe_sp():
            changed_since, vanished = fetch_modifiers(lx)
        lx.end()
        if vanished and (not uid or changed_since is None):
            raise lx.fail("VANISHED needs UID FETCH with CHANGEDSINCE (RFC 7162 3.2.6)")
        return Fetch(self.tag, sequence_set, attributes, uid, changed_since, vanished, macro)

    def store(self, uid: bool) -> Command:
        """[UID] STORE set [SP (UNCHANGEDSINCE n)] SP store-att-flags (RFC 9051 §6.4.6)."""
        lx = self.lx
        lx.sp()
        sequence_set = lx.sequence_set()
        lx.sp()
        unchanged_since = None
        if lx.peek() == LPAREN:
            unchanged_since = store_modifiers(lx)
            lx.sp()
        mode, silent, flags = store_action(lx)
        lx.end()
        return Store(self.tag, sequence_set, mode, flags, uid, silent, unchanged_since)

    def _set_and_mailbox(self) -> tuple[SequenceSet, str]:
        lx = self.lx
        lx.sp()
        sequence_set = lx.sequence_set()
        lx.sp()
        mailbox = lx.mailbox()
        lx.end()
        return sequence_set, mailbox

    def copy(self, uid: bool) -> Command:
        return Copy(self.tag, *self._set_and_mailbox(), uid)

    def move(self, uid: bool) -> Command:
        """[UID] MOVE set mailbox (RFC 9051 §6.4.8, RFC 6851)."""
        return Move(self.tag, *self._set_and_mailbox(), uid)


_Handler = Callable[[_Parser, bool], Command]
#: Commands that take no arguments (RFC 9051 §6.1.1-3, §6.2.1, §6.3.10, §6.3.13, §6.4.1-2,
#: RFC 2177 IDLE, RFC 3691 UNSELECT): the whole parse is "nothing may follow".
_NO_ARGUMENTS: Final[dict[str, Callable[[str], Command]]] = {
    "CAPABILITY": Capability,
    "NOOP": Noop,
    "LOGOUT": Logout,
    "STARTTLS": StartTls,
    "NAMESPACE": Namespace,
    "IDLE": Idle,
    "CHECK": Check,
    "CLOSE": Close,
    "UNSELECT": Unselect,
}

_HANDLERS: Final[dict[str, _Handler]] = {
    "ID": _Parser.id,
    "AUTHENTICATE": _Parser.authenticate,
    "LOGIN": _Parser.login,
    "ENABLE": _Parser.enable,
    "SELECT": _Parser.select,
    "EXAMINE": _Parser.examine,
    "CREATE": _Parser.create,
    "DELETE": _Parser.delete,
    "RENAME": _Parser.rename,
    "SUBSCRIBE": _Parser.subscribe,
    "UNSUBSCRIBE": _Parser.unsubscribe,
    "LIST": _Parser.list,
    "LSUB": _Parser.lsub,
    "STATUS": _Parser.status,
    "APPEND": _Parser.append,
    "GETQUOTA": _Parser.getquota,
    "GETQUOTAROOT": _Parser.getquotaroot,
    "SETQUOTA": _Parser.setquota,
    "COMPRESS": _Parser.compress,
    "EXPUNGE": _Parser.expunge,
    "SEARCH": _Parser.search,
    "SORT": _Parser.sort,
    "THREAD": _Parser.thread,
    "FETCH": _Parser.fetch,
    "STORE": _Parser.store,
    "COPY": _Parser.copy,
    "MOVE": _Parser.move,
}
_UID_COMMANDS: Final = frozenset(
    {"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD"}
)
