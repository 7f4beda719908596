"""`smtp.spool_threshold` and `smtp.max_data_in_flight` (postkeep.smtp.intake), validated at
load: a budget must hold at least a text that is still in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from postkeep import config
from postkeep.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "postkeep.toml"
    path.write_text(f"[smtp]\n{text}\n")
    return config.load(path)


def test_defaults_fit_a_small_server(tmp_path: Path) -> None:
    smtp = _load(tmp_path, "").smtp
    assert (smtp.spool_threshold, smtp.max_data_in_flight) == (1 << 20, 256 << 20)
    smallest = _load(tmp_path, "spool_threshold = 0\nmax_data_in_flight = 65536").smtp
    assert (smallest.spool_threshold, smallest.max_data_in_flight) == (0, 65536)


@pytest.mark.parametrize(("text", "key"), [
    ("spool_threshold = -1", "spool_threshold"),
    ("spool_threshold = 2097152\nmax_data_in_flight = 1048576", "max_data_in_flight"),
    ("max_data_in_flight = 65535\nspool_threshold = 0", "max_data_in_flight"),
])
def test_out_of_range_is_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^smtp\.{key}: must "):
        _load(tmp_path, text)
