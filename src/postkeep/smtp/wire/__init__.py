"""The sans-IO SMTP server core: command grammar, session state machine, reply rendering.

Bytes in, typed events out. Never imports asyncio, sockets, the store, config, net or policy
(checked by `tests/unit/test_layering.py`)."""
