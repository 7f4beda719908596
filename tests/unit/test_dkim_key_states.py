"""Which DKIM keys sign, wait or are retired, by their times alone (`delivery.signing`)."""

from __future__ import annotations

from postkeep.delivery.signing import key_states
from postkeep.store.api import DkimKey


def key(selector: str, algorithm: str, active_from: float) -> DkimKey:
    return DkimKey(0, "example.org", selector, algorithm, "p", 0.0, active_from)


def test_states_follow_from_the_times() -> None:
    keys = [key("a", "ed25519-sha256", 0), key("b", "rsa-sha256", 0),
            key("c", "ed25519-sha256", 100), key("d", "rsa-sha256", 100)]
    at = {t: [(s.key.selector, s.state, s.until) for s in key_states(keys, t, 50)]
          for t in (10, 120, 160)}
    assert at[10] == [("a", "signing", None), ("b", "signing", None), ("c", "next", None),
                      ("d", "next", None)]
    assert at[120] == [("a", "retired", 150), ("b", "retired", 150), ("c", "signing", None),
                       ("d", "signing", None)]
    assert at[160][:2] == [("a", "expired", 150), ("b", "expired", 150)]
    lone = [key("x", "rsa-sha256", 0), key("y", "ed25519-sha256", 100)]  # other algorithms
    assert [s.state for s in key_states(lone, 120, 50)] == ["signing", "signing"]
