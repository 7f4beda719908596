"""The webmail (docs/architecture.md, "Web"): `compose` (the compose form, sending through the
submission pipeline, drafts), `build` (sans-IO: its messages made and read), `drafts` (the
account's Sent and Drafts mailboxes and its own messages, found by id)."""
