"""`server.processes` (how many worker processes serve the listeners, postkeep.server.pool)
and `imap.message_cache_size`, validated at load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postkeep import config
from postkeep.errors import ConfigError


def _load(tmp_path: Path, processes: int) -> config.Config:
    path = tmp_path / "postkeep.toml"
    path.write_text(f"[server]\nprocesses = {processes}\n")
    return config.load(path)


def test_processes_default_is_one_per_core(tmp_path: Path) -> None:
    assert _load(tmp_path, 0).processes() == max(1, min(len(os.sched_getaffinity(0)), 8))
    assert _load(tmp_path, 1).processes() == 1
    assert _load(tmp_path, 3).processes() == 3


@pytest.mark.parametrize("bad", [-1, 65])
def test_processes_out_of_range_is_refused(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ConfigError, match=r"^server\.processes: must be 0 \(one per CPU core\)"):
        _load(tmp_path, bad)


def test_the_key_of_earlier_releases_names_its_new_place(tmp_path: Path) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text("[imap]\nprocesses = 2\n")
    with pytest.raises(ConfigError, match=r"^imap\.processes: moved to server\.processes"):
        config.load(path)


@pytest.mark.parametrize("bad", [-1, (1 << 34) + 1])
def test_message_cache_size_out_of_range_is_refused(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "postkeep.toml"
    path.write_text(f"[imap]\nmessage_cache_size = {bad}\n")
    with pytest.raises(ConfigError, match=r"^imap\.message_cache_size: must be 0 \(off\)"):
        config.load(path)
    path.write_text("[imap]\nmessage_cache_size = 0\n")
    assert config.load(path).imap.message_cache_size == 0
