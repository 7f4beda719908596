"""DANE in delivery over the wire: a postkeep instance whose resolver is a validating Unbound
(`[dns] trust_ad`) delivers to another postkeep whose MX zone is signed (ldns-signzone, NSD)
and publishes TLSA records: a matching DANE-EE record authenticates the session; a record that
matches nothing keeps the mail queued (4.7.5), never sent in clear or over unchecked TLS."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.dnsserver import AuthServer, Resolver, sign_zone, zone_text
from tests.interop.conftest import PASSWORD, make_instance
from tests.queue.wire import submit, wait_for


def spki_sha256(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()




def test_dane_ee_authenticates_and_a_mismatch_defers(
    dns_server: AuthServer, validating_resolver: Resolver, tmp_path: Path
) -> None:
    (tmp_path / "receiver").mkdir()
    (tmp_path / "sender").mkdir()
    receiver = make_instance(tmp_path / "receiver", domain="secure.test",
                             hostname="mx.secure.test")
    receiver.cli("domain", "add", "wrong.test", "--no-dkim")
    receiver.cli("user", "add", "bob@wrong.test", "--password-stdin", input=PASSWORD + "\n")
    receiver.start()
    port = receiver.smtp_port
    digest = spki_sha256((receiver.dir / "tls" / "cert.pem").read_bytes())
    for origin, tlsa in (("secure.test", digest), ("wrong.test", "ab" * 32)):
        signed = sign_zone(tmp_path / origin, origin, zone_text(origin, [
            "@ MX 10 mx", "mx A 127.0.0.1", f"_{port}._tcp.mx TLSA 3 1 1 {tlsa}"]))
        dns_server.add_zone_text(origin, signed.text)
        validating_resolver.trust(signed.trust_anchor)
    sender = make_instance(tmp_path / "sender")
    sender.set_config("dns", nameservers=[validating_resolver.nameserver], trust_ad=True,
                      timeout=5.0, attempts=1)
    sender.set_config("delivery", remote_port=port, poll_interval=0.5, retry_schedule=[1])
    sender.start()
    try:
        qid = submit(sender, "bob@secure.test", "dane-ok")
        wait_for("delivery", lambda: any(b"Subject: dane-ok" in m
                                         for m in receiver.messages("bob@secure.test")))
        assert re.search(rf"qid={qid} relay=mx.secure.test \[127\.0\.0\.1\] tls=TLSv1\.3/dane",
                         sender.log()), sender.log()[-2000:]
        bad = submit(sender, "bob@wrong.test", "dane-mismatch")
        out = wait_for("a deferral", lambda: "4.7.5" in (o := sender.cli(
            "queue", "show", bad).stdout) and o)
        assert "peer certificate refused" in out
        time.sleep(2)  # some more attempts: none of them may deliver it
        assert not any(b"dane-mismatch" in m for m in receiver.messages("bob@wrong.test"))
    finally:
        sender.stop()
        receiver.stop()
