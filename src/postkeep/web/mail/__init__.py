"""The webmail: its pages and what they do, under ``/mail/`` of the HTTPS listener.

`compose` (the compose form, sending through the submission pipeline, drafts), `build`
(sans-IO: its messages made and read), `drafts` (the account's Sent and Drafts mailboxes and
its own messages, found by id), `actions` (``POST /mail/actions``: move, copy, flags, delete,
archive, junk; the store's own operations, as IMAP uses them), `push` (``GET /mail/events``:
the account's mailbox events as Server-Sent Events). Every handler finds the account through
the session and every mailbox and message id among that account's own.
"""
