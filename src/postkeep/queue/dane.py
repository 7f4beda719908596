"""DANE for outbound SMTP (RFC 7672): whether an MX host's TLS must be authenticated by its
TLSA records, and the check that does it (the matching is `postkeep.queue.tlsa`).

API (for `postkeep.queue.remote`):

    policy = await dane_for(resolver, host, port)   # before connecting to `host`
    # None            no DANE for this host: TLS as usual (opportunistic, or verified)
    # Outcome         a temporary failure (4.4.3): the host must not be used now, neither
    #                 in clear nor with unauthenticated TLS (RFC 7672 §2.2); try the next
    # DanePolicy      connect with starttls="required", an unverifying context
    #                 (tls_verify="none": DANE replaces PKIX), tls_name=policy.sni and
    #                 peer_check=policy.peer_check; a SessionFailure (4.7.5 when the
    #                 certificate did not match) is temporary: the next host, then later.
    #                 Never retry such a host in clear or without the check.

`DanePolicy.peer_check` is `DanePolicy.check` (a `TlsInfo` in, None when a usable record
authenticated the peer, else why not), or None when every TLSA record was unusable: then TLS
is still mandatory but the peer is not authenticated (RFC 7672 §2.2, RFC 7671 §4.1: with
unusable records only, "the application MUST avoid cleartext"), and the session is not
`authenticated` (REQUIRETLS then still needs a verified certificate).

When DANE applies (RFC 7672 §2.2): the host's address records (AAAA, A) are authenticated
(the DNSSEC-validated AD bit, `[dns] trust_ad`) and so is its TLSA RRset at `_<port>._tcp.<name>`
(RFC 6698 §3). Otherwise:
- address records not authenticated: no DANE, and no TLSA lookup is made (none could
  authenticate the host, and a zone's servers that mishandle TLSA queries cannot then
  delay its mail);
- TLSA NoData or NXDOMAIN (authenticated or not): no DANE;
- a TLSA answer not authenticated (an insecure zone, or the AD bit not trusted): no DANE;
- a failed TLSA lookup (a timeout, SERVFAIL; a validating resolver answers a bogus signature
  with SERVFAIL): a temporary failure, since an attacker can make a lookup fail (§2.2).
CNAMEs (RFC 7672 §2.2.3): when the host's address records came through an authenticated CNAME
chain, TLSA records are first asked at the fully expanded name, then at the host name; the
name at which they were found is the TLSA base domain. SNI is the TLSA base domain (RFC 7672
§8.1), the MX host name unless a CNAME led elsewhere. DANE-TA name checks accept the base
domain and the MX host name (§3.2.2), and whatever the caller adds (`extra_names`: the
destination domain when its MX RRset was authenticated, §3.2.2).

Python before 3.13: `ssl` gives the peer's leaf certificate only, not the chain it sent
(`TlsInfo.peer_certificates` has one entry), so a DANE-TA(2) record cannot match: a host whose
TLSA records are all DANE-TA fails (temporarily, 4.7.5) on every attempt there, while DANE-EE
works. On 3.13 the chain is there and DANE-TA is checked in full.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from postkeep.dns.names import InvalidName
from postkeep.dns.resolver import DnsResolver
from postkeep.dns.results import TLSA, Answer, TempFail
from postkeep.queue import tlsa
from postkeep.queue.outcome import Outcome, temporary
from postkeep.smtp.client.session import TlsInfo


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DanePolicy:
    """DANE applies to `host`: its usable TLSA `records` (found at `base_domain`), empty when
    every record found was unusable. `clock` gives the time DANE-TA paths are checked at."""

    host: str
    base_domain: str
    records: tuple[TLSA, ...]
    names: tuple[str, ...]  # DANE-TA reference identifiers (RFC 7672 §3.2.2)
    clock: Callable[[], datetime] = field(default=_now, compare=False, repr=False)

    @property
    def sni(self) -> str:
        """The `tls_name` to connect with (RFC 7672 §8.1: the TLSA base domain)."""
        return self.base_domain

    @property
    def authenticates(self) -> bool:
        return bool(self.records)

    @property
    def peer_check(self) -> Callable[[TlsInfo], str | None] | None:
        """`connect(peer_check=...)`: `check`, or None with only unusable records."""
        return self.check if self.records else None

    def check(self, info: TlsInfo) -> str | None:
        """None when a usable TLSA record matches the peer's certificates; else why not."""
        problem = tlsa.check(self.records, info.peer_certificates, self.names, self.clock())
        return None if problem is None else f"DANE (TLSA at {self.base_domain}): {problem}"


async def dane_for(resolver: DnsResolver, host: str, port: int = 25, *,
                   extra_names: Sequence[str] = ()) -> DanePolicy | Outcome | None:
    """What DANE requires of a connection to MX host `host` (see the module docstring)."""
    host = host.lower().rstrip(".")
    try:
        six, four = await resolver.aaaa(host), await resolver.a(host)
    except InvalidName:
        return None  # the address lookup says why the host cannot be used
    answers = [r for r in (six, four) if isinstance(r, Answer)]
    if not answers or not all(r.authenticated for r in answers):
        return None
    expanded = answers[0].canonical_name
    for base in dict.fromkeys((expanded, host)):
        name = f"_{port}._tcp.{base}"
        try:
            result = await resolver.tlsa(name)
        except InvalidName:
            continue  # too long a name to hold records
        if isinstance(result, TempFail):
            return temporary("4.4.3", f"DANE: TLSA lookup of {name} failed: {result.reason}")
        if isinstance(result, Answer) and result.authenticated:
            names = tuple(dict.fromkeys((base, host, *extra_names)))
            return DanePolicy(host, base, tlsa.usable(result.records), names)
    return None
