"""postkeep.policy.relay: who may receive mail over the MX, and relay denial.

Over the wire (the real MX in the harness): local accounts, aliases, catch-alls, postmaster,
relay denied (domains and address literals), unknown and disabled mailboxes, quota against
the declared SIZE and the usage the MX itself just added; and on submission, that a logged-in
user's remote recipients go to the outbound queue. Then `check_rcpt` directly, with a small
fake directory, for the edges.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from postkeep.policy.relay import check_rcpt
from postkeep.smtp.wire.parser import Path, parse_path
from postkeep.store.api import Account
from tests.harness import Harness, queue_id, strip_trace
from tests.inprocess.conftest import ALICE, BOB, CAROL, NOPM_DOMAIN, POSTMASTER, TEAM

BODY = b"Subject: relay test\r\n\r\nHello.\r\n"


@pytest.fixture
def mx(harness: Harness) -> Iterator[smtplib.SMTP]:
    client = harness.smtp()
    client.ehlo()
    yield client
    client.close()


def rcpt(client: smtplib.SMTP, address: str, size: int | None = None) -> tuple[int, bytes]:
    """A new transaction (RSET, MAIL FROM) and one RCPT: its reply."""
    client.rset()
    code, text = client.mail("sender@remote.test", [f"SIZE={size}"] if size else [])
    assert code == 250, text
    return client.rcpt(address)


def send(client: smtplib.SMTP, to: list[str], body: bytes = BODY) -> str:
    """Send one message over the open session; its queue id."""
    client.rset()
    assert client.mail("sender@remote.test")[0] == 250
    for address in to:
        code, text = client.rcpt(address)
        assert code == 250, (address, code, text)
    code, text = client.data(body)
    assert code == 250, text
    return queue_id(text)


# -- over the MX ---------------------------------------------------------------------------------


def test_local_account_accepted_and_delivered(harness: Harness, mx: smtplib.SMTP) -> None:
    assert rcpt(mx, ALICE) == (250, b"2.1.5 Recipient ok")
    qid = send(mx, [ALICE])
    assert strip_trace(harness.message(ALICE, qid)) == BODY


@pytest.mark.parametrize("spelling", ["ALICE@Example.TEST", '"alice"@example.test'])
def test_address_spellings_reach_the_account(harness: Harness, mx: smtplib.SMTP,
                                             spelling: str) -> None:
    """Case-insensitive, and a quoted dot-atom local part is the same mailbox."""
    qid = send(mx, [spelling])
    assert strip_trace(harness.message(ALICE, qid)) == BODY


def test_alias_delivers_to_each_target(harness: Harness, mx: smtplib.SMTP) -> None:
    qid = send(mx, [TEAM])
    for target in (ALICE, BOB):
        assert strip_trace(harness.message(target, qid)) == BODY


def test_alias_and_its_target_get_one_copy(harness: Harness, mx: smtplib.SMTP) -> None:
    qid = send(mx, [TEAM, ALICE])
    harness.message(ALICE, qid)  # exactly one message with this queue id (asserted inside)


def test_catch_all(harness: Harness, mx: smtplib.SMTP) -> None:
    qid = send(mx, ["anything-at-all@catchall.test"])
    assert strip_trace(harness.message(CAROL, qid)) == BODY


def test_postmaster(harness: Harness, mx: smtplib.SMTP) -> None:
    """RFC 5321 §4.5.1: postmaster is always accepted: the domain's own, else (domains with
    none) that of the first local domain; `<Postmaster>` without a domain too."""
    qid = send(mx, [POSTMASTER])
    harness.message(POSTMASTER, qid)
    qid = send(mx, [f"PostMaster@{NOPM_DOMAIN}"])
    harness.message(POSTMASTER, qid)
    qid = send(mx, ["Postmaster"])
    harness.message(POSTMASTER, qid)
    # other addresses of that domain are unknown, not handed to the postmaster
    assert rcpt(mx, f"someone@{NOPM_DOMAIN}")[0] == 550


@pytest.mark.parametrize("address", ["someone@remote.test", "alice@example.test.remote.test",
                                     "alice@[127.0.0.1]", "alice@[IPv6:::1]"])
def test_relay_denied(harness: Harness, mx: smtplib.SMTP, address: str) -> None:
    """The MX relays for no one: remote domains and address literals are refused."""
    code, text = rcpt(mx, address)
    assert (code, text) == (554, b"5.7.1 Relay access denied")
    assert harness.log_lines(
        rf'cmd=RCPT code=554 5\.7\.1 reason="relay denied to {re.escape(address)}"')


def test_unknown_user(harness: Harness, mx: smtplib.SMTP) -> None:
    code, text = rcpt(mx, "nobody@example.test")
    assert code == 550 and text.startswith(b"5.1.1 ")
    assert harness.log_lines(r'code=550 5\.1\.1 reason="user unknown: nobody@example\.test"')


def test_disabled_mailbox_refused(harness: Harness, mx: smtplib.SMTP) -> None:
    address = harness.new_user("example.test")
    harness.set_disabled(address)
    assert rcpt(mx, address) == (550, b"5.2.1 Mailbox disabled")


def test_quota_over_mx(harness: Harness, mx: smtplib.SMTP) -> None:
    """Declared SIZE over the quota: 552 5.2.2 (it will never fit); over what is left: 452 4.2.2
    (it may fit later); and the MX counts what it delivered itself from the next RCPT on."""
    tiny = harness.new_user("example.test", quota=3000)
    assert rcpt(mx, tiny, size=3001) == (552, b"5.2.2 Mailbox too small for this message")
    assert rcpt(mx, tiny, size=3000)[0] == 250
    send(mx, [tiny], b"Subject: big\r\n\r\n" + b"x" * 1998 + b"\r\n")  # ~2.3 kB with the trace
    used = harness.account(tiny).used_bytes
    assert 2000 < used < 3000
    assert rcpt(mx, tiny, size=3000 - used) == (250, b"2.1.5 Recipient ok")
    assert rcpt(mx, tiny, size=3000 - used + 1) == (452, b"4.2.2 Mailbox full, try again later")
    assert rcpt(mx, tiny)[0] == 250  # no SIZE: something may still fit
    send(mx, [tiny], b"Subject: more\r\n\r\n" + b"y" * 800 + b"\r\n")  # now past the quota
    assert harness.account(tiny).used_bytes >= 3000
    assert rcpt(mx, tiny)[0] == 452  # full: refused whatever the size


def test_authenticated_submission_queues_remote_recipients(harness: Harness) -> None:
    """Relay is for logged-in users: their remote recipients go to the outbound queue, their
    local ones are delivered, and only the remote ones are queued."""
    with harness.submit(ALICE) as client:
        marker = b"X-Marker: relay-%d\r\n" % id(client)
        client.sendmail(ALICE, ["friend@remote.test", BOB],
                        marker + b"From: " + ALICE.encode() + b"\r\n\r\nHi\r\n")
    queued = [(to, data) for to, data in harness.outbound() if marker in data]
    assert [to for to, _ in queued] == [["friend@remote.test"]]
    assert any(marker in m for m in harness.messages(BOB))


# -- check_rcpt with a fake directory --------------------------------------------------------------


def account(account_id: int, address: str, quota: int = 0, used: int = 0,
            disabled: bool = False) -> Account:
    return Account(account_id, address, 1, "", quota, used, disabled)


@dataclass
class FakeDirectory:
    domains: set[str]
    addresses: dict[str, list[Account]]
    postmasters: dict[str | None, list[Account]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def is_local_domain(self, domain: str) -> bool:
        self.asked.append(f"domain {domain}")
        return domain in self.domains

    async def resolve(self, address: str) -> list[Account] | None:
        self.asked.append(f"resolve {address}")
        return self.addresses.get(address.lower())

    async def postmaster(self, domain: str | None) -> list[Account]:
        self.asked.append(f"postmaster {domain}")  # the domain's own, else the fallback's
        return self.postmasters.get(domain) or self.postmasters.get(None, [])


ALICE_ACC = account(1, "alice@example.test")
PM_ACC = account(2, "postmaster@example.test")


def directory() -> FakeDirectory:
    found = {"alice@example.test": [ALICE_ACC], "postmaster@example.test": [PM_ACC]}
    return FakeDirectory({"example.test"}, found, {None: [PM_ACC]})


def decide(d: FakeDirectory, address: str, size: int | None = None,
           authenticated: bool = False) -> tuple[int, str, tuple[Account, ...]]:
    path = parse_path(f"<{address}>", utf8=True, allow_null=False, allow_postmaster=True)
    decision = asyncio.run(check_rcpt(d, path, size, authenticated=authenticated))
    return decision.verdict.reply.code, decision.verdict.reply.enhanced, decision.accounts


def test_check_rcpt_local_and_normalized() -> None:
    d = directory()
    assert decide(d, "alice@example.test") == (250, "2.1.5", (ALICE_ACC,))
    assert decide(d, "alice@EXAMPLE.test") == (250, "2.1.5", (ALICE_ACC,))
    assert d.asked[-2:] == ["domain example.test", "resolve alice@example.test"]  # lower-cased
    # a trailing dot (which the parser refuses on the wire) names the same domain
    decision = asyncio.run(check_rcpt(d, Path("alice", "example.test."), None))
    assert decision.accounts == (ALICE_ACC,)
    assert decide(d, '"alice"@example.test') == (250, "2.1.5", (ALICE_ACC,))
    assert decide(d, '"al ice"@example.test')[0] == 550  # not a dot-atom: no local account


def test_check_rcpt_relay_and_authenticated() -> None:
    d = directory()
    assert decide(d, "bob@remote.test")[:2] == (554, "5.7.1")
    assert decide(d, "bob@[192.0.2.1]")[:2] == (554, "5.7.1")
    assert d.asked.count("domain 192.0.2.1") == 0  # a literal is never a local domain
    assert decide(d, "bob@remote.test", authenticated=True) == (250, "2.1.5", ())  # queued
    assert decide(d, "bob@[192.0.2.1]", authenticated=True) == (250, "2.1.5", ())
    # logging in does not make unknown local addresses deliverable
    assert decide(d, "nobody@example.test", authenticated=True)[:2] == (550, "5.1.1")


def test_check_rcpt_postmaster_fallbacks() -> None:
    d = directory()
    assert decide(d, "Postmaster") == (250, "2.1.5", (PM_ACC,))
    assert decide(d, '"postmaster"@example.test') == (250, "2.1.5", (PM_ACC,))
    d.domains.add("other.test")
    assert decide(d, "postmaster@other.test") == (250, "2.1.5", (PM_ACC,))  # it has none
    assert d.asked[-1] == "postmaster other.test"
    d.postmasters = {}
    assert decide(d, "Postmaster")[:2] == (451, "4.3.0")  # none configured: try later
    assert decide(d, "postmaster@other.test")[:2] == (550, "5.1.1")


def test_check_rcpt_alias_of_nobody_and_disabled() -> None:
    d = directory()
    d.addresses["empty@example.test"] = []  # an alias whose targets are all non-local
    assert decide(d, "empty@example.test")[:2] == (550, "5.1.1")
    off = account(3, "off@example.test", disabled=True)
    d.addresses["list@example.test"] = [ALICE_ACC, off]
    assert decide(d, "list@example.test")[:2] == (550, "5.2.1")  # any target disabled


@pytest.mark.parametrize(("used", "declared", "code"), [
    (0, None, 250), (0, 1000, 250), (0, 1001, 552), (400, 600, 250), (400, 601, 452),
    (1000, None, 452), (999, None, 250), (1200, 1, 452),
])
def test_check_rcpt_quota(used: int, declared: int | None, code: int) -> None:
    d = directory()
    d.addresses["q@example.test"] = [account(4, "q@example.test", quota=1000, used=used)]
    assert decide(d, "q@example.test", declared)[0] == code


def test_check_rcpt_unlimited_quota_and_one_full_target() -> None:
    d = directory()
    d.addresses["big@example.test"] = [account(5, "big@example.test", used=10**12)]
    assert decide(d, "big@example.test", 10**9)[0] == 250  # quota 0: unlimited
    full = account(6, "full@example.test", quota=100, used=100)
    d.addresses["both@example.test"] = [ALICE_ACC, full]
    assert decide(d, "both@example.test")[:2] == (452, "4.2.2")  # one full target refuses all


def test_check_rcpt_takes_the_dmarc_report_address_without_an_account() -> None:
    d = directory()

    def decide_reports(address: str) -> tuple[int, tuple[Account, ...]]:
        path = parse_path(f"<{address}>", utf8=True, allow_null=False)
        decision = asyncio.run(check_rcpt(d, path, None,
                                          report_address="DMARC@example.test"))
        return decision.verdict.reply.code, decision.accounts

    assert decide_reports("dmarc@EXAMPLE.test") == (250, ())  # no account: reports only
    assert decide_reports("other@example.test")[0] == 550
    d.addresses["dmarc@example.test"] = [ALICE_ACC]  # an alias: its accounts get it too
    assert decide_reports("dmarc@example.test") == (250, (ALICE_ACC,))
