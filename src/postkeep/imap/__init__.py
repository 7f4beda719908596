"""The IMAP server: mailbox views, search, rendering, sessions and the asyncio driver."""
