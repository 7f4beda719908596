"""DKIM signing (RFC 6376; Ed25519, RFC 8463): canon (§3.4 canonicalisation, the body hash),
sign (§5: the DKIM-Signature header field), keys (key pairs, PEM, the selector's TXT record).
"""
