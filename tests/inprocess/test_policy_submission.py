"""postkeep.policy.submission on the real submission server: who may send as whom (MAIL FROM and
every From: address) and the MIME part size limit; then `owned_addresses` and
`check_part_sizes` directly for their edges."""

from __future__ import annotations

import email.policy
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from postkeep.policy.submission import check_part_sizes, owned_addresses
from postkeep.store.api import ALIAS_DEPTH, Account, Alias
from tests.harness import Harness, queue_id, strip_trace
from tests.inprocess.conftest import ALICE, BOB, CAROL, TEAM

MAX_PART = 4000
HARNESS_CONFIG = {"submission": {"max_part_size": MAX_PART}}


@pytest.fixture
def alice(harness: Harness) -> Iterator[smtplib.SMTP]:
    client = harness.submit(ALICE)
    yield client
    client.close()


def mail_from(client: smtplib.SMTP, sender: str) -> tuple[int, bytes]:
    client.rset()
    return client.mail(sender)


def send(client: smtplib.SMTP, sender: str, data: bytes, to: str = BOB) -> tuple[int, bytes]:
    """MAIL FROM (must pass), RCPT, DATA: the reply to the message."""
    code, text = mail_from(client, sender)
    assert code == 250, text
    assert client.rcpt(to)[0] == 250
    return client.data(data)


def message(sender_header: str, body: bytes = b"Hello.\r\n") -> bytes:
    return f"From: {sender_header}\r\nTo: {BOB}\r\nSubject: submission\r\n\r\n".encode() + body


# -- MAIL FROM ---------------------------------------------------------------------------------


def test_own_address_and_spellings(alice: smtplib.SMTP) -> None:
    assert mail_from(alice, ALICE)[0] == 250
    assert mail_from(alice, "ALICE@Example.Test")[0] == 250  # case-insensitive
    assert mail_from(alice, '"alice"@example.test')[0] == 250  # quoted dot-atom: the same
    assert mail_from(alice, "")[0] == 250  # the null sender impersonates no one


def test_another_users_address_refused(harness: Harness, alice: smtplib.SMTP) -> None:
    code, text = mail_from(alice, BOB)
    assert (code, text) == (553, f"5.7.1 Sender address <{BOB}> is not owned by user {ALICE}"
                            .encode())
    assert mail_from(alice, "alice@remote.test")[0] == 553
    assert mail_from(alice, "alice.smith@example.test")[0] == 553
    assert harness.log_lines(rf"reject ip=127\.0\.0\.1 cmd=MAIL code=553 5\.7\.1 .*{BOB}")


def test_alias_source_is_owned_by_its_targets(harness: Harness, alice: smtplib.SMTP) -> None:
    assert mail_from(alice, TEAM)[0] == 250  # team@ delivers to alice (and bob)
    with harness.submit(BOB) as bob:
        assert mail_from(bob, TEAM)[0] == 250
        assert mail_from(bob, ALICE)[0] == 553


def test_catch_all_does_not_let_its_target_send_as_anyone(harness: Harness) -> None:
    with harness.submit(CAROL) as carol:
        assert mail_from(carol, CAROL)[0] == 250
        assert mail_from(carol, "anyone@catchall.test")[0] == 553


def test_send_as_grant_counts_from_the_next_login(harness: Harness) -> None:
    user = harness.new_user("example.test")
    other = f"news-{user}"
    with harness.submit(user) as before:
        assert mail_from(before, other)[0] == 553
        harness.grant_send_as(user, other)
        assert mail_from(before, other)[0] == 553  # owned addresses are read at AUTH
    with harness.submit(user) as after:
        assert mail_from(after, other.upper())[0] == 250


# -- From: ---------------------------------------------------------------------------------------


def test_from_header_must_be_owned(harness: Harness, alice: smtplib.SMTP) -> None:
    code, text = send(alice, ALICE, message(f"Bob <{BOB}>"))
    assert (code, text) == (553, f"5.7.1 From address <{BOB}> is not owned by user {ALICE}"
                            .encode())
    # every address of the header counts
    assert send(alice, ALICE, message(f"Alice <{ALICE}>, {BOB}"))[0] == 553
    code, text = send(alice, ALICE, message(f'"Alice" <{ALICE}>, Team <{TEAM}>'))
    assert code == 250
    delivered = harness.message(BOB, queue_id(text))
    assert strip_trace(delivered) == message(f'"Alice" <{ALICE}>, Team <{TEAM}>')


def test_more_than_one_from_header_refused(alice: smtplib.SMTP) -> None:
    data = f"From: {ALICE}\r\nFrom: {ALICE}\r\nSubject: two\r\n\r\nx\r\n".encode()
    code, text = send(alice, ALICE, data)
    assert code == 550 and text.startswith(b"5.6.0 ")


def test_from_header_folded_and_null_sender(alice: smtplib.SMTP) -> None:
    folded = message(f"Alice Example\r\n <{ALICE}>")
    assert send(alice, "", folded)[0] == 250  # MAIL FROM:<> is fine, the From: is hers
    assert send(alice, "", message(f"Someone\r\n <{BOB}>"))[0] == 553


def test_session_continues_after_a_refusal(alice: smtplib.SMTP) -> None:
    assert send(alice, ALICE, message(BOB))[0] == 553
    assert send(alice, ALICE, message(ALICE))[0] == 250


# -- MIME part size --------------------------------------------------------------------------------


def multipart(*sizes: int) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = ALICE, BOB, "parts"
    msg.set_content("text part\n")
    for i, size in enumerate(sizes):
        msg.add_attachment(b"A" * size, maintype="application", subtype="octet-stream",
                           filename=f"f{i}.bin")
    return msg.as_bytes()


def test_part_over_the_limit_refused(harness: Harness, alice: smtplib.SMTP) -> None:
    code, text = send(alice, ALICE, multipart(1000, 3500))  # 3500 octets: ~4700 in base64
    assert (code, text) == (552, f"5.3.4 A MIME part exceeds {MAX_PART} bytes".encode())
    assert harness.log_lines(r"cmd=DATA code=552 5\.3\.4 reason=\"A MIME part exceeds")


def test_parts_under_the_limit_accepted_whatever_the_total(alice: smtplib.SMTP) -> None:
    data = multipart(2500, 2500, 2500)
    assert len(data) > 3 * MAX_PART // 2 + MAX_PART  # the whole is well over the part limit
    assert send(alice, ALICE, data)[0] == 250


def test_single_part_body_over_the_limit_refused(alice: smtplib.SMTP) -> None:
    body = (b"x" * 76 + b"\r\n") * (MAX_PART // 78 + 2)
    assert send(alice, ALICE, message(ALICE, body))[0] == 552


def test_mx_has_no_part_limit(harness: Harness) -> None:
    """The limit is the submission server's (policy for what users send), not the MX's."""
    with harness.smtp() as mx:
        mx.sendmail("someone@remote.test", [BOB], multipart(1000, 3500))


# -- the functions directly ------------------------------------------------------------------------


def test_owned_addresses() -> None:
    acc = Account(1, "Alice@Example.test", 1, "", 0, 0, False)
    aliases = [
        Alias(1, "Team@example.test", ("bob@example.test", "ALICE@example.test")),
        Alias(2, "@example.test", ("alice@example.test",)),  # catch-all: not an address
        Alias(3, "other@example.test", ("bob@example.test",)),
    ]
    owned = owned_addresses(acc, aliases, ["News@Example.test"])
    assert owned == frozenset({"alice@example.test", "team@example.test", "news@example.test"})


def test_check_part_sizes_nested_and_skipped() -> None:
    inner = multipart(5000)
    outer = (b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
             b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n")
    assert check_part_sizes(outer, 4000) is not None  # found inside the attached message
    assert check_part_sizes(outer, len(outer)) is None  # smaller than the limit: no parse
    deep = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(60)) + b"\r\n" + b"x" * 200
    refused = check_part_sizes(deep, 100)
    assert refused is not None and (refused.code, refused.enhanced) == (554, "5.6.0")


def test_owned_addresses_follow_alias_chains_as_far_as_delivery() -> None:
    """all@ -> team@ -> alice: mail to all@ reaches alice, so she may send as all@; a chain
    longer than delivery follows (ALIAS_DEPTH) owns nothing past it; a loop ends."""
    acc = Account(1, "alice@example.test", 1, "", 0, 0, False)
    chain = [Alias(1, "team@example.test", ("alice@example.test",)),
             Alias(2, "all@example.test", ("team@example.test", "bob@example.test"))]
    assert owned_addresses(acc, chain) == frozenset(
        {"alice@example.test", "team@example.test", "all@example.test"})
    deep = [Alias(i, f"a{i}@example.test", (f"a{i - 1}@example.test" if i else ALICE,))
            for i in range(ALIAS_DEPTH + 2)]
    owned = owned_addresses(acc, deep)
    assert {f"a{i}@example.test" for i in range(ALIAS_DEPTH)} <= owned
    assert f"a{ALIAS_DEPTH}@example.test" not in owned
    loop = [Alias(1, "x@example.test", ("y@example.test", ALICE)),
            Alias(2, "y@example.test", ("x@example.test",))]
    assert owned_addresses(acc, loop) == frozenset({ALICE, "x@example.test", "y@example.test"})


def test_sender_may_use_a_nested_alias_that_reaches_her(harness: Harness) -> None:
    user = harness.new_user("example.test")
    harness.add_alias(f"inner-{user}", user)
    harness.add_alias(f"outer-{user}", f"inner-{user}")
    with harness.smtp() as mx:  # delivery follows the chain ...
        assert not mx.sendmail("someone@remote.test", [f"outer-{user}"], message(user))
    with harness.submit(user) as client:  # ... and so does ownership
        assert mail_from(client, f"outer-{user}")[0] == 250
        assert mail_from(client, f"inner-{user}")[0] == 250
