"""`[inbound]` ARC settings: sealer names must be domain names, sealing needs validation."""

from __future__ import annotations

import pytest

from postkeep.config.inbound import InboundConfig, validate_inbound
from postkeep.errors import ConfigError


def test_defaults_validate_and_seal_off() -> None:
    cfg = InboundConfig()
    validate_inbound(cfg)
    assert (cfg.arc, cfg.arc_seal, cfg.arc_trusted_sealers) == (True, False, [])


def test_domain_sealers_accepted() -> None:
    validate_inbound(InboundConfig(arc_trusted_sealers=["lists.example.org", "Groups.Example."]))


@pytest.mark.parametrize("bad", ["", "example", "lists example.org", "*.example.org",
                                 "a" * 64 + ".example"])
def test_a_sealer_that_is_no_domain_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"inbound\.arc_trusted_sealers\[1\]"):
        validate_inbound(InboundConfig(arc_trusted_sealers=["ok.example", bad]))


def test_sealing_needs_validation() -> None:
    with pytest.raises(ConfigError, match=r"inbound\.arc_seal"):
        validate_inbound(InboundConfig(arc=False, arc_seal=True))
