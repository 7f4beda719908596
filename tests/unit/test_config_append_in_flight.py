"""`imap.max_append_in_flight` (postkeep.imap.server), validated at load: the budget must hold
at least one message of `imap.max_append_size`, or the largest APPEND could never fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from postkeep import config
from postkeep.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "postkeep.toml"
    path.write_text(f"[imap]\n{text}\n")
    return config.load(path)


def test_default_and_smallest(tmp_path: Path) -> None:
    imap = _load(tmp_path, "").imap
    assert (imap.max_append_size, imap.max_append_in_flight) == (50 << 20, 256 << 20)
    smallest = _load(tmp_path, "max_append_size = 1000\nmax_append_in_flight = 1000").imap
    assert smallest.max_append_in_flight == 1000


def test_smaller_than_one_append_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^imap\.max_append_in_flight: must be at least "):
        _load(tmp_path, "max_append_size = 1001\nmax_append_in_flight = 1000")
