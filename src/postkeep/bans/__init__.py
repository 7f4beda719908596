"""Brute-force protection: strikes counted per client address and network, and the escalating
temporary bans they lead to (docs/architecture.md "Bans").

`policy` (sans-IO: keys, thresholds, escalation), `ledger` (where strikes and bans are kept:
memory and the store, or Redis), `keeper` (the authority, each process's copy of the bans, and
the `Guard` the protocol servers call).
"""
