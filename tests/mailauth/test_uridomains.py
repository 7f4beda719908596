"""The domains a message links to (postkeep.mailauth.uridomains): sans-IO, message bytes in,
domains out; the lists themselves are asked over NSD in test_dnsbl_iprev.py."""

from __future__ import annotations

import base64
import quopri

from hypothesis import given, settings
from hypothesis import strategies as st

from postkeep.mailauth.uridomains import MAX_DOMAINS, body_domains


def message(*parts: tuple[str, str, bytes]) -> bytes:
    """A multipart/alternative message of (subtype, transfer encoding, encoded body) parts."""
    out = [b"From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n']
    for subtype, cte, body in parts:
        out.append(f"--b\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
                   f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode() + body + b"\r\n")
    out.append(b"--b--\r\n")
    return b"".join(out)


def test_plain_text_links() -> None:
    text = (b"From: a@b.example\r\n\r\nSee https://login.bank.example/x?y and "
            b"www.shop.co.uk/offer, ftp://files.example.org:21/a, mail me a@not-a-link.example"
            b"\r\nhttp://192.0.2.1/x http://[2001:db8::1]/ http://localhost/\r\n")
    assert body_domains(text) == ["bank.example", "shop.co.uk", "example.org"]


def test_obfuscations_are_undone() -> None:
    text = ("hxxp://evil[.]example/a h**ps://phish(.)example/ "
            "http://paypal.example@real-host.example/login "
            "http://%65ncoded.example/ http://in\u200bvisible.example/ "
            "https://b\u00fccher.example/ https://www.WWW-upper.EXAMPLE/").encode()
    body = base64.b64encode(text)
    found = body_domains(message(("plain", "base64", body)))
    assert found == ["evil.example", "phish.example", "real-host.example", "encoded.example",
                     "invisible.example", "xn--bcher-kva.example", "www-upper.example"]


def test_html_attributes_and_entities() -> None:
    page = (b'<a href="https://click.tracker.example/r">Your bank</a>'
            b"<img src='http://img.cdn.example/p.png'>"
            b'<a href="&#104;ttps://entity&#46;example/">x</a>'
            b'<a href=mailto:x@y.example>m</a><a href="/relative">r</a>')
    found = body_domains(message(("plain", "7bit", b"nothing here"),
                                 ("html", "quoted-printable", quopri.encodestring(page))))
    assert found == ["tracker.example", "cdn.example", "entity.example"]


def test_bounded() -> None:
    many = " ".join(f"http://d{i}.example/" for i in range(200)).encode()
    assert len(body_domains(b"Subject: x\r\n\r\n" + many)) == MAX_DOMAINS
    huge = b"Subject: x\r\n\r\n" + b"a" * (2 << 20) + b" http://late.example/"
    assert body_domains(huge) == []  # past the text read
    attachment = (b"MIME-Version: 1.0\r\nContent-Type: application/pdf\r\n\r\n"
                  b"http://not-text.example/\r\n")
    assert body_domains(attachment) == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_input_gives_a_bounded_list(data: bytes) -> None:
    found = body_domains(b"Content-Type: text/html\r\n\r\n" + data)
    assert len(found) <= MAX_DOMAINS and all(d.isascii() for d in found)
