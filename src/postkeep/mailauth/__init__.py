"""Message authentication: DKIM signing (RFC 6376, RFC 8463 for Ed25519; `mailauth.dkim`).

Sans-IO like the wire cores: functions over bytes, no sockets, no DNS, no store. The
cryptography comes from `cryptography` (RSA, Ed25519) and `hashlib` (SHA-256), nothing else.
"""
