"""Migration 12: DMARC aggregate reports (RFC 7489 §7.2, RFC 9990) (frozen copy; never edit).

* ``dmarc_results``: DMARC evaluations of the MX counted per policy domain, UTC day (its start,
  seconds since the epoch) and row (`detail`: source IP, identifiers, authentication results
  and the policy evaluated, as JSON; `key` its SHA-256, hex), added to by upserts.
* ``dmarc_sent``: one row per (domain, day) whose report was queued (`queue_id`) or found to
  have no one to go to (`queue_id` NULL), inserted in the transaction that queues it.
* ``dmarc_feedback``: aggregate reports received at `[inbound] dmarc_report_address`, one row
  per (org_name, report_id, domain): the reporting organization, the period, the counts of
  messages that passed and failed DMARC, and the records as JSON.
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
    UniqueConstraint,
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table(
        "dmarc_results",
        md,
        Column("domain", String(255), primary_key=True),
        Column("day", BigInteger, primary_key=True),
        Column("key", String(64), primary_key=True),
        Column("detail", Text, nullable=False),
        Column("count", Integer, nullable=False),
    )
    Table(
        "dmarc_sent",
        md,
        Column("domain", String(255), primary_key=True),
        Column("day", BigInteger, primary_key=True),
        Column("queue_id", String(64), nullable=True),
        Column("sent_at", Double, nullable=False),
    )
    Table(
        "dmarc_feedback",
        md,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        Column("org_name", String(255), nullable=False),
        Column("email", String(320), nullable=False),
        Column("report_id", String(255), nullable=False),
        Column("domain", String(255), nullable=False),
        Column("begin", BigInteger, nullable=False),
        Column("end", BigInteger, nullable=False),
        Column("passed", BigInteger, nullable=False),
        Column("failed", BigInteger, nullable=False),
        Column("records", Text, nullable=False),
        Column("received_at", Double, nullable=False),
        UniqueConstraint("org_name", "report_id", "domain", name="uq_dmarc_feedback_report"),
        sqlite_autoincrement=True,
    )
    md.create_all(conn)


MIGRATION = Migration(12, "DMARC aggregate reports", _upgrade)
