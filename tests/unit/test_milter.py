"""The milter protocol's sans-IO core (`filters.milter.wire`, `filters.milter.session`) and
the header and body changes (`filters.edits`): packets built and read back, malformed and
oversized ones refused, the steps a negotiation leaves, replies and their bounds."""

from __future__ import annotations

import struct

import pytest

from postkeep.filters.edits import (
    Changes,
    HeaderEdit,
    HeaderOp,
    apply_text,
    check_field,
    edit_header_block,
)
from postkeep.filters.milter import wire
from postkeep.filters.milter.session import (
    Answer,
    Conversation,
    Transaction,
    Verdict,
    parse_reply_code,
)

TX = Transaction("mx.example.org", "mx", "192.0.2.7", "", "client.test", "QID",
                 "x@remote.test", ("a@example.org", "b@example.org"), login="u@example.org",
                 mechanism="PLAIN")


def read(packets: bytes) -> list[tuple[bytes, bytes]]:
    return wire.PacketReader(limit=1 << 20).feed(packets)


def test_commands_round_trip() -> None:
    (p,) = read(wire.encode_optneg())
    assert p == (b"O", struct.pack(">III", 6, wire.OFFERED_ACTIONS, wire.OFFERED_PROTOCOL))
    assert read(wire.encode_connect("h.test", "192.0.2.1", 25)) == [
        (b"C", b"h.test\x004\x00\x19192.0.2.1\x00")]
    assert read(wire.encode_connect("h", "2001:db8::1"))[0][1].startswith(b"h\x006")
    assert read(wire.encode_connect("unknown", "")) == [(b"C", b"unknown\x00U")]
    assert read(wire.encode_mail("x@y.test", ["BODY=8BITMIME"])) == [
        (b"M", b"<x@y.test>\x00BODY=8BITMIME\x00")]
    assert read(wire.encode_rcpt("a@b.test")) == [(b"R", b"<a@b.test>\x00")]
    assert read(wire.encode_header(b"Subject", b"hi")) == [(b"L", b"Subject\x00hi\x00")]
    assert read(wire.encode_macros(b"C", {"j": "mx", "{daemon_name}": "mx"})) == [
        (b"D", b"Cj\x00mx\x00{daemon_name}\x00mx\x00")]
    assert read(wire.DATA + wire.EOH + wire.BODYEOB + wire.ABORT + wire.QUIT) == [
        (b"T", b""), (b"N", b""), (b"E", b""), (b"A", b""), (b"Q", b"")]
    with pytest.raises(ValueError):
        wire.encode_header(b"X", b"a\0b")  # a NUL would end the value early
    with pytest.raises(ValueError):
        wire.encode_body(b"x" * (wire.MAX_CHUNK + 1))


def test_packets_split_anywhere_and_bounded() -> None:
    data = wire.packet(b"c") + wire.packet(b"h", b"X\0y\0")
    reader = wire.PacketReader()
    got = [p for i in range(len(data)) for p in reader.feed(data[i : i + 1])]
    assert got == [(b"c", b""), (b"h", b"X\0y\0")] and reader.pending == 0
    with pytest.raises(wire.ProtocolError):  # refused on its length alone
        wire.PacketReader(limit=1000).feed(struct.pack(">I", 1001))
    with pytest.raises(wire.ProtocolError):
        wire.PacketReader().feed(struct.pack(">I", 0))


@pytest.mark.parametrize(("code", "data", "reply"), [
    (b"c", b"", wire.Continue()), (b"a", b"", wire.Accept()), (b"r", b"", wire.Reject()),
    (b"t", b"", wire.Tempfail()), (b"d", b"", wire.Discard()), (b"s", b"", wire.Skip()),
    (b"p", b"", wire.Progress()), (b"f", b"", wire.Failure(b"f")),
    (b"y", b"550 5.7.1 no\0", wire.ReplyCode("550 5.7.1 no")),
    (b"h", b"X-A\0 v\0", wire.AddHeader(b"X-A", b" v")),
    (b"i", struct.pack(">I", 2) + b"X-A\0v\0", wire.InsertHeader(2, b"X-A", b"v")),
    (b"m", struct.pack(">I", 1) + b"Subject\0\0", wire.ChangeHeader(1, b"Subject", b"")),
    (b"b", b"body\r\n", wire.ReplaceBody(b"body\r\n")),
    (b"+", b"<a@b.test>\0", wire.AddRecipient("a@b.test")),
    (b"2", b"<a@b.test>\0NOTIFY=NEVER\0", wire.AddRecipient("a@b.test", "NOTIFY=NEVER")),
    (b"-", b"a@b.test\0", wire.DeleteRecipient("a@b.test")),
    (b"e", b"<>\0", wire.ChangeSender("")),
    (b"q", b"why\0", wire.Quarantine("why")),
])
def test_every_reply_decodes(code: bytes, data: bytes, reply: wire.Reply) -> None:
    assert wire.decode_reply(code, data) == reply


@pytest.mark.parametrize(("code", "data"), [
    (b"y", b"550 no"), (b"h", b"X\0"), (b"h", b"X\0y\0z\0"), (b"i", b"\0\0"),
    (b"+", b"<>\0"), (b"+", b"a\0b\0"), (b"Z", b""), (b"q", b""),
])
def test_malformed_replies_are_refused(code: bytes, data: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode_reply(code, data)


def test_negotiation_keeps_to_what_was_offered() -> None:
    lists = struct.pack(">I", wire.M_ENVFROM) + b"i {auth_authen}\0"
    got = wire.negotiate(b"O", struct.pack(">III", 6, 0xFFFF, 0xFFFFFFFF) + lists)
    assert got.actions == wire.OFFERED_ACTIONS and got.protocol == wire.OFFERED_PROTOCOL
    assert got.macros == {wire.M_ENVFROM: ("i", "{auth_authen}")}
    for bad in (struct.pack(">III", 7, 0, 0), struct.pack(">III", 1, 0, 0), b"\0" * 8,
                struct.pack(">III", 6, 0x100, 0) + struct.pack(">I", 9) + b"x\0",
                struct.pack(">III", 6, 0x100, 0) + struct.pack(">I", 1) + b"x"):
        with pytest.raises(wire.ProtocolError):
            wire.negotiate(b"O", bad)
    with pytest.raises(wire.ProtocolError):
        wire.negotiate(b"c", b"")


def test_reply_codes_are_checked_and_sanitised() -> None:
    r = parse_reply_code("554-5.7.1 Spam\r\n554 5.7.1 go away\x07")
    assert (r.code, r.enhanced, r.text) == (554, "5.7.1", "Spam go away?")
    assert parse_reply_code("451 4.7.1").text == "Message refused"
    assert parse_reply_code("550 4.7.1 mixed").enhanced == ""  # not of the code's class
    for bad in ("250 ok", "5.7.1 no", "550-a\r\n551 b", ""):
        with pytest.raises(wire.ProtocolError):
            parse_reply_code(bad)


def negotiated(protocol: int = 0, actions: int = wire.OFFERED_ACTIONS,
               macros: dict[int, tuple[str, ...]] | None = None) -> wire.Negotiated:
    return wire.Negotiated(6, actions, protocol, macros or {})


def steps(talk: Conversation, body: bytes = b"hello\r\n") -> list[tuple[str, list[bytes]]]:
    return [(s.name, [c for c, _ in read(s.packets)])
            for s in talk.steps([(b"Subject", b" hi\r\n there")], [body])]


def test_all_steps_with_their_macros() -> None:
    talk = Conversation(negotiated(), TX, 1000)
    assert steps(talk) == [
        ("connect", [b"D", b"C"]), ("helo", [b"H"]), ("mail", [b"D", b"M"]),
        ("rcpt", [b"D", b"R"]), ("rcpt", [b"D", b"R"]), ("data", [b"D", b"T"]),
        ("header", [b"L"]), ("end of headers", [b"D", b"N"]), ("body", [b"B"]),
        ("end of body", [b"D", b"E"])]
    mail = next(s for s in talk.steps([], []) if s.name == "mail")
    assert b"{auth_authen}\0u@example.org\0{auth_type}\0PLAIN\0" in mail.packets
    header = next(s for s in talk.steps([(b"Subject", b" hi\r\n there")], [])
                  if s.name == "header")
    assert read(header.packets) == [(b"L", b"Subject\0hi\n there\0")]  # LF, no lead space


def test_no_flags_and_no_reply_flags_are_honoured() -> None:
    skip_all = (wire.P_NOCONNECT | wire.P_NOHELO | wire.P_NOMAIL | wire.P_NORCPT
                | wire.P_NODATA | wire.P_NOHDRS | wire.P_NOEOH | wire.P_NOBODY)
    assert steps(Conversation(negotiated(skip_all), TX, 1000)) == [
        ("end of body", [b"D", b"E"])]
    talk = Conversation(negotiated(wire.P_NR_HDR | wire.P_NR_BODY | wire.P_HDR_LEADSPC),
                        TX, 1000)
    found = {s.name: s for s in talk.steps([(b"Subject", b" hi")], [b"x"])}
    assert not found["header"].reply and not found["body"].reply and found["mail"].reply
    assert read(found["header"].packets) == [(b"L", b"Subject\0 hi\0")]
    wanted = Conversation(negotiated(macros={wire.M_CONNECT: ("j", "{nope}")}), TX, 10)
    connect = next(iter(wanted.steps([], [])))
    assert read(connect.packets)[0] == (b"D", b"Cj\0mx.example.org\0")


def test_body_in_bounded_chunks_and_skip() -> None:
    talk = Conversation(negotiated(), TX, 1000)
    body = [s for s in talk.steps([], [b"x" * 150000]) if s.name == "body"]
    assert [len(read(s.packets)[0][1]) for s in body] == [65535, 65535, 18930]
    talk = Conversation(negotiated(), TX, 1000)
    it = talk.steps([], [b"x" * 150000])
    names = []
    for s in it:
        names.append(s.name)
        if s.name == "body":
            talk.expect(s)
            assert talk.answer(wire.Skip()) is Answer.SKIP
    assert names[-2:] == ["body", "end of body"]


def run(replies: list[wire.Reply], actions: int = wire.OFFERED_ACTIONS,
        max_body: int = 100) -> Conversation:
    talk = Conversation(negotiated(actions=actions), TX, max_body)
    for s in talk.steps([], [b"x"]):
        talk.expect(s)
        if s.name == "end of body":
            for r in replies:
                if talk.answer(r) is Answer.DONE:
                    break
        elif talk.answer(wire.Continue()) is not Answer.NEXT:
            raise AssertionError(s.name)
    return talk


def test_verdicts_and_modifications() -> None:
    talk = run([wire.Progress(), wire.AddHeader(b"X", b"y"), wire.ReplaceBody(b"ab"),
                wire.ReplaceBody(b"c"), wire.Continue()])
    assert talk.outcome is not None
    assert talk.outcome.verdict is Verdict.ACCEPT and talk.outcome.body == b"abc"
    assert talk.outcome.modifications == (wire.AddHeader(b"X", b"y"),)
    done = run([wire.ReplyCode("451 4.7.1 later")]).outcome
    assert done is not None and done.verdict is Verdict.TEMPFAIL and done.reply is not None
    with pytest.raises(wire.ProtocolError, match="not negotiated"):
        run([wire.AddRecipient("a@b.test")], actions=wire.A_ADDHDRS)
    with pytest.raises(wire.ProtocolError, match="not negotiated"):
        run([wire.ChangeSender("a@b.test")])  # never offered
    with pytest.raises(wire.ProtocolError, match="replacement body over"):
        run([wire.ReplaceBody(b"x" * 101)])
    talk = Conversation(negotiated(), TX, 100)
    first = next(iter(talk.steps([], [])))
    talk.expect(first)
    with pytest.raises(wire.ProtocolError, match="before end of body"):
        talk.answer(wire.AddHeader(b"X", b"y"))
    assert talk.answer(wire.Reject()) is Answer.DONE
    assert talk.outcome is not None and talk.outcome.step == "connect"


BLOCK = b"Received: x\r\nSubject: a\r\nTo: t\r\nsubject: b\r\n"


def test_header_edits() -> None:
    def edit(*edits: HeaderEdit) -> bytes:
        return edit_header_block(BLOCK, edits)

    assert edit(HeaderEdit(HeaderOp.ADD, "X", " 1")) == BLOCK + b"X: 1\r\n"
    assert edit(HeaderEdit(HeaderOp.INSERT, "X", " 1", 0)) == b"X: 1\r\n" + BLOCK
    assert edit(HeaderEdit(HeaderOp.INSERT, "X", " 1", 9)) == BLOCK + b"X: 1\r\n"
    assert edit(HeaderEdit(HeaderOp.CHANGE, "Subject", " c", 2)) == (
        b"Received: x\r\nSubject: a\r\nTo: t\r\nSubject: c\r\n")
    assert edit(HeaderEdit(HeaderOp.DELETE, "SUBJECT", "", 1)) == (
        b"Received: x\r\nTo: t\r\nsubject: b\r\n")
    assert edit(HeaderEdit(HeaderOp.DELETE, "Cc", "", 1)) == BLOCK
    assert edit(HeaderEdit(HeaderOp.CHANGE, "Cc", " c", 3)) == BLOCK + b"Cc: c\r\n"


@pytest.mark.parametrize(("name", "value"), [
    ("X", " a\r\n\r\nInjected: yes"), ("X", " a\r\nInjected: yes"), ("X", " a\nb"),
    ("X", " a\rb"), ("X", " a\0"), ("X", " a\r\n"), ("X:Y", " a"), ("", " a"), ("X Y", " a"),
])
def test_fields_that_would_break_the_header_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        check_field(name, value)


def test_apply_text() -> None:
    data = BLOCK + b"\r\nbody\r\n"
    added = Changes((HeaderEdit(HeaderOp.ADD, "X", " 1"),))
    assert apply_text(data, added, 1000) == BLOCK + b"X: 1\r\n\r\nbody\r\n"
    assert apply_text(data, Changes(body=b"new\r\n"), 1000) == BLOCK + b"\r\nnew\r\n"
    assert apply_text(BLOCK, added, 1000) == BLOCK + b"X: 1\r\n"  # no body at all
    with pytest.raises(ValueError):
        apply_text(data, added, 10)
