"""SASL (RFC 4422) server mechanisms, sans-IO: bytes in, typed steps out.

Used by every protocol that authenticates (SMTP AUTH, IMAP AUTHENTICATE). Never imports
asyncio, sockets, the store, config or policy: `postkeep.auth.exchange` drives a mechanism and
resolves what it asks for (a password check, stored secrets).
"""
