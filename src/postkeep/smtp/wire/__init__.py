"""The sans-IO SMTP server core: command grammar, session state machine, reply rendering.

Bytes in, typed events out. Never imports asyncio, sockets, the store, config, net or policy
(the `wire` contract of `make lint`, pyproject.toml [tool.importlinter])."""
