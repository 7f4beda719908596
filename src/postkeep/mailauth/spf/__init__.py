"""SPF, RFC 7208: is this client allowed to use this domain in HELO or MAIL FROM?

`check_mailfrom` (§2.4) and `check_helo` (§2.3) run `check_host` (§4) through a resolver
(`SpfResolver`: what of `postkeep.dns.DnsResolver` SPF needs) and return an `SpfResult`
(§2.6). `received_spf` (§9.1) and `authentication_results` (§9.2, RFC 8601) record it.
Modules: record (parsing, §4.5, §4.6.1, §5, §6), macros (§7), check (evaluation, §4, §5,
§6), headers (§9). docs/architecture.md, "Inbound checks: SPF", says why our own.
"""

from postkeep.mailauth.spf.check import (
    DEFAULT_TIMEOUT,
    Spf,
    SpfResolver,
    SpfResult,
    check_helo,
    check_host,
    check_mailfrom,
)
from postkeep.mailauth.spf.headers import authentication_results, received_spf

__all__ = [
    "DEFAULT_TIMEOUT",
    "Spf",
    "SpfResolver",
    "SpfResult",
    "authentication_results",
    "check_helo",
    "check_host",
    "check_mailfrom",
    "received_spf",
]
