"""Migration 10: TLS reporting (RFC 8460) (frozen copy; never edit).

* ``tlsrpt_results``: TLS outcomes of outbound sessions counted per policy domain, UTC day (its
  start, seconds since the epoch) and result (`detail`: the policy applied, the result type or
  success, the MX host and address, as JSON; `key` its SHA-256, hex), added to by upserts.
* ``tlsrpt_sent``: one row per (domain, day) whose report was queued (`queue_id`) or found to
  have no one to go to (`queue_id` NULL), inserted in the transaction that queues it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table(
        "tlsrpt_results",
        md,
        Column("domain", String(255), primary_key=True),
        Column("day", BigInteger, primary_key=True),
        Column("key", String(64), primary_key=True),
        Column("detail", Text, nullable=False),
        Column("count", Integer, nullable=False),
    )
    Table(
        "tlsrpt_sent",
        md,
        Column("domain", String(255), primary_key=True),
        Column("day", BigInteger, primary_key=True),
        Column("queue_id", String(64), nullable=True),
        Column("sent_at", Double, nullable=False),
    )
    md.create_all(conn)


MIGRATION = Migration(10, "TLS reports", _upgrade)
