"""The webmail's message building and reading (`postkeep.web.mail.build`), sans-IO: header
fields refused with a line break or a control character, addresses checked, the message's
RFC 5322 / MIME form (encoded words, filename*, no Bcc in the sent text, SMTPUTF8 only for a
non-ASCII address), and the fields of a reply, a reply-all, a forward and a draft."""

from __future__ import annotations

import email
import email.policy

import pytest

from postkeep.web.mail.build import (
    Attachment,
    Fields,
    FormError,
    attachment_of,
    attachments_of,
    build,
    draft_fields,
    parse,
    reply_fields,
)

FIELDS = Fields(sender="Zoë <alice@example.test>", to="Bob <bob@example.test>",
                bcc="carol@example.test", subject="Grüße", body="hi\r\nthere")


@pytest.mark.parametrize("name", ["sender", "to", "cc", "bcc", "subject", "references"])
@pytest.mark.parametrize("bad", ["\r\nBcc: evil@x.test", "\nX: 1", "\r", "\x00", "\x1b"])
def test_a_control_character_in_any_header_field_is_refused(name: str, bad: str) -> None:
    value = getattr(FIELDS, name) or "<a@b.test>"
    fields = Fields(**{**{n: getattr(FIELDS, n) for n in Fields.__slots__}, name: value + bad})
    with pytest.raises(FormError, match="line breaks or control characters"):
        build(fields, [], hostname="mail.example.test")


@pytest.mark.parametrize("to", ["not an address", "a@", "@b.test", "a@b c", "bad<>", "a@b,,"])
def test_malformed_addresses_are_refused(to: str) -> None:
    fields = Fields(sender="alice@example.test", to=to)
    with pytest.raises(FormError, match=r"^To: "):
        build(fields, [], hostname="h.test")


def test_no_recipient_is_refused_unless_a_draft() -> None:
    fields = Fields(sender="alice@example.test", subject="s")
    with pytest.raises(FormError, match="at least one recipient"):
        build(fields, [], hostname="h.test")
    assert build(fields, [], hostname="h.test", draft=True).recipients == []


def test_the_message_form() -> None:
    built = build(FIELDS, [Attachment("résumé.pdf", "application/pdf", b"\x00\xff" * 40)],
                  hostname="mail.example.test")
    head = built.sent.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"\r\n" in head and b"\n" not in head.replace(b"\r\n", b"")
    assert b"From: =?utf-8?q?Zo=C3=AB?= <alice@example.test>" in head
    assert b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=" in head and b"Bcc" not in built.sent
    assert b"Message-ID: <" in head and built.message_id.endswith("@mail.example.test>")
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9.pdf" in built.sent
    assert b"Bcc: carol@example.test" in built.kept
    assert built.recipients == ["bob@example.test", "carol@example.test"]
    assert not built.smtputf8 and built.sender == "alice@example.test"
    msg = email.message_from_bytes(built.sent, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n") == "hi\nthere\n"
    assert msg["Content-Type"].startswith("multipart/mixed")
    assert attachments_of(parse(built.sent)) == [
        Attachment("résumé.pdf", "application/pdf", b"\x00\xff" * 40)]


def test_a_non_ascii_address_needs_smtputf8() -> None:
    built = build(Fields(sender="alice@example.test", to="zoë@exämple.test"), [],
                  hostname="h.test")
    assert built.smtputf8 and "To: zoë@exämple.test".encode() in built.sent


def test_uploaded_file_names_and_types() -> None:
    assert attachment_of("C:\\Users\\x\\report.PDF", "", b"x") == Attachment(
        "report.PDF", "application/pdf", b"x")
    assert attachment_of("../../etc/pass\x00wd", "text/html; charset=x", b"").filename == \
        "passwd"
    assert attachment_of("a", "multipart/mixed", b"").content_type == "application/octet-stream"
    assert attachment_of("", "text/plain", b"").filename == "attachment"


ORIGINAL = (b"From: Dora <dora@remote.test>\r\nTo: alice@example.test, Eve <eve@remote.test>"
            b"\r\nCc: bob@example.test\r\nReply-To: r@remote.test\r\nSubject: Re: plans\r\n"
            b"Message-ID: <m2@remote.test>\r\nReferences: <m0@remote.test> <m1@remote.test>\r\n"
            b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\nline one\r\n\r\nline two\r\n")
OWN = frozenset({"alice@example.test"})


def test_reply_and_reply_all() -> None:
    one = reply_fields(ORIGINAL, "reply", OWN, "alice@example.test")
    assert (one.to, one.cc, one.subject) == ("r@remote.test", "", "Re: plans")
    assert one.in_reply_to == "<m2@remote.test>"
    assert one.references == "<m0@remote.test> <m1@remote.test> <m2@remote.test>"
    assert "> line one\n>\n> line two" in one.body
    every = reply_fields(ORIGINAL, "all", OWN, "alice@example.test")
    assert every.cc == "Eve <eve@remote.test>, bob@example.test"


def test_forward_and_draft() -> None:
    forward = reply_fields(ORIGINAL, "forward", OWN, "alice@example.test")
    assert forward.subject == "Fwd: plans" and forward.to == "" and not forward.in_reply_to
    assert "From: Dora <dora@remote.test>" in forward.body and "line two" in forward.body
    built = build(Fields(sender="alice@example.test", to="bob@example.test", cc="c@x.test",
                         bcc="d@x.test", subject="s", body="b", in_reply_to="<m2@remote.test>",
                         references="<m1@remote.test> <m2@remote.test>"),
                  [Attachment("a.bin", "application/octet-stream", b"1")], hostname="h.test",
                  draft=True)
    restored = draft_fields(built.kept)
    assert (restored.to, restored.cc, restored.bcc) == ("bob@example.test", "c@x.test",
                                                        "d@x.test")
    assert restored.references == "<m1@remote.test> <m2@remote.test>"
    with pytest.raises(FormError, match="not a list of message ids"):
        build(Fields(sender="a@b.test", to="c@d.test", references="<a@b> junk"), [],
              hostname="h.test")
