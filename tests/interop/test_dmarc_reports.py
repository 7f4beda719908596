"""DMARC aggregate reports end to end (RFC 7489 §7.1-7.2, RFC 9990): a reporting instance's
MX (`postkeep serve`, its lookups answered by NSD) receives mail from clients on loopback
addresses for three domains whose DMARC records ask for reports: bank.test (p=reject: two
messages pass, one is refused), shop.test (p=quarantine: to Junk; its reports go to
bank.test, which authorizes them with `shop.test._report._dmarc.bank.test`) and evil.test
(reports to bank.test, not authorized). `postkeep dmarc send` queues the day's reports, which
the reporter delivers to the consumer instance: gzip'd XML, DKIM-signed (checked with
dkimpy), into the mailbox of agg@bank.test, while dmarc@bank.test, the consumer's
`dmarc_report_address` with no account, reads them into `postkeep dmarc reports`. A report
mailed in by hand (zip, RFC 7489's schema) is read too; a message with none readable goes to
the postmaster."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import io
import json
import smtplib
import time
import zipfile
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from xml.etree import ElementTree

import dkim

from postkeep import config as config_mod
from postkeep.mailauth.dmarc.aggregate import DAY, NAMESPACE
from postkeep.store import open_store
from postkeep.store.crypto import load_master_key
from tests.dnsserver import AuthServer
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.mailauth.test_dmarc_aggregate import RFC7489_SAMPLE
from tests.queue.wire import txt_lookup, wait_for

NS = {"d": NAMESPACE}


def counted(inst: Instance, domain: str, day: int) -> int:
    async def read() -> int:
        cfg = config_mod.load(inst.dir / "postkeep.toml")
        store = await open_store(cfg.store_url, cfg.data_dir,
                                 load_master_key(cfg.data_path(cfg.store.master_key_file)),
                                 maintenance=False)
        try:
            return sum(r.count for r in await store.dmarc_results(domain, day))
        finally:
            await store.close()

    return asyncio.run(read())


def send(inst: Instance, source: str, mail_from: str, author: str, to: str = "alice@example.test",
         ) -> tuple[int, bytes]:
    body = f"From: {author}\r\nTo: {to}\r\nSubject: hi\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, source_address=(source, 0),
                      timeout=30) as c:
        c.ehlo("client.example")
        c.mail(mail_from)
        assert c.rcpt(to)[0] == 250
        return c.data(body)


def test_reports_are_sent_signed_and_read_by_the_consumer(
        dns_server: AuthServer, tmp_path: Path) -> None:
    consumer = make_instance(tmp_path / "consumer", domain="bank.test", hostname="mx.bank.test")
    consumer.cli("user", "add", "agg@bank.test", "--password-stdin", input=PASSWORD + "\n")
    consumer.set_config("inbound", dmarc_report_address="dmarc@bank.test")
    reporter = make_instance(tmp_path / "reporter", hostname="mx.example.test")
    rua = "rua=mailto:agg@bank.test,mailto:dmarc@bank.test"
    dns_server.add_zone("test", [  # the top: every other name under it does not exist
        f'_dmarc.bank TXT "v=DMARC1; p=reject; {rua}"', 'bank TXT "v=spf1 ip4:127.0.0.3 -all"',
        "bank MX 10 mx.bank", "mx.bank A 127.0.0.1",
        f'_dmarc.shop TXT "v=DMARC1; p=quarantine; {rua}"', "shop A 192.0.2.81",
        'shop.test._report._dmarc.bank TXT "v=DMARC1"',
        '_dmarc.evil TXT "v=DMARC1; p=none; rua=mailto:agg@bank.test"', "evil A 192.0.2.82",
        *(line for line in reporter.cli("dkim", "show", "example.test").stdout.splitlines()
          if line and not line.startswith(";"))])
    reporter.set_config("dns", nameservers=[dns_server.nameserver], timeout=2.0, attempts=1)
    reporter.set_config("inbound", trusted_networks=[], check_timeout=5.0,
                        dmarc_report_from="noreply-dmarc@example.test",
                        dmarc_report_org="Example Mail")
    reporter.set_config("delivery", remote_port=consumer.smtp_port, poll_interval=0.5,
                        retry_schedule=[1])
    consumer.start()
    reporter.start()
    day = int(time.time()) // DAY * DAY
    date = datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%d")
    try:
        for _ in range(2):
            assert send(reporter, "127.0.0.3", "bounces@bank.test", "news@bank.test")[0] == 250
        assert send(reporter, "127.0.0.2", "x@elsewhere.test", "ceo@bank.test")[0] == 550
        assert send(reporter, "127.0.0.3", "deals@shop.test", "deals@shop.test")[0] == 250
        assert send(reporter, "127.0.0.3", "a@evil.test", "a@evil.test")[0] == 250
        for domain, n in (("bank.test", 3), ("shop.test", 1), ("evil.test", 1)):
            wait_for(f"{domain} counted", lambda d=domain, n=n: counted(reporter, d, day) == n)
        out = reporter.cli("dmarc", "send", "--day", date).stdout
        assert "2 DMARC report(s) queued for " + date in out, out
        assert "evil.test: nothing sent (no rua destination to send to)" in out
        assert "bank.test: report queued qid=D" in out
        again = reporter.cli("dmarc", "send", "--day", date).stdout
        assert f"0 DMARC report(s) queued for {date}" in again  # once per (domain, day)
        got = wait_for("the reports", lambda: (m := consumer.messages("agg@bank.test"))
                       and len(m) == 2 and m)
        listed = wait_for("the reports read", lambda: (
            r := consumer.cli("dmarc", "reports").stdout).count("Example Mail") == 2 and r)
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("google.com!example.org!1706832000!1706918399.xml", RFC7489_SAMPLE)
        by_hand = EmailMessage()
        by_hand["From"], by_hand["To"] = "noreply-dmarc-support@google.com", "dmarc@bank.test"
        by_hand["Subject"] = "Report Domain: example.org Submitter: google.com Report-ID: 1"
        by_hand.set_content("a report")
        by_hand.add_attachment(zipped.getvalue(), maintype="application", subtype="zip",
                               filename="google.com!example.org!1706832000!1706918399.zip")
        with smtplib.SMTP("127.0.0.1", consumer.smtp_port, timeout=30) as c:
            c.send_message(by_hand)
            c.sendmail("x@elsewhere.test", ["dmarc@bank.test"],
                       b"From: x@elsewhere.test\r\nSubject: not a report\r\n\r\nhello\r\n")
        consumer.wait_log(r"dmarc report unreadable qid=\w+ ip=127\.0\.0\.1 reason=.*no report")
        wait_for("the postmaster's copy", lambda: consumer.messages("postmaster@bank.test"))
        mine = consumer.cli("dmarc", "reports", "--domain", "example.org", "--json").stdout
    finally:
        reporter.stop()
        consumer.stop()
    assert "not a report" in consumer.messages("postmaster@bank.test")[0].decode()
    (google,) = json.loads(mine)
    assert (google["org_name"], google["report_id"], google["failed"]) == (
        "google.com", "5717107811868587391", 2)
    assert google["records"][0]["source_ip"] == "192.0.2.7"
    lines = {line.split()[4]: line.split() for line in listed.splitlines()
             if "Example Mail" in line}
    assert lines["bank.test"][5:7] == ["2", "1"] and lines["shop.test"][5:7] == ["0", "1"]
    reports = {email.message_from_bytes(m)["Subject"].split()[2]: m for m in got}
    raw = reports["bank.test"]
    signed = raw[raw.index(b"DKIM-Signature:"):]  # the consumer's trace fields off
    assert signed.count(b"DKIM-Signature:") == 2  # Ed25519 and RSA, d=example.test
    for index in (0, 1):
        assert dkim.DKIM(signed).verify(index, dnsfunc=txt_lookup(dns_server)), index
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "noreply-dmarc@example.test"
    assert msg["Subject"].startswith(
        "Report Domain: bank.test Submitter: mx.example.test Report-ID: <")
    (part,) = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
    assert part.get_filename() == f"mx.example.test!bank.test!{day}!{day + DAY - 1}.xml.gz"
    root = ElementTree.fromstring(gzip.decompress(part.get_content()))
    assert root.findtext("d:report_metadata/d:org_name", namespaces=NS) == "Example Mail"
    assert root.findtext("d:policy_published/d:p", namespaces=NS) == "reject"
    rows = {r.findtext("d:row/d:source_ip", namespaces=NS): r
            for r in root.findall("d:record", NS)}
    ok, bad = rows["127.0.0.3"], rows["127.0.0.2"]
    assert ok.findtext("d:row/d:count", namespaces=NS) == "2"
    assert [e.text for e in ok.find("d:row/d:policy_evaluated", NS)] == ["none", "fail", "pass"]
    assert ok.findtext("d:auth_results/d:spf/d:result", namespaces=NS) == "pass"
    assert ok.findtext("d:identifiers/d:envelope_from", namespaces=NS) == "bank.test"
    assert bad.findtext("d:row/d:policy_evaluated/d:disposition", namespaces=NS) == "reject"
    assert bad.findtext("d:identifiers/d:header_from", namespaces=NS) == "bank.test"
    shop = email.message_from_bytes(reports["shop.test"], policy=email.policy.default)
    (part,) = [p for p in shop.walk() if p.get_content_type() == "application/gzip"]
    root = ElementTree.fromstring(gzip.decompress(part.get_content()))
    assert root.findtext("d:record/d:row/d:policy_evaluated/d:disposition",
                         namespaces=NS) == "quarantine"
