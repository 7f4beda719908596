"""Hypothesis fuzzing of the junk filter's readers: messages built of MIME fragments,
damaged zips and images, random HTML never make `junk.message.parse`, the rules, the
tokenizer, `list_zip` or `image_info` raise, and their bounds hold; the content rules on
adversarial text (long runs of what their patterns branch on) finish within their bounds."""

from __future__ import annotations

import base64
import io
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.filters.junk import classifier, content, inspect
from postkeep.filters.junk.message import MAX_ATTACHMENTS, MAX_VALUE, HtmlText, parse
from postkeep.filters.junk.rules import Facts, evaluate

FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: multipart/alternative; boundary=b\r\n",
    b"Content-Type: text/html; charset=x-unknown\r\n",
    b"Content-Type: text/plain; charset=utf-7\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: image/png\r\n",
    b"Content-Type: application/zip; name==?utf-8?q?a=2Eexe?=\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n",
    b"From: =?utf-8?b?////?= <a@b\r\n",
    b"From: \"pay@pal.com\" <x@y.test>\r\n",
    b"To: " + b"a@b.test, " * 60 + b"\r\n",
    b"Subject: =?x-bad?q?=FF?= HELLO WORLD AGAIN\r\n",
    b"Received: from x\r\n",
    b"\r\n", b"--b\r\n", b"--b--\r\n", b"=\r\n", b"====\r\n", b"PK\x03\x04",
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xc0\x00\x11", b"GIF89a",
    b'<a href="http://1.2.3.4/">www.bank.example</a>', b"<div style=display:none>",
    b"<script>", b"</div>", b"<a href=http://xn--pple-43d.com>x</a>", b"&#x0;&bogus;",
    b"http://[::1/ https://bit.ly/x ", b"\xc3\x28\xa0\xa1",
]

_small = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])


def _zip(names: list[str], nested: int = 0) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in names:
            z.writestr(name, b"x")
        if nested:
            z.writestr("inner.zip", _zip(names, nested - 1))
    return out.getvalue()


@_small
@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=40), max_size=60))
def test_messages_never_crash_the_reader_or_the_rules(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    parsed = parse(data)
    assert len(parsed.attachments) <= MAX_ATTACHMENTS
    evaluate(parsed, Facts.from_summary("spf=fail dkim=fail dmarc=fail garbage =x"))
    assert len(classifier.tokens(parsed, 50)) <= 50


@_small
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=600),
       st.binary(max_size=16))
def test_damaged_zips_and_images_never_crash(noise: bytes, at: int, patch: bytes) -> None:
    for good in (_zip(["a.exe", "b.txt"], nested=5), b"\x89PNG\r\n\x1a\n" + noise,
                 b"\xff\xd8" + noise, b"GIF89a" + noise):
        cut = good[:at] + patch + good[at + len(patch):]
        listing = inspect.list_zip(cut)
        assert len(listing.names) <= inspect.MAX_ENTRIES
        inspect.image_info(cut)
        msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
               b"Content-Disposition: attachment; filename=x.zip\r\n\r\n"
               + base64.encodebytes(cut).replace(b"\n", b"\r\n") + b"--b--\r\n")
        evaluate(parse(msg), Facts())


@_small
@given(st.text(max_size=400))
def test_random_html_never_crashes(text: str) -> None:
    reader = HtmlText()
    reader.feed(text)
    reader.close()
    assert len(reader.links) <= 200


PHRASES = [
    "next of kin ", "beneficiary ", "dear friend,", "verify your account ", "v1agra ",
    "c-i-a-l-i-s ", "$1,000,000 ", "!!!", "unsubscribe ", "http://a@b.example/ ",
    "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh ", "million dollars ", "> quoted\n", "never ",
    "v" * 40, "1" * 40, "$" * 40, "!" * 40, "," * 40, "a@" * 40, "x " * 40, "\u2019" * 10,
]


@_small
@given(st.lists(st.sampled_from(PHRASES) | st.text(max_size=30), max_size=80),
       st.integers(min_value=1, max_value=400))
def test_content_rules_on_adversarial_text(pieces: list[str], repeat: int) -> None:
    """Runs of the characters the patterns branch on, repeated far past a message's usual
    size: the rules finish (their patterns have no nested repeats, see test_junk_content)
    and read at most their bound of text."""
    text = "".join(pieces) * repeat
    html = f"<p style='font-size:1px'>{text}</p><img src=http://x.example/a.png><form>"
    for part in (f"Content-Type: text/plain\r\n\r\n{text}",
                 f"Content-Type: text/html\r\n\r\n{html}"):
        data = (f"From: \"PayPal {text[:50]}\" <a@gmail.com>\r\nSubject: RE: {text[:200]}\r\n"
                f"Date: {text[:40]}\r\nReply-To: b@yahoo.com\r\n{part}").encode("utf-8",
                                                                              "replace")
        parsed = parse(data)
        assert len(content.scanned(parsed)) <= content.MAX_SCAN + MAX_VALUE + 1
        evaluate(parsed, Facts())
