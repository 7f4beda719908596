"""Where a store keeps its blobs, for the tests: inline in ``blobs.data`` or as files."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, select

from postkeep.store.sql.schema import blobs


def blob_files(data_dir: Path) -> list[Path]:
    """The blob files under ``<data_dir>/blobs/ab/cd/`` (not the spools and tmp files)."""
    return [p for p in (data_dir / "blobs").glob("*/*/*") if p.is_file()]


def stored_blobs(db_url: str, data_dir: Path) -> dict[str, str]:
    """blob id -> "inline" (in its row, no file), "file" (a row without data, and its file),
    "both" (data and a file: wrong), "missing" (neither) or "orphan" (a file without a row)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = {r[0]: r[1] for r in conn.execute(select(blobs.c.id, blobs.c.data))}
    finally:
        engine.dispose()
    files = {p.name for p in blob_files(data_dir)}
    kinds = {(True, False): "inline", (False, True): "file", (True, True): "both",
             (False, False): "missing"}
    out = {blob_id: kinds[(data is not None, blob_id in files)] for blob_id, data in rows.items()}
    out.update({name: "orphan" for name in files if name not in rows})
    return out


def inline_data(db_url: str, blob_id: str) -> bytes:
    """The inline blob `blob_id` as stored (ciphertext)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return bytes(
                conn.execute(select(blobs.c.data).where(blobs.c.id == blob_id)).scalar_one()
            )
    finally:
        engine.dispose()
