"""Delivery: putting accepted messages where they go (local mailboxes; later the outbound queue)."""
