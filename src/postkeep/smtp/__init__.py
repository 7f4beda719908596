"""SMTP (RFC 5321) for both roles, MX and submission: the sans-IO core in `wire/`, the asyncio
driver in `server.py`."""
