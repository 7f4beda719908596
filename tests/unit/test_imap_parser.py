"""Unit tests of the IMAP command parser (RFC 9051 §6, §8, §9; RFC 3501; extensions)."""

from __future__ import annotations

import datetime

import pytest

from postkeep.imap.wire.commands import (
    STAR,
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
    FetchAtt,
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
    SearchAge,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKeyword,
    SearchModSeq,
    SearchNot,
    SearchObjectId,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
    Select,
    SequenceSet,
    SetQuota,
    Sort,
    SortCriterion,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
)
from postkeep.imap.wire.lexer import parse_sequence_set
from postkeep.imap.wire.mailbox import MailboxNameError, decode_utf7
from postkeep.imap.wire.parser import decode_mailbox, encode_mailbox_utf7, parse


def seq(text: str) -> SequenceSet:
    result = parse_sequence_set(text.encode())
    assert result is not None
    return result


def ok(data: bytes, **kw: int) -> Command:
    result = parse(data, **kw)
    assert not isinstance(result, ParseError), result
    return result


def bad(data: bytes, **kw: int) -> ParseError:
    result = parse(data, **kw)
    assert isinstance(result, ParseError), result
    return result


F = FetchAtt

# -- RFC 9051 §8: the sample session ------------------------------------------------------------


def test_rfc9051_section8_sample_session() -> None:
    """Every client command of RFC 9051 §8 parsed into its dataclass."""
    assert ok(b"a000 starttls") == StartTls("a000")
    assert ok(
        b"A001 AUTHENTICATE SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8="
    ) == Authenticate("A001", "SCRAM-SHA-256", "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=")
    assert ok(b"babc ENABLE IMAP4rev2") == Enable("babc", ("IMAP4REV2",))
    assert ok(b"a002 select inbox") == Select("a002", "INBOX")
    assert ok(b"a003 fetch 12 full") == Fetch(
        "a003",
        seq("12"),
        (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE"), F("BODY")),
        macro="FULL",
    )
    assert ok(b"a004 fetch 12 body[header]") == Fetch(
        "a004", seq("12"), (F("BODY", Section(text="HEADER")),)
    )
    assert ok(b"a005 store 12 +flags \\deleted") == Store(
        "a005", seq("12"), StoreMode.ADD, ("\\Deleted",)
    )
    assert ok(b"a006 logout") == Logout("a006")


# -- RFC 9051 §6 examples, command by command ---------------------------------------------------


def test_any_state_commands() -> None:
    """§6.1: CAPABILITY, NOOP, LOGOUT; RFC 2971 ID; RFC 4978 COMPRESS."""
    assert ok(b"abcd CAPABILITY") == Capability("abcd")
    assert ok(b"a002 NOOP") == Noop("a002")
    assert ok(b"A023 LOGOUT") == Logout("A023")
    assert ok(
        b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")'
    ) == Id(
        "a023",
        (("name", "sodr"), ("version", "19.34"), ("vendor", "Pink Floyd Music Limited")),
    )
    assert ok(b"a023 ID NIL") == Id("a023", None)
    assert ok(b'a1 ID ("name" NIL)') == Id("a1", (("name", None),))
    assert ok(b"a1 ID ()") == Id("a1", ())


def test_id_at_rfc2971_limits() -> None:
    """RFC 2971 §3.3: 30 pairs, fields of 30 octets, values of 1024, quoted or literal."""
    pairs = [f"f{i:02d}".ljust(30, "x") for i in range(30)]
    value = "v" * 1024
    quoted = b" ".join(b'"%s" "%s"' % (f.encode(), value.encode()) for f in pairs)
    assert ok(b"a ID (" + quoted + b")") == Id("a", tuple((f, value) for f in pairs))
    literal = b" ".join(
        b"{30}\r\n%s {1024+}\r\n%s" % (f.encode(), value.encode()) for f in pairs
    )
    assert ok(b"a ID (" + literal + b")") == Id("a", tuple((f, value) for f in pairs))
    # a value's length is that of its content, escapes aside
    assert ok(b'a ID ("k" "' + b'\\"' * 1024 + b'")') == Id("a", (("k", '"' * 1024),))
    assert ok(b"a COMPRESS deflate") == Compress("a", "DEFLATE")


def test_not_authenticated_commands() -> None:
    """§6.2: STARTTLS, AUTHENTICATE (with SASL-IR, RFC 4959), LOGIN."""
    assert ok(b"a002 STARTTLS") == StartTls("a002")
    assert ok(b"A001 AUTHENTICATE GSSAPI") == Authenticate("A001", "GSSAPI")
    assert ok(b"A002 AUTHENTICATE plain dGVzdAB0ZXN0AHRlc3Q=") == Authenticate(
        "A002", "PLAIN", "dGVzdAB0ZXN0AHRlc3Q="
    )
    assert ok(b"A003 AUTHENTICATE EXTERNAL =") == Authenticate("A003", "EXTERNAL", "=")
    assert ok(b"a001 LOGIN SMITH SESAME") == Login("a001", "SMITH", "SESAME")
    assert ok(b'a001 LOGIN "fred smith" "pass \\"word\\""') == Login(
        "a001", "fred smith", 'pass "word"'
    )
    assert ok(b"a001 LOGIN {4}\r\nfred {6+}\r\nsecret") == Login("a001", "fred", "secret")
    assert ok('a LOGIN "jörg" "pässwörd"'.encode()) == Login("a", "jörg", "pässwörd")


def test_enable_select_examine() -> None:
    """§6.3.1-3 with CONDSTORE and QRESYNC parameters (RFC 7162 §3.1.8, §3.2.5)."""
    assert ok(b"t2 ENABLE CONDSTORE X-GOOD-IDEA") == Enable("t2", ("CONDSTORE", "X-GOOD-IDEA"))
    assert ok(b"t3 ENABLE UTF8=ACCEPT") == Enable("t3", ("UTF8=ACCEPT",))
    assert ok(b"A142 SELECT INBOX") == Select("A142", "INBOX")
    assert ok(b"A932 EXAMINE blurdybloop") == Select("A932", "blurdybloop", read_only=True)
    assert ok(b"a SELECT INBOX (CONDSTORE)") == Select("a", "INBOX", condstore=True)
    assert ok(
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))"
    ) == Select(
        "A02",
        "INBOX",
        qresync=QresyncParams(67890007, 20050715194045000, seq("41,43:211,214:541")),
    )
    assert ok(
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
        b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979:29997)))"
    ) == Select(
        "B04",
        "INBOX",
        qresync=QresyncParams(
            67890007,
            90060115194045000,
            seq("1:29997"),
            (
                seq("5000,7500,9000,9990:9999"),
                seq("15000,22500,27000,29970,29973,29976,29979:29997"),
            ),
        ),
    )


def test_mailbox_management() -> None:
    """§6.3.4-8, §6.3.10; CREATE ... (USE (...)) of RFC 6154 §3."""
    assert ok(b"A003 CREATE owatagusiam/") == Create("A003", "owatagusiam/")
    assert ok(b"A004 CREATE owatagusiam/blurdybloop") == Create("A004", "owatagusiam/blurdybloop")
    assert ok(b't1 CREATE "Everything" (USE (\\All))') == Create("t1", "Everything", ("\\All",))
    assert ok(b"t1 CREATE Trash (USE (\\trash \\X-Mine))") == Create(
        "t1", "Trash", ("\\Trash", "\\X-Mine")
    )
    assert ok(b"A683 DELETE blurdybloop") == Delete("A683", "blurdybloop")
    assert ok(b"A683 RENAME blurdybloop sarasoop") == Rename("A683", "blurdybloop", "sarasoop")
    assert ok(b"A002 SUBSCRIBE #news.comp.mail.mime") == Subscribe("A002", "#news.comp.mail.mime")
    assert ok(b"A002 UNSUBSCRIBE #news.comp.mail.mime") == Unsubscribe(
        "A002", "#news.comp.mail.mime"
    )
    assert ok(b"A001 NAMESPACE") == Namespace("A001")
    assert ok(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)") == Status(
        "A042", "blurdybloop", ("UIDNEXT", "MESSAGES")
    )
    all_items = (
        b"(MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ "
        b"APPENDLIMIT MAILBOXID)"
    )
    status = ok(b"a STATUS INBOX " + all_items)
    assert isinstance(status, Status) and len(status.items) == 10


def test_list_and_lsub() -> None:
    """§6.3.9 with LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154)."""
    assert ok(b'A101 LIST "" ""') == List("A101", "", ("",))
    assert ok(b'A102 LIST #news.comp.mail.misc ""') == List("A102", "#news.comp.mail.misc", ("",))
    assert ok(b"A202 LIST ~/Mail/ %") == List("A202", "~/Mail/", ("%",))
    assert ok(b'A02 LIST (SUBSCRIBED) "" "*"') == List(
        "A02", "", ("*",), frozenset({"SUBSCRIBED"}), extended=True
    )
    assert ok(b'A03 LIST () "" "%" RETURN (CHILDREN)') == List(
        "A03", "", ("%",), returns=ListReturn(children=True), extended=True
    )
    assert ok(b'A04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)') == List(
        "A04",
        "",
        ("%",),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        ListReturn(children=True),
        extended=True,
    )
    assert ok(b'A05 LIST "" ("foo" "foo/*")') == List("A05", "", ("foo", "foo/*"), extended=True)
    assert ok(b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))') == List(
        "A01", "", ("%",), returns=ListReturn(status=("MESSAGES", "UNSEEN")), extended=True
    )
    assert ok(b't1 LIST "" "%" RETURN (SPECIAL-USE SUBSCRIBED)') == List(
        "t1", "", ("%",), returns=ListReturn(subscribed=True, special_use=True), extended=True
    )
    assert ok(b't1 LIST (SPECIAL-USE) "" "*"') == List(
        "t1", "", ("*",), frozenset({"SPECIAL-USE"}), extended=True
    )
    assert ok(b"a LIST inbox inbox") == List("a", "inbox", ("inbox",))  # patterns keep case
    assert ok(b'A002 LSUB "#news." "comp.mail.*"') == Lsub("A002", "#news.", "comp.mail.*")


def test_append_single_multi_binary() -> None:
    """§6.3.12 (literal and LITERAL+), MULTIAPPEND (RFC 3502), literal8 (RFC 3516 §4.2)."""
    message = (
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
        b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        b"Subject: afternoon meeting\r\n"
        b"To: mooch@owatagu.siam.edu.example\r\n"
        b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n"
        b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    )
    head = b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(message)
    assert ok(head + message) == Append(
        "A003", "saved-messages", (AppendMessage(message, ("\\Seen",)),)
    )
    plus = b"A004 APPEND saved-messages (\\Seen) {%d+}\r\n" % len(message)
    assert ok(plus + message) == Append(
        "A004", "saved-messages", (AppendMessage(message, ("\\Seen",)),)
    )
    multi = ok(
        b'A003 APPEND saved-messages (\\Seen) {5}\r\nfirst (\\Seen) " 7-Feb-1994 22:43:04 -0800"'
        b" {6}\r\nsecond {5+}\r\nthird"
    )
    pst = datetime.timezone(datetime.timedelta(hours=-8))
    assert multi == Append(
        "A003",
        "saved-messages",
        (
            AppendMessage(b"first", ("\\Seen",)),
            AppendMessage(
                b"second", ("\\Seen",), datetime.datetime(1994, 2, 7, 22, 43, 4, tzinfo=pst)
            ),
            AppendMessage(b"third"),
        ),
    )
    assert ok(b"a APPEND INBOX () ~{3}\r\na\x00b") == Append(
        "a", "INBOX", (AppendMessage(b"a\x00b", binary=True),)
    )
    assert ok(b"a APPEND INBOX UTF8 (~{2}\r\nhi)") == Append(
        "a", "INBOX", (AppendMessage(b"hi", binary=True, utf8=True),)
    )
    assert ok(b'a APPEND INBOX "17-Jul-1996 02:44:25 +0530" {1}\r\nx') == Append(
        "a",
        "INBOX",
        (
            AppendMessage(
                b"x",
                internal_date=datetime.datetime(
                    1996, 7, 17, 2, 44, 25,
                    tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
                ),
            ),
        ),
    )


def test_selected_state_simple_commands() -> None:
    """§6.3.13 IDLE, §6.4.1-3 CLOSE / UNSELECT / EXPUNGE, RFC 3501 CHECK, UID EXPUNGE."""
    assert ok(b"A002 IDLE") == Idle("A002")
    assert ok(b"FXXZ CHECK") == Check("FXXZ")
    assert ok(b"A341 CLOSE") == Close("A341")
    assert ok(b"A342 UNSELECT") == Unselect("A342")
    assert ok(b"A202 EXPUNGE") == Expunge("A202")
    assert ok(b"A003 UID EXPUNGE 3000:3002") == Expunge("A003", seq("3000:3002"))


def test_search_examples() -> None:
    """§6.4.4 with ESEARCH (RFC 4731) RETURN and CHARSET with a literal."""
    flagged_since_not_smith = SearchAnd(
        (
            SearchFlag("FLAGGED"),
            SearchDate("SINCE", datetime.date(1994, 2, 1)),
            SearchNot(SearchText("FROM", "Smith")),
        )
    )
    assert ok(
        b'A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
    ) == Search("A282", flagged_since_not_smith, returns=("MIN", "COUNT"))
    assert ok(b'A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == Search(
        "A283", flagged_since_not_smith, returns=("ALL",)
    )
    assert ok(b'A284 SEARCH TEXT "string not in mailbox"') == Search(
        "A284", SearchText("TEXT", "string not in mailbox")
    )
    cyrillic = "отпуск".encode()
    assert ok(b"A285 SEARCH CHARSET UTF-8 TEXT {12}\r\n" + cyrillic) == Search(
        "A285", SearchText("TEXT", "отпуск"), charset="UTF-8"
    )
    assert ok(b"A286 SEARCH CHARSET ISO-8859-1 TEXT {1+}\r\n\xe9") == Search(
        "A286", SearchText("TEXT", "é"), charset="ISO-8859-1"
    )
    assert ok(b'A287 SEARCH OR FROM "Smith" TO "Jones"') == Search(
        "A287", SearchOr((SearchText("FROM", "Smith"), SearchText("TO", "Jones")))
    )


def test_search_every_key() -> None:
    """Each search key of RFC 9051 §6.4.4 and the extension keys."""
    program = (
        b"a UID SEARCH ALL ANSWERED BCC b BEFORE 1-Jan-2000 BODY x CC c DELETED DRAFT "
        b'FLAGGED FROM f HEADER Message-ID "<id@x>" KEYWORD $Forwarded LARGER 100 NEW NOT SEEN '
        b"OLD ON 2-Feb-2001 OR RECENT SEEN SEEN SENTBEFORE 3-Mar-2002 SENTON 4-Apr-2003 "
        b"SENTSINCE 5-May-2004 SINCE 6-Jun-2005 SMALLER 200 SUBJECT s TEXT t TO o "
        b"UID 1:5,$ UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $Junk UNSEEN 2,4:* "
        b"MODSEQ 42 YOUNGER 60 OLDER 3600 SAVEDBEFORE 1-Jan-2020 SAVEDON 2-Jan-2020 "
        b"SAVEDSINCE 3-Jan-2020 SAVEDATESUPPORTED EMAILID M6d99ac3275bb4e THREADID T64b478a75b"
    )
    result = ok(program)
    assert isinstance(result, Search) and result.uid and isinstance(result.key, SearchAnd)
    keys = result.key.keys
    assert SearchText("BCC", "b") in keys
    assert SearchHeader("Message-ID", "<id@x>") in keys
    assert SearchKeyword("$Forwarded") in keys and SearchKeyword("$Junk", False) in keys
    assert SearchSize("LARGER", 100) in keys and SearchSize("SMALLER", 200) in keys
    assert SearchNot(SearchFlag("SEEN")) in keys
    assert SearchOr((SearchFlag("RECENT"), SearchFlag("SEEN"))) in keys
    assert SearchSet(seq("1:5,$"), uid=True) in keys
    assert SearchSet(SequenceSet(((2, 2), (4, STAR)))) in keys
    assert SearchModSeq(42) in keys
    assert SearchAge("YOUNGER", 60) in keys and SearchAge("OLDER", 3600) in keys
    assert SearchDate("SAVEDON", datetime.date(2020, 1, 2)) in keys
    assert SearchFlag("SAVEDATESUPPORTED") in keys
    assert SearchObjectId("EMAILID", "M6d99ac3275bb4e") in keys
    assert SearchObjectId("THREADID", "T64b478a75b") in keys
    assert len(keys) == 44


def test_search_nesting_or_not_and_modseq_entry() -> None:
    result = ok(b'a SEARCH (OR (FROM a TO b) NOT (SEEN)) MODSEQ "/flags/\\\\draft" all 620162338')
    assert result == Search(
        "a",
        SearchAnd(
            (
                SearchOr(
                    (
                        SearchAnd((SearchText("FROM", "a"), SearchText("TO", "b"))),
                        SearchNot(SearchFlag("SEEN")),
                    )
                ),
                SearchModSeq(620162338, "/flags/\\Draft", "ALL"),
            )
        ),
    )
    # OR chains, nested left or right, are flattened.
    left = ok(b"a SEARCH OR OR OR SEEN DELETED DRAFT FLAGGED")
    right = ok(b"a SEARCH OR SEEN OR DELETED OR DRAFT FLAGGED")
    assert isinstance(left, Search) and isinstance(right, Search)
    assert left.key == right.key and isinstance(left.key, SearchOr) and len(left.key.keys) == 4


def test_search_key_limit_stops_the_parse() -> None:
    """Past `max_search_keys` keys (NOT, OR and parentheses aside), SEARCH, SORT and THREAD
    are refused NO [LIMIT] (RFC 9051 §7.1), wherever the keys are nested."""
    three = b"OR (SEEN NOT DRAFT) UID 1:*"
    for cmd in (b"a SEARCH ", b"a UID SORT (DATE) UTF-8 ", b"a THREAD REFERENCES UTF-8 "):
        assert isinstance(parse(cmd + three, max_search_keys=3), Search | Sort | Thread)
        refused = parse(cmd + b"ALL " + three, max_search_keys=3)
        assert isinstance(refused, ParseError) and refused.limit
        assert refused.response() == b"a NO [LIMIT] Too many search keys (at most 3)\r\n"
    bad = parse(b"a SEARCH FROB", max_search_keys=3)
    assert isinstance(bad, ParseError) and not bad.limit
    # the keys past the limit are never parsed: a syntax error there does not matter
    late = parse(b"a SEARCH ALL ALL ALL ALL )(", max_search_keys=3)
    assert isinstance(late, ParseError) and late.limit


def test_searchres_and_save() -> None:
    """RFC 5182: RETURN (SAVE) and "$" as a sequence set."""
    assert ok(b'A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == Search(
        "A282",
        SearchAnd(
            (
                SearchFlag("FLAGGED"),
                SearchDate("SINCE", datetime.date(1994, 2, 1)),
                SearchNot(SearchText("FROM", "Smith")),
            )
        ),
        returns=("SAVE",),
    )
    assert ok(b"A283 FETCH $ (UID INTERNALDATE FLAGS RFC822.HEADER)") == Fetch(
        "A283",
        SequenceSet((), saved=True),
        (F("UID"), F("INTERNALDATE"), F("FLAGS"), F("RFC822.HEADER")),
    )
    assert ok(b'A302 COPY $ "Other Messages"') == Copy(
        "A302", SequenceSet((), saved=True), "Other Messages"
    )


def test_fetch_attributes() -> None:
    """§6.4.5 fetch-att, BINARY (RFC 3516), MODSEQ (RFC 7162), SAVEDATE, EMAILID, THREADID."""
    assert ok(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])") == Fetch(
        "A654",
        seq("2:4"),
        (F("FLAGS"), F("BODY", Section(text="HEADER.FIELDS", fields=("DATE", "FROM")))),
    )
    result = ok(
        b"a fetch 1:* (envelope BODYSTRUCTURE body RFC822 RFC822.TEXT rfc822.size UID "
        b"BODY.PEEK[] BODY[1.2.MIME] BODY[3.HEADER.FIELDS.NOT (X-A {3}\r\nX-B)]<10.20> "
        b"BODY[TEXT]<0.1> BODY[4] BINARY[1]<5.6> BINARY.PEEK[] BINARY.SIZE[2.1] MODSEQ "
        b"SAVEDATE EMAILID THREADID)"
    )
    assert isinstance(result, Fetch)
    assert result.sequence_set == SequenceSet(((1, STAR),))
    assert result.attributes == (
        F("ENVELOPE"),
        F("BODYSTRUCTURE"),
        F("BODY"),
        F("RFC822"),
        F("RFC822.TEXT"),
        F("RFC822.SIZE"),
        F("UID"),
        F("BODY", Section(), peek=True),
        F("BODY", Section((1, 2), "MIME")),
        F("BODY", Section((3,), "HEADER.FIELDS.NOT", ("X-A", "X-B")), (10, 20)),
        F("BODY", Section(text="TEXT"), (0, 1)),
        F("BODY", Section((4,))),
        F("BINARY", Section((1,)), (5, 6)),
        F("BINARY", Section(), peek=True),
        F("BINARY.SIZE", Section((2, 1))),
        F("MODSEQ"),
        F("SAVEDATE"),
        F("EMAILID"),
        F("THREADID"),
    )
    assert ok(b"a FETCH 1 fast") == Fetch(
        "a", seq("1"), (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE")), macro="FAST"
    )
    assert ok(b"a FETCH 1 ALL") == Fetch(
        "a",
        seq("1"),
        (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE")),
        macro="ALL",
    )
    assert ok(b"A999 UID FETCH 4827313:4828442 FLAGS") == Fetch(
        "A999", seq("4827313:4828442"), (F("FLAGS"),), uid=True
    )
    assert ok(b"a103 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)") == Fetch(
        "a103", seq("1:*"), (F("FLAGS"),), uid=True, changed_since=12345
    )
    assert ok(b"A03 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)") == Fetch(
        "A03", seq("1:*"), (F("FLAGS"),), uid=True, changed_since=12345, vanished=True
    )


def test_store_copy_move() -> None:
    """§6.4.6-8 and UNCHANGEDSINCE (RFC 7162 §3.1.3)."""
    assert ok(b"A003 STORE 2:4 +FLAGS (\\Deleted)") == Store(
        "A003", seq("2:4"), StoreMode.ADD, ("\\Deleted",)
    )
    assert ok(b"a STORE 1 -FLAGS.SILENT \\Seen $Label1") == Store(
        "a", seq("1"), StoreMode.REMOVE, ("\\Seen", "$Label1"), silent=True
    )
    assert ok(b"a STORE 1 FLAGS ()") == Store("a", seq("1"), StoreMode.REPLACE, ())
    assert ok(b"a103 UID STORE 6,4,8 (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)") == (
        Store(
            "a103",
            seq("4,6,8"),
            StoreMode.ADD,
            ("\\Deleted",),
            uid=True,
            silent=True,
            unchanged_since=12121230045,
        )
    )
    assert ok(b"A003 COPY 2:4 MEETING") == Copy("A003", seq("2:4"), "MEETING")
    assert ok(b"a UID COPY 1 INBOX") == Copy("a", seq("1"), "INBOX", uid=True)
    assert ok(b"a UID MOVE 42:69 foo") == Move("a", seq("42:69"), "foo", uid=True)
    assert ok(b"a MOVE 1:3 Trash") == Move("a", seq("1:3"), "Trash")


def test_sort_and_thread() -> None:
    """RFC 5256 §3 examples, ESORT RETURN (RFC 5267)."""
    assert ok(b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994") == Sort(
        "A282",
        (SortCriterion("SUBJECT"),),
        "UTF-8",
        SearchDate("SINCE", datetime.date(1994, 2, 1)),
    )
    assert ok(b"A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL") == Sort(
        "A283",
        (SortCriterion("SUBJECT"), SortCriterion("DATE", reverse=True)),
        "UTF-8",
        SearchFlag("ALL"),
    )
    assert ok(b"a UID SORT RETURN (MIN COUNT) (DISPLAYFROM) US-ASCII UNSEEN") == Sort(
        "a",
        (SortCriterion("DISPLAYFROM"),),
        "US-ASCII",
        SearchFlag("UNSEEN"),
        uid=True,
        returns=("MIN", "COUNT"),
    )
    assert ok(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000") == Thread(
        "A283", "ORDEREDSUBJECT", "UTF-8", SearchDate("SINCE", datetime.date(2000, 3, 5))
    )
    assert ok(b'A284 UID THREAD REFERENCES US-ASCII TEXT "gewp"') == Thread(
        "A284", "REFERENCES", "US-ASCII", SearchText("TEXT", "gewp"), uid=True
    )


def test_quota() -> None:
    """RFC 9208 §4.1."""
    assert ok(b'G0001 GETQUOTA "!partition/sda4"') == GetQuota("G0001", "!partition/sda4")
    assert ok(b"A003 GETQUOTAROOT INBOX") == GetQuotaRoot("A003", "INBOX")
    assert ok(b'S0000 SETQUOTA "" (STORAGE 512)') == SetQuota("S0000", "", (("STORAGE", 512),))
    assert ok(b"S1 SETQUOTA r (storage 1 MESSAGE 2)") == SetQuota(
        "S1", "r", (("STORAGE", 1), ("MESSAGE", 2))
    )
    assert ok(b"S2 SETQUOTA r ()") == SetQuota("S2", "r", ())


# -- malformed commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "tag", "text"),
    [
        (b"a FROB", "a", "BAD Unknown command FROB"),
        (b"a FETCH", "a", "BAD Missing argument for FETCH"),
        (b"a", "a", "BAD Missing command"),
        (b"", None, "BAD Empty command line"),
        (b"+a NOOP", None, "BAD Invalid or missing tag"),
        (b"a*b NOOP", None, "BAD Invalid or missing tag"),
        (b"(a NOOP", None, "BAD Invalid or missing tag"),
        (b" NOOP", None, "BAD Invalid or missing tag"),
        (b"a  NOOP", "a", "BAD Syntax error in command"),
        (b"a NOOP x", "a", "BAD Unexpected extra arguments to NOOP"),
        (b"a UID FROB 1", "a", "BAD Unknown UID command FROB"),
        (b"a UID LIST", "a", "BAD Unknown UID command LIST"),
        (b"a CAPABILITY ", "a", "BAD Unexpected extra arguments"),
        (b"a LOGIN fred", "a", "BAD Missing argument for LOGIN"),
        (b"a LOGIN fred pass extra", "a", "BAD Unexpected extra arguments to LOGIN"),
        (b'a LOGIN "unterminated pass', "a", "BAD Syntax error in LOGIN"),
        (b'a LOGIN "bad \\x" p', "a", "BAD Syntax error in LOGIN"),
        (b"a LOGIN {5}\r\nab", "a", "BAD Literal is shorter than announced"),
        (b"a LOGIN {3}\r\na\x00b p", "a", "BAD NUL octet in literal"),
        (b"a LOGIN ~{3}\r\nabc p", "a", "BAD Syntax error in LOGIN"),
        (b'a LOGIN "\xff" p', "a", "BAD User name is not valid UTF-8"),
        (b"a AUTHENTICATE", "a", "BAD Missing argument for AUTHENTICATE"),
        (b"a AUTHENTICATE PLAIN not*base64", "a", "BAD Initial response must be base64"),
        (b"a AUTHENTICATE PLAIN abc", "a", "BAD Initial response must be base64"),
        (b"a ENABLE", "a", "BAD Missing argument for ENABLE"),
        (b"a SELECT", "a", "BAD Missing argument for SELECT"),
        (b"a SELECT INBOX (FOO)", "a", "BAD Unknown or repeated SELECT parameter FOO"),
        (b"a SELECT INBOX (CONDSTORE CONDSTORE)", "a", "BAD Unknown or repeated"),
        (b"a SELECT INBOX (QRESYNC (0 1))", "a", "BAD Number out of range"),
        (b"a SELECT INBOX (QRESYNC (1 1 1:*))", "a", 'BAD "*" and "$" are not allowed'),
        (b"a EXAMINE INBOX (QRESYNC (1))", "a", "BAD Syntax error in EXAMINE"),
        (b"a CREATE x (FOO (bar))", "a", "BAD Unknown CREATE parameter FOO"),
        (b"a CREATE x (USE (Drafts))", "a", "BAD Syntax error in CREATE"),
        (b"a RENAME a", "a", "BAD Missing argument for RENAME"),
        (b"a DELETE", "a", "BAD Missing argument for DELETE"),
        (b"a SUBSCRIBE (x)", "a", "BAD Syntax error in SUBSCRIBE"),
        (b"a LIST x", "a", "BAD Missing argument for LIST"),
        (b'a LIST (FOO) "" *', "a", "BAD Unknown LIST selection option FOO"),
        (b'a LIST (RECURSIVEMATCH) "" *', "a", "BAD RECURSIVEMATCH needs another"),
        (b'a LIST "" * RETURN (FOO)', "a", "BAD Unknown or repeated LIST return option FOO"),
        (b'a LIST "" * FOO (CHILDREN)', "a", "BAD Syntax error in LIST"),
        (b"a LSUB x", "a", "BAD Missing argument for LSUB"),
        (b"a STATUS INBOX", "a", "BAD Missing argument for STATUS"),
        (b"a STATUS INBOX ()", "a", "BAD Syntax error in STATUS"),
        (b"a STATUS INBOX (MESSAGES FOO)", "a", "BAD Unknown STATUS item FOO"),
        (b"a APPEND INBOX", "a", "BAD Missing argument for APPEND"),
        (b'a APPEND INBOX "hello"', "a", "BAD Syntax error in APPEND"),
        (b"a APPEND INBOX (\\Recent) {1}\r\nx", "a", "BAD \\Recent cannot be set"),
        (b'a APPEND INBOX "32-Jan-2000 00:00:00 +0000" {1}\r\nx', "a", "BAD Invalid date-time"),
        (b'a APPEND INBOX "1-Jan-2000 00:00:00 +0099" {1}\r\nx', "a", "BAD Invalid date-time"),
        (b"a APPEND INBOX UTF8 ({1}\r\nx)", "a", "BAD UTF8 APPEND data must be a literal8"),
        (b"a APPEND INBOX {1}\r\nx ", "a", "BAD Missing argument for APPEND"),
        (b"a IDLE now", "a", "BAD Unexpected extra arguments to IDLE"),
        (b"a EXPUNGE 1", "a", "BAD Unexpected extra arguments to EXPUNGE"),
        (b"a UID EXPUNGE", "a", "BAD Missing argument for UID EXPUNGE"),
        (b"a SEARCH", "a", "BAD Missing argument for SEARCH"),
        (b"a SEARCH FROB", "a", "BAD Unknown search key FROB"),
        (b"a SEARCH FROM", "a", "BAD Missing argument for SEARCH"),
        (b"a SEARCH SINCE 31-Feb-2020", "a", "BAD Invalid date"),
        (b"a SEARCH SINCE 1-Foo-2020", "a", "BAD Invalid date"),
        (b"a SEARCH SINCE yesterday", "a", "BAD Syntax error in SEARCH"),
        (b"a SEARCH OR SEEN", "a", "BAD Missing argument for SEARCH"),
        (b"a SEARCH (SEEN", "a", "BAD Missing argument for SEARCH"),
        (b"a SEARCH SEEN)", "a", "BAD Unexpected extra arguments to SEARCH"),
        (b"a SEARCH ()", "a", "BAD Syntax error in SEARCH"),
        (b"a SEARCH 0", "a", "BAD Invalid sequence set"),
        (b"a SEARCH 1:", "a", "BAD Invalid sequence set"),
        (b"a SEARCH 01", "a", "BAD Invalid sequence set"),
        (b"a SEARCH 4294967296", "a", "BAD Invalid sequence set"),
        (b"a SEARCH LARGER x", "a", "BAD Syntax error in SEARCH"),
        (b"a SEARCH LARGER 99999999999999999999999", "a", "BAD Number out of range"),
        (b"a SEARCH RETURN (FOO) ALL", "a", "BAD Unknown RETURN option FOO"),
        (b"a SEARCH EMAILID a+b", "a", "BAD Unexpected extra arguments to SEARCH"),
        (b'a SEARCH MODSEQ "/foo" all 1', "a", "BAD MODSEQ entry name must be"),
        (b'a SEARCH MODSEQ "/flags/\\\\seen" any 1', "a", "BAD MODSEQ entry type must be"),
        (b'a SEARCH HEADER "a:b" x', "a", "BAD Invalid header field name"),
        (b"a SEARCH CHARSET UTF-8 TEXT \"\xff\"", "a", "BAD Search string is not valid UTF-8"),
        (b"a SEARCH CHARSET US-ASCII TEXT \"\xc3\xa9\"", "a", "BAD Search string is not valid"),
        (b"a SEARCH CHARSET KOI8-R TEXT x", "a", "NO [BADCHARSET (US-ASCII UTF-8"),
        (b"a FETCH 1", "a", "BAD Missing argument for FETCH"),
        (b"a FETCH 1 ()", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 FOO", "a", "BAD Unknown FETCH attribute FOO"),
        (b"a FETCH 1 BODY.PEEK", "a", "BAD Missing argument for FETCH"),
        (b"a FETCH 1 BODY[0]", "a", "BAD Number out of range"),
        (b"a FETCH 1 BODY[MIME]", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 BODY[HEADER.FIELDS]", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 BODY[TEXT", "a", "BAD Missing argument for FETCH"),
        (b"a FETCH 1 BODY[]<1.0>", "a", "BAD Number out of range"),
        (b"a FETCH 1 BODY[]<1>", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 BINARY[TEXT]", "a", "BAD Syntax error in FETCH"),
        (b"a FETCH 1 BINARY.SIZE[1]<0.1>", "a", "BAD Unexpected extra arguments to FETCH"),
        (b"a FETCH 1 (FLAGS) (FOO)", "a", "BAD Unknown or repeated FETCH modifier FOO"),
        (b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)", "a", "BAD VANISHED needs UID FETCH"),
        (b"a UID FETCH 1 (FLAGS) (VANISHED)", "a", "BAD VANISHED needs UID FETCH"),
        (b"a FETCH x FLAGS", "a", "BAD Syntax error in FETCH"),
        (b"a STORE 1 FLAGS", "a", "BAD Missing argument for STORE"),
        (b"a STORE 1 LABELS (x)", "a", "BAD Unknown STORE data item LABELS"),
        (b"a STORE 1 +FLAGS (\\*)", "a", "BAD Syntax error in STORE"),
        (b"a STORE 1 (FOO 1) FLAGS ()", "a", "BAD Unknown STORE modifier FOO"),
        (b"a COPY 1", "a", "BAD Missing argument for COPY"),
        (b"a UID MOVE 1:2", "a", "BAD Missing argument for UID MOVE"),
        (b"a SORT (DATE) ALL", "a", "BAD Missing argument for SORT"),
        (b"a SORT (DATE) KOI8-R ALL", "a", "NO [BADCHARSET"),
        (b"a SORT (FOO) UTF-8 ALL", "a", "BAD Unknown sort key FOO"),
        (b"a SORT () UTF-8 ALL", "a", "BAD Syntax error in SORT"),
        (b"a THREAD FOO UTF-8 ALL", "a", "BAD Unsupported thread algorithm FOO"),
        (b"a THREAD REFERENCES UTF-8", "a", "BAD Missing argument for THREAD"),
        (b"a GETQUOTA", "a", "BAD Missing argument for GETQUOTA"),
        (b"a SETQUOTA r (STORAGE)", "a", "BAD Syntax error in SETQUOTA"),
        (b"a ID", "a", "BAD Missing argument for ID"),
        (b'a ID ("name")', "a", "BAD Syntax error in ID"),
        (b'a ID ("' + b"x" * 31 + b'" NIL)', "a", "BAD ID field longer than 30 octets"),
        (b"a ID ({31}\r\n" + b"x" * 31 + b' "v")', "a", "BAD ID field longer than 30 octets"),
        (b'a ID ("k" "' + b"v" * 1025 + b'")', "a", "BAD ID value longer than 1024 octets"),
        (b'a ID ("k" {1025}\r\n' + b"v" * 1025 + b")", "a", "BAD ID value longer than 1024"),
        (b'a ID ("k" "' + b"\\\"" * 1025 + b'")', "a", "BAD ID value longer than 1024"),
        (b"a ID (" + b'"k" "v" ' * 30 + b'"k" "v")', "a", "BAD Too many ID fields (more than 30"),
        (b"a COMPRESS", "a", "BAD Missing argument for COMPRESS"),
        (b"a SELECT \x80", "a", "BAD Syntax error in SELECT"),
        (b'a SELECT "\xc3\xa9"', "a", "NO [CANNOT] Mailbox name must be printable US-ASCII"),
        (b'a SELECT "&Jjo"', "a", "NO [CANNOT] Unterminated modified UTF-7"),
        (b'a SELECT "a\tb"', "a", "NO [CANNOT] Mailbox name must be printable"),
    ],
)
def test_malformed(line: bytes, tag: str | None, text: str) -> None:
    error = bad(line)
    assert error.tag == tag
    assert error.text.startswith(text), error.text


def test_parse_error_response_rendering() -> None:
    assert bad(b"a FROB").response() == b"a BAD Unknown command FROB\r\n"
    assert bad(b"a FETCH").text == "BAD Missing argument for FETCH"
    assert bad(b"a FETCH 1").text == "BAD Missing argument for FETCH"
    assert bad(b"a FETCH 1 ").text == "BAD Missing argument for FETCH: expected a fetch attribute"
    assert bad(b"a FETCH 1 (FLAGS").text == 'BAD Missing argument for FETCH: expected ")"'
    assert bad(b"a FETCH x:y FLAGS").text == (
        "BAD Syntax error in FETCH at octet 8: expected a sequence set"
    )
    assert bad(b"+ x").response() == b"* BAD Invalid or missing tag\r\n"
    assert bad(b"a SEARCH CHARSET X ALL").status == "NO"
    # client bytes other than validated atoms are never echoed
    assert b"\r" not in bad(b"a LOGIN \"x\r\ny\" z").response()[:-2]


def test_nesting_depth_limit() -> None:
    """Parenthesized lists nest at most `max_depth` deep (default 32)."""
    ok(b"a SEARCH " + b"(" * 32 + b"ALL" + b")" * 32)
    error = bad(b"a SEARCH " + b"(" * 33 + b"ALL" + b")" * 33)
    assert error.text == "BAD Parenthesized lists nested deeper than 32"
    assert bad(b"a SEARCH ((ALL))", max_depth=1).text.startswith("BAD Parenthesized")
    # NOT / OR chains are parsed without recursion; the tree depth is bounded separately.
    assert bad(b"a SEARCH " + b"NOT " * 20000 + b"ALL").text.startswith(
        "BAD Search program nested deeper than 64"
    )
    assert bad(b"a SEARCH " + b"NOT OR " * 40 + b"ALL ALL" + b" ALL" * 40).text.startswith(
        "BAD Search program nested deeper"
    )
    long_or = ok(b"a SEARCH " + b"OR SEEN " * 5000 + b"ALL")
    assert isinstance(long_or, Search) and isinstance(long_or.key, SearchOr)
    assert len(long_or.key.keys) == 5001


# -- grammar pieces -------------------------------------------------------------------------


def test_sequence_sets_are_normalized() -> None:
    assert seq("4:2") == SequenceSet(((2, 4),))
    assert seq("*:4") == seq("4:*") == SequenceSet(((4, STAR),))
    assert seq("*") == SequenceSet(((STAR, STAR),))
    assert seq("1,2,3,5:7,6") == SequenceSet(((1, 3), (5, 7)))
    assert seq("2:4,3:9,11") == SequenceSet(((2, 9), (11, 11)))
    assert seq("5:*,7,*") == SequenceSet(((5, STAR),))
    assert seq("1,$") == SequenceSet(((1, 1),), saved=True)
    assert str(seq("3:1,7:*")) == "1:3,7:*"
    assert seq("5:*").resolve(3) == ((3, 5),)
    assert seq("1:*").resolve(0) == ()
    assert list(seq("2,4:*").iter_numbers(6)) == [2, 4, 5, 6]
    for invalid in ("", "0", "1:0", "a", "1,,2", ":", "1:2:3", "4294967296", "01"):
        assert parse_sequence_set(invalid.encode()) is None


def test_dates() -> None:
    result = ok(b'a SEARCH SINCE "1-feb-1994" BEFORE 01-MAR-1994')
    assert isinstance(result, Search)
    assert result.key == SearchAnd(
        (
            SearchDate("SINCE", datetime.date(1994, 2, 1)),
            SearchDate("BEFORE", datetime.date(1994, 3, 1)),
        )
    )
    result = ok(b'a APPEND x "17-Jul-1996 02:44:25 -0700" {1}\r\nx')
    assert isinstance(result, Append)
    stamp = result.messages[0].internal_date
    assert stamp is not None
    assert stamp.utcoffset() == datetime.timedelta(hours=-7)
    assert stamp.astimezone(datetime.UTC) == datetime.datetime(
        1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC
    )


def test_flags_are_normalized_and_deduplicated() -> None:
    result = ok(b"a STORE 1 +FLAGS (\\SEEN \\seen \\flagged $Junk \\Custom)")
    assert isinstance(result, Store)
    assert result.flags == ("\\Seen", "\\Flagged", "$Junk", "\\Custom")


# -- mailbox names (RFC 3501 §5.1.3, RFC 9051 §5.1) -----------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
        ("&U,BTFw-", "台北"),
        ("&U,BTF2XlZyyKng-", "台北日本語"),
        ("&Jjo-!", "☺!"),
        ("&-", "&"),
        ("Tom &- Jerry", "Tom & Jerry"),
        ("&2D3eAA-", "😀"),
        ("&AOk-t&AOk-", "été"),
        ("", ""),
    ],
)
def test_modified_utf7_round_trip(encoded: str, decoded: str) -> None:
    assert decode_utf7(encoded.encode()) == decoded
    assert encode_mailbox_utf7(decoded) == encoded


@pytest.mark.parametrize(
    "invalid",
    [
        b"&U,BTFw-&ZeVnLIqe-",  # superfluous shift (RFC 3501 §5.1.3)
        b"&Jjo!",  # no shift back to US-ASCII
        b"&AGE-",  # printable ASCII encoded
        b"&Jj-",  # not a whole UTF-16 unit
        b"&Jjp-",  # non-zero pad bits
        b"&2D0-",  # lone surrogate
        b"&,,,,-",
        b"caf\xc3\xa9",  # 8-bit in modified UTF-7
        b"tab\there",
    ],
)
def test_modified_utf7_rejects(invalid: bytes) -> None:
    with pytest.raises(MailboxNameError):
        decode_utf7(invalid)


def test_decode_mailbox_modes_and_inbox() -> None:
    assert decode_mailbox(b"inbox", utf8=False) == "INBOX"
    assert decode_mailbox(b"InBoX", utf8=True) == "INBOX"
    assert decode_mailbox(b"INBOX/sub", utf8=False) == "INBOX/sub"
    assert decode_mailbox(b"&U,BTFw-", utf8=False) == "台北"
    assert decode_mailbox(b"&U,BTFw-", utf8=True) == "&U,BTFw-"  # "&" is plain in UTF-8 names
    assert decode_mailbox("台北".encode(), utf8=True) == "台北"
    with pytest.raises(MailboxNameError):
        decode_mailbox(b"\xff", utf8=True)
    with pytest.raises(MailboxNameError):
        decode_mailbox("a\u2028b".encode(), utf8=True)
    with pytest.raises(MailboxNameError):
        decode_mailbox("台北".encode(), utf8=False)


def test_mailbox_arguments_follow_the_session_encoding() -> None:
    assert ok(b"a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-") == Create(
        "a", "~peter/mail/台北/日本語"
    )
    assert ok('a CREATE "台北"'.encode(), utf8=True) == Create("a", "台北")
    assert ok(b"a CREATE {6}\r\n" + "台北".encode(), utf8=True) == Create("a", "台北")
    assert ok(b'a SELECT "&U,BTFw-"', utf8=True) == Select("a", "&U,BTFw-")
    assert ok(b'a RENAME "Tom &- Jerry" inBOX') == Rename("a", "Tom & Jerry", "INBOX")
    assert ok(b"a COPY 1 &2D3eAA-") == Copy("a", seq("1"), "😀")
    assert ok(b'a LIST "" &U,BTFw-/%') == List("a", "", ("台北/%",))


def test_section_renders_as_sent() -> None:
    """`str(Section)` is what goes back between the brackets of BODY[...] (RFC 9051 §7.5.2)."""
    result = ok(b"a FETCH 1 (BODY[1.2.MIME] BODY[HEADER.FIELDS.NOT (To Cc)] BODY[] BODY[3])")
    assert isinstance(result, Fetch)
    rendered = [str(att.section) for att in result.attributes]
    assert rendered == ["1.2.MIME", "HEADER.FIELDS.NOT (To Cc)", "", "3"]


@pytest.mark.parametrize(
    "name",
    ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "NAMESPACE", "CHECK", "CLOSE", "UNSELECT",
     "IDLE", "EXPUNGE"],
)
def test_commands_without_arguments(name: str) -> None:
    assert not isinstance(parse(f"t1 {name.lower()}".encode()), ParseError)
    assert bad(f"t1 {name} x".encode()) == ParseError(
        "t1", f"BAD Unexpected extra arguments to {name}"
    )


@pytest.mark.parametrize("name", ["DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT", "SELECT",
                                  "EXAMINE", "CREATE", "STATUS"])
def test_mailbox_commands_need_a_mailbox(name: str) -> None:
    assert bad(f"t1 {name}".encode()) == ParseError("t1", f"BAD Missing argument for {name}")
    assert bad(f"t1 {name} )".encode()).text.startswith(f"BAD Syntax error in {name} at octet")
    extra = bad(f"t1 {name} x y".encode()).text
    if name in ("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"):
        assert extra == f"BAD Unexpected extra arguments to {name}"
    else:
        assert extra.startswith("BAD ")
