"""The junk filter's parts without a server: each rule on a message made to match it (and
a clean one matching none), the zip and image inspection, the classifier's math (token
probability, chi-square tail, combination, bands, points), the tokenizer's bounds, and the
`[junk]` config checks."""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from postkeep import config as config_mod
from postkeep.errors import ConfigError
from postkeep.filters.junk import classifier, inspect, rules
from postkeep.filters.junk.filter import forged
from postkeep.filters.junk.message import parse
from postkeep.filters.junk.rules import GTUBE, Facts


def make(subject: str = "Hello there", body: str = "see you soon", *, html: str | None = None,
         sender: str = "Ann <ann@remote.test>", extra: dict[str, str] | None = None,
         attachments: Sequence[tuple[str, bytes, str]] = (), date: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "bob@example.test", subject
    if date:
        msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="remote.test")
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for name, data, ctype in attachments:
        main, _, sub = ctype.partition("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def symbols(data: bytes, auth: str = "") -> set[str]:
    return {name for name, _ in rules.evaluate(parse(data), Facts.from_summary(auth))}


def zipped(entries: dict[str, bytes], encrypted: str = "") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    raw = bytearray(out.getvalue())
    if encrypted:  # set the "encrypted" flag bit in the local and central headers
        for sig in (b"PK\x03\x04", b"PK\x01\x02"):
            at = raw.find(sig)
            off = 6 if sig == b"PK\x03\x04" else 8
            raw[at + off] |= 1
    return bytes(raw)


def png(width: int, height: int, text: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                           0, 0, 0))
            + (chunk(b"tEXt", b"c\0" + b"x" * text) if text else b"") + chunk(b"IEND", b""))


def test_a_plain_message_matches_nothing() -> None:
    assert symbols(make()) == set()


def test_gtube() -> None:
    hits = rules.gtube(parse(make(body=f"x\n{GTUBE}\n")), Facts())
    assert hits == [("GTUBE", rules.GTUBE_SCORE)]
    assert "GTUBE" in symbols(make(html=f"<p>{GTUBE}</p>"))


@pytest.mark.parametrize(("kw", "symbol"), [
    ({"date": False}, "MISSING_DATE"),
    ({"date": False}, "MISSING_MESSAGE_ID"),
    ({"sender": '"service@paypal.com" <x@evil.test>'}, "FROM_NAME_SPOOF"),
    ({"extra": {"Received": "from somewhere with nothing else"}}, "RCVD_MALFORMED"),
    ({"subject": "YOU HAVE WON A PRIZE!!"}, "SUBJ_ALL_CAPS"),
    ({"extra": {"Cc": ", ".join(f"u{i}@x.test" for i in range(60))}}, "MANY_RECIPIENTS"),
])
def test_header_anomalies(kw: dict[str, object], symbol: str) -> None:
    assert symbol in symbols(make(**kw))  # type: ignore[arg-type]


def test_header_anomalies_spare_normal_mail() -> None:
    ok = make(sender='"ann@remote.test" <ann@mail.remote.test>', subject="OK, see you",
              extra={"Received": "from a (a [192.0.2.1]) by mx.remote.test; "
                                 + formatdate()})
    assert symbols(ok) == set()


def test_html_rules() -> None:
    words = " ".join(f"word{i}" for i in range(30))
    other = " ".join(f"other{i}" for i in range(30))
    assert "HTML_TEXT_MISMATCH" in symbols(make(body=words, html=f"<p>{other}</p>"))
    assert "HTML_TEXT_MISMATCH" not in symbols(make(body=words, html=f"<p>{words}</p>"))
    hidden = make(html='<p>hi</p><div style="display: none">' + "stuffing " * 20 + "</div>")
    assert "HTML_HIDDEN_TEXT" in symbols(hidden)
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("<p>only html</p>", subtype="html")
    assert "HTML_ONLY" in symbols(msg.as_bytes())


@pytest.mark.parametrize(("html", "symbol"), [
    ('<a href="https://evil.test/login">www.mybank.example</a>', "URL_TEXT_MISMATCH"),
    ('<a href="http://198.51.100.7/login">log in</a>', "URL_IP_LITERAL"),
    ('<a href="https://bit.ly/3abc">here</a>', "URL_SHORTENER"),
    ('<a href="https://xn--pple-43d.com/">apple</a>', "URL_MIXED_SCRIPT"),
])
def test_url_tricks(html: str, symbol: str) -> None:
    assert symbol in symbols(make(html=html))


def test_url_rules_spare_honest_links() -> None:
    html = ('<a href="https://www.example.org/a">www.example.org</a> '
            '<a href="https://xn--mnchen-3ya.de/">münchen</a>')
    assert symbols(make(body="https://docs.example.org/x", html=html)) == set()
    assert "URL_IP_LITERAL" in symbols(make(body="get it at http://203.0.113.9/x.exe now"))


def test_attachments() -> None:
    assert symbols(make(attachments=[("setup.exe", b"MZ", "application/octet-stream")])) \
        == {"ATTACH_DANGEROUS"}
    assert {"ATTACH_DANGEROUS", "ATTACH_DOUBLE_EXT"} <= symbols(
        make(attachments=[("invoice.pdf.exe", b"MZ", "application/octet-stream")]))
    assert symbols(make(attachments=[("report.pdf", b"%PDF", "application/pdf")])) == set()
    assert symbols(make(attachments=[("disk.ISO", b"", "application/octet-stream")])) \
        == {"ATTACH_DANGEROUS"}


def test_archives() -> None:
    def check(data: bytes) -> set[str]:
        return symbols(make(attachments=[("files.zip", data, "application/zip")]))

    assert check(zipped({"notes.txt": b"hi"})) == set()
    assert check(zipped({"docs/run.js": b"x"})) == {"ZIP_DANGEROUS"}
    assert check(zipped({"a.txt": b"x"}, encrypted="yes")) == {"ZIP_ENCRYPTED"}
    deep = zipped({"payload.vbs": b"x"})
    for _ in range(inspect.MAX_DEPTH):
        deep = zipped({"inner.zip": deep})
    assert check(deep) == {"ZIP_NESTED_DEEP"}  # the payload is past the depth looked at
    nested = zipped({"inner.zip": zipped({"payload.vbs": b"x"})})
    assert check(nested) == {"ZIP_DANGEROUS"}
    assert check(b"PK\x03\x04" + b"\0" * 40) == {"ZIP_BROKEN"}
    listing = inspect.list_zip(zipped({f"f{i}.txt": b"" for i in range(inspect.MAX_ENTRIES + 5)}))
    assert listing.truncated and len(listing.names) == inspect.MAX_ENTRIES


def test_images() -> None:
    assert inspect.image_info(png(640, 480)) == inspect.ImageInfo("png", 640, 480)
    assert inspect.image_info(b"GIF89a" + struct.pack("<HH", 10, 20)) == \
        inspect.ImageInfo("gif", 10, 20)
    jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08" + struct.pack(">HH", 300, 200)
    assert inspect.image_info(jpeg) == inspect.ImageInfo("jpeg", 200, 300)
    assert inspect.image_info(b"\x89PNG\r\n\x1a\n\0\0") is None  # cut short
    assert inspect.image_info(b"not an image") is None

    def check(data: bytes) -> set[str]:
        return symbols(make(attachments=[("a.png", data, "image/png")]))

    assert check(png(640, 480)) == set()
    assert check(png(60000, 60000)) == {"IMAGE_HUGE"}
    assert check(png(64, 64, text=10000)) == {"IMAGE_TEXT"}


def test_authentication_results() -> None:
    assert symbols(make(), "iprev=pass spf=fail dkim=fail dmarc=fail") == {
        "SPF_FAIL", "DKIM_FAIL", "DMARC_FAIL"}
    assert symbols(make(), "spf=softfail dkim=pass dmarc=pass") == {"SPF_SOFTFAIL"}
    assert symbols(make(), "spf=pass dkim=pass dmarc=pass") == set()
    assert forged(Facts.from_summary("spf=pass dmarc=fail"))
    assert forged(Facts.from_summary("spf=fail dkim=none"))
    assert not forged(Facts.from_summary("spf=fail dkim=pass"))


# -- the classifier -----------------------------------------------------------------------------


def test_token_probability() -> None:
    assert classifier.token_probability(0, 0, 10, 10) == 0.5
    assert classifier.token_probability(5, 0, 10, 10) == pytest.approx((0.5 + 5) / 6)
    assert classifier.token_probability(0, 5, 10, 10) == pytest.approx(0.5 / 6)
    # seen as often in each class, relative to the class sizes: no evidence either way
    assert classifier.token_probability(2, 20, 10, 100) == pytest.approx(0.5)


def test_chi2q() -> None:
    assert classifier.chi2q(0.0, 2) == 1.0
    assert classifier.chi2q(2.0, 2) == pytest.approx(math.exp(-1))  # v=2: e^(-x/2)
    assert classifier.chi2q(4.0, 4) == pytest.approx(3 * math.exp(-2))  # (1 + m) e^-m
    assert classifier.chi2q(1000.0, 4) == pytest.approx(0.0)


def test_combination() -> None:
    assert classifier.combine([]) == classifier.Verdict(0.5, 0)
    assert classifier.combine([0.55, 0.45]).clues == 0  # too near 0.5 to count
    spam = classifier.combine([0.99] * 20)
    ham = classifier.combine([0.01] * 20)
    unsure = classifier.combine([0.99] * 10 + [0.01] * 10)
    assert spam.probability > 0.99 and ham.probability < 0.01
    assert unsure.probability == pytest.approx(0.5, abs=0.01)
    assert classifier.combine([0.9] * 500).clues == classifier.MAX_CLUES


def test_classify_and_points() -> None:
    counts = {"cheap": (9, 0), "rolex": (8, 1), "meeting": (0, 9), "the": (9, 9)}
    assert classifier.classify(counts, 10, 10, ["cheap", "rolex", "the", "new"]) \
        .probability > 0.9
    assert classifier.classify(counts, 10, 10, ["meeting", "the"]).probability < 0.1
    assert classifier.symbol(0.999) == "BAYES_99" and classifier.symbol(0.001) == "BAYES_00"
    assert classifier.symbol(0.5) == "BAYES_50"
    assert classifier.score(1.0, 6.0, 3.0) == 6.0
    assert classifier.score(0.0, 6.0, 3.0) == -3.0
    assert classifier.score(0.5, 6.0, 3.0) == 0.0


def test_tokens() -> None:
    data = make(subject="Cheap Rolex", body="Buy 1000 watches at http://shop.example.com/x",
                attachments=[("a.zip", zipped({"x": b""}), "application/zip")])
    tokens = classifier.tokens(parse(data))
    assert {"s:cheap", "s:rolex", "f:ann@remote.test", "f:remote.test", "u:example.com",
            "a:application/zip", "a:.zip", "buy", "watches", "<num>"} <= set(tokens)
    assert len(tokens) == len(set(tokens))
    many = make(body=" ".join(f"word{i}" for i in range(5000)))
    assert len(classifier.tokens(parse(many), 100)) == 100


@pytest.mark.parametrize(("text", "key"), [
    ("[junk]\ntag_score = 0\n", "junk.tag_score"),
    ("[junk]\ntag_score = 5.0\nreject_score = 4.0\n", "junk.reject_score"),
    ("[junk]\nmin_messages = 0\n", "junk.min_messages"),
    ('[junk]\nmailbox = ""\n', "junk.mailbox"),
    ("[junk]\nmax_tokens = 5\n", "junk.max_tokens"),
    ("[junk]\ntimeout = 0\n", "junk.timeout"),
])
def test_config_checks(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text('[server]\nhostname = "mx.example.test"\n' + text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(path)
    assert key in str(e.value)
