"""A labelled corpus of generated messages for the junk-filter evaluation (`run.py`).

Deterministic (seeded): the same seed gives the same messages, so two runs and three
filters judge the same text. The messages are made to be hard for the easy tricks: ham
and spam share much of their vocabulary (receipts and phishing both talk of orders,
payments and accounts; newsletters and spam both carry HTML, links and an unsubscribe
line), ham has HTML-only newsletters and terse notes, and some spam is short plain text
with one link. Kinds of each are listed in `HAM_KINDS` and `SPAM_KINDS`.

It stands beside the few labelled messages Debian ships (SpamAssassin's
`sample-spam.txt` / `sample-nonspam.txt`), which are too few and too easy (the spam
sample is GTUBE) to measure anything by themselves.
"""

from __future__ import annotations

import base64
import io
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

FIRST = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
         "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter",
         "Yasmin", "Zoe", "Marta", "Jonas", "Leila", "Tomas", "Ines", "Karim", "Sofia"]
LAST = ["Smith", "Jones", "Garcia", "Miller", "Davis", "Martin", "Lopez", "Clark", "Lewis",
        "Walker", "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams"]
HAM_DOMAINS = ["example.org", "corp.example", "uni.example.edu", "family.example.net",
               "devteam.example", "lists.example.org"]
SHOPS = ["shop.example", "books.example", "tickets.example", "rail.example"]
SPAM_DOMAINS = ["promo-deals.example", "xn--pypal-4ve.example", "secure-verify.example",
                "bestpharma.example", "win-now.example", "crypto-gains.example",
                "mailer.bulk.example", "invoice-center.example"]
BANKS = ["PayPal", "Chase", "Wells Fargo", "HSBC", "Apple", "Microsoft", "DHL", "Netflix"]
PROJECTS = ["billing service", "mobile app", "data pipeline", "website redesign",
            "quarterly report", "migration to the new cluster", "onboarding docs"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ITEMS = ["a paperback", "two train tickets", "a USB-C cable", "concert tickets",
         "a desk lamp", "running shoes", "a coffee grinder"]


@dataclass(frozen=True)
class Sample:
    kind: str
    spam: bool
    text: bytes


def _name(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def _addr(r: random.Random, name: str, domains: list[str]) -> str:
    first, last = name.lower().split()
    return r.choice([f"{first}.{last}", f"{first}", f"{first[0]}{last}"]) + "@" + r.choice(domains)


def _date(r: random.Random) -> str:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    return format_datetime(base + timedelta(minutes=r.randrange(60 * 24 * 30)))


def _headers(r: random.Random, sender: str, to: str, subject: str, *,
             message_id: bool = True, extra: tuple[str, ...] = ()) -> list[str]:
    fields = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {_date(r)}"]
    if message_id:
        host = sender.rpartition("@")[2].rstrip(">")
        fields.append(f"Message-ID: <{r.getrandbits(64):016x}@{host}>")
    fields.append("MIME-Version: 1.0")
    return fields + list(extra)


def _plain(headers: list[str], body: str) -> bytes:
    return ("\r\n".join([*headers, "Content-Type: text/plain; charset=utf-8", ""])
            + "\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()


def _alternative(r: random.Random, headers: list[str], text: str, html: str) -> bytes:
    b = f"=_alt{r.getrandbits(32):08x}"
    parts = [f'Content-Type: multipart/alternative; boundary="{b}"', "",
             f"--{b}", "Content-Type: text/plain; charset=utf-8", "", text,
             f"--{b}", "Content-Type: text/html; charset=utf-8", "", html, f"--{b}--", ""]
    return ("\r\n".join(headers + parts)).replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode()


def _html_only(headers: list[str], html: str) -> bytes:
    return ("\r\n".join([*headers, "Content-Type: text/html; charset=utf-8", "", html, ""])
            ).encode()


def _with_attachment(r: random.Random, headers: list[str], text: str, filename: str,
                     content: bytes, ctype: str) -> bytes:
    b = f"=_mix{r.getrandbits(32):08x}"
    data = base64.encodebytes(content).decode().replace("\n", "\r\n")
    parts = [f'Content-Type: multipart/mixed; boundary="{b}"', "",
             f"--{b}", "Content-Type: text/plain; charset=utf-8", "", text,
             f"--{b}", f'Content-Type: {ctype}; name="{filename}"',
             "Content-Transfer-Encoding: base64",
             f'Content-Disposition: attachment; filename="{filename}"', "", data, f"--{b}--", ""]
    return "\r\n".join(headers + parts).encode()


def _zip(names: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in names:
            z.writestr(n, b"MZ" + bytes(200))
    return out.getvalue()


# -- ham --------------------------------------------------------------------------------------

def ham_colleague(r: random.Random) -> bytes:
    a, b = _name(r), _name(r)
    p = r.choice(PROJECTS)
    subject = r.choice([f"Re: {p}", f"{p} - status", f"Notes from {r.choice(DAYS)}'s meeting",
                        f"Question about the {p}"])
    body = (f"Hi {b.split()[0]},\n\n"
            + r.choice([f"I pushed the changes for the {p}; could you review them before "
                        f"{r.choice(DAYS)}?",
                        f"The {p} is on track. The open items are the test plan and the "
                        "rollout checklist.",
                        f"Can we move our call about the {p} to {r.choice(DAYS)} at "
                        f"{r.randrange(9, 17)}:00?",
                        f"Attached are my notes. The main risk for the {p} is the deadline."])
            + "\n\n" + r.choice(["Thanks,", "Cheers,", "Best,", "--"]) + f"\n{a.split()[0]}\n")
    return _plain(_headers(r, f"{a} <{_addr(r, a, HAM_DOMAINS[:3])}>",
                           _addr(r, b, HAM_DOMAINS[:3]), subject), body)


def ham_personal(r: random.Random) -> bytes:
    a, b = _name(r), _name(r)
    body = r.choice([
        "Are you coming for dinner on Sunday? Mum is making the soup you like.",
        "The photos from the trip are great, I'll send the rest tonight.",
        f"Happy birthday {b.split()[0]}! Let's celebrate when you're back.",
        "Can you pick up the kids at four? My train is late again.",
        "I found the book you were looking for at the library sale, only two euros!"])
    return _plain(_headers(r, f"{a} <{_addr(r, a, HAM_DOMAINS[3:4])}>",
                           _addr(r, b, HAM_DOMAINS[3:4]),
                           r.choice(["Sunday", "photos", "hi", "quick question", "tonight"])),
                  body + "\n\nxx\n")


def ham_receipt(r: random.Random) -> bytes:
    shop = r.choice(SHOPS)
    b = _name(r)
    order = r.randrange(100000, 999999)
    item = r.choice(ITEMS)
    total = f"{r.randrange(5, 120)}.{r.randrange(100):02d}"
    text = (f"Thank you for your order #{order}.\n\nItem: {item}\nTotal: EUR {total}\n"
            f"Payment: card ending {r.randrange(1000, 9999)}\n\n"
            f"Track your order: https://{shop}/orders/{order}\n"
            f"Your account: https://{shop}/account\n")
    html = (f"<html><body><p>Thank you for your order <b>#{order}</b>.</p>"
            f"<p>Item: {item}<br>Total: EUR {total}</p>"
            f'<p><a href="https://{shop}/orders/{order}">Track your order</a> | '
            f'<a href="https://{shop}/account">Your account</a></p></body></html>')
    return _alternative(r, _headers(r, f"{shop.split('.')[0].title()} <orders@{shop}>",
                                    _addr(r, b, HAM_DOMAINS), f"Your order #{order}"),
                        text, html)


def ham_newsletter(r: random.Random) -> bytes:
    shop = r.choice(SHOPS)
    b = _name(r)
    topic = r.choice(["new arrivals", "our autumn timetable", "events this month",
                      "the reading list", "member news"])
    html = (f"<html><body><h1>{topic.title()}</h1><p>Dear member, here is {topic}. "
            f'Read more on <a href="https://{shop}/news">{shop}/news</a>.</p>'
            f'<p><a href="https://{shop}/unsubscribe?u={r.getrandbits(32):x}">Unsubscribe</a>'
            "</p></body></html>")
    extra = (f"List-Unsubscribe: <https://{shop}/unsubscribe>",)
    headers = _headers(r, f"{shop.split('.')[0].title()} News <news@{shop}>",
                       _addr(r, b, HAM_DOMAINS), f"{topic.title()}", extra=extra)
    if r.random() < 0.5:
        return _html_only(headers, html)
    return _alternative(r, headers, f"{topic.title()}\n\nDear member, here is {topic}. "
                        f"Read more: https://{shop}/news\n\nUnsubscribe: "
                        f"https://{shop}/unsubscribe\n", html)


LIST_LINES = ["I think the limit should be configurable.", "See the log below.",
              "The test fails only on the slow runner.", "Please review before Friday."]


def ham_list(r: random.Random) -> bytes:
    a = _name(r)
    topic = r.choice(["patch: fix the parser bound", "release 2.4 planned",
                      "question on TLS settings", "CI is red on main", "RFC 5322 folding"])
    body = (f"{r.choice(['Hello all,', 'Hi,', 'Folks,'])}\n\n"
            f"{r.choice(LIST_LINES)}\n\n"
            "-- \nlist mailing list\nhttps://lists.example.org/listinfo/list\n")
    extra = ("List-Id: <list.lists.example.org>", "Precedence: list")
    return _plain(_headers(r, f"{a} <{_addr(r, a, HAM_DOMAINS)}>", "list@lists.example.org",
                           f"[list] {topic}", extra=extra), body)


def ham_notification(r: random.Random) -> bytes:
    b = _name(r)
    subject = r.choice([f"[ci] build #{r.randrange(1000)} passed",
                        f"Invitation: planning @ {r.choice(DAYS)}",
                        "Your password was changed",
                        "Security alert: new sign-in from Firefox on Linux"])
    body = (f"{subject}\n\nIf this was you, no action is needed. Otherwise visit "
            "https://accounts.corp.example/security to review your account.\n")
    return _plain(_headers(r, "Notifications <noreply@corp.example>",
                           _addr(r, b, HAM_DOMAINS[:2]), subject), body)


def ham_attachment(r: random.Random) -> bytes:
    a, b = _name(r), _name(r)
    name = r.choice(["report.pdf", "minutes.docx", "budget.xlsx", "photo.jpg"])
    return _with_attachment(r, _headers(r, f"{a} <{_addr(r, a, HAM_DOMAINS[:3])}>",
                                        _addr(r, b, HAM_DOMAINS[:3]), f"{name} as promised"),
                            f"Hi {b.split()[0]}, here is the {name.split('.')[0]}.\n",
                            name, bytes(r.getrandbits(8) for _ in range(400)),
                            "application/octet-stream")


# -- spam -------------------------------------------------------------------------------------

def spam_pharma(r: random.Random) -> bytes:
    d = r.choice(SPAM_DOMAINS)
    drug = r.choice(["V1agra", "Cialis", "weight loss pills", "Xanax", "generic meds"])
    html = (f"<html><body><p>Best prices on <b>{drug}</b>! Up to 80% OFF!!!</p>"
            f'<p><a href="http://{d}/buy?id={r.getrandbits(24)}">ORDER NOW</a></p>'
            '<p style="font-size:1px;color:#ffffff">weather garden letter river table</p>'
            "</body></html>")
    subject = r.choice([f"{drug} at the lowest price", f"RE: your {drug} order",
                        "CHEAP MEDS ONLINE NO PRESCRIPTION", f"Save big on {drug}"])
    return _html_only(_headers(r, f"Pharmacy <sales@{d}>", _addr(r, _name(r), HAM_DOMAINS),
                               subject, message_id=r.random() < 0.5), html)


def spam_phish(r: random.Random) -> bytes:
    bank = r.choice(BANKS)
    d = r.choice(SPAM_DOMAINS)
    target = r.choice([f"http://{d}/login", f"http://192.0.2.{r.randrange(1, 254)}/verify",
                       f"https://bit.ly/{r.getrandbits(30):x}"])
    shown = f"https://www.{bank.lower().replace(' ', '')}.com/account"
    html = (f"<html><body><p>Dear Customer,</p><p>We detected unusual activity on your "
            f"{bank} account. Your account will be suspended within 24 hours unless you "
            f'verify your payment information.</p><p><a href="{target}">{shown}</a></p>'
            f"<p>{bank} Security Team</p></body></html>")
    text = (f"Dear Customer,\n\nWe detected unusual activity on your {bank} account. "
            "Verify your payment information within 24 hours.\n\n" + target + "\n")
    subject = r.choice(["Action required: verify your account", f"{bank}: account suspended",
                        "Unusual sign-in activity", "Your payment could not be processed"])
    sender = f"{bank} <security@{d}>"
    headers = _headers(r, sender, _addr(r, _name(r), HAM_DOMAINS), subject,
                       message_id=r.random() < 0.6)
    return (_alternative(r, headers, text, html) if r.random() < 0.5
            else _html_only(headers, html))


def spam_419(r: random.Random) -> bytes:
    a = _name(r)
    amount = r.choice(["$12,500,000", "USD 4.5 Million", "7,200,000 GBP"])
    body = (f"Dear Friend,\n\nI am {a}, a lawyer to the late engineer who left {amount} in a "
            "bank account with no next of kin. I seek your consent to present you as the "
            "beneficiary. You will receive 40% of the funds. Reply with your full name, "
            "phone number and bank details to proceed. This transaction is 100% risk free.\n\n"
            "Yours faithfully,\n" + a + "\n")
    return _plain(_headers(r, f"{a} <{_addr(r, a, ['freemail.example'])}>",
                           "undisclosed-recipients:;",
                           r.choice(["URGENT BUSINESS PROPOSAL", "Confidential", "Dear Friend",
                                     "Beneficiary of funds"]), message_id=r.random() < 0.3),
                  body)


def spam_invoice(r: random.Random) -> bytes:
    d = r.choice(SPAM_DOMAINS)
    n = r.randrange(10000, 99999)
    name = r.choice([f"invoice_{n}.pdf.exe", f"INV{n}.zip", f"payment_{n}.scr",
                     f"statement_{n}.js"])
    content = (_zip([f"invoice_{n}.pdf.exe"]) if name.endswith(".zip")
               else b"MZ" + bytes(r.getrandbits(8) for _ in range(300)))
    ctype = "application/zip" if name.endswith(".zip") else "application/octet-stream"
    return _with_attachment(
        r, _headers(r, f"Accounts <billing@{d}>", _addr(r, _name(r), HAM_DOMAINS),
                    r.choice([f"Invoice {n} overdue", f"Payment receipt {n}",
                              "Outstanding payment - final notice"]),
                    message_id=r.random() < 0.5),
        "Please find attached the invoice for your recent order. Payment is overdue; open "
        "the attachment for details.\n", name, content, ctype)


def spam_crypto(r: random.Random) -> bytes:
    d = r.choice(SPAM_DOMAINS)
    html = ("<html><body><h1>Turn $250 into $25,000 in 30 days</h1><p>Our AI trading "
            "robot made investors rich. Limited spots! Guaranteed returns!</p>"
            f'<p><a href="http://{d}/join?ref={r.getrandbits(20)}">CLAIM YOUR SPOT</a></p>'
            f'<p><a href="http://{d}/unsub">unsubscribe</a></p></body></html>')
    return _html_only(_headers(r, f"Investor Club <news@{d}>", _addr(r, _name(r), HAM_DOMAINS),
                               r.choice(["You are pre-approved", "FINAL CHANCE: crypto profits",
                                         "Make money from home", "Bitcoin millionaire secret"])),
                      html)


def spam_short(r: random.Random) -> bytes:
    a = _name(r)
    link = r.choice([f"https://bit.ly/{r.getrandbits(30):x}", f"https://tinyurl.com/{r.getrandbits(30):x}",
                     f"http://198.51.100.{r.randrange(1, 254)}/p"])
    body = r.choice(["hey, check this out {l}", "is this you in the video?? {l}",
                     "you won a prize, claim it here {l}", "hi dear, my photos {l}"]).format(l=link)
    return _plain(_headers(r, f"{a} <{_addr(r, a, ['freemail.example', 'mail.example.ru'])}>",
                           _addr(r, _name(r), HAM_DOMAINS), r.choice(["hi", "re:", "photos", "?"]),
                           message_id=r.random() < 0.5), body + "\n")


def spam_lottery(r: random.Random) -> bytes:
    d = r.choice(SPAM_DOMAINS)
    body = ("CONGRATULATIONS!!! Your email address has WON 1,000,000 EUR in the International "
            "Online Lottery. To claim your prize send your name, address and a processing fee "
            f"to our agent. Claim code: {r.getrandbits(32):X}.\nClaim now: http://{d}/claim\n")
    return _plain(_headers(r, f"Lottery Board <winner@{d}>", "undisclosed-recipients:;",
                           "YOU HAVE WON!!!", message_id=False), body)


HAM_KINDS: dict[str, Callable[[random.Random], bytes]] = {
    "colleague": ham_colleague, "personal": ham_personal, "receipt": ham_receipt,
    "newsletter": ham_newsletter, "list": ham_list, "notification": ham_notification,
    "attachment": ham_attachment,
}
SPAM_KINDS: dict[str, Callable[[random.Random], bytes]] = {
    "pharma": spam_pharma, "phish": spam_phish, "419": spam_419, "invoice": spam_invoice,
    "crypto": spam_crypto, "short": spam_short, "lottery": spam_lottery,
}


def generate(count: int, seed: int = 17) -> Iterator[Sample]:
    """`count` messages, half ham and half spam, kinds in turn, interleaved."""
    r = random.Random(seed)
    hams, spams = list(HAM_KINDS.items()), list(SPAM_KINDS.items())
    for i in range(count):
        kinds, spam = (spams, True) if i % 2 else (hams, False)
        kind, make = kinds[(i // 2) % len(kinds)]
        yield Sample(kind, spam, make(r))
