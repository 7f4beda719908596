"""ARC, the Authenticated Received Chain (RFC 8617): headers (the three fields parsed, a
message's ARC Sets collected and their form checked, §4, §5.2), verify (§5.2 chain validation,
sans-IO like `dkim.verify`), seal (§5.1: the ARC Set a sealer adds). Keys are DKIM's
(`dkim.keys`, `dkim.tags`); `mailauth.arc_check` fetches them through the shared resolver.
"""
