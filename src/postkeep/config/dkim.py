"""The `[dkim]` section: DKIM signing keys of the local domains (`postkeep dkim`)."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import setting
from postkeep.errors import ConfigError

ALGORITHMS = ("ed25519", "rsa")


@dataclass(frozen=True)
class DkimConfig:
    """`[dkim]`: submitted mail is signed (RFC 6376) with the keys of its From: domain, one
    signature per algorithm (RSA and Ed25519, RFC 8463), as docs/architecture.md ("DKIM
    signing") tells."""

    algorithms: list[str] = setting(
        'Key types `postkeep dkim generate` and `rotate` make, one selector each: "ed25519", '
        '"rsa" (both: mail is dual-signed; receivers that know no Ed25519 check the RSA one).',
        default_factory=lambda: list(ALGORITHMS),
    )
    rsa_bits: int = setting("Size of new RSA keys (RFC 8301 §3.2: 1024 at least; 2048 "
                            "fits a TXT record and every DNS host).", default=2048)
    activate_after: int = setting(
        "Seconds a key made by `postkeep dkim rotate` waits before it signs, so that its "
        "record is published and cached everywhere first (`--now` skips the wait).",
        default=2 * 86400,
    )
    retire_after: int = setting(
        "Seconds a key keeps being shown for publishing (its record still needed to verify "
        "mail in transit or stored) after a newer key took over signing.",
        default=7 * 86400,
    )
    signature_lifetime: int = setting(
        "Seconds a signature is valid (its x= tag, RFC 6376 §3.5); 0: no x= tag.", default=0
    )


def validate_dkim(dkim: DkimConfig) -> None:
    for i, name in enumerate(dkim.algorithms):
        if name not in ALGORITHMS:
            raise ConfigError(f"dkim.algorithms[{i}]", f"must be one of {', '.join(ALGORITHMS)}")
    if not dkim.algorithms or len(set(dkim.algorithms)) != len(dkim.algorithms):
        raise ConfigError("dkim.algorithms", "must list each key type once, at least one")
    if not 1024 <= dkim.rsa_bits <= 8192:
        raise ConfigError("dkim.rsa_bits", "must be 1024 to 8192")
    for key in ("activate_after", "retire_after", "signature_lifetime"):
        if getattr(dkim, key) < 0:
            raise ConfigError(f"dkim.{key}", "must not be negative")
