"""`postkeep dns DOMAIN [--check]`: the DNS records a local domain needs, and whether DNS
serves them.

Printed as zone-file lines (absolute names), each with a comment saying what it is for:

- MX (RFC 5321 §5.1) to `server.hostname`, whose A/AAAA records must exist;
- SPF (RFC 7208): ``v=spf1 mx -all``, the MX hosts send the domain's mail and nothing else;
- DKIM (RFC 6376 §3.6.2): every selector to publish (signing, the next one, retired ones
  still verifying mail in transit), as `postkeep dkim show` prints them;
- DMARC (RFC 9989): ``p=reject`` with aggregate reports to postmaster@DOMAIN;
- MTA-STS (RFC 8461 §3.1): the ``_mta-sts`` TXT record, its id a digest of the policy of
  `[mta_sts]` (`postkeep.config.mtasts`), which the web listener serves at
  ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` once `mta_sts.mode` is set (unset: the
  record is printed for the `enforce` policy, to publish once it is served);
- the web host names clients ask (with `[web]` listening): ``autoconfig.DOMAIN``
  (Thunderbird), ``autodiscover.DOMAIN`` (Outlook) and ``mta-sts.DOMAIN``, as CNAMEs to
  `server.hostname` (--check: that each has an address), and the ``_autodiscover._tcp`` SRV
  record;
- TLS-RPT (RFC 8460 §3): reports to postmaster@DOMAIN;
- client autoconfiguration SRV records (RFC 6186, RFC 8314 §5.1) for the submission and IMAP
  listeners configured, and "." targets for POP3, which postkeep does not serve.

`--check` asks the configured resolver (`[dns]`) for each and prints one line per record:
``ok``, ``MISSING`` or ``DIFFERS`` (what DNS has, and what was expected); exit status 1 when
any record is missing or wrong, 0 otherwise. A temporary DNS failure is reported as such
(``UNKNOWN``), and counts as a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postkeep.cli.common import CliError, check_domain, load_config, with_store
from postkeep.config import Config, parse_listen
from postkeep.dns.names import query_name

if TYPE_CHECKING:  # imported by the commands when they run (`postkeep.cli`'s docstring)
    from postkeep.dns import SRV, DnsResolver
    from postkeep.store.api import Store

_TXT_STRING = 255


@dataclass(frozen=True, slots=True)
class Record:
    """One record to publish: `name` absolute (trailing dot), `rtype`, `value` as a zone file
    writes it (TXT: the text, unquoted), `what` the comment, `prefix` the start of the TXT
    record it replaces (how --check finds it among a name's TXT records)."""

    name: str
    rtype: str
    value: str
    what: str
    prefix: str = ""

    def line(self) -> str:
        if self.rtype == "TXT":
            value = " ".join(f'"{self.value[i:i + _TXT_STRING]}"'
                             for i in range(0, len(self.value), _TXT_STRING))
        else:
            value = self.value
        return f"{self.name} IN {self.rtype} {value}"


def _port(listen: list[str]) -> int | None:
    return parse_listen(listen[0])[1] if listen else None


async def records(cfg: Config, store: Store, domain: str, now: float) -> list[Record]:
    """Every record `domain` needs (see the module docstring)."""
    from postkeep.delivery.signing import key_states
    from postkeep.mailauth.dkim.keys import dns_record, load_private_key

    d = query_name(domain) + "."
    sts = cfg.mta_sts if cfg.mta_sts.mode else dataclasses.replace(cfg.mta_sts, mode="enforce")
    served = "the policy served" if cfg.mta_sts.mode else "once [mta_sts] mode serves the policy"
    host = query_name(cfg.server.hostname) + "."
    out = [
        Record(d, "MX", f"10 {host}", "mail for the domain goes to this server"),
        Record(d, "TXT", "v=spf1 mx -all", "SPF: only the MX hosts send the domain's mail",
               "v=spf1"),
    ]
    keys = await store.list_dkim_keys(domain)
    for state in key_states(keys, now, cfg.dkim.retire_after):
        if state.state == "expired":
            continue
        key = state.key
        private = load_private_key(await store.dkim_private_key(domain, key.selector))
        out.append(Record(f"{key.selector}._domainkey.{d}", "TXT", dns_record(private),
                          f"DKIM {key.algorithm} key ({state.state})", "v=DKIM1"))
    out += [
        Record(f"_dmarc.{d}", "TXT",
               f"v=DMARC1; p=reject; rua=mailto:postmaster@{domain}",
               "DMARC: unauthenticated mail in the domain's name is refused", "v=DMARC1"),
        Record(f"_mta-sts.{d}", "TXT", f"v=STSv1; id={sts.policy_id(cfg.server.hostname)}",
               f"MTA-STS, {served} at https://mta-sts.{domain}/.well-known/mta-sts.txt: "
               + " | ".join(sts.policy(cfg.server.hostname).splitlines()), "v=STSv1"),
        Record(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:postmaster@{domain}",
               "TLS-RPT: daily TLS reports from senders", "v=TLSRPTv1"),
    ]
    for service, port in (("_submissions._tcp", _port(cfg.submission.tls_listen)),
                          ("_submission._tcp", _port(cfg.submission.listen)),
                          ("_imaps._tcp", _port(cfg.imap.tls_listen)),
                          ("_imap._tcp", _port(cfg.imap.listen))):
        if port is not None:
            out.append(Record(f"{service}.{d}", "SRV", f"0 1 {port} {host}",
                              "client autoconfiguration (RFC 6186)"))
    for service in ("_pop3._tcp", "_pop3s._tcp"):
        out.append(Record(f"{service}.{d}", "SRV", "0 0 0 .", "no POP3 here (RFC 6186 §4)"))
    if cfg.web.listen:
        for name, what in (("autoconfig", "Thunderbird's autoconfig"),
                           ("autodiscover", "Outlook's Autodiscover"),
                           ("mta-sts", "the MTA-STS policy")):
            out.append(Record(f"{name}.{d}", "CNAME", host,
                              f"{what} (the web listener; its certificate must name it)"))
        port = cfg.web.https_port or parse_listen(cfg.web.listen[0])[1]
        out.append(Record(f"_autodiscover._tcp.{d}", "SRV", f"0 1 {port} {host}",
                          "Autodiscover for Outlook and others"))
    return out


def _srv(rd: SRV) -> str:
    target = "." if rd.target == "." else rd.target + "."
    return f"{rd.priority} {rd.weight} {rd.port} {target}"


async def check(resolver: DnsResolver, cfg: Config, wanted: list[Record]) -> list[str]:
    """One line per record: ok, MISSING, DIFFERS or UNKNOWN (see the module docstring)."""
    from postkeep.dns import Answer, TempFail

    lines = []
    host = query_name(cfg.server.hostname)
    found = [await resolver.a(host), await resolver.aaaa(host)]
    if any(isinstance(f, Answer) for f in found):
        lines.append(f"ok       A/AAAA {host}.")
    elif any(isinstance(f, TempFail) for f in found):
        lines.append(f"UNKNOWN  A/AAAA {host}.: lookup failed")
    else:
        lines.append(f"MISSING  A/AAAA {host}.: the MX host has no address")
    for record in wanted:
        name = record.name.rstrip(".")
        if record.rtype == "CNAME":  # whatever points it here: it must have an address
            lines.append(await _has_address(resolver, name, record))
            continue
        outcome = await resolver.lookup(name, record.rtype)
        label = f"{record.rtype} {record.name}"
        if isinstance(outcome, TempFail):
            lines.append(f"UNKNOWN  {label}: {outcome.reason}")
            continue
        have: list[str] = []
        if isinstance(outcome, Answer):
            if record.rtype == "TXT":
                have = [bytes(t).decode("ascii", "replace") for t in outcome.records
                        if bytes(t).startswith(record.prefix.encode())]
            elif record.rtype == "MX":
                have = [f"{mx.preference} {mx.exchange}." for mx in outcome.records]
            else:
                have = [_srv(rd) for rd in outcome.records]
        lines.append(_verdict(record, label, have))
    return lines


async def _has_address(resolver: DnsResolver, name: str, record: Record) -> str:
    from postkeep.dns import Answer, TempFail

    found = [await resolver.a(name), await resolver.aaaa(name)]
    if any(isinstance(f, Answer) for f in found):
        return f"ok       A/AAAA {record.name}"
    if any(isinstance(f, TempFail) for f in found):
        return f"UNKNOWN  A/AAAA {record.name}: lookup failed"
    return f"MISSING  A/AAAA {record.name}: expected CNAME {record.value} or its addresses"


def _verdict(record: Record, label: str, have: list[str]) -> str:
    if not have:
        return f"MISSING  {label}: expected {record.value!r}"
    if record.rtype == "MX":
        ok = any(h.split(" ", 1)[1] == record.value.split(" ", 1)[1] for h in have)
    elif record.prefix in ("v=STSv1", "v=DMARC1", "v=TLSRPTv1"):
        ok = len(have) == 1  # their contents are the operator's choice; one must exist
    else:
        ok = have == [record.value]
    if ok:
        return f"ok       {label}"
    return f"DIFFERS  {label}: DNS has {' | '.join(have)!r}, expected {record.value!r}"


def cmd_dns(args: argparse.Namespace) -> int:
    from postkeep.dns import DnsResolver

    cfg = load_config(args)
    domain = check_domain(args.domain)

    async def act(store: Store) -> tuple[list[Record], list[str]]:
        if await store.get_domain(domain) is None:
            raise CliError(f"{domain} is not a local domain")
        wanted = await records(cfg, store, domain, time.time())
        return wanted, (await check(DnsResolver(cfg.dns), cfg, wanted)) if args.check else []

    wanted, checked = with_store(args, act)
    if not args.check:
        for record in wanted:
            print(f"; {record.what}")
            print(record.line())
        return 0
    print("\n".join(checked))
    return 1 if any(not line.startswith("ok") for line in checked) else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dns", help="the DNS records a domain needs (--check: as DNS serves)")
    p.add_argument("domain")
    p.add_argument("--check", action="store_true",
                   help="compare with what the configured resolver answers")
    p.set_defaults(func=cmd_dns)
