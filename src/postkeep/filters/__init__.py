"""Content filters: scanners that read a whole message after its end-of-data and say what to
do with it (docs/architecture.md, "Content filters").

- `filters.base`: the interface (`Filter.scan(message, context) -> FilterResult`), the
  context a filter sees, and `FilterRunner`, which runs a direction's filters in order, each
  within its timeout and with its fail mode, and combines their results;
- `filters.headers`: the header fields that report the results (``X-Virus-Scanned``,
  ``X-Spam-Status``) and the removal of forged ones that name this host;
- `filters.clamd_protocol`: clamd's INSTREAM framing and replies, sans-IO;
- `filters.clamav`: the antivirus filter, a clamd client over a unix or TCP socket;
- `filters.edits`: the changes a filter may ask for and their application to the text;
- `filters.junk`: the built-in junk filter that learns (rules, a Bayes classifier trained
  over IMAP, allow/block lists and correspondents);
- `filters.milter`: the milter protocol (v6) client and its filter (`[[filters.milter]]`);
- `filters.sockets`: how a filter reaches a scanner outside the process (unix or TCP);
- `filters.setup`: the runners `[filters]`, `[antivirus]` and `[junk]` configure, one per
  direction.

Filters hold no SMTP: `policy.content` turns a combined result into the reply, and the
inbound pipeline (`delivery.inbound`, its ``scan`` stage) asks them.
"""
