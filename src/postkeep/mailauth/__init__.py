"""Message authentication: the checks of where mail comes from, and DKIM signing.

- `dkim` (sans-IO: bytes and keys in, fields and verdicts out): signing and verification,
  RFC 6376 and RFC 8463 (Ed25519); `dkim_check` verifies a message's signatures with the keys
  fetched through the shared resolver.
- `spf`: RFC 7208 `check_host` over the resolver.
- `arc` (sans-IO): RFC 8617 chain validation and sealing; `arc_check` validates a message's
  chain with the keys fetched through the shared resolver.
- `dmarc`: RFC 9989 (tree walk, or RFC 7489's Public Suffix List), alignment and the verdict.
- `dnsbl` (RFC 5782 lists for IPs and domains), `uridomains` (the domains a text links to),
  `iprev` (RFC 8601 §3), `authres` (the Authentication-Results field, forged ones removed).

None of it opens a socket or reads config: the resolver is passed in (typed by a Protocol of
the lookups each needs, so `postkeep.dns.DnsResolver` or a test's stand-in), settings arrive as
values, and `delivery.authentication` runs them for the MX.
"""
