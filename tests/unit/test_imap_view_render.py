"""The selected-mailbox view (sequence numbers, sync with expunges held back) and response
rendering (strings, literals, flags, sets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postkeep.imap import flags
from postkeep.imap.view import MailboxView
from postkeep.imap.wire import render
from postkeep.imap.wire.commands import STAR, SequenceSet
from postkeep.store.api import Flag


def seqset(*pairs: tuple[int, int]) -> SequenceSet:
    return SequenceSet.normalized(list(pairs))


def test_sequence_and_uid_lookup() -> None:
    view = MailboxView([3, 5, 9, 12])
    assert view.by_seq(seqset((2, 3))) == [5, 9]
    assert view.by_seq(seqset((STAR, STAR))) == [12]
    assert view.by_seq(seqset((3, STAR))) == [9, 12]
    assert view.seq_in_range(seqset((1, 4))) and not view.seq_in_range(seqset((5, 5)))
    assert view.by_uid(seqset((4, 10))) == [5, 9]
    assert view.by_uid(seqset((13, STAR))) == [12]  # "n:*" with n above the largest UID
    assert view.by_uid(seqset((100, 200))) == []
    assert view.seq_of(9) == 3 and view.seq_of(4) is None
    assert MailboxView([]).by_uid(seqset((1, STAR))) == []


def test_sync_announces_expunges_in_order_and_holds_them_back() -> None:
    view = MailboxView([1, 2, 3, 4, 5])
    held = view.apply([2, 4, 9], [6], allow_expunge=False)  # 9: never in the view
    assert held.expunged == [] and held.exists == 6 and view.uids == [1, 2, 3, 4, 5, 6]
    assert view.held == {2, 4}
    done = view.apply([], [], allow_expunge=True)
    assert done.expunged == [(2, 2), (3, 4)] and done.exists is None
    assert view.uids == [1, 3, 5, 6] and not view.held
    assert view.remove([1, 6]) == [(1, 1), (3, 6)] and view.uids == [3, 5]


@given(
    st.lists(st.integers(1, 60), unique=True).map(sorted),
    st.lists(st.integers(1, 80), unique=True).map(sorted),
)
def test_sync_reaches_the_store_state(before: list[int], after_raw: list[int]) -> None:
    # UIDs only grow: the store may drop any UID and add UIDs above the largest known
    largest = before[-1] if before else 0
    after = sorted({u for u in after_raw if u in before or u > largest})
    view = MailboxView(before)
    gone = [u for u in before if u not in after]
    result = view.apply(gone, [u for u in after if u > largest], allow_expunge=True)
    assert view.uids == after
    replay = list(before) + [u for u in after if u > largest]
    for seq, uid in result.expunged:
        assert replay[seq - 1] == uid
        del replay[seq - 1]
    assert replay == after


def test_strings_and_literals() -> None:
    assert render.string(None) == b"NIL"
    assert render.string('a "q" \\') == b'"a \\"q\\" \\\\"'
    assert render.string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert render.string("Grüße") == b"{7}\r\n" + "Grüße".encode()
    assert render.literal(b"a\x00b", binary=True) == b"~{3}\r\na\x00b"
    assert render.literal(b"a\x00b") == b"{3}\r\na\x80b"  # no NUL in a plain literal
    assert flags.flag_list(Flag.SEEN, recent=True) == b"(\\Recent \\Seen)"
    assert render.astring("INBOX") == b"INBOX" and render.astring("a b") == b'"a b"'


def test_flags_and_sets() -> None:
    assert flags.flag_list(Flag.SEEN | Flag.FLAGGED, ("$Work",)) == b"(\\Flagged \\Seen $Work)"
    assert flags.split_flags(["\\seen", "\\Recent", "$A", "$a"]) == (Flag.SEEN, ("$A",))
    assert flags.split_flags(["\\Bogus"]) == "Invalid system flag \\Bogus"
    assert render.number_set([5, 1, 2, 3, 9]) == "1:3,5,9"
    assert render.number_set([]) == ""
    assert render.mailbox("Entwürfe", utf8=False) == b'"Entw&APw-rfe"'
    assert render.mailbox("Entwürfe", utf8=True) == b"{9}\r\n" + "Entwürfe".encode()
