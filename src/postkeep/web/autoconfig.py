"""Client autoconfiguration and the MTA-STS policy file: what a mail client needs, from the
address alone, to find IMAP and submission with TLS (docs/architecture.md, "Web").

- Thunderbird autoconfig (clientConfig v1.1, the Mozilla "Autoconfiguration: config file
  format"): ``GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=...`` and
  ``GET /mail/config-v1.1.xml`` (the path Thunderbird asks ``autoconfig.DOMAIN`` for);
- Microsoft Autodiscover, POX ([MS-OXDSCLI] §2.2.4: the request schema of 2006, the
  ``outlook`` response schema 2006a): ``POST /autodiscover/autodiscover.xml`` (also
  ``/Autodiscover/Autodiscover.xml``), the request parsed by defusedxml (no DTD, no entities)
  and at most `MAX_REQUEST` octets; a GET is answered 405;
- an Apple configuration profile (Configuration Profile Reference, payload
  ``com.apple.mail.managed``): ``GET /.well-known/apple/mobileconfig?email=...``, type
  ``application/x-apple-aspen-config``, unsigned, with no password in it (the device asks),
  its PayloadUUIDs derived from the address so a second download replaces the first;
- the MTA-STS policy (RFC 8461 §3.2, `postkeep.config.mtasts`): ``GET
  /.well-known/mta-sts.txt`` on ``mta-sts.DOMAIN``, when `mta_sts.mode` is set.

What is offered is what the listeners really listen on (`offers`): IMAP and submission, the
implicit-TLS listener first (RFC 8314 §4.1 prefers it), then the STARTTLS one, each at
`server.hostname` and the port of its first address, logins as the whole address.

Only local domains get an answer: the domain of the address asked about (else the one the
Host names) must be one the store serves, else 404. The local part is never looked up, so the
answer says nothing of which accounts exist. These routes need no session and no CSRF token
(`postkeep.web.app` lets them through), and besides the configured host names they are
served on ``autoconfig.DOMAIN``, ``autodiscover.DOMAIN``, ``mta-sts.DOMAIN`` and ``DOMAIN``
itself for a local DOMAIN (`domain_of_host`); every other page refuses those hosts.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from aiohttp import web
from defusedxml import DefusedXmlException

from postkeep import log
from postkeep.addresses import canonical_domain
from postkeep.config import Config, parse_listen
from postkeep.store.api import Store
from postkeep.web.app import Public, client_ip
from postkeep.web.security import split_host

logger = log.get("web")

MAX_REQUEST = 4096  # octets of an Autodiscover request (a real one is about 400)
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3 (a path of 256 less the brackets)
HOST_PREFIXES = ("autoconfig.", "autodiscover.", "mta-sts.")
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
PROFILE_TYPE = "application/x-apple-aspen-config"
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "autoconfig.postkeep.invalid")  # fixed for good


@dataclass(frozen=True, slots=True)
class Server:
    """One way in a listener offers: `implicit` TLS from the first octet (RFC 8314 §3.3),
    else STARTTLS; `cleartext`: a plain password (PLAIN, LOGIN or IMAP LOGIN) works."""

    host: str
    port: int
    implicit: bool
    cleartext: bool = True

    @property
    def socket_type(self) -> str:  # Thunderbird's names
        return "SSL" if self.implicit else "STARTTLS"


@dataclass(frozen=True, slots=True)
class Offers:
    """IMAP and submission as the listeners offer them, the preferred one first."""

    imap: list[Server]
    smtp: list[Server]


def offers(cfg: Config) -> Offers:
    """What `imap` and `submission` listen on (their first address of each kind)."""
    host = cfg.server.hostname.lower().rstrip(".")
    smtp_plain = bool({"PLAIN", "LOGIN"} & set(cfg.submission.sasl_mechanisms))

    def ways(implicit: list[str], starttls: list[str], cleartext: bool) -> list[Server]:
        return [Server(host, parse_listen(listen[0])[1], is_implicit, cleartext)
                for listen, is_implicit in ((implicit, True), (starttls, False)) if listen]

    return Offers(ways(cfg.imap.tls_listen, cfg.imap.listen, True),
                  ways(cfg.submission.tls_listen, cfg.submission.listen, smtp_plain))


def split_address(text: str) -> tuple[str, str] | None:
    """(local part, canonical domain) of an address a client sent, or None if it is not one
    (bounded: at most `MAX_ADDRESS` characters, no white space or control characters)."""
    text = text.strip()
    if not 0 < len(text) <= MAX_ADDRESS or any(c.isspace() or ord(c) < 32 for c in text):
        return None
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or domain.startswith("["):
        return None
    return local, canonical_domain(domain)


def domain_of_host(host: str | None) -> str | None:
    """The domain a Host header names for these routes: ``autoconfig.D``, ``autodiscover.D``,
    ``mta-sts.D`` or ``D`` (canonical; whether D is local is the caller's question)."""
    parts = split_host(host or "")
    if parts is None or parts[0].startswith("["):
        return None
    name = parts[0]
    for prefix in HOST_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return canonical_domain(name) if "." in name else None


# -- the answers, from the offers ----------------------------------------------------------------


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def thunderbird_config(found: Offers, domain: str) -> bytes:
    """clientConfig v1.1: every way in, the preferred first (Thunderbird takes the first that
    works); the login is ``%EMAILADDRESS%``, the address the user typed."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _text(provider, "domain", domain)
    _text(provider, "displayName", f"{domain} mail")
    _text(provider, "displayShortName", domain)
    for tag, kind, servers in (("incomingServer", "imap", found.imap),
                               ("outgoingServer", "smtp", found.smtp)):
        for server in servers:
            element = ET.SubElement(provider, tag, type=kind)
            _text(element, "hostname", server.host)
            _text(element, "port", str(server.port))
            _text(element, "socketType", server.socket_type)
            _text(element, "authentication",
                  "password-cleartext" if server.cleartext else "password-encrypted")
            _text(element, "username", "%EMAILADDRESS%")
    return _xml(root)


def autodiscover_address(body: bytes) -> str | None:
    """The EMailAddress of an Autodiscover request, or None if the body is not one (not XML,
    a DTD or entities, another root, no address)."""
    if len(body) > MAX_REQUEST:
        return None
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError):
        return None
    if root.tag != f"{{{REQUEST_NS}}}Autodiscover":
        return None
    found = root.find(f"{{{REQUEST_NS}}}Request/{{{REQUEST_NS}}}EMailAddress")
    return found.text.strip() if found is not None and found.text else None


def autodiscover_response(found: Offers, address: str) -> bytes:
    """The POX response: one Protocol for IMAP and one for SMTP, the preferred ways.
    ``Encryption`` says SSL (implicit TLS) or TLS (STARTTLS); ``SSL`` is on for both."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    account = ET.SubElement(ET.SubElement(root, "Response", xmlns=OUTLOOK_NS), "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for kind, servers in (("IMAP", found.imap), ("SMTP", found.smtp)):
        if not servers:
            continue
        server = servers[0]
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", kind)
        _text(protocol, "Server", server.host)
        _text(protocol, "Port", str(server.port))
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "LoginName", address)
        _text(protocol, "SPA", "off")
        _text(protocol, "SSL", "on")
        _text(protocol, "Encryption", "SSL" if server.implicit else "TLS")
        _text(protocol, "AuthRequired", "on")
        if kind == "SMTP":
            _text(protocol, "UsePOPAuth", "off")
            _text(protocol, "SMTPLast", "off")
    return _xml(root)


def profile_uuid(address: str, what: str) -> str:
    """A PayloadUUID that is the same for every download of the address's profile."""
    return str(uuid.uuid5(UUID_NAMESPACE, f"{what}:{address.lower()}")).upper()


def apple_profile(found: Offers, address: str, hostname: str) -> bytes:
    """The configuration profile: one com.apple.mail.managed payload, no password."""
    imap, smtp = found.imap[0], found.smtp[0]
    reverse = ".".join(reversed(hostname.lower().rstrip(".").split(".")))
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.postkeep.mail.{profile_uuid(address, 'mail')}",
        "PayloadUUID": profile_uuid(address, "mail"),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": imap.host,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": smtp.host,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadContent": [mail],
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.postkeep.{profile_uuid(address, 'profile')}",
        "PayloadUUID": profile_uuid(address, "profile"),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"IMAP and submission for {address} (the password is asked for)",
        "PayloadRemovalDisallowed": False,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


# -- the handlers -------------------------------------------------------------------------------


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    logger.warning("reject ip=%s code=%d reason=%s path=%s", client_ip(request), status,
                   log.quote(reason), log.quote(request.path[:200]))
    return web.Response(status=status, text=f"{reason}\n")


class Autoconfig:
    """The handlers (thin: the answers are the functions above, from `offers`)."""

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.offers = offers(cfg)

    def public(self) -> Public:
        """The routes for `postkeep.web.app.make_app`, and the hosts they are served on."""
        routes = [
            web.get("/.well-known/autoconfig/mail/config-v1.1.xml", self.thunderbird),
            web.get("/mail/config-v1.1.xml", self.thunderbird),
            web.get("/.well-known/apple/mobileconfig", self.apple),
            web.get("/.well-known/mta-sts.txt", self.mta_sts),
        ]
        for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
            routes += [web.post(path, self.autodiscover), web.get(path, self.autodiscover_get)]
        return Public(routes, self.served_host, MAX_REQUEST)

    async def served_host(self, host: str | None) -> bool:
        """Whether a Host outside `web.hostnames` is one of a local domain's (see the module
        docstring)."""
        domain = domain_of_host(host)
        return domain is not None and await self.store.get_domain(domain) is not None

    async def _local(self, request: web.Request, address: str | None) -> str | web.Response:
        """The local domain an answer is for: the address's, else the Host's; else a refusal."""
        if address is not None:
            parts = split_address(address)
            if parts is None:
                return _refuse(request, 400, "not a mail address")
            domain: str | None = parts[1]
        else:
            domain = domain_of_host(request.headers.get("Host"))
        if domain is None or await self.store.get_domain(domain) is None:
            return _refuse(request, 404, "not a local domain")
        if not (self.offers.imap and self.offers.smtp):
            return _refuse(request, 404, "no IMAP or submission listener")
        return domain

    async def thunderbird(self, request: web.Request) -> web.Response:
        domain = await self._local(request, request.query.get("emailaddress"))
        if isinstance(domain, web.Response):
            return domain
        return web.Response(body=thunderbird_config(self.offers, domain),
                            content_type="text/xml", charset="utf-8")

    async def autodiscover(self, request: web.Request) -> web.Response:
        body = request.get("body", b"")
        address = autodiscover_address(body) if isinstance(body, bytes) else None
        if address is None:
            return _refuse(request, 400, "not an Autodiscover request")
        domain = await self._local(request, address)
        if isinstance(domain, web.Response):
            return domain
        return web.Response(body=autodiscover_response(self.offers, address),
                            content_type="text/xml", charset="utf-8")

    async def autodiscover_get(self, request: web.Request) -> web.Response:
        response = _refuse(request, 405, "Autodiscover takes a POST of its request XML")
        response.headers["Allow"] = "POST"
        return response

    async def apple(self, request: web.Request) -> web.Response:
        address = request.query.get("email")
        if address is None:
            return _refuse(request, 400, "no email parameter")
        domain = await self._local(request, address)
        if isinstance(domain, web.Response):
            return domain
        body = apple_profile(self.offers, address.strip(), self.cfg.server.hostname)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in domain)
        return web.Response(body=body, content_type=PROFILE_TYPE, headers={
            "Content-Disposition": f'attachment; filename="{name}.mobileconfig"'})

    async def mta_sts(self, request: web.Request) -> web.Response:
        host = split_host(request.headers.get("Host", ""))
        if host is None or not host[0].startswith("mta-sts."):
            return _refuse(request, 404, "the policy is served on mta-sts.DOMAIN")
        domain = domain_of_host(host[0])
        if domain is None or await self.store.get_domain(domain) is None:
            return _refuse(request, 404, "not a local domain")
        if not self.cfg.mta_sts.mode:
            return _refuse(request, 404, "no MTA-STS policy configured")
        return web.Response(text=self.cfg.mta_sts.policy(self.cfg.server.hostname),
                            content_type="text/plain", charset="utf-8")
