"""DKIM (RFC 6376; Ed25519, RFC 8463): canon (§3.4 canonicalisation, the body hash), sign
(§5: the DKIM-Signature header field), keys (key pairs, PEM, the selector's TXT record), tags
(§3.2 tag lists, the signature's and the key record's tags), verify (§6: a message's
signatures checked against the key records the caller looked up).
"""
