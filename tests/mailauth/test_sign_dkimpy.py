"""Signatures made by postkeep, verified by dkimpy (an independent implementation) with the
public keys fetched from a real DNS server (NSD) over dnspython."""

from __future__ import annotations

import time

import dkim
import pytest

from postkeep.mailauth.dkim.canon import Canon
from postkeep.mailauth.dkim.sign import WIDTH, DkimSigner, sign_all
from tests.mailauth.conftest import DOMAIN, Published
from tests.mailauth.messages import MESSAGES

CANONS: list[tuple[Canon, Canon]] = [("relaxed", "relaxed"), ("simple", "simple"),
                                     ("relaxed", "simple"), ("simple", "relaxed")]


def verify(message: bytes, published: Published, index: int = 0) -> bool:
    return bool(dkim.DKIM(message).verify(index, dnsfunc=published.dnsfunc()))


def passes(message: bytes, published: Published) -> bool:
    """dkimpy's verdict: it raises for a body hash mismatch, returns False for a bad b=."""
    try:
        return verify(message, published)
    except dkim.ValidationError:
        return False


def signer(published: Published, selector: str, **kwargs: object) -> DkimSigner:
    return DkimSigner(DOMAIN, selector, published.keys[selector], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("canon", CANONS, ids="/".join)
@pytest.mark.parametrize("selector", ["rsa", "ed"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_dkimpy_verifies(published: Published, name: str, selector: str,
                         canon: tuple[Canon, Canon]) -> None:
    message = MESSAGES[name]
    field = signer(published, selector, canonicalization=canon, expire_after=3600).sign(message)
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= WIDTH for line in lines)
    assert field.startswith(b"DKIM-Signature: v=1; a=") and b"\n" not in field.replace(b"\r\n", b"")
    assert verify(field + message, published)


def test_header_list_and_tags(published: Published) -> None:
    field = signer(published, "rsa", clock=lambda: 1_700_000_000.5,
                   expire_after=86400).sign(MESSAGES["multiple-to"])
    tags = dict(tag.strip().split("=", 1)
                for tag in field.decode().replace("\r\n ", "").split(":", 1)[1].split(";"))
    # Present fields only, each once more than it occurs (From, Subject, Cc once: twice).
    assert tags["h"] == "from:from:subject:subject:to:to:to:cc:cc"
    assert (tags["a"], tags["c"], tags["d"], tags["s"]) == (
        "rsa-sha256", "relaxed/relaxed", DOMAIN, "rsa")
    assert (tags["t"], tags["x"]) == ("1700000000", "1700086400")


def test_dual_signature(published: Published) -> None:
    message = MESSAGES["folded"]
    fields = sign_all(message, [signer(published, "rsa"), signer(published, "ed")])
    signed = fields + message
    assert verify(signed, published, 0) and verify(signed, published, 1)
    # One at a time, the second over the message the first was prepended to: the same field
    # (DKIM-Signature is in no h=), so the order of prepending does not matter.
    now = time.time()
    clock = lambda: now  # noqa: E731
    first = signer(published, "rsa", clock=clock).sign(message)
    second = signer(published, "ed", clock=clock).sign(first + message)
    assert second == signer(published, "ed", clock=clock).sign(message)
    assert verify(second + first + message, published, 0)
    assert verify(second + first + message, published, 1)


@pytest.mark.parametrize("selector", ["rsa", "ed"])
def test_tampering_fails(published: Published, selector: str) -> None:
    message = MESSAGES["plain"]
    field = signer(published, selector).sign(message)
    assert verify(field + message, published)
    # An unsigned field added: still verifies (so the failures below are the tampering's).
    assert verify(field + b"Received: by relay\r\n" + message, published)
    tampered = {
        "body changed": message.replace(b"noon", b"nine"),
        "line added to the body": message + b"P.S.\r\n",
        "second From on top": b"From: mallory@example.org\r\n" + message,
        "second From below": message.replace(b"To:", b"From: mallory@example.org\r\nTo:"),
        "another To": b"To: eve@example.org\r\n" + message,
        "subject changed": message.replace(b"Lunch", b"Lunch!"),
    }
    for what, text in tampered.items():
        assert not passes(field + text, published), what


def test_empty_lines_added_at_the_end_still_verify(published: Published) -> None:
    message = MESSAGES["plain"]
    field = signer(published, "ed").sign(message)
    assert verify(field + message + b"\r\n\r\n", published)


def test_expired_signature_fails(published: Published) -> None:
    message = MESSAGES["plain"]
    old = time.time() - 2 * 86400  # dkimpy allows 10 hours of clock skew
    field = signer(published, "ed", clock=lambda: old, expire_after=3600).sign(message)
    with pytest.raises(dkim.ValidationError, match="x= value is past"):
        verify(field + message, published)


def test_unknown_selector_fails(published: Published, caplog: pytest.LogCaptureFixture) -> None:
    field = DkimSigner(DOMAIN, "missing", published.keys["ed"]).sign(MESSAGES["plain"])
    assert not verify(field + MESSAGES["plain"], published)
    assert "missing public key" in caplog.text
