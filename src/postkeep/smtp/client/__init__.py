"""The outbound SMTP client: the sans-IO core in `framing` (replies in, message text out) and
`protocol` (capabilities, the session's opening, a mail transaction), and the thin asyncio
driver in `session`.

The core never imports asyncio, sockets or ssl (the `wire` contract of `make lint`), and no part
of the client imports the SMTP server's driver or the store (the `smtp-client` contract)."""
