"""The milter protocol (Sendmail's libmilter, version 6), MTA side: postkeep asks milters
such as OpenDKIM, clamav-milter or rspamd about each message, as a content filter
(docs/architecture.md, "Content filters", "Milters").

- `filters.milter.wire`: packets, commands and replies, sans-IO;
- `filters.milter.session`: one message's conversation (steps, macros, what each reply
  means), sans-IO;
- `filters.milter.client`: the conversation over a unix or TCP socket;
- `filters.milter.filter`: `MilterFilter`, the `filters.base.Filter` over a milter.
"""
