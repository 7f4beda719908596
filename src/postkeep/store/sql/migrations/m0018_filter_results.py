"""Migration 18: the content filters' per-message record and the junk tokens' age (frozen
copy; never edit).

* ``filter_results``: one row per message the content filters scanned and the store kept
  (delivered, filed into Junk, or held in the quarantine), keyed by its blob (``blob_id``):
  every recipient's copy of a delivery shares the blob, and a COPY or MOVE keeps it, so the
  record follows the message; ON DELETE CASCADE: it goes with the blob, when the last message
  using it is expunged. Columns: the ``direction`` ("in", "out"), the SMTP ``queue_id``, the
  combined ``action`` and ``score``, ``results`` (each filter's name, action, score, symbols
  and status, as a compact JSON list in the order they ran) and when (``created``).
* ``junk_tokens.seen``: the day (days since the epoch, UTC) a message holding the token was
  last learnt, for pruning (`postkeep.filters.junk.pruning`); rows there before this
  migration count as seen on the day it ran.

Follows migration 17: the runner applies the migrations a database has not recorded, in the
order of their numbers.
"""

from __future__ import annotations

import time

from sqlalchemy import (
    Column,
    Connection,
    Double,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    Table("blobs", md, Column("id", String(64), primary_key=True))
    Table(
        "filter_results",
        md,
        Column("blob_id", String(64), ForeignKey("blobs.id", ondelete="CASCADE"),
               primary_key=True),
        Column("direction", String(3), nullable=False),
        Column("queue_id", String(64), nullable=False),
        Column("action", String(10), nullable=False),
        Column("score", Double, nullable=False),
        Column("results", Text, nullable=False),
        Column("created", Double, nullable=False),
    )
    md.create_all(conn)  # checkfirst: the table named for the foreign key exists
    today = int(time.time() // 86400)
    # a constant default: no table rewrite (SQLite's ADD COLUMN, PostgreSQL 11's fast default)
    # (a database made from a later schema already has it: added only where it is missing)
    if "seen" not in {c["name"] for c in inspect(conn).get_columns("junk_tokens")}:
        conn.execute(text(f"ALTER TABLE junk_tokens ADD COLUMN seen INTEGER NOT NULL "
                          f"DEFAULT {today}"))


MIGRATION = Migration(18, "content filter results; junk token age", _upgrade)
