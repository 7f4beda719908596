"""The `[mta_sts]` section: the MTA-STS policy (RFC 8461) the web listener serves for the
local domains, and its text (§3.2) and id (§3.1), which `postkeep dns` prints too."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError

MODES = ("enforce", "testing", "none")  # RFC 8461 §5
MAX_MAX_AGE = 31557600  # RFC 8461 §3.2: at most a year


@dataclass(frozen=True)
class MtaStsConfig:
    """`[mta_sts]`: the MTA-STS policy (RFC 8461 §3.2) of every local domain, served at
    `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` by the web listener."""

    mode: str = setting(
        "`enforce`, `testing` or `none` (RFC 8461 §5). Empty: no policy is served (404), "
        "and `postkeep dns` prints no `_mta-sts` record.",
        default="",
    )
    max_age: int = setting(
        "Seconds senders may keep the policy (RFC 8461 §3.2, at most 31557600; weeks are "
        "usual once it works).",
        default=604800,
    )
    mx: list[str] = setting(
        "MX host names the policy allows (`mail.example.org`, or `*.example.org` for one "
        "label). Empty: `server.hostname`.",
        default_factory=list,
    )

    def policy(self, hostname: str) -> str:
        """The policy file (RFC 8461 §3.2), lines ending in CRLF."""
        lines = ["version: STSv1", f"mode: {self.mode}",
                 *(f"mx: {mx}" for mx in self.mx or [hostname.lower().rstrip(".")]),
                 f"max_age: {self.max_age}"]
        return "".join(f"{line}\r\n" for line in lines)

    def policy_id(self, hostname: str) -> str:
        """The `id` of the `_mta-sts` TXT record (RFC 8461 §3.1: 1 to 32 letters and digits):
        a digest of the policy, so it changes when the policy does."""
        return hashlib.sha256(self.policy(hostname).encode()).hexdigest()[:20]


def validate_mta_sts(sts: MtaStsConfig) -> None:
    if sts.mode and sts.mode not in MODES:
        raise ConfigError("mta_sts.mode", f"must be empty or one of {', '.join(MODES)}")
    if not 0 < sts.max_age <= MAX_MAX_AGE:
        raise ConfigError("mta_sts.max_age", f"must be 1 to {MAX_MAX_AGE} (RFC 8461 §3.2)")
    for i, name in enumerate(sts.mx):
        labels = name.lower().removeprefix("*.").split(".")
        if len(labels) < 2 or not all(
                0 < len(label) < 64 and label.replace("-", "").isalnum() and label.isascii()
                for label in labels):
            raise ConfigError(f"mta_sts.mx[{i}]", f"{name!r} is not a host name or *.pattern")
