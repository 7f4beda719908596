"""Migration 7: what the delivery workers keep on an outbound queue entry (frozen copy; never edit).

* ``held``: an operator put the entry on hold (`postkeep queue hold`): no worker picks it.
* ``lease_owner`` / ``lease_until``: the worker ("host:pid") delivering it right now, and until
  when that claim stands; a crashed worker's claims are released when its node starts again,
  or lapse at ``lease_until``.
* ``delay_notified``: the delay notice (RFC 3464 action "delayed") was sent.
* ``requiretls``: the submission asked for REQUIRETLS (RFC 8689 §4.1).
* an index on ``(held, next_attempt)`` for the workers' pick.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    false = "FALSE" if conn.dialect.name == "postgresql" else "0"
    for column in (
        f"held BOOLEAN NOT NULL DEFAULT {false}",
        "lease_owner VARCHAR(128)",
        "lease_until DOUBLE PRECISION",
        f"delay_notified BOOLEAN NOT NULL DEFAULT {false}",
        f"requiretls BOOLEAN NOT NULL DEFAULT {false}",
    ):
        conn.execute(text(f"ALTER TABLE outbound_queue ADD COLUMN {column}"))
    conn.execute(text("CREATE INDEX ix_outbound_queue_due ON outbound_queue (held, next_attempt)"))


MIGRATION = Migration(7, "delivery state on outbound queue entries", _upgrade)
