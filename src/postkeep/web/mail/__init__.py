"""The webmail: its pages and what they do, under ``/mail/`` of the HTTPS listener.

`pages` (the read side: mailboxes, message lists paged, sorted, searched and threaded, the
reading view with its sanitised HTML frame, attachment downloads, in the layout of
templates/mail.html), `compose` (the compose form, sending through the submission pipeline,
drafts), `build` (sans-IO: its messages made and read), `drafts` (the account's Sent and
Drafts mailboxes and its own messages, found by id), `actions` (``POST /mail/actions``: move,
copy, flags, delete, archive, junk; the store's own operations, as IMAP uses them), `push`
(``GET /mail/events``: the account's mailbox events as Server-Sent Events). Every handler
finds the account through the session and every mailbox and message id among that account's
own.
"""
