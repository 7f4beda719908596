"""Authentication-Results (postkeep.mailauth.authres): the field we write, and forged fields
naming our authserv-id removed (RFC 8601 §5). Sans-IO: header bytes in, header bytes out; the
MX end-to-end test sends a forged field over SMTP (tests/interop)."""

from __future__ import annotations

from postkeep.mailauth.authres import authserv_id, render, strip_own
from postkeep.mailauth.dkim.canon import parse_header_fields


def test_render_folds_between_results() -> None:
    field = render("mx.example.org", [
        "spf=pass smtp.mailfrom=bounce.bank.example",
        "dkim=pass header.d=bank.example header.s=sel header.b=AbCdEfGh",
        "dmarc=pass (p=reject dis=none) header.from=bank.example",
    ])
    assert field == (
        b"Authentication-Results: mx.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=bounce.bank.example;\r\n"
        b"\tdkim=pass header.d=bank.example header.s=sel header.b=AbCdEfGh;\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=bank.example\r\n")
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    short = render("mx.example.org", ["spf=pass smtp.mailfrom=a.example", "dkim=none"])
    assert short == (b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=a.example;"
                     b"\r\n\tdkim=none\r\n")
    assert render("mx.example.org", []) == b"Authentication-Results: mx.example.org; none\r\n"
    [parsed] = parse_header_fields(field)
    assert parsed.key == "authentication-results" and authserv_id(parsed.raw) == "mx.example.org"


def test_authserv_id_forms() -> None:
    assert authserv_id(b"Authentication-Results: MX.Example.ORG; spf=pass\r\n") == "mx.example.org"
    assert authserv_id(b"Authentication-Results: (comment (nested)) mx.example.org 1; none\r\n"
                       ) == "mx.example.org"
    assert authserv_id(b'Authentication-Results: "mx.example.org"; none\r\n') == "mx.example.org"
    assert authserv_id(b"Authentication-Results:\r\n mx.example.org.;\r\n dmarc=pass\r\n"
                       ) == "mx.example.org"
    assert authserv_id(b"Authentication-Results: ; dmarc=pass\r\n") is None
    assert authserv_id(b"Authentication-Results: (never closed\r\n") is None


def test_forged_fields_are_removed_others_kept() -> None:
    head = (b"Received: from a\r\n"
            b"Authentication-Results: mx.example.org; dmarc=pass header.from=bank.example\r\n"
            b"authentication-results : (x) MX.EXAMPLE.ORG;\r\n\tspf=pass\r\n"
            b"Authentication-Results: other.example; dmarc=fail\r\n"
            b"Authentication-Results: mx.example.org.evil; dmarc=pass\r\n"
            b"From: ceo@bank.example\r\n")
    kept, removed = strip_own(head, "mx.example.org")
    assert removed == 2
    assert kept == (b"Received: from a\r\n"
                    b"Authentication-Results: other.example; dmarc=fail\r\n"
                    b"Authentication-Results: mx.example.org.evil; dmarc=pass\r\n"
                    b"From: ceo@bank.example\r\n")
    untouched = b"Subject: hi\r\nFrom: a@b.example\r\n"
    assert strip_own(untouched, "mx.example.org") == (untouched, 0)


def test_a_long_result_folds_between_its_words() -> None:
    long = ("dkim=pass header.d=a-very-long-signing-domain.example header.i=@a-very-long-"
            "signing-domain.example header.s=selector2026 header.a=rsa-sha256 header.b=AbCd")
    field = render("mx.example.org", ["iprev=pass (mx3.example) policy.iprev=192.0.2.1", long])
    lines = field.decode().split("\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines), lines
    assert lines[2].startswith("\tdkim=pass ") and lines[3].startswith("\t  header.")
    assert " ".join(field.decode().split()).endswith(long)  # unfolded: the same words
