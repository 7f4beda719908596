"""Hypothesis fuzzing of the junk filter's readers: messages built of MIME fragments,
damaged zips and images, random HTML never make `junk.message.parse`, the rules, the
tokenizer, `list_zip` or `image_info` raise, and their bounds hold."""

from __future__ import annotations

import base64
import io
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postkeep.filters.junk import classifier, inspect
from postkeep.filters.junk.message import MAX_ATTACHMENTS, HtmlText, parse
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
