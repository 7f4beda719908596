"""Migration 8: DKIM signing keys (frozen copy; never edit).

``dkim_keys``: one row per (domain, selector); the private key (PKCS#8 PEM) sealed under the
instance's DKIM data key (``meta`` row ``dkim_data_key``, wrapped by the master key) with the
domain and selector as AAD; the public value as published (the ``p=`` of RFC 6376 §3.6.1);
``active_from``: when it starts signing (a rotated-in key waits for DNS to carry it).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from postkeep.store.sql.migrations import Migration


def _upgrade(conn: Connection) -> None:
    md = MetaData()
    big = BigInteger().with_variant(Integer, "sqlite")
    Table(
        "dkim_keys",
        md,
        Column("id", big, primary_key=True),
        Column("domain", String(255), nullable=False),
        Column("selector", String(63), nullable=False),
        Column("algorithm", String(32), nullable=False),
        Column("private_key", LargeBinary, nullable=False),
        Column("public_key", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("active_from", Double, nullable=False),
        UniqueConstraint("domain", "selector", name="uq_dkim_keys_domain_selector"),
        sqlite_autoincrement=True,
    )
    md.create_all(conn)


MIGRATION = Migration(8, "DKIM signing keys", _upgrade)
