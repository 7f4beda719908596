"""Client autoconfiguration and the MTA-STS policy over the wire (`postkeep.web.autoconfig`), on
a real `postkeep serve` with STARTTLS and implicit-TLS listeners for IMAP and submission.

Each answer (Thunderbird's clientConfig, Autodiscover POX, the Apple profile) is parsed
(xml.etree, plistlib) and then used as a client would: imaplib and smtplib connect to the host
and port it names, with implicit TLS or STARTTLS as it says, verifying the certificate for
that host name, and log in with the user's password. The hosts a client asks
(``autoconfig.``, ``autodiscover.``, ``mta-sts.`` of a local domain) are served, for these
routes only; an unknown domain gets 404 and a host of one 421; an address whose local part
is no account gets the same answer as a real one; a malformed, entity-laden or oversized
Autodiscover request is refused; the MTA-STS policy parses with the sender side's parser.
"""

from __future__ import annotations

import imaplib
import plistlib
import smtplib
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from postkeep.queue.mtasts_policy import Mode, parse_policy
from tests.interop.conftest import PASSWORD, Instance, make_instance
from tests.interop.web_client import Browser

ALICE = "alice@example.test"
THUNDERBIRD = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER = "/autodiscover/autodiscover.xml"
REQUEST = ('<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.'
           'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
           "<EMailAddress>{}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft"
           ".com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>"
           "</Request></Autodiscover>")
A = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = make_instance(tmp_path_factory.mktemp("autoconfig"))
    inst.set_config("mta_sts", mode="testing", max_age=86400)
    inst.start()
    yield inst
    inst.stop()


def tls(inst: Instance) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(inst.ca_file))  # host names checked


def imap_works(inst: Instance, host: str, port: int, implicit: bool, user: str) -> None:
    """Log in as the answer says: implicit TLS or STARTTLS at host:port."""
    if implicit:
        imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=tls(inst), timeout=20)
    else:
        imap = imaplib.IMAP4(host, port, timeout=20)
        assert "LOGINDISABLED" in imap.capabilities
        imap.starttls(tls(inst))
    with imap:
        assert imap.login(user, PASSWORD)[0] == "OK"
        imap.logout()


def smtp_works(inst: Instance, host: str, port: int, implicit: bool, user: str) -> None:
    if implicit:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, context=tls(inst), timeout=20)
    else:
        smtp = smtplib.SMTP(host, port, timeout=20)
        smtp.starttls(context=tls(inst))
    with smtp:
        assert smtp.login(user, PASSWORD)[0] == 235


def test_thunderbird_config_works(inst: Instance) -> None:
    reply = Browser(inst).get(f"{THUNDERBIRD}?emailaddress={ALICE}")
    assert reply.status == 200 and reply.header("Content-Type") == "text/xml; charset=utf-8"
    assert reply.header("X-Content-Type-Options") == "nosniff"
    root = ET.fromstring(reply.body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.findtext("domain") == "example.test"
    incoming = provider.findall("incomingServer")
    outgoing = provider.findall("outgoingServer")
    assert [(s.get("type"), int(s.findtext("port", "")), s.findtext("socketType"))
            for s in incoming] == [("imap", inst.imaps_port, "SSL"),
                                   ("imap", inst.imap_port, "STARTTLS")]
    assert [(s.get("type"), int(s.findtext("port", "")), s.findtext("socketType"))
            for s in outgoing] == [("smtp", inst.submissions_port, "SSL"),
                                   ("smtp", inst.submission_port, "STARTTLS")]
    for server in incoming + outgoing:
        assert server.findtext("authentication") == "password-cleartext"
        user = (server.findtext("username") or "").replace("%EMAILADDRESS%", ALICE)
        args = (inst, server.findtext("hostname") or "", int(server.findtext("port", "")),
                server.findtext("socketType") == "SSL", user)
        (imap_works if server.get("type") == "imap" else smtp_works)(*args)


def test_thunderbird_on_the_autoconfig_host(inst: Instance) -> None:
    browser = Browser(inst, host="autoconfig.example.test")
    main = Browser(inst).get(f"{THUNDERBIRD}?emailaddress={ALICE}").body
    assert browser.get(f"/mail/config-v1.1.xml?emailaddress={ALICE}").body == main
    assert browser.get("/mail/config-v1.1.xml").body == main  # the domain from the Host
    # no account lookup: any local part of a local domain gets the same answer
    assert Browser(inst).get(f"{THUNDERBIRD}?emailaddress=nobody@EXAMPLE.test").body == main
    assert browser.get("/login").status == 421  # the pages are not served on it
    assert Browser(inst, host="autoconfig.unknown.test").get(
        "/mail/config-v1.1.xml").status == 421
    assert Browser(inst).get(f"{THUNDERBIRD}?emailaddress=alice@unknown.test").status == 404
    assert Browser(inst).get(f"{THUNDERBIRD}?emailaddress=not-an-address").status == 400
    assert "reason=\"not a local domain\"" in inst.log_path.read_text()


def test_http_redirects_the_autoconfig_host(inst: Instance) -> None:
    reply = Browser(inst, host="autoconfig.example.test").get(
        "/mail/config-v1.1.xml?emailaddress=x", tls=False)
    assert reply.status == 308
    assert reply.header("Location") == (f"https://autoconfig.example.test:{inst.https_port}"
                                        "/mail/config-v1.1.xml?emailaddress=x")
    assert Browser(inst, host="autoconfig.unknown.test").get("/", tls=False).status == 421


def autodiscover(inst: Instance, body: bytes, host: str = "autodiscover.example.test"
                 ) -> tuple[int, str]:
    reply = Browser(inst, host=host).request(
        "POST", AUTODISCOVER, body=body, headers={"Content-Type": "text/xml"})
    return reply.status, reply.body


def test_autodiscover_works(inst: Instance) -> None:
    status, body = autodiscover(inst, REQUEST.format(ALICE).encode())
    assert status == 200
    account = ET.fromstring(body).find(f"{A}Response/{A}Account")
    assert account is not None and account.findtext(f"{A}Action") == "settings"
    protocols = {p.findtext(f"{A}Type"): p for p in account.findall(f"{A}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    for kind, port in (("IMAP", inst.imaps_port), ("SMTP", inst.submissions_port)):
        p = protocols[kind]
        assert int(p.findtext(f"{A}Port", "")) == port
        assert p.findtext(f"{A}SSL") == "on" and p.findtext(f"{A}Encryption") == "SSL"
        assert p.findtext(f"{A}LoginName") == ALICE
        (imap_works if kind == "IMAP" else smtp_works)(
            inst, p.findtext(f"{A}Server") or "", port, True, ALICE)
    # the same on the configured name and on the domain itself
    assert autodiscover(inst, REQUEST.format(ALICE).encode(), "localhost") == (200, body)
    assert autodiscover(inst, REQUEST.format(ALICE).encode(), "example.test") == (200, body)


def test_autodiscover_refusals(inst: Instance) -> None:
    assert autodiscover(inst, REQUEST.format("alice@unknown.test").encode())[0] == 404
    assert autodiscover(inst, b"<Autodiscover><Request>")[0] == 400
    assert autodiscover(inst, b"not xml at all")[0] == 400
    assert autodiscover(inst, REQUEST.format("").encode())[0] == 400
    laughs = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "' + b"x" * 50 + b'">]>'
              + REQUEST.format("&e;@example.test").split("?>", 1)[1].encode())
    assert autodiscover(inst, laughs)[0] == 400  # a DTD is refused
    padded = REQUEST.format(ALICE).replace("<Request>", "<Request>" + " " * 5000).encode()
    assert autodiscover(inst, padded)[0] == 413
    reply = Browser(inst, host="autodiscover.example.test").get(AUTODISCOVER)
    assert reply.status == 405 and reply.header("Allow") == "POST"


def test_apple_profile_works(inst: Instance) -> None:
    reply = Browser(inst).get(f"/.well-known/apple/mobileconfig?email={ALICE}")
    assert reply.status == 200
    assert reply.header("Content-Type") == "application/x-apple-aspen-config"
    assert reply.header("Content-Disposition") == \
        'attachment; filename="example.test.mobileconfig"'
    profile = plistlib.loads(reply.body.encode())
    assert profile["PayloadType"] == "Configuration"
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP" and mail["EmailAddress"] == ALICE
    assert not any("Password" in key and key != "OutgoingPasswordSameAsIncomingPassword"
                   and "Authentication" not in key for key in mail)  # no password in it
    assert mail["IncomingMailServerPortNumber"] == inst.imaps_port
    assert mail["OutgoingMailServerPortNumber"] == inst.submissions_port
    assert mail["IncomingMailServerUseSSL"] and mail["OutgoingMailServerUseSSL"]
    imap_works(inst, mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
               True, mail["IncomingMailServerUsername"])
    smtp_works(inst, mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
               True, mail["OutgoingMailServerUsername"])
    again = plistlib.loads(Browser(inst).get(
        f"/.well-known/apple/mobileconfig?email={ALICE}").body.encode())
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # a new download replaces it
    other = plistlib.loads(Browser(inst).get(
        "/.well-known/apple/mobileconfig?email=bob@example.test").body.encode())
    assert other["PayloadUUID"] != profile["PayloadUUID"]
    assert Browser(inst).get("/.well-known/apple/mobileconfig").status == 400
    assert Browser(inst).get(
        "/.well-known/apple/mobileconfig?email=a@unknown.test").status == 404


def test_mta_sts_policy(inst: Instance) -> None:
    reply = Browser(inst, host="mta-sts.example.test").get("/.well-known/mta-sts.txt")
    assert reply.status == 200 and reply.header("Content-Type") == "text/plain; charset=utf-8"
    policy = parse_policy(reply.body.encode(), "x")
    assert policy.mode is Mode.TESTING and policy.max_age == 86400
    assert policy.mx_patterns == ("localhost",)
    assert Browser(inst).get("/.well-known/mta-sts.txt").status == 404  # not on mta-sts.
    assert Browser(inst, host="mta-sts.unknown.test").get(
        "/.well-known/mta-sts.txt").status == 421
    records = inst.cli("dns", "example.test").stdout
    assert '_mta-sts.example.test. IN TXT "v=STSv1; id=' in records
