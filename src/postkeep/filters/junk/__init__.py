"""The built-in junk filter that learns (docs/architecture.md, "The junk filter").

- `junk.message`: the message read for it, bounded (header fields, text, HTML's visible and
  hidden text and links, attachments);
- `junk.inspect`: zip listings and image headers, bounded, nothing extracted;
- `junk.rules`: the rules, each a named function giving symbols and scores: structural ones
  there, header and encoding ones in `junk.headers`, phrases and text shape in
  `junk.content` (`junk.base`: what they share);
- `junk.classifier`: the tokens and the Robinson/Fisher naive Bayes over them;
- `junk.filter`: the `filters.base.Filter` combining them with the allow/block lists and
  correspondents;
- `junk.training`: learning from IMAP COPY and MOVE into and out of Junk.
"""
