"""The sans-IO IMAP core (RFC 9051): framing, lexer, parser into typed commands, and the
rendering of strings, literals and sets.

Never imports asyncio, sockets, the store, config, net or policy (the `wire` contract of
`make lint`, pyproject.toml [tool.importlinter])."""
