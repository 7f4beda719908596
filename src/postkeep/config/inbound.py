"""The `[inbound]` section: how the MX judges where mail comes from (SPF, DKIM, DMARC, ARC,
iprev, DNS block lists), as docs/architecture.md ("Inbound checks") tells."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError

DMARC_ACTIONS = ("reject", "quarantine", "tag")
ORG_DOMAIN_METHODS = ("tree-walk", "psl")
_SEALER = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")


@dataclass(frozen=True)
class DnsListConfig:
    """One DNS list (`[[inbound.dnsbl]]` for client IPs, `[[inbound.uribl]]` for domains)."""

    zone: str = setting("The list's DNS zone, e.g. \"zen.spamhaus.org\".", default="")
    weight: float = setting(
        "Weight of a listing whose code `codes` does not name (negative: an allow list).",
        default=1.0,
    )
    codes: list[str] = setting(
        'Return codes and what they mean, each "CODE=LABEL" or "CODE=LABEL:WEIGHT", CODE an '
        'address or CIDR (e.g. "127.0.0.4/30=XBL:1"). Empty: any 127.0.0.0/8 answer is a '
        "listing, except for zen.spamhaus.org and dbl.spamhaus.org, whose published codes "
        "are known.",
        default_factory=list,
    )


@dataclass(frozen=True)
class InboundConfig:
    """`[inbound]`: checks of mail arriving at the MX (not submission, whose senders log in)."""

    trusted_networks: list[str] = setting(
        "Client networks (CIDR) whose mail is not checked (no SPF, DNSBL, iprev, DMARC): "
        "this host and relays you run. Forged Authentication-Results naming this server are "
        "removed from their mail all the same.",
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
    )
    spf: bool = setting("Check SPF (RFC 7208) for the HELO name and MAIL FROM.", default=True)
    dkim: bool = setting("Verify DKIM signatures (RFC 6376, RFC 8463).", default=True)
    dmarc: bool = setting("Evaluate DMARC (RFC 9989) and act on the sender's policy.",
                          default=True)
    arc: bool = setting("Validate the ARC chain (RFC 8617) and report it as arc= in "
                        "Authentication-Results.", default=True)
    arc_seal: bool = setting(
        "ARC-seal the mail the MX accepts (RFC 8617 §5.1): an ARC Set of the next instance "
        "(our Authentication-Results, a message signature, the seal) is added to the stored "
        "copy, signed with the RSA key of the first recipient's domain (`postkeep dkim`), so "
        "whoever it is passed on to sees our verdict. Useful only where mail is forwarded "
        "from the mailboxes on; a domain without an RSA key is not sealed.",
        default=False,
    )
    arc_trusted_sealers: list[str] = setting(
        "Sealer domains (the d= of the newest ARC-Seal) trusted to vouch for mail they "
        "forward, mailing lists above all: when DMARC fails but the ARC chain passes, the "
        "newest sealer is listed here and its ARC-Authentication-Results says dmarc=pass, or "
        "spf or dkim passed for a domain aligned with the From domain, the DMARC reject or "
        "quarantine is overridden (RFC 7489 §6.7, local_policy): the message is delivered, "
        "tagged.",
        default_factory=list,
    )
    iprev: bool = setting("Look up the client's forward-confirmed reverse DNS (RFC 8601 §3) "
                          "for Authentication-Results and Received.", default=True)
    dmarc_reject: str = setting(
        'What a DMARC failure under p=reject gets: "reject" (550 5.7.1 at end of data), '
        '"quarantine" (delivered to Junk) or "tag" (delivered, the verdict in '
        "Authentication-Results).",
        default="reject",
    )
    dmarc_quarantine: str = setting(
        'What a DMARC failure under p=quarantine gets: "quarantine" (Junk), "reject" or "tag".',
        default="quarantine",
    )
    dmarc_org_domain: str = setting(
        'How the Organizational Domain is found: "tree-walk" (RFC 9989 DNS tree walk) or '
        '"psl" (RFC 7489: the Public Suffix List shipped with the publicsuffixlist package).',
        default="tree-walk",
    )
    check_timeout: float = setting(
        "Seconds each check (SPF, DKIM, DMARC, iprev, the lists) may take; past it the check "
        "is a temperror.",
        default=15.0,
    )
    temperror_defer: bool = setting(
        "Answer 451 (try again later) when DMARC could not be evaluated for a temporary DNS "
        "failure, instead of accepting the message tagged dmarc=temperror.",
        default=False,
    )
    dnsbl: list[DnsListConfig] = setting(
        "IP block and allow lists asked about each client at connect, as an array of tables "
        "`[[inbound.dnsbl]]` with `zone`, `weight` (default 1; negative: an allow list) and "
        '`codes` ("CODE=LABEL" or "CODE=LABEL:WEIGHT", CODE an address or CIDR; empty: any '
        "127.0.0.0/8 answer is a listing, and zen.spamhaus.org's codes are known). Use your "
        "own recursive resolver: list operators refuse queries from public ones.",
        default_factory=list,
    )
    uribl: list[DnsListConfig] = setting(
        "Domain block lists (URIBL/DBL) asked about the domains the message's text links to "
        "(at most 20, obfuscated links included), as an array of tables `[[inbound.uribl]]` "
        "with the keys of `[[inbound.dnsbl]]` (dbl.spamhaus.org's codes are known).",
        default_factory=list,
    )
    uribl_threshold: float = setting(
        "Score of a message's linked domains at which it is refused at end of data (550 "
        "5.7.1, naming the domain and the list).",
        default=1.0,
    )
    dnsbl_threshold: float = setting(
        "Score (the sum of the listings' weights) at which a client is refused, with 554 5.7.1 "
        "and the list's reason, from MAIL FROM on.",
        default=1.0,
    )
    dmarc_reports: bool = setting(
        "Count the MX's DMARC evaluations of mail from domains whose policy asks for "
        "aggregate reports (`rua=`) and send each a daily report (RFC 7489 §7.2, RFC 9990), "
        "gzip'd XML, DKIM-signed, through the queue, after 00:05 UTC for the day before. "
        "Only with a `server.hostname` that is a domain name (not `localhost`): it names "
        "the reporter. Failure reports (`ruf=`) are never sent: they carry parts of "
        "people's messages.",
        default=True,
    )
    dmarc_report_org: str = setting(
        "The reporting organization's name in the reports (`org_name`); empty: "
        "`server.hostname`.",
        default="",
    )
    dmarc_report_from: str = setting(
        "From: and envelope sender of the reports, also their contact `email`; empty: "
        "`noreply-dmarc@<server.hostname>`. Reports are DKIM-signed with the keys of its "
        "domain (or of the local domain it is a subdomain of).",
        default="",
    )
    dmarc_report_address: str = setting(
        "An address of a local domain where aggregate reports from other receivers arrive "
        "(the `rua=` of your own DMARC records, e.g. `dmarc-reports@example.org`): the MX "
        "accepts it even if no account has it, reads the reports attached (zip, gzip or XML) "
        "into the store (`postkeep dmarc reports`), and delivers the message too when the "
        "address reaches an account. Empty: no report intake.",
        default="",
    )


def parse_codes(path: str, codes: list[str]) -> dict[str, tuple[str, float | None]]:
    """`codes` entries as {CIDR: (label, weight or None)}; ConfigError naming the entry."""
    out: dict[str, tuple[str, float | None]] = {}
    for i, entry in enumerate(codes):
        code, eq, meaning = entry.partition("=")
        label, colon, weight = meaning.partition(":")
        try:
            ipaddress.ip_network(code.strip())
            value = float(weight) if colon else None
        except ValueError:
            raise ConfigError(f"{path}[{i}]", 'expected "CODE=LABEL" or "CODE=LABEL:WEIGHT", '
                              "CODE an address or CIDR, WEIGHT a number") from None
        if not eq or not label.strip():
            raise ConfigError(f"{path}[{i}]", "names no label")
        out[code.strip()] = (label.strip(), value)
    return out


def validate_inbound(inbound: InboundConfig) -> None:
    for i, net in enumerate(inbound.trusted_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"inbound.trusted_networks[{i}]", "expected a CIDR") from None
    for key in ("dmarc_reject", "dmarc_quarantine"):
        if getattr(inbound, key) not in DMARC_ACTIONS:
            raise ConfigError(f"inbound.{key}", f"must be one of {', '.join(DMARC_ACTIONS)}")
    if inbound.dmarc_org_domain not in ORG_DOMAIN_METHODS:
        raise ConfigError("inbound.dmarc_org_domain", 'must be "tree-walk" or "psl"')
    if inbound.arc_seal and not inbound.arc:
        raise ConfigError("inbound.arc_seal", "needs inbound.arc: a seal states the chain's "
                          "status, which only validation knows")
    for i, name in enumerate(inbound.arc_trusted_sealers):
        if not _SEALER.fullmatch(name) or len(name) > 253:
            raise ConfigError(f"inbound.arc_trusted_sealers[{i}]",
                              "expected a domain name in A-labels, e.g. \"lists.example.org\"")
    if inbound.check_timeout <= 0:
        raise ConfigError("inbound.check_timeout", "must be greater than 0")
    for key in ("dnsbl", "uribl"):
        if getattr(inbound, f"{key}_threshold") <= 0:
            raise ConfigError(f"inbound.{key}_threshold", "must be greater than 0")
        for i, dl in enumerate(getattr(inbound, key)):
            if not dl.zone or " " in dl.zone:
                raise ConfigError(f"inbound.{key}[{i}].zone", "must name the list's zone")
            parse_codes(f"inbound.{key}[{i}].codes", dl.codes)
    for key in ("dmarc_report_from", "dmarc_report_address"):
        value = getattr(inbound, key)
        local, at, domain = value.rpartition("@")
        if value and (not at or not local or "." not in domain or " " in value):
            raise ConfigError(f"inbound.{key}", "must be an address (local@domain)")
