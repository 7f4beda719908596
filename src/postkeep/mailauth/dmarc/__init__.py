"""DMARC (RFC 9989, which obsoletes RFC 7489): policy records, discovery (the DNS Tree Walk or
the Public Suffix List) and the verdict for one message from its SPF and DKIM results."""

from postkeep.mailauth.dmarc.discover import OrgDomainMethod, TempError, org_domain
from postkeep.mailauth.dmarc.evaluate import DmarcVerdict, author_domain, evaluate
from postkeep.mailauth.dmarc.record import DmarcRecord, Policy, parse_record

__all__ = [
    "DmarcRecord",
    "DmarcVerdict",
    "OrgDomainMethod",
    "Policy",
    "TempError",
    "author_domain",
    "evaluate",
    "org_domain",
    "parse_record",
]
