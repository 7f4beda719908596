"""DNS lookups for mail: outbound delivery (MX, RFC 5321 §5.1; MTA-STS, RFC 8461; DANE,
RFC 7672) and inbound checks (SPF, DKIM, DMARC, DNSBL, PTR).

`DnsResolver` (resolver) answers with typed outcomes (results): `Answer`, `NxDomain`, `NoData`,
or `TempFail`, on which a caller defers and never bounces. names checks and converts names
(IDNA A-labels, RFC 1035 lengths), cache keeps outcomes for their TTLs (RFC 2308 §5 for the
negative ones). docs/architecture.md, "DNS", tells what is cached and why, and when the AD bit
is trusted.
"""

from postkeep.dns.names import InvalidName, query_name
from postkeep.dns.resolver import DnsResolver
from postkeep.dns.results import MX, SRV, TLSA, Answer, NoData, NxDomain, Result, TempFail

__all__ = [
    "MX",
    "SRV",
    "TLSA",
    "Answer",
    "DnsResolver",
    "InvalidName",
    "NoData",
    "NxDomain",
    "Result",
    "TempFail",
    "query_name",
]
