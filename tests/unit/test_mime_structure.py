"""MIME structure: offsets, ENVELOPE, BODY/BODYSTRUCTURE (checked against Dovecot), sections."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from postkeep.mime import structure
from postkeep.mime.structure import (
    Part,
    bodystructure,
    decode_quoted_printable,
    decoded_body,
    envelope,
    find_part,
    from_json,
    header_fields,
    imap_string,
    parse_structure,
    to_json,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def as_dovecot(rendered: str) -> str:
    """Dovecot prints the transfer encoding as the header spells it ("7bit" by default)."""
    return re.sub(r'"(7BIT|8BIT|BASE64)"', lambda m: m.group().lower(), rendered)


def body(data: bytes, part: Part | None) -> bytes:
    assert part is not None
    return data[part.body_start : part.body_end]


def header(data: bytes, part: Part | None) -> bytes:
    assert part is not None
    return data[part.header_start : part.body_start]


# --- Dovecot's own expectations (src/lib-imap/test-imap-bodystructure.c). Dovecot counts sizes
# --- with CRLF line ends, so the messages are given CRLF ends here and sizes match exactly.

DOVECOT_NESTED = crlf(
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n'
    ' bar"\n'
    "\n"
    "Root MIME prologue\n"
    "\n"
    "--foo bar\n"
    'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
    "Content-ID: <foo@example.com>\n"
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    "Content-Disposition: inline; foo=bar\n"
    "Content-Description: hellodescription\n"
    "Content-Language: en, fi, se\n"
    "Content-Location: http://example.com/test.txt\n"
    "\n"
    "hello\n"
    "\n"
    "--foo bar\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: sub@domain.org\n"
    "To: sub-to1@domain.org, sub-to2@domain.org\n"
    "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    "Subject: submsg\n"
    'Content-Type: multipart/alternative; boundary="sub1"\n'
    "\n"
    "Sub MIME prologue\n"
    "--sub1\n"
    "Content-Type: text/html\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "<p>Hello world</p>\n"
    "\n"
    "--sub1\n"
    "Content-Type: text/plain\n"
    "Content-Transfer-Encoding: ?invalid\n"
    "\n"
    "Hello another world\n"
    "\n"
    "--sub1--\n"
    "Sub MIME epilogue\n"
    "\n"
    "--foo bar--\n"
    "Root MIME epilogue\n"
)


def test_dovecot_nested_bodystructure_and_body() -> None:
    root = parse_structure(DOVECOT_NESTED)
    assert as_dovecot(bodystructure(root)) == (
        '(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>"'
        ' "hellodescription" "7bit" 7 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar"))'
        ' ("en" "fi" "se") "http://example.com/test.txt")("message" "rfc822" NIL NIL NIL "7bit"'
        ' 412 ("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org"))'
        ' ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub-to1"'
        ' "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL) (("text" "html"'
        ' ("charset" "us-ascii") NIL NIL "8bit" 20 1 NIL NIL NIL NIL)("text" "plain" ("charset"'
        ' "us-ascii") NIL NIL "7bit" 21 1 NIL NIL NIL NIL) "alternative" ("boundary" "sub1") NIL'
        ' NIL NIL) 21 NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL)'
    )
    assert as_dovecot(bodystructure(root, extensible=False)) == (
        '(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>"'
        ' "hellodescription" "7bit" 7 1)("message" "rfc822" NIL NIL NIL "7bit" 412 ("Sun, 12 Aug'
        ' 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub"'
        ' "domain.org")) ((NIL NIL "sub" "domain.org")) ((NIL NIL "sub-to1" "domain.org")(NIL NIL'
        ' "sub-to2" "domain.org")) NIL NIL NIL NIL) (("text" "html" ("charset" "us-ascii") NIL NIL'
        ' "8bit" 20 1)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) "alternative")'
        ' 21) "mixed")'
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "From: user@domain.org\nDate: Sat, 24 Mar 2017 23:00:00 +0200\nMime-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n\nbody\n",
            '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)',
        ),
        (
            "From: user@domain.org\nMime-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\nbody\n\n",
            '("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 8 2 NIL NIL NIL NIL)',
        ),
        (
            'From: user@domain.org\nContent-Type: multipart/mixed; boundary="foo bar"\n\n'
            "--foo bar\nContent-Type: text/plain; charset=us-ascii\n"
            "Content-ID: <A.frop.example.com>\nContent-Description: Container message\n\n"
            "See attached...\n\n--foo bar\n"
            "Content-Type: message/rfc822\nContent-ID: <B.frop.example.com>\n"
            "Content-Description: Forwarded\n\nFrom: user@domain.org\n"
            "Date: Sat, 24 Mar 2017 23:00:00 +0200\nMime-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n\nbody\n\n--foo bar--\n",
            '(("text" "plain" ("charset" "us-ascii") "<A.frop.example.com>" "Container message"'
            ' "7bit" 17 1 NIL NIL NIL NIL)("message" "rfc822" NIL "<B.frop.example.com>"'
            ' "Forwarded" "7bit" 133 ("Sat, 24 Mar 2017 23:00:00 +0200" NIL ((NIL NIL "user"'
            ' "domain.org")) ((NIL NIL "user" "domain.org")) ((NIL NIL "user" "domain.org")) NIL'
            ' NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL'
            ' NIL NIL) 6 NIL NIL NIL NIL) "mixed" ("boundary" "foo bar") NIL NIL NIL)',
        ),
        (  # no parts at all: one empty text/plain part
            'Content-Type: multipart/mixed; boundary="foo"\n\n',
            '(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed"'
            ' ("boundary" "foo") NIL NIL NIL)',
        ),
    ],
)
def test_dovecot_parse_cases(message: str, expected: str) -> None:
    assert as_dovecot(bodystructure(parse_structure(crlf(message)))) == expected


@pytest.mark.parametrize(
    ("message", "max_depth", "max_parts", "expected"),
    [
        (
            "Content-Type: message/rfc822\n\nContent-Type: message/rfc822\nHeader2: value2\n\n"
            "Subject: hello world\nHeader2: value2\nHeader3: value3\n\nbody line 1\n"
            "body line 2\nbody line 4\nbody line 3\n",
            2,
            1000,
            '("message" "rfc822" NIL NIL NIL "7bit" 159 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)'
            ' ("application" "octet-stream" NIL NIL NIL "7bit" 110 NIL NIL NIL NIL) 11 NIL NIL NIL'
            " NIL)",
        ),
        (
            "Content-Type: multipart/mixed; boundary=1\n\n--1\n"
            "Content-Type: multipart/mixed; boundary=2\n\n--2\n"
            "Content-Type: multipart/mixed; boundary=3\n\n--3\n\nbody\n",
            2,
            1000,
            '(("application" "octet-stream" ("boundary" "2") NIL NIL "7bit" 63 NIL NIL NIL NIL)'
            ' "mixed" ("boundary" "1") NIL NIL NIL)',
        ),
        (
            "Content-Type: multipart/digest; boundary=1\n\n--1\n\nSubject: hdr1\n\nbody1\n--1\n\n"
            "Subject: hdr2\n\nbody2\n",
            32,
            2,
            '(("application" "octet-stream" NIL NIL NIL "7bit" 55 NIL NIL NIL NIL) "digest"'
            ' ("boundary" "1") NIL NIL NIL)',
        ),
    ],
)
def test_dovecot_truncation(message: str, max_depth: int, max_parts: int, expected: str) -> None:
    root = parse_structure(crlf(message), max_depth=max_depth, max_parts=max_parts)
    assert as_dovecot(bodystructure(root)) == expected


# --- realistic messages ------------------------------------------------------------------------

ALTERNATIVE = crlf(
    "Return-Path: <alice@example.org>\n"
    "From: Alice Example <alice@example.org>\n"
    "To: Bob <bob@example.net>, carol@example.net\n"
    'Cc: "Doe, John" <john@example.com> (work)\n'
    "Subject: Lunch\n"
    "Date: Tue, 04 Jun 2024 10:00:00 +0200\n"
    "Message-ID: <abc@example.org>\n"
    "In-Reply-To: <xyz@example.net>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/alternative;\n"
    '\tboundary="------------b1"\n'
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--------------b1\n"
    "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
    "Content-Transfer-Encoding: 7bit\n"
    "\n"
    "Noon?\n"
    "--------------b1\n"
    "Content-Type: text/html; charset=UTF-8\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<p>Noon=3F</p>=\n"
    "\n"
    "--------------b1--\n"
)


def test_multipart_alternative() -> None:
    root = parse_structure(ALTERNATIVE)
    assert (root.type, root.subtype, len(root.children)) == ("multipart", "alternative", 2)
    plain, html = root.children
    assert body(ALTERNATIVE, plain) == b"Noon?"
    assert body(ALTERNATIVE, html) == b"<p>Noon=3F</p>=\r\n"
    assert header(ALTERNATIVE, html).startswith(b"Content-Type: text/html")
    assert header(ALTERNATIVE, html).endswith(b"printable\r\n\r\n")
    assert bodystructure(root) == (
        '(("text" "plain" ("charset" "UTF-8" "format" "flowed") NIL NIL "7BIT" 5 0 NIL NIL NIL'
        ' NIL)("text" "html" ("charset" "UTF-8") NIL NIL "QUOTED-PRINTABLE" 17 1 NIL NIL NIL NIL)'
        ' "alternative" ("boundary" "------------b1") NIL NIL NIL)'
    )
    assert decoded_body(ALTERNATIVE, html) == b"<p>Noon?</p>"
    assert find_part(root, (2,)) is html
    assert find_part(root, ()) is root
    assert find_part(root, (3,)) is None
    assert find_part(root, (1, 1)) is None


def test_envelope_of_realistic_message() -> None:
    assert envelope(ALTERNATIVE) == (
        '("Tue, 04 Jun 2024 10:00:00 +0200" "Lunch" (("Alice Example" NIL "alice" "example.org"))'
        ' (("Alice Example" NIL "alice" "example.org")) (("Alice Example" NIL "alice"'
        ' "example.org")) (("Bob" NIL "bob" "example.net")(NIL NIL "carol" "example.net"))'
        ' (("Doe, John" NIL "john" "example.com")) NIL "<xyz@example.net>" "<abc@example.org>")'
    )
    assert envelope(ALTERNATIVE, parse_structure(ALTERNATIVE)) == envelope(ALTERNATIVE)


ATTACHMENT = crlf(
    "From: a@example.org\n"
    "Subject: Rates\n"
    "MIME-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="XX"\n'
    "\n"
    "--XX\n"
    "Content-Type: text/plain\n"
    "\n"
    "See attached.\n"
    "--XX\n"
    "Content-Type: application/pdf; name*=utf-8''%E2%82%AC%20rates.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-Disposition: ATTACHMENT;\n"
    " filename*0*=utf-8''%E2%82%AC%20;\n"
    ' filename*1="rates.pdf"; size=12 (octets)\n'
    "Content-Language: de-CH (Swiss German), en\n"
    "\n"
    "JVBERi0xLjQK\n"
    "JSVFT0YK\n"
    "--XX--\n"
)


def test_attachment_rfc2231_parameters() -> None:
    root = parse_structure(ATTACHMENT)
    pdf = root.children[1]
    assert pdf.params == (("name", "€ rates.pdf"),)
    assert pdf.disposition == ("attachment", (("filename", "€ rates.pdf"), ("size", "12")))
    assert pdf.language == ("de-CH", "en")
    assert pdf.encoding == "BASE64"
    assert decoded_body(ATTACHMENT, pdf) == b"%PDF-1.4\n%%EOF\n"
    name = "{13}\r\n€ rates.pdf"  # 8-bit: a literal of the UTF-8 octets
    assert bodystructure(pdf) == (
        f'("application" "pdf" ("name" {name}) NIL NIL "BASE64" 22 NIL ("attachment"'
        f' ("filename" {name} "size" "12")) ("de-CH" "en") NIL)'
    )
    assert bodystructure(root.children[0]) == (
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 13 0 NIL NIL NIL NIL)'
    )


NESTED = crlf(
    "From: outer@example.org\n"
    "Subject: Fwd: report\n"
    'Content-Type: multipart/mixed; boundary="outer"\n'
    "\n"
    "--outer\n"
    "\n"
    "Forwarding.\n"
    "--outer\n"
    'Content-Type: multipart/mixed; boundary="mid"\n'
    "\n"
    "--mid\n"
    "Content-Type: message/rfc822\n"
    "Content-Description: the report\n"
    "\n"
    "From: Inner Sender <inner@example.com>\n"
    "Subject: report\n"
    'Content-Type: multipart/alternative; boundary="inner"\n'
    "\n"
    "--inner\n"
    "Content-Type: text/plain\n"
    "\n"
    "plain body\n"
    "--inner\n"
    "Content-Type: text/html\n"
    "\n"
    "<b>html</b>\n"
    "--inner--\n"
    "--mid\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "Subject: simple\n"
    "\n"
    "just text\n"
    "--mid--\n"
    "--outer--\n"
)


def test_nested_message_sections() -> None:
    root = parse_structure(NESTED)
    first = find_part(root, (1,))
    assert first is not None and (first.type, first.subtype) == ("text", "plain")
    assert body(NESTED, first) == b"Forwarding."
    rfc822 = find_part(root, (2, 1))
    assert rfc822 is not None and (rfc822.type, rfc822.subtype) == ("message", "rfc822")
    inner = rfc822.children[0]  # BODY[2.1.HEADER] / BODY[2.1.TEXT]
    assert header(NESTED, inner).startswith(b"From: Inner Sender") and inner.header_start == (
        rfc822.body_start
    )
    assert body(NESTED, inner).startswith(b"--inner\r\n") and inner.body_end == rfc822.body_end
    assert header(NESTED, rfc822) == (
        b"Content-Type: message/rfc822\r\nContent-Description: the report\r\n\r\n"
    )  # BODY[2.1.MIME]
    assert body(NESTED, find_part(root, (2, 1, 1))) == b"plain body"
    assert body(NESTED, find_part(root, (2, 1, 2))) == b"<b>html</b>"
    assert find_part(root, (2, 1, 3)) is None
    simple = find_part(root, (2, 2))
    assert simple is not None
    assert find_part(root, (2, 2, 1)) is simple.children[0]  # non-multipart message: its body
    assert body(NESTED, find_part(root, (2, 2, 1))) == b"just text"
    assert find_part(root, (2, 2, 2)) is None
    assert rfc822.envelope == (
        '(NIL "report" (("Inner Sender" NIL "inner" "example.com")) (("Inner Sender" NIL "inner"'
        ' "example.com")) (("Inner Sender" NIL "inner" "example.com")) NIL NIL NIL NIL NIL)'
    )
    assert header_fields(NESTED, inner, ["subject", "X-None"], exclude=False) == (
        b"Subject: report\r\n\r\n"
    )


def test_top_level_numbering() -> None:
    data = crlf("Subject: x\n\nhello\n")
    root = parse_structure(data)
    assert find_part(root, (1,)) is root  # BODY[1] of a non-multipart message is its body
    assert find_part(root, (2,)) is None
    assert (root.header_start, root.body_start, root.body_end, root.lines) == (0, 14, 21, 1)


def test_multipart_digest() -> None:
    data = crlf(
        'Content-Type: multipart/digest; boundary="d"\n'
        "\n"
        "--d\n"
        "\n"
        "From: one@example.org\n"
        "Subject: first\n"
        "\n"
        "one\n"
        "--d\n"
        "Content-Type: text/plain\n"
        "\n"
        "not a message\n"
        "--d--\n"
    )
    root = parse_structure(data)
    first, second = root.children
    assert (first.type, first.subtype, second.type) == ("message", "rfc822", "text")
    assert first.children[0].header_start == first.body_start
    assert body(data, first.children[0]) == b"one"
    assert first.envelope is not None and first.envelope.startswith('(NIL "first" ((NIL NIL "one"')
    assert bodystructure(root, extensible=False).startswith('(("message" "rfc822" NIL NIL NIL')


def test_missing_boundary_is_text_plain() -> None:
    data = crlf("Content-Type: multipart/mixed\n\n--x\nhello\n--x--\n")
    root = parse_structure(data)
    assert (root.type, root.subtype, root.params, root.children) == ("text", "plain", (), ())
    assert body(data, find_part(root, (1,))) == b"--x\r\nhello\r\n--x--\r\n"


def test_lf_only_offsets_and_delimiter_rules() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\n"
        b"\n"
        b"preamble --b not a delimiter\n"
        b"--b  \t\n"
        b"\n"
        b"one\n"
        b"--bb\n"
        b"still one\n"
        b"--b\n"
        b"--b\n"
        b"Content-Type: text/plain\n"
        b"--b--\n"
        b"epilogue\n"
    )
    root = parse_structure(data)
    one, empty, headers_only = root.children
    assert body(data, one) == b"one\n--bb\nstill one"
    assert data[one.header_start : one.body_start] == b"\n"
    assert (empty.header_start, empty.body_start, empty.body_end) == (103, 103, 103)
    assert header(data, headers_only) == b"Content-Type: text/plain"
    assert headers_only.body_start == headers_only.body_end == 131
    assert header_fields(data, headers_only, ["content-type"], exclude=False) == (
        b"Content-Type: text/plain\r\n\r\n"
    )


def test_header_only_message_and_empty_input() -> None:
    data = b"Subject: no body"
    root = parse_structure(data)
    assert (root.body_start, root.body_end) == (16, 16)
    assert envelope(data) == '(NIL "no body" NIL NIL NIL NIL NIL NIL NIL NIL)'
    empty = parse_structure(b"")
    assert bodystructure(empty) == (
        '("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 0 0 NIL NIL NIL NIL)'
    )
    assert envelope(b"") == "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_group_and_odd_addresses() -> None:
    data = crlf(
        "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\n"
        "Sender: secretary@example.org (The Secretary)\n"
        "Reply-To:\n"
        'To: Team: ann@example.org, "B. (Bob)" <bob@example.org>;, undisclosed-recipients:;\n'
        "Cc: <@relay.example,@r2.example:route@example.com>, John Q. Public <jqp@x.example>\n"
        'Bcc: localonly, Some Name, "quoted local"@example.com, <>\n'
        "First-Wins: ignored\n"
        "From: second@example.org\n"
        "\n"
    )
    env = envelope(data)
    joerg = '(("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "example.org"))'
    assert env == (
        f'(NIL NIL {joerg} (("The Secretary" NIL "secretary" "example.org")) {joerg}'
        ' ((NIL NIL "Team" NIL)(NIL NIL "ann" "example.org")("B. (Bob)" NIL "bob" "example.org")'
        '(NIL NIL NIL NIL)(NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
        ' ((NIL "@relay.example,@r2.example" "route" "example.com")("John Q. Public" NIL "jqp"'
        ' "x.example")) ((NIL NIL "localonly" "MISSING_DOMAIN")("Some Name" NIL "MISSING_MAILBOX"'
        ' "MISSING_DOMAIN")(NIL NIL "quoted local" "example.com")(NIL NIL "MISSING_MAILBOX"'
        ' "MISSING_DOMAIN")) NIL NIL)'
    )


def test_eight_bit_and_special_strings() -> None:
    data = 'Subject: Grüße "aus" C:\\\nMessage-ID: <a\x00b@x>\n\n'.encode()
    env = envelope(data)
    assert env.startswith('(NIL {17}\r\nGrüße "aus" C:\\ NIL')
    assert env.endswith(" NIL {7}\r\n<a\udc80b@x>)")  # NUL becomes 0x80: a literal
    latin1 = b"Subject: caf\xe9\n\n"
    rendered = envelope(latin1).encode("utf-8", "surrogateescape")
    assert rendered == b"(NIL {4}\r\ncaf\xe9 NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_imap_string() -> None:
    assert imap_string(None) == "NIL"
    assert imap_string("") == '""'
    assert imap_string('a"b\\c') == '"a\\"b\\\\c"'
    assert imap_string("two\r\nlines") == "{10}\r\ntwo\r\nlines"
    assert imap_string("é") == "{2}\r\né"
    assert imap_string(b"\xff") == "{1}\r\n\udcff"


def test_header_fields_include_and_exclude() -> None:
    data = crlf("Subject: a\n  folded\nX-Spam: yes\nsubject: second\nTo: t@example.org\n\nbody\n")
    root = parse_structure(data)
    assert header_fields(data, root, ["SUBJECT"], exclude=False) == (
        b"Subject: a\r\n  folded\r\nsubject: second\r\n\r\n"
    )
    assert header_fields(data, root, ["subject", "x-spam"], exclude=True) == (
        b"To: t@example.org\r\n\r\n"
    )
    assert header_fields(data, root, ["missing"], exclude=False) == b"\r\n"


def test_decoded_body_errors() -> None:
    def leaf(encoding: str, content: bytes) -> tuple[bytes, Part]:
        data = b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + content
        return data, parse_structure(data)

    assert decoded_body(*leaf("Base64", b"aGVs\r\nbG8=\r\n")) == b"hello"
    assert decoded_body(*leaf("8bit", b"\xff\r\n")) == b"\xff\r\n"
    with pytest.raises(ValueError, match="base64"):
        decoded_body(*leaf("base64", b"aGVsbG8"))
    with pytest.raises(ValueError, match="X-UUENCODE"):
        decoded_body(*leaf("x-uuencode", b"begin 644 f\r\n"))
    assert parse_structure(b'Content-Transfer-Encoding: "quoted"\r\n\r\n').encoding == "7BIT"


# --- Dovecot's imaptest conformance suite (src/tests/): messages from its .mbox files with the
# --- CRLF line ends imaptest gives them, expected octets from its test scripts.

IMAPTEST_QP = crlf(  # fetch-binary-mime-qp.mbox
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n'
    ' bar"\n'
    "\n"
    "Root MIME prologue\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "hello  \n"
    "bar=\n"
    "\n"
    "foo\t=\n"
    "bar\n"
    "foo\t \t= \n"
    "=62\n"
    "foo = \t\n"
    "bar\n"
    "foo =\n"
    "=62\n"
    "foo  \n"
    "bar=\n"
    "\n"
    "foo_bar\n"
    "\n"
    "--foo bar--\n"
    "Root MIME epilogue\n"
)


def test_imaptest_fetch_binary_mime_qp() -> None:
    root = parse_structure(IMAPTEST_QP)
    part = find_part(root, (1,))
    assert part is not None and part.encoding == "QUOTED-PRINTABLE"
    decoded = decoded_body(IMAPTEST_QP, part)
    assert decoded == (  # binary.peek[1]: trailing blanks gone, "=" blanks CRLF a soft break
        b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\nbar\r\nfoo_bar\r\n"
    )
    assert len(decoded) == 65  # binary.size[1]
    partials = {(0, 10): b"hello\r\nbar", (10, 10): b"\r\nfoo\tbar\r", (20, 10): b"\nfoo\t \tb\r\n"}
    partials |= {(15, 10): b"\tbar\r\nfoo\t", (40, 100): b"oo b\r\nfoo\r\nbar\r\nfoo_bar\r\n"}
    for (start, length), expected in partials.items():
        assert decoded[start : start + length] == expected


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"a =\r\nb \t\r\nc\t", b"a b\r\nc"),  # soft break; blanks before CRLF / the end dropped
        (b"=E2=82=ac=3d\r\n", b"\xe2\x82\xac=\r\n"),  # hex in either case
        (b"a \nb=\nc= \t\nd", b"a\r\nbcd"),  # a bare LF is a line end, written as CRLF
        (b"x=\r\n", b"x"),
        (b"a=4x=G0==41=\r", b"a=4x=G0=A=\r"),  # invalid "=": kept, scanning resumes after it
        (b"a\rb \r c\r\r\n", b"a\rb \r c\r\r\n"),  # a bare CR is an octet, blanks before it too
        (b"tail=", b"tail="),  # "=" ending the body is invalid: kept
        (b"tail= \t", b"tail= \t"),
        (b"tail=4", b"tail=4"),
        (b"= x=\t\tx=20\r\n", b"= x=\t\tx \r\n"),  # "=" blanks not before a line end: kept
        (b"", b""),
    ],
)
def test_quoted_printable_like_dovecot(encoded: bytes, decoded: bytes) -> None:
    data = b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\n" + encoded
    assert decoded_body(data, parse_structure(data)) == decoded


def test_quoted_printable_is_linear() -> None:
    """Runs of blanks cost one scan each: no match of the decoding pattern starts inside a run
    (only at its first blank), so the regex engine never rescans a run from each of its octets
    (quadratic in the run's length: runs of 400,000 did not end in 5 minutes), whatever
    follows the run."""
    samples = (b"a \t \t b", b"a \t \r\nb", b"= \t \t\r\nb", b"a \t \t", b"= \t \t", b"x=\t \ty")
    for sample in samples:
        starts = [i for i in range(len(sample)) if structure._QP_TOKEN.match(sample, i)]
        inside = [i for i in starts if sample[i - 1 : i] in (b" ", b"\t")]
        assert inside == [], (sample, starts)
    blanks = b" \t" * 2_000
    encoded = (blanks + b"x=" + blanks + b"y" + blanks + b"=\r\n=41" + blanks) * 4
    decoded = decode_quoted_printable(encoded)
    assert decoded + blanks == encoded.replace(b"=\r\n=41", b"A")  # the last blanks dropped


IMAPTEST_BASE64 = crlf(  # fetch-binary-mime-base64.mbox
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n'
    ' bar"\n'
    "\n"
    "Root MIME prologue\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "\n"
    "aGVs\n"
    "bG8gd29y\n"
    "bGQ=\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "  aGVs    \n"
    " bG8g  \n"
    "   d29y  \t \n"
    "    bGQ= \n"
    "\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "aGVsbG8g\n"
    "dG8geW91IHRv\n"
    "bw==\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "aGVsbG8gdG8gZXZlcnlvbmUh\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "YWJjZGVmZw1oaWprbA0KbW5vCnBxcnN0dXZxeHl6\n"
    "\n"
    "--foo bar--\n"
    "Root MIME epilogue\n"
)


def test_imaptest_fetch_binary_mime_base64() -> None:
    root = parse_structure(IMAPTEST_BASE64)
    decoded = []
    for number in range(1, 6):
        part = find_part(root, (number,))
        assert part is not None and part.encoding == "BASE64"
        decoded.append(decoded_body(IMAPTEST_BASE64, part))
    assert decoded == [
        b"hello world",  # line breaks,
        b"hello world",  # and blanks around and inside lines are skipped
        b"hello to you too",
        b"hello to everyone!",
        b"abcdefg\rhijkl\r\nmno\npqrstuvqxyz",  # decoded CR, CRLF and LF stay as they are
    ]
    assert [len(d) for d in decoded] == [11, 11, 16, 18, 30]  # binary.size[1..5]
    fifth = decoded[4]
    assert (fifth[:7], fifth[:8], fifth[:10]) == (b"abcdefg", b"abcdefg\r", b"abcdefg\rhi")
    assert (fifth[10:20], fifth[5:15]) == (b"jkl\r\nmno\np", b"fg\rhijkl\r\n")
    assert fifth[15:115] == b"mno\npqrstuvqxyz"


IMAPTEST_MIME = crlf(  # fetch-body-mime.mbox, fetch-binary-mime.mbox
    "From: user@domain.org\n"
    "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    "Mime-Version: 1.0\n"
    'Content-Type: multipart/mixed; boundary="foo\n'
    ' bar"\n'
    "\n"
    "Root MIME prologue\n"
    "\n"
    "--foo bar\n"
    "Content-Type: text/x-myown; charset=us-ascii\n"
    "\n"
    "hello\n"
    "\n"
    "--foo bar\n"
    "Content-Type: message/rfc822\n"
    "\n"
    "From: sub@domain.org\n"
    "Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    "Subject: submsg\n"
    'Content-Type: multipart/alternative; boundary="sub1"\n'
    "\n"
    "Sub MIME prologue\n"
    "--sub1\n"
    "Content-Type: text/html\n"
    "\n"
    "<p>Hello world</p>\n"
    "\n"
    "--sub1\n"
    "Content-Type: text/plain\n"
    "\n"
    "Hello another world\n"
    "\n"
    "--sub1--\n"
    "Sub MIME epilogue\n"
    "\n"
    "--foo bar--\n"
    "Root MIME epilogue\n"
)


def test_imaptest_fetch_body_mime_and_binary_mime() -> None:
    data = IMAPTEST_MIME
    root = parse_structure(data)
    assert len(data) == 602  # binary.size[]
    assert body(data, root).startswith(b"Root MIME prologue\r\n\r\n--foo bar\r\n")  # body[text]
    sections = {
        (1,): (b"hello\r\n", b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n"),
        (2, 1): (b"<p>Hello world</p>\r\n", b"Content-Type: text/html\r\n\r\n"),
        (2, 2): (b"Hello another world\r\n", b"Content-Type: text/plain\r\n\r\n"),
    }
    for path, (octets, mime) in sections.items():
        part = find_part(root, path)
        assert (body(data, part), header(data, part)) == (octets, mime)  # body[n], body[n.mime]
        assert decoded_body(data, part) == octets  # binary[n]: nothing to decode
    message = find_part(root, (2,))
    assert message is not None and header(data, message) == b"Content-Type: message/rfc822\r\n\r\n"
    assert body(data, message).startswith(b"From: sub@domain.org\r\n")
    assert body(data, message).endswith(b"--sub1--\r\nSub MIME epilogue\r\n")
    assert message.body_end - message.body_start == 298  # binary.size[2]
    inner = message.children[0]
    assert header(data, inner).endswith(b'boundary="sub1"\r\n\r\n')  # body[2.header]
    assert body(data, inner).startswith(b"Sub MIME prologue\r\n--sub1\r\n")  # body[2.text]
    assert header_fields(data, inner, ["from", "subject", "X-foo"], exclude=True) == (
        b"Date: Sun, 12 Aug 2012 12:34:56 +0300\r\nContent-Type: multipart/alternative;"
        b' boundary="sub1"\r\n\r\n'
    )


def test_imaptest_fetch_body_message_rfc822_sections() -> None:
    digest = crlf(  # fetch-body-message-rfc822-mime.mbox: delimiters with a trailing blank
        "From: user@domain.org\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Subject: submsg\n"
        'Content-Type: multipart/digest; boundary="foo"\n'
        "\n"
        "prologue\n"
        "\n"
        "--foo \n"
        "\n"
        "From: m1@example.com\n"
        "Subject: m1\n"
        "\n"
        "m1 body\n"
        "\n"
        "--foo \n"
        "X-Mime: m2 header\n"
        "\n"
        "From: m2@example.com\n"
        "Subject: m2\n"
        "\n"
        "m2 body\n"
        "\n"
        "--foo--\n"
        "\n"
        "epilogue\n"
    )
    root = parse_structure(digest)
    for number, mime in [(1, b"\r\n"), (2, b"X-Mime: m2 header\r\n\r\n")]:
        part = find_part(root, (1, number))
        assert part is not None and (part.type, part.subtype) == ("message", "rfc822")
        name = f"m{number}".encode()
        assert header(digest, part) == mime  # body[1.n.mime]
        assert body(digest, part) == (  # body[1.n]
            b"From: " + name + b"@example.com\r\nSubject: " + name + b"\r\n\r\n" + name
            + b" body\r\n"
        )  # fmt: skip
        assert body(digest, part.children[0]) == name + b" body\r\n"  # body[1.n.text]
    twice = crlf(  # fetch-body-message-rfc822-x2.mbox
        "From: user@domain.org\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: user2@domain.org\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: sub@domain.org\n"
        "Subject: submsg\n"
        "\n"
        "Hello world\n"
    )
    root = parse_structure(twice)
    assert body(twice, find_part(root, (1,))).startswith(b"From: user2@")  # body[1]
    assert body(twice, find_part(root, (1, 1))).startswith(b"From: sub@")  # body[1.1]
    assert body(twice, find_part(root, (1, 1, 1))) == b"Hello world\r\n"  # body[1.1.1]
    assert find_part(root, (1, 1, 1, 1)) is None


def test_imaptest_fetch_bodystructure() -> None:
    data = crlf(  # fetch-bodystructure.mbox
        "From: user@domain.org\n"
        "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
        "Mime-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="foo\n'
        ' bar"\n'
        "\n"
        "--foo bar\n"
        "Content-Type: text/x-myown; charset=us-ascii\n"
        "\n"
        "hello\n"
        "\n"
        "--foo bar--\n"
    )
    assert bodystructure(parse_structure(data), extensible=False).upper() == (
        '(("TEXT" "X-MYOWN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1) "MIXED")'
    )  # imaptest compares case-insensitively


@pytest.mark.parametrize(
    ("fields", "expected"),
    [  # fetch-envelope.mbox messages 1, 4, 5 and 6
        (
            "Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\n"
            "Date: Thu, 15 Feb 2007 01:02:03 +0200\nSubject: subject header\n"
            "From: From Real <fromuser@fromdomain.org>\nTo: To Real <touser@todomain.org>\n"
            "Cc: Cc Real <ccuser@ccdomain.org>\nBcc: Bcc Real <bccuser@bccdomain.org>\n"
            "Sender: Sender Real <senderuser@senderdomain.org>\n"
            "Reply-To: ReplyTo Real <replytouser@replytodomain.org>\n",
            '("Thu, 15 Feb 2007 01:02:03 +0200" "subject header" (("From Real" NIL "fromuser"'
            ' "fromdomain.org")) (("Sender Real" NIL "senderuser" "senderdomain.org"))'
            ' (("ReplyTo Real" NIL "replytouser" "replytodomain.org")) (("To Real" NIL "touser"'
            ' "todomain.org")) (("Cc Real" NIL "ccuser" "ccdomain.org")) (("Bcc Real" NIL'
            ' "bccuser" "bccdomain.org")) "<reply@to.id>" "<msg@id>")',
        ),
        (
            "Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\n"
            "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n"
            "Cc: group:;, group2: (foo) ;\n",
            '("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain"))'
            ' (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) ((NIL NIL'
            ' "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)(NIL NIL'
            ' "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) ((NIL NIL "group" NIL)(NIL'
            ' NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)',
        ),
        (
            "Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\nSender: \n"
            "Reply-To: \n",
            '("Thu, 15 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain"))'
            ' (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) NIL NIL NIL'
            " NIL NIL)",
        ),
        (
            "Date: Thu, 15 Feb 2007 01:02:03 +0200\nFrom: <@route:user@domain>\n",
            '("Thu, 15 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL'
            ' "@route" "user" "domain")) ((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL)',
        ),
    ],
)
def test_imaptest_fetch_envelope(fields: str, expected: str) -> None:
    assert envelope(crlf(fields + "\nbody\n\n")) == expected


def test_imaptest_append_binary() -> None:
    """append-binary: a literal8 with NUL, 8-bit octets and bare LFs, Content-Transfer-Encoding
    binary. BODY[1] / BINARY[1] are the 7 body octets as they are."""
    data = (
        crlf(
            "From: user@domain.org\n"
            "Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
            "Mime-Version: 1.0\n"
            "Content-Type: application/octet-stream\n"
            "Content-Transfer-Encoding: binary\n"
            "\n"
        )
        + b"\x00-\xe4\n\r\n\n"
    )
    root = parse_structure(data)
    assert find_part(root, (1,)) is root
    assert body(data, root) == decoded_body(data, root) == b"\x00-\xe4\n\r\n\n"
    assert bodystructure(root) == (
        '("application" "octet-stream" NIL NIL NIL "BINARY" 7 NIL NIL NIL NIL)'
    )


@pytest.mark.parametrize("data", [DOVECOT_NESTED, ALTERNATIVE, ATTACHMENT, NESTED])
def test_json_round_trip(data: bytes) -> None:
    root = parse_structure(data)
    text = to_json(root)
    assert from_json(text) == root
    assert to_json(from_json(text)) == text
    assert text.isascii() and text.startswith(f"[0,{root.body_start},{len(data)},")


def test_json_round_trip_eight_bit_and_bad_input() -> None:
    data = b'Content-Type: text/plain; name="caf\xe9"\r\nContent-ID: <\xff>\r\n\r\nx'
    root = parse_structure(data)
    assert root.params == (("name", "caf\udce9"),)
    assert from_json(to_json(root)) == root
    with pytest.raises(ValueError):
        from_json("[1, 2]")
    with pytest.raises(ValueError):
        from_json("{}")


# --- limits --------------------------------------------------------------------------------------


def walk(part: Part, depth: int = 1) -> list[tuple[Part, int]]:
    out = [(part, depth)]
    for child in part.children:
        out += walk(child, depth + 1)
    return out


class Metered(bytes):
    """Message data that counts the octets the parser reads through its methods and slices."""

    octets = 0

    def _add(self, start: int | None, end: int | None) -> None:
        s, e, _ = slice(start, end).indices(len(self))
        Metered.octets += max(e - s, 0)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            self._add(key.start, key.stop)
        return super().__getitem__(key)

    def count(self, sub: Any, start: Any = None, end: Any = None) -> int:
        self._add(start, end)
        return super().count(sub, start, end)

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        found = super().find(sub, start, end)  # reads up to what it finds, or to its end
        self._add(start, end if found < 0 else found + len(sub))
        return found

    def startswith(self, prefix: Any, start: Any = None, end: Any = None) -> bool:
        Metered.octets += len(prefix)  # it compares the prefix's length, whatever the range
        return super().startswith(prefix, start, end)

    def split(self, *args: Any, **kwargs: Any) -> list[bytes]:
        self._add(None, None)
        return super().split(*args, **kwargs)


@pytest.fixture
def metered(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts, while parsing: `octets` read (the header search, the boundary searches, slices,
    line counts: the parser reads the message through these methods only) and `parts` (calls
    of the part parser)."""
    calls = {"parts": 0}
    real_part = structure._Parser.part

    def part(self: Any, *args: Any) -> Part:
        calls["parts"] += 1
        return real_part(self, *args)

    monkeypatch.setattr(structure._Parser, "part", part)
    Metered.octets = 0
    yield calls
    calls["octets"] = Metered.octets


def metered_parse(calls: dict[str, int], data: bytes, **kwargs: int) -> tuple[Part, int]:
    """parse_structure(data) and the octets it read."""
    Metered.octets = 0
    root = parse_structure(Metered(data), **kwargs)
    return root, Metered.octets


def test_many_parts_stop_at_max_parts(metered: dict[str, int]) -> None:
    """Past max_parts the parser stops: it makes no more parts and scans no further."""
    parts = "".join(f"--b\nContent-Type: text/plain\n\npart {i}\n" for i in range(10_000))
    data = crlf(f"Content-Type: multipart/mixed; boundary=b\n\n{parts}--b--\n")
    root, octets = metered_parse(metered, data, max_parts=100)
    assert metered["parts"] == 100
    assert octets <= 1.5 * len(data)  # boundaries up to part 100, then the rest's lines once
    assert len(walk(root)) == 100
    rest = root.children[-1]
    assert (rest.body_end, rest.type) == (len(data), "text")  # the rest: one leaf
    assert body(data, root.children[0]) == b"part 0"


def test_deep_nesting_stops_at_max_depth(metered: dict[str, int]) -> None:
    """Nesting past max_depth is a leaf: the parser neither recurses nor rescans deeper (each
    level searches only its own body, once)."""
    depth = 10_000
    head = "".join(
        f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth)
    )
    data = crlf(head + "\nleaf\n")
    root, octets = metered_parse(metered, data)
    assert metered["parts"] == 32
    assert octets <= 32 * len(data)  # each of the 32 levels searches its body (the rest) once
    nodes = walk(root)
    assert max(d for _p, d in nodes) == 32 and len(nodes) == 32
    assert (nodes[-1][0].type, nodes[-1][0].subtype) == ("application", "octet-stream")
    assert bodystructure(root).count("(") < 200
    nested_messages = crlf("Content-Type: message/rfc822\n\n" * depth + "Subject: deep\n\nx\n")
    assert max(d for _p, d in walk(parse_structure(nested_messages, max_depth=50))) == 50


def test_fifty_megabytes(metered: dict[str, int]) -> None:
    """Linear in the message: the octets read stay a small multiple of its size (a parser
    that searched each part's boundary from the body's start, or copied each part, would
    read hundreds of times more)."""
    chunk = "--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    blob = ("QUJD" * 19 + "\n") * 1_200  # 93.6 kB per part
    data = crlf("Content-Type: multipart/mixed; boundary=b\n\n" + (chunk + blob) * 540 + "--b--\n")
    assert len(data) > 50_000_000
    root, octets = metered_parse(metered, data)
    assert metered["parts"] == 541
    assert octets <= 1.5 * len(data)  # about 1.0: the boundary search, part headers, once
    assert len(root.children) == 540
    assert root.children[-1].body_end == len(data) - len(b"\r\n--b--\r\n")
