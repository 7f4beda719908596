"""The harness of the in-process server tests: one per test module and store backend.

A module may set `HARNESS_CONFIG` (section -> keys, as `Harness(config=...)`) for limits of its
own. Every harness holds the same directory (`populate`); tests that count messages or change
accounts make accounts of their own (`Harness.new_user`).
"""

from __future__ import annotations

import pytest

from tests.conftest import HARNESS_BACKENDS, HarnessFactory
from tests.harness import Harness

DOMAIN = "example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
POSTMASTER = "postmaster@example.test"
TEAM = "team@example.test"  # alias: alice and bob
CATCHALL_DOMAIN = "catchall.test"
CAROL = "carol@catchall.test"  # and the catch-all @catchall.test delivers to her
NOPM_DOMAIN = "nopm.test"  # local, but no postmaster, no catch-all, no accounts


def populate(h: Harness) -> None:
    h.add_domain(DOMAIN)  # created first: its postmaster stands in for domains without one
    for address in (ALICE, BOB, POSTMASTER):
        h.add_user(address)
    h.add_alias(TEAM, ALICE, BOB)
    h.add_domain(CATCHALL_DOMAIN)
    h.add_user(CAROL)
    h.add_alias(f"@{CATCHALL_DOMAIN}", CAROL)
    h.add_domain(NOPM_DOMAIN)


@pytest.fixture(scope="module", params=HARNESS_BACKENDS)
def harness(request: pytest.FixtureRequest, harness_factory: HarnessFactory) -> Harness:
    h = harness_factory(backend=request.param,
                        config=getattr(request.module, "HARNESS_CONFIG", None))
    populate(h)
    return h
