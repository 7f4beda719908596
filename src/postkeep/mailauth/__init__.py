"""Message authentication: DKIM signing and verification (RFC 6376, RFC 8463 for Ed25519).

`mailauth.dkim` is sans-IO like the wire cores: functions over bytes, no sockets, no DNS, no
store; `mailauth.dkim_check` verifies a message's signatures with the keys fetched through
the shared resolver (`postkeep.dns`). The cryptography comes from `cryptography` (RSA,
Ed25519) and `hashlib` (SHA-256), nothing else.
"""
