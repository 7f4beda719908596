"""The MX judging where mail comes from, end to end: a real server (`postkeep serve`), its
lookups answered by NSD on loopback (tests/dnsserver.py), clients on distinct loopback
addresses (swaks --local-interface, smtplib source_address) so that one is on a block list and
another has confirmed reverse DNS."""

from __future__ import annotations

import re
import smtplib
import subprocess
import uuid

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from postkeep.mailauth.dkim.keys import generate_key, zone_line
from tests.dnsserver import AuthServer
from tests.interop.conftest import Instance, require_tool
from tests.mailauth.conftest import Published
from tests.mailauth.test_arc import dkimpy_seal
from tests.mailauth.verifying import dkimpy_sign

LISTED, CONFIRMED = "127.0.0.2", "127.0.0.3"
BANK_KEY = generate_key("rsa", bits=2048)  # bank.test's DKIM key, s1 (published in "test")


@pytest.fixture
def checked(fresh: Instance, dns_server: AuthServer) -> tuple[Instance, AuthServer]:
    """An instance that trusts no network, asks NSD, and uses the list zen.test."""
    configure(fresh, dns_server)
    fresh.start()
    return fresh, dns_server


def configure(fresh: Instance, dns_server: AuthServer, **inbound: object) -> None:
    """`checked`'s zones and settings, and `inbound`'s, on an instance not yet started."""
    dns_server.add_zone("zen.test", [
        "2.0.0.127 A 127.0.0.2",
        '2.0.0.127 TXT "Listed in zen.test, see https://zen.test/lookup"',
    ])
    dns_server.add_zone("0.0.127.in-addr.arpa", ["3 PTR mx3.good.test."])
    dns_server.add_zone("good.test", ["mx3 A 127.0.0.3"])
    dns_server.add_zone("dbl.test", ["evil.test A 127.0.1.2"])
    dns_server.add_zone("test", [  # the top: every other name under it does not exist
        '_dmarc.bank TXT "v=DMARC1; p=reject; rua=mailto:agg@bank.test"', "bank A 192.0.2.80",
        '_dmarc.shop TXT "v=DMARC1; p=quarantine"', "shop A 192.0.2.81",
        'aligned TXT "v=spf1 ip4:127.0.0.3 -all"',
        '_dmarc.aligned TXT "v=DMARC1; p=reject"',
        zone_line("s1", "bank.test", BANK_KEY).replace(" IN ", " "),
    ])
    fresh.set_config("dns", nameservers=[dns_server.nameserver], timeout=2.0, attempts=1)
    fresh.set_config("inbound", trusted_networks=[], check_timeout=5.0,
                     arc_trusted_sealers=["lists.test"], **inbound)
    path = fresh.dir / "postkeep.toml"
    path.write_text(path.read_text() + '\n[[inbound.dnsbl]]\nzone = "zen.test"\n'
                    'codes = ["127.0.0.2=SBL:1"]\n'
                    '\n[[inbound.uribl]]\nzone = "dbl.test"\ncodes = ["127.0.1.2=spam domain"]\n')


def swaks(inst: Instance, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """swaks to the MX from the loopback address `source`."""
    return subprocess.run(
        [require_tool("swaks", "swaks"), "--server", "127.0.0.1", "--port", str(inst.smtp_port),
         "--local-interface", source, "--timeout", "20", "--to", "alice@example.test", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_a_listed_client_is_refused_at_mail_with_the_lists_reason(
        checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    r = swaks(inst, LISTED, "--from", "x@remote.test")
    assert r.returncode != 0
    assert ("554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test: "
            "Listed in zen.test, see https://zen.test/lookup") in r.stdout
    line = inst.wait_log(r"reject ip=127\.0\.0\.2 cmd=MAIL code=554 5\.7\.1 .*").group(0)
    assert "dnsbl score=1 lists=zen.test=SBL" in line
    assert inst.messages("alice@example.test") == []


def test_forged_results_removed_and_ours_written(checked: tuple[Instance, AuthServer]) -> None:
    """A client with confirmed reverse DNS sends a message signed by dkimpy (its key in NSD)
    and carrying a forged Authentication-Results naming this server: the forged one is gone,
    ours says iprev=pass and dkim=pass, and another server's field is kept."""
    inst, nsd = checked
    key = generate_key("rsa", bits=2048)
    nsd.add_zone("signer.test", [zone_line("s1", "signer.test", key).replace(
        "s1._domainkey.signer.test.", "s1._domainkey")])
    tag = uuid.uuid4().hex
    body = (f"From: news@signer.test\r\nTo: alice@example.test\r\nSubject: {tag}\r\n"
            "Authentication-Results: LOCALHOST; dmarc=pass header.from=signer.test\r\n"
            "Authentication-Results: elsewhere.example; spf=pass\r\n"
            f"\r\nhello {tag}\r\n").encode()
    signed = dkimpy_sign(body, "s1", key, domain="signer.test")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, source_address=(CONFIRMED, 0),
                      timeout=30) as c:
        c.ehlo("mx3.good.test")
        c.sendmail("news@signer.test", ["alice@example.test"], signed)
    [stored] = inst.messages("alice@example.test")
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    assert "dmarc=pass header.from=signer.test" not in head  # the forged field is gone
    assert "Authentication-Results: elsewhere.example; spf=pass" in head
    ours = [f for f in head.split("\r\nAuthentication-Results: ")[1:]
            if f.startswith("localhost;")]
    assert len(ours) == 1, head
    unfolded = " ".join(ours[0].split())
    assert "iprev=pass (mx3.good.test) policy.iprev=127.0.0.3" in unfolded
    assert re.search(r"dkim=pass header\.d=signer\.test header\.i=@signer\.test header\.s=s1 "
                     r'header\.a=rsa-sha256 header\.b=(?:[\w+]{8};|"[\w+/]{8}";)', unfolded
                     ), unfolded  # quoted when the first 8 signature characters hold a "/"
    assert "Received: from mx3.good.test (mx3.good.test [127.0.0.3])" in head
    assert "spf=none smtp.mailfrom=news@signer.test" in unfolded
    assert "dmarc=none (no policy) header.from=signer.test" in unfolded
    assert head.index("Authentication-Results: localhost;") < head.index("Received: from")
    assert stored.endswith(f"hello {tag}\r\n".encode())
    inst.wait_log(r"authentication-results removed qid=\w+ ip=127\.0\.0\.3 count=1")


def test_a_message_linking_to_a_listed_domain_is_refused(
        checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    body = ("From: a@remote.test\r\nTo: alice@example.test\r\nSubject: offer\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            '<p>Claim at <a href="hxxps://www.evil[.]test/claim">your bank</a></p>\r\n')
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, source_address=(CONFIRMED, 0),
                      timeout=30) as c:
        c.ehlo("mx3.good.test")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("a@remote.test", ["alice@example.test"], body.encode())
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == (
        b"5.7.1 Message rejected: it links to evil.test, listed by dbl.test")
    line = inst.wait_log(r"reject ip=127\.0\.0\.3 cmd=DATA code=550 5\.7\.1 .*").group(0)
    assert "uribl score=1 domains=evil.test@dbl.test=spam domain" in line
    assert inst.messages("alice@example.test") == []


def send(inst: Instance, mail_from: str, message: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, source_address=(CONFIRMED, 0),
                      timeout=30) as c:
        c.ehlo("mx3.good.test")
        c.sendmail(mail_from, ["alice@example.test"], message.encode())


def test_a_spoofed_reject_sender_is_refused(checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    r = swaks(inst, CONFIRMED, "--helo", "mx3.good.test", "--from", "attacker@evil.example.test",
              "--header", "From: CEO <ceo@bank.test>", "--header", "Subject: wire the money")
    assert r.returncode != 0
    assert ("550 5.7.1 Message rejected: bank.test does not authenticate it and its DMARC "
            "policy is reject") in r.stdout
    line = inst.wait_log(r"reject ip=127\.0\.0\.3 cmd=DATA code=550 5\.7\.1 .*").group(0)
    assert "dmarc fail header.from=bank.test p=reject dis=reject domain=bank.test" in line
    assert inst.messages("alice@example.test") == []


def test_an_aligned_sender_passes_spf_and_dmarc(checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    send(inst, "bounces@aligned.test",
         "From: news@aligned.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n")
    [stored] = inst.messages("alice@example.test")
    head = " ".join(stored.split(b"\r\n\r\n", 1)[0].decode().split())
    assert "spf=pass smtp.mailfrom=bounces@aligned.test" in head
    assert "dmarc=pass (p=reject dis=none) header.from=aligned.test" in head
    inst.wait_log(r'message qid=\w+ ip=127\.0\.0\.3 .* result="250 2\.0\.0" '
                  r'auth="iprev=pass spf=pass dkim=none arc=none dmarc=pass"')


def test_quarantine_goes_to_junk(checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    send(inst, "x@elsewhere.example.test",
         "From: deals@shop.test\r\nTo: alice@example.test\r\nSubject: deal\r\n\r\n!\r\n")
    assert inst.messages("alice@example.test") == []
    [junk] = inst.messages("alice@example.test", "Junk")
    assert b"dmarc=fail (p=quarantine dis=quarantine) header.from=shop.test" in b" ".join(
        junk.split())
    inst.wait_log(r"quarantined qid=\w+ ip=127\.0\.0\.3 mailbox=Junk")


def test_two_authors_are_refused(checked: tuple[Instance, AuthServer]) -> None:
    inst, _ = checked
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(inst, "bounces@aligned.test",
             "From: news@aligned.test\r\nFrom: ceo@bank.test\r\nSubject: x\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 550
    assert b"more than one author" in refused.value.smtp_error


def list_forward(nsd: AuthServer, sealer: str) -> str:
    """ceo@bank.test's message (p=reject, DKIM-signed by bank.test) as the mailing list
    `sealer` passes it on: subject tagged and a footer added (bank.test's signature broken),
    then ARC-sealed with the list's key, its AAR saying what it found on arrival."""
    key = generate_key("rsa", bits=2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    nsd.add_zone(sealer, [zone_line("s1", sealer, key)])
    original = ("From: CEO <ceo@bank.test>\r\nTo: staff@" + sealer + "\r\n"
                "Subject: quarterly figures\r\nMessage-ID: <q1@bank.test>\r\n\r\n"
                "The figures are in.\r\n").encode()
    signed = dkimpy_sign(original, "s1", BANK_KEY, domain="bank.test")
    listed = (signed.replace(b"Subject: quarterly", b"Subject: [staff] quarterly")
              + b"-- \r\nstaff mailing list\r\n")
    sealed = dkimpy_seal(listed, key, sealer, "spf=pass smtp.mailfrom=ceo@bank.test; "
                         "dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test")
    return sealed.decode()


def test_a_trusted_sealer_saves_a_forwarded_reject_message(
        checked: tuple[Instance, AuthServer]) -> None:
    inst, nsd = checked
    send(inst, "staff-bounces@lists.test", list_forward(nsd, "lists.test"))
    [stored] = inst.messages("alice@example.test")
    head = " ".join(stored.split(b"\r\n\r\n", 1)[0].decode().split())
    assert re.search(r"dkim=fail \(body hash mismatch bh=\) header\.d=bank\.test", head), head
    assert ("arc=pass (i=1 d=lists.test) header.oldest-pass=0 smtp.remote-ip=127.0.0.3"
            in head)
    assert "dmarc=fail (p=reject dis=reject) header.from=bank.test" in head
    line = inst.wait_log(r"dmarc policy overridden qid=\w+ ip=127\.0\.0\.3 .*").group(0)
    assert "override=local_policy reason=arc sealer=lists.test" in line
    inst.wait_log(r'message qid=\w+ ip=127\.0\.0\.3 .* result="250 2\.0\.0" '
                  r'auth="iprev=pass spf=none dkim=fail arc=pass dmarc=fail"')


def test_an_untrusted_sealer_does_not(checked: tuple[Instance, AuthServer]) -> None:
    inst, nsd = checked
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(inst, "staff-bounces@other-list.test", list_forward(nsd, "other-list.test"))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (550, (
        b"5.7.1 Message rejected: bank.test does not authenticate it and its DMARC policy is "
        b"reject"))
    assert inst.messages("alice@example.test") == []


def test_the_stored_copy_is_sealed_for_whoever_forwards_it(fresh: Instance,
                                                           dns_server: AuthServer) -> None:
    """With arc_seal, the list's message is stored with our ARC Set (i=2, cv=pass, d= the
    recipient's domain, its RSA key from `postkeep dkim`) above our Authentication-Results,
    and dkimpy's verifier passes the chain of two."""
    configure(fresh, dns_server, arc_seal=True)
    shown = fresh.cli("dkim", "show", "example.test").stdout
    dns_server.add_zone("example.test", [line for line in shown.splitlines()
                                         if line and not line.startswith(";")])
    fresh.start()
    send(fresh, "staff-bounces@lists.test", list_forward(dns_server, "lists.test"))
    [stored] = fresh.messages("alice@example.test")
    head = stored.split(b"\r\n\r\n", 1)[0]
    assert head.index(b"ARC-Seal: i=2;") < head.index(b"Authentication-Results: localhost;")
    seal = " ".join(head[head.index(b"ARC-Seal: i=2;"):].split(b"\r\n")[0].decode().split())
    assert "cv=pass; d=example.test;" in seal
    assert b"ARC-Authentication-Results: i=2; localhost;" in head
    cv, results, why = dkim.arc_verify(stored, dnsfunc=Published(dns_server, {}).dnsfunc())
    assert cv == b"pass", why
    assert [r["instance"] for r in results] == [2, 1]
    assert b"arc=pass (i=1 d=lists.test)" in results[0]["aar-value"]
