"""The messages of the IMAP worker channel and their frames (postkeep.server.ipc): every kind
survives encode and decode, the wire format is the one both ends speak, and any malformed frame
is refused with ChannelError, never another exception."""

from __future__ import annotations

import contextlib
import json
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.server.ipc import (
    HEADER_SIZE,
    MAX_FRAME,
    AccountSlot,
    Answer,
    BanChange,
    ChannelError,
    Events,
    Hello,
    IpSlot,
    Message,
    PasswordLearned,
    PasswordQuery,
    Ready,
    SlotRelease,
    SlotRequest,
    SlowSlot,
    Strike,
    decode,
    encode,
    frame_length,
)
from postkeep.store.api import MailboxEvent

DIGEST = bytes(range(32))

# every kind of message, with what its frame's JSON object is on the wire
WIRE: list[tuple[Message, dict[str, Any]]] = [
    (Hello(DIGEST), {"t": "hello", "key": DIGEST.hex()}),
    (Ready(4242), {"t": "ready", "pid": 4242}),
    (SlotRequest(1, IpSlot("mx", "192.0.2.7")), {"t": "ip", "id": 1, "s": "mx", "k": "192.0.2.7"}),
    (SlotRequest(2, AccountSlot("imap", 17)), {"t": "acct", "id": 2, "s": "imap", "k": 17}),
    (SlotRelease(IpSlot("imap", "2001:db8::/64")),
     {"t": "ip-", "s": "imap", "k": "2001:db8::/64"}),
    (SlotRelease(AccountSlot("web", 17)), {"t": "acct-", "s": "web", "k": 17}),
    (SlotRequest(5, SlowSlot("submission")), {"t": "slow", "id": 5, "s": "submission"}),
    (SlotRelease(SlowSlot("imap")), {"t": "slow-", "s": "imap"}),
    (PasswordQuery(3, DIGEST), {"t": "pw?", "id": 3, "k": DIGEST.hex()}),
    (PasswordLearned(DIGEST), {"t": "pw+", "k": DIGEST.hex()}),
    (Answer(3, True), {"t": "ok", "id": 3, "ok": True}),
    (Answer(4, False), {"t": "ok", "id": 4, "ok": False}),
    (
        Events(
            (
                MailboxEvent(1, 2, "exists", 3, 4),
                MailboxEvent(1, 2, "expunge", 3),
                MailboxEvent(1, 0, "mailboxes"),
            )
        ),
        {
            "t": "ev",
            "e": [
                [1, 2, "exists", 3, 4],
                [1, 2, "expunge", 3, None],
                [1, 0, "mailboxes", None, None],
            ],
        },
    ),
    (Events(()), {"t": "ev", "e": []}),
    (Strike(6, "192.0.2.7", "auth", "alice@example.test"),
     {"t": "st", "id": 6, "ip": "192.0.2.7", "k": "auth", "u": "alice@example.test"}),
    (Strike(0, "2001:db8::1", "preauth", ""),
     {"t": "st", "id": 0, "ip": "2001:db8::1", "k": "preauth", "u": ""}),
    (BanChange("192.0.2.0/24", 1800000000.5), {"t": "ban", "k": "192.0.2.0/24",
                                               "until": 1800000000.5}),
]


def _body(fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(("message", "wire"), WIRE, ids=lambda v: type(v).__name__)
def test_every_message_round_trips(message: Message, wire: dict[str, Any]) -> None:
    frame = encode(message)
    header, body = frame[:HEADER_SIZE], frame[HEADER_SIZE:]
    assert frame_length(header) == len(body)
    assert json.loads(body) == wire
    assert decode(body) == message
    assert decode(_body(wire)) == message  # spacing and field order do not matter


def test_every_kind_is_covered() -> None:
    kinds = {wire["t"] for _message, wire in WIRE}
    assert kinds == {"hello", "ready", "ip", "acct", "ip-", "acct-", "slow", "slow-", "pw?",
                     "pw+", "ok", "ev", "st", "ban"}


def test_frame_length_refuses_a_short_header_and_an_oversized_frame() -> None:
    assert frame_length(struct.pack("!I", MAX_FRAME)) == MAX_FRAME
    with pytest.raises(ChannelError, match="frame of 65537 octets"):
        frame_length(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ChannelError, match="frame of 4294967295 octets"):
        frame_length(b"\xff\xff\xff\xff")
    with pytest.raises(ChannelError, match="frame header of 2 octets"):
        frame_length(b"\x00\x00")


def test_decode_refuses_an_oversized_body() -> None:
    body = _body({"t": "ip", "id": 1, "k": "x" * MAX_FRAME})
    with pytest.raises(ChannelError, match=f"frame of {len(body)} octets"):
        decode(body)


@pytest.mark.parametrize(
    "body",
    [
        encode(Ready(1))[HEADER_SIZE:-1],  # truncated
        b"",
        b"{",
        b"\xff\xfe{}",  # not UTF-8
        b"[" * 50_000,  # nested past the recursion limit
        b'{"t":"ready","pid":' + b"9" * 5000 + b"}",  # an integer too long to convert
        b'{"t":"ready","pid":1} x',
    ],
    ids=["truncated", "empty", "unclosed", "not-utf8", "deep", "long-int", "trailing"],
)
def test_decode_refuses_what_is_not_json(body: bytes) -> None:
    with pytest.raises(ChannelError, match="frame is not JSON"):
        decode(body)


@pytest.mark.parametrize("value", [[], [{"t": "ready", "pid": 1}], "ready", 1, None, True])
def test_decode_refuses_json_that_is_not_an_object(value: Any) -> None:
    with pytest.raises(ChannelError, match=f"frame is a JSON {type(value).__name__}, not an obj"):
        decode(_body(value))


@pytest.mark.parametrize("fields", [{}, {"pid": 1}, {"t": 1}, {"t": None}, {"t": ["ok"]}])
def test_decode_refuses_a_frame_without_a_kind(fields: dict[str, Any]) -> None:
    with pytest.raises(ChannelError, match=r"frame without a message kind \('t'\)"):
        decode(_body(fields))


@pytest.mark.parametrize("kind", ["nope", "", "OK", "ip+", "Hello"])
def test_decode_refuses_an_unknown_kind(kind: str) -> None:
    with pytest.raises(ChannelError, match=re.escape(f"unknown message kind '{kind}'")):
        decode(_body({"t": kind, "id": 1, "k": "x"}))


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"t": "hello"}, "key"),
        ({"t": "ready"}, "pid"),
        ({"t": "ip", "k": "x"}, "id"),
        ({"t": "acct", "id": 1, "s": "web"}, "k"),
        ({"t": "acct", "id": 1, "k": 17}, "s"),
        ({"t": "ip-", "s": "mx"}, "k"),
        ({"t": "ip-", "k": "x"}, "s"),
        ({"t": "slow", "id": 1}, "s"),
        ({"t": "pw?", "k": "00"}, "id"),
        ({"t": "pw+"}, "k"),
        ({"t": "ok", "id": 1}, "ok"),
        ({"t": "ev"}, "e"),
    ],
)
def test_decode_refuses_a_missing_field(fields: dict[str, Any], missing: str) -> None:
    pattern = re.escape(f"'{fields['t']}' message without '{missing}'")
    with pytest.raises(ChannelError, match=pattern):
        decode(_body(fields))


@pytest.mark.parametrize(
    ("fields", "wrong", "expected"),
    [
        ({"t": "hello", "key": 5}, "key", "a hex string"),
        ({"t": "hello", "key": "not hex"}, "key", "a hex string"),
        ({"t": "ready", "pid": "4242"}, "pid", "an integer"),
        ({"t": "ready", "pid": 1.5}, "pid", "an integer"),
        ({"t": "ip", "id": 1, "s": "mx", "k": 7}, "k", "a string"),
        ({"t": "slow", "id": 1, "s": "pop3"}, "s", "one of mx, submission, imap"),
        ({"t": "ip", "id": 1, "s": 1, "k": "x"}, "s", "one of mx, submission, imap"),
        ({"t": "ip", "id": "1", "k": "x"}, "id", "an integer"),
        ({"t": "ip", "id": True, "k": "x"}, "id", "an integer"),  # JSON true is not 1
        ({"t": "acct", "id": 1, "s": "imap", "k": "17"}, "k", "an integer"),
        ({"t": "acct-", "s": "imap", "k": None}, "k", "an integer"),
        ({"t": "acct-", "s": "pop3", "k": 1}, "s", "one of mx, submission, imap"),
        ({"t": "ip-", "s": "imap", "k": ["x"]}, "k", "a string"),
        ({"t": "pw?", "id": 1, "k": "0g"}, "k", "a hex string"),
        ({"t": "pw+", "k": "abc"}, "k", "a hex string"),  # an odd number of digits
        ({"t": "ok", "id": 1, "ok": 1}, "ok", "a boolean"),
        ({"t": "st", "id": 1, "ip": "x", "k": "guess", "u": ""}, "k",
         "one of auth, harvest, errors, preauth"),
        ({"t": "st", "id": 1, "ip": 7, "k": "auth", "u": ""}, "ip", "a string"),
        ({"t": "ban", "k": "x", "until": "soon"}, "until", "a number"),
        ({"t": "ban", "k": "x", "until": True}, "until", "a number"),
        ({"t": "ok", "id": 1, "ok": "true"}, "ok", "a boolean"),
        ({"t": "ev", "e": {"a": 1}}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, "flags", 3]]}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, "flags", 3, 4, 5]]}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, 3, 4, 5]]}, "e", "a list of"),
        ({"t": "ev", "e": [["1", 2, "flags", 3, 4]]}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, "flags", "3", 4]]}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, "flags", 3, True]]}, "e", "a list of"),
        ({"t": "ev", "e": [[1, 2, "flags", 3, 4], "row"]}, "e", "a list of"),
    ],
)
def test_decode_refuses_a_wrongly_typed_field(
    fields: dict[str, Any], wrong: str, expected: str
) -> None:
    pattern = re.escape(f"'{fields['t']}' message: '{wrong}' is ") + f".*, not {expected}"
    with pytest.raises(ChannelError, match=pattern):
        decode(_body(fields))


def test_decode_refuses_an_unexpected_field() -> None:
    with pytest.raises(ChannelError, match=r"'ready' message with unexpected fields \['k', 'x'\]"):
        decode(_body({"t": "ready", "pid": 1, "x": 2, "k": 3}))


def test_the_error_is_a_value_error_and_quotes_little_of_a_long_value() -> None:
    with pytest.raises(ValueError, match="a string") as caught:
        decode(_body({"t": "ip-", "s": "mx", "k": [0] * 10_000}))
    assert isinstance(caught.value, ChannelError)
    assert len(str(caught.value)) < 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)
_kinds = st.sampled_from(["hello", "ready", "ip", "acct", "ip-", "acct-", "slow", "slow-", "pw?",
                          "pw+", "ok", "ev"])
_values = _json | st.sampled_from(["mx", "submission", "imap"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_channel_error(body: bytes) -> None:
    with contextlib.suppress(ChannelError):
        decode(body)


@settings(max_examples=500, deadline=None)
@given(_kinds,
       st.dictionaries(st.sampled_from(["id", "s", "k", "key", "pid", "ok", "e", "x"]), _values))
def test_any_fields_decode_to_a_message_or_channel_error(kind: str, fields: dict[str, Any]) -> None:
    try:
        message = decode(_body({**fields, "t": kind}))
    except ChannelError:
        return
    assert decode(encode(message)[HEADER_SIZE:]) == message  # what is accepted is well typed
