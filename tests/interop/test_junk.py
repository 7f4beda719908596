"""The junk filter end to end: a real `postkeep serve` with `filters = ["junk"]` both ways;
mail sent with smtplib to the MX and to submission, training done with imaplib (UID MOVE
into and out of Junk), read back from the store. GTUBE refused both ways, a spammy message
filed into Junk with its X-Spam fields, a clean one to INBOX; training over IMAP changes
the next verdict, an allow-list entry (`postkeep junk allow`) wins over it; a sender the
user has written to is never junked."""

from __future__ import annotations

import imaplib
import json
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import pytest

from postkeep.filters.junk.rules import GTUBE
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.test_submission import login

CAROL = "carol@example.test"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("junk"))
    inst.cli("user", "add", CAROL, "--password-stdin", input=PASSWORD + "\n")
    # no sending pause after a hit: alice's GTUBE submission is held, then she sends on
    # (the pause itself: tests/interop/test_quarantine.py)
    inst.set_config("filters", inbound=["junk"], outbound=["junk"], outbound_hit_pause=0)
    inst.set_config("junk", min_messages=2)
    inst.start()
    yield inst
    inst.stop()


def message(subject: str, body: str, sender: str = "news@remote.test",
            to: str = "alice@example.test",
            attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="remote.test")
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                           filename=attachment[0])
    return msg.as_bytes().replace(b"\n", b"\r\n")


def send_mx(inst: Instance, data: bytes, to: str = "alice@example.test",
            sender: str = "news@remote.test") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.mail(sender)[0] == 250
        assert c.rcpt(to)[0] == 250
        return c.data(data)


def where(inst: Instance, subject: str, user: str = "alice@example.test") -> str:
    """The mailbox the message with `subject` is in ("INBOX" or "Junk"), "" if none."""
    found = [box for box in ("INBOX", "Junk")
             if any(subject.encode() in m for m in inst.messages(user, box))]
    assert len(found) <= 1, found
    return found[0] if found else ""


def stored(inst: Instance, subject: str, box: str, user: str = "alice@example.test") -> bytes:
    (msg,) = [m for m in inst.messages(user, box) if subject.encode() in m]
    return msg


def test_gtube_is_refused_on_the_mx_and_on_submission(inst: Instance) -> None:
    subject = f"gtube {uuid.uuid4().hex}"
    code, text = send_mx(inst, message(subject, f"test\n{GTUBE}\n"))
    assert (code, text) == (554, b"5.7.1 Message content rejected")
    inst.wait_log(r"reject ip=127\.0\.0\.1 cmd=DATA code=554 5\.7\.1 reason=\"junk: GTUBE")
    assert where(inst, subject) == ""
    with login(inst) as c, pytest.raises(smtplib.SMTPDataError) as e:
        c.sendmail("alice@example.test", ["bob@example.test", "someone@remote.test"],
                   message(subject, GTUBE, sender="alice@example.test", to="bob@example.test"))
    assert (e.value.smtp_code, e.value.smtp_error) == (
        554, b"5.7.1 Message refused by content filter junk")
    assert where(inst, subject, "bob@example.test") == ""
    assert not [d for _, d in inst.outbound() if subject.encode() in d]


def test_spammy_mail_goes_to_junk_and_clean_mail_to_inbox(inst: Instance) -> None:
    spam = f"Your invoice {uuid.uuid4().hex}"
    forged = b"X-Spam-Score: -50.0 at localhost\r\n" + message(
        spam, "please open the attached invoice", attachment=("invoice.pdf.exe", b"MZ\0\0"))
    assert send_mx(inst, forged)[0] == 250
    junk = stored(inst, spam, "Junk")
    head = junk.split(b"\r\n\r\n")[0]
    assert re.search(rb"X-Spam-Status: Yes, score=\d+\.\d tests=[A-Z_,]*ATTACH_DOUBLE_EXT", head)
    assert head.count(b"X-Spam-Score:") == 1  # ours; the forged one was removed
    inst.wait_log(r"filed qid=\w+ ip=127\.0\.0\.1 mailbox=Junk reason=\"content filter: score")
    clean = f"Lunch on friday {uuid.uuid4().hex}"
    assert send_mx(inst, message(clean, "shall we meet at noon?\n"))[0] == 250
    assert where(inst, clean) == "INBOX"
    assert b"X-Spam-Status: Yes" not in stored(inst, clean, "INBOX")


def test_mail_from_a_correspondent_is_not_junked(inst: Instance) -> None:
    hello = f"hello bob {uuid.uuid4().hex}"
    with login(inst) as c:
        c.sendmail("alice@example.test", ["Bob@Faraway.test"],
                   message(hello, "hi bob", sender="alice@example.test", to="bob@faraway.test"))
    reply = f"Re: invoice {uuid.uuid4().hex}"
    data = message(reply, "the invoice you asked for", sender="bob@faraway.test",
                   attachment=("invoice.pdf.exe", b"MZ\0\0"))
    assert send_mx(inst, data, sender="bob@faraway.test")[0] == 250
    assert where(inst, reply) == "INBOX"
    assert re.search(rb"X-Spam-Status: No, score=[\d.]+ tests=\S*CORRESPONDENT",
                     stored(inst, reply, "INBOX"))
    other = f"Re: invoice {uuid.uuid4().hex}"
    data = message(other, "the invoice you asked for", sender="eve@faraway.test",
                   attachment=("invoice.pdf.exe", b"MZ\0\0"))
    assert send_mx(inst, data, sender="eve@faraway.test")[0] == 250
    assert where(inst, other) == "Junk"  # a stranger at the same domain is not


SPAMMY = "Cheap replica watches, rolex discount, buy now, limited offer, free shipping"
HAMMY = "Agenda for the quarterly planning review: budget, roadmap, staffing, minutes"


def imap(inst: Instance, user: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", inst.imaps_port, ssl_context=context, timeout=20)
    client.login(user, PASSWORD)
    return client


def move(client: imaplib.IMAP4, source: str, subjects: list[str], dest: str) -> None:
    """UID MOVE the messages of `source` whose subject holds one of `subjects`."""
    assert client.select(source)[0] == "OK"
    uids = []
    for subject in subjects:
        typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], subject
        uids += data[0].split()
    typ, _ = client.uid("MOVE", b",".join(uids).decode(), dest)
    assert typ == "OK"


def test_training_over_imap_changes_the_next_verdict(inst: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    spams = [f"watches {tag} {i}" for i in range(3)]
    hams = [f"planning {tag} {i}" for i in range(2)]
    for subject in spams:
        assert send_mx(inst, message(subject, SPAMMY, "deals@shop.test", CAROL), CAROL)[0] == 250
    for subject in hams:
        assert send_mx(inst, message(subject, HAMMY, "boss@corp.test", CAROL), CAROL)[0] == 250
    assert all(where(inst, s, CAROL) == "INBOX" for s in spams + hams)  # nothing learnt yet
    client = imap(inst, CAROL)
    try:
        move(client, "INBOX", spams, "Junk")
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk learnt=3")
        # false positives rescued: into Junk (spam), then back out (un-learnt, ham)
        move(client, "INBOX", hams, "Junk")
        # learnt in the background: let it read them in Junk before they leave it
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk learnt=2")
        move(client, "Junk", hams, "INBOX")
        inst.wait_log(r"junk trained account=\d+ class=ham mailbox=INBOX relearnt=2")
        move(client, "Junk", [spams[0]], "Trash")  # deleted: no opinion
        move(client, "Trash", [spams[0]], "Junk")  # learnt already: nothing to do
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk already=1")
    finally:
        client.logout()
    assert "class=ham mailbox=Trash" not in inst.log()
    spam = f"watches {tag} new"
    assert send_mx(inst, message(spam, SPAMMY, "deals@shop.test", CAROL), CAROL)[0] == 250
    assert where(inst, spam, CAROL) == "Junk"
    assert re.search(rb"X-Spam-Status: Yes, score=[\d.]+ tests=\S*BAYES_99",
                     stored(inst, spam, "Junk", CAROL))
    ham = f"planning {tag} new"
    assert send_mx(inst, message(ham, HAMMY, "boss@corp.test", CAROL), CAROL)[0] == 250
    assert where(inst, ham, CAROL) == "INBOX"
    assert re.search(rb"tests=\S*BAYES_00", stored(inst, ham, "INBOX", CAROL))
    # the user allows the shop: its mail is not junk any more, whatever the classifier says
    inst.cli("junk", "allow", "shop.test", "--for", CAROL)
    assert "allow  shop.test" in inst.cli("junk", "list", "--for", CAROL).stdout
    allowed = f"watches {tag} allowed"
    assert send_mx(inst, message(allowed, SPAMMY, "deals@shop.test", CAROL), CAROL)[0] == 250
    assert where(inst, allowed, CAROL) == "INBOX"
    assert re.search(rb"tests=\S*BAYES_99\S*ALLOWLISTED", stored(inst, allowed, "INBOX", CAROL))
    inst.cli("junk", "remove", "shop.test", "--for", CAROL)
    assert inst.cli("junk", "list", "--for", CAROL).stdout.strip() == "no entries"


def uid_of(client: imaplib.IMAP4, subject: str) -> bytes:
    typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
    assert typ == "OK" and len(data[0].split()) == 1, (subject, data)
    return bytes(data[0])


def flags_of(client: imaplib.IMAP4, uid: bytes) -> bytes:
    typ, data = client.uid("FETCH", uid.decode(), "(FLAGS)")
    assert typ == "OK"
    return bytes(data[0])


def test_filter_record_of_a_junked_message(inst: Instance) -> None:
    """A message delivered over SMTP and filed into Junk: `$Junk` on it, its filters'
    record readable with `postkeep message filters` with the symbols that fired."""
    subject = f"Your parcel {uuid.uuid4().hex}"
    data = message(subject, "open the attached label", attachment=("label.pdf.exe", b"MZ\0\0"))
    code, reply = send_mx(inst, data)
    assert code == 250
    qid = reply.split()[-1].decode()
    client = imap(inst, "alice@example.test")
    try:
        assert client.select("Junk")[0] == "OK"
        uid = uid_of(client, subject)
        assert b"$Junk" in flags_of(client, uid)
    finally:
        client.logout()
    out = inst.cli("message", "filters", "alice@example.test", "Junk", uid.decode()).stdout
    assert re.search(rf"(?m)^queue id:\s+{qid}$", out)
    assert re.search(r"(?m)^junk\s+tag\s+[\d.]+\s+spam \[\S*ATTACH_DOUBLE_EXT", out)
    report = json.loads(inst.cli("message", "filters", "alice@example.test", "Junk",
                                 uid.decode(), "--json").stdout)
    assert report["direction"] == "in" and report["action"] == "tag"
    (junk,) = report["filters"]
    assert junk["filter"] == "junk" and "ATTACH_DOUBLE_EXT" in junk["symbols"]
    assert junk["score"] == report["score"] >= 5
    # bad input: a clear line, exit 1
    for args, error in ((("alice@example.test", "Junk", "999999"), "no message with UID"),
                        (("alice@example.test", "Nope", "1"), "no mailbox 'Nope'"),
                        (("nobody@example.test", "INBOX", "1"), "no such account"),
                        (("alice@example.test", "INBOX", "0"), "a UID is a positive number")):
        result = inst.cli("message", "filters", *args, check=False)
        assert result.returncode == 1 and error in result.stderr, result


OFFER = "Exclusive crypto giveaway: double your bitcoin, claim airdrop tokens, wallet bonus"
CHOIR = "Choir rehearsal notes: soprano seating, hymn selection, concert rota, tea urn"


def store(client: imaplib.IMAP4, subjects: list[str], op: str, flag: str) -> None:
    uids = b",".join(uid_of(client, s) for s in subjects).decode()
    typ, _ = client.uid("STORE", uids, op, f"({flag})")
    assert typ == "OK"


def test_junk_keywords_train_once_and_change_the_next_verdict(inst: Instance) -> None:
    """STORE +FLAGS $Junk / $NotJunk over IMAP trains as a move does, with the same record:
    a message marked and then moved into Junk is learnt once; a mark the other way flips it;
    the next similar message over SMTP gets the learnt verdict."""
    dave = "dave@example.test"
    inst.cli("user", "add", dave, "--password-stdin", input=PASSWORD + "\n")
    tag = uuid.uuid4().hex[:8]
    spams = [f"giveaway {tag} {i}" for i in range(3)]
    hams = [f"rehearsal {tag} {i}" for i in range(2)]
    for subject in spams:
        assert send_mx(inst, message(subject, OFFER, "promo@coins.test", dave), dave)[0] == 250
    for subject in hams:
        assert send_mx(inst, message(subject, CHOIR, "alto@choir.test", dave), dave)[0] == 250
    assert all(where(inst, s, dave) == "INBOX" for s in spams + hams)
    client = imap(inst, dave)
    try:
        assert client.select("INBOX")[0] == "OK"
        store(client, spams, "+FLAGS", "$Junk")
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=INBOX learnt=3 via=keyword")
        store(client, hams, "+FLAGS.SILENT", "$NotJunk")
        inst.wait_log(r"junk trained account=\d+ class=ham mailbox=INBOX learnt=2 via=keyword")
        store(client, spams, "+FLAGS", "$Junk")  # had it: nothing changed, nothing learnt
        move(client, "INBOX", spams, "Junk")  # learnt already by its keyword: not twice
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk already=3 via=move")
        # a change of mind flips the message's class (un-learnt first), then back again
        assert client.select("Junk")[0] == "OK"
        store(client, spams[:1], "-FLAGS", "$Junk")  # no opinion
        store(client, spams[:1], "+FLAGS", "$NotJunk")
        inst.wait_log(r"junk trained account=\d+ class=ham mailbox=Junk relearnt=1 via=keyword")
        store(client, spams[:1], "FLAGS", "$Junk \\Seen")
        inst.wait_log(r"junk trained account=\d+ class=spam mailbox=Junk relearnt=1 via=keyword")
    finally:
        client.logout()
    log = inst.log()
    assert log.count("class=spam mailbox=INBOX learnt=3 via=keyword") == 1
    assert "class=spam mailbox=INBOX already" not in log
    spam = f"giveaway {tag} new"
    assert send_mx(inst, message(spam, OFFER, "promo@coins.test", dave), dave)[0] == 250
    assert where(inst, spam, dave) == "Junk"
    assert re.search(rb"X-Spam-Status: Yes, score=[\d.]+ tests=\S*BAYES_99",
                     stored(inst, spam, "Junk", dave))
    ham = f"rehearsal {tag} new"
    assert send_mx(inst, message(ham, CHOIR, "alto@choir.test", dave), dave)[0] == 250
    assert where(inst, ham, dave) == "INBOX"
    assert re.search(rb"tests=\S*BAYES_00", stored(inst, ham, "INBOX", dave))


def test_tokens_pruned_hourly_and_by_the_cli(inst: Instance) -> None:
    """The delivery worker prunes at its first look (then hourly), one log line; `postkeep
    junk prune` prunes now: with a cap of 5 tokens an account, the trained accounts lose
    their excess, and a second run finds nothing to do. (Last in the module: it trims.)"""
    inst.wait_log(r"junk tokens pruned examined=\d+ hapaxes=0 trimmed=0 complete=yes")
    inst.set_config("junk", min_messages=2, max_account_tokens=5)
    try:
        out = inst.cli("junk", "prune").stdout
        found = re.search(r"looked at (\d+) token\(s\): 0 hapax\(es\) deleted, (\d+) past "
                          r"the caps", out)
        assert found and int(found[1]) > 0 and int(found[2]) > 0, out
        again = inst.cli("junk", "prune").stdout
        assert re.search(r": 0 hapax\(es\) deleted, 0 past the caps", again), again
    finally:
        inst.set_config("junk", min_messages=2, max_account_tokens=150_000)
    inst.set_config("junk", hapax_days=-1)
    bad = inst.cli("junk", "prune", check=False)
    assert bad.returncode == 2 and "junk.hapax_days" in bad.stderr, bad
    inst.set_config("junk", min_messages=2, hapax_days=30)
