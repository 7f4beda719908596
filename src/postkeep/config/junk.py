"""The `[junk]` section: the built-in junk filter that learns (`filters` lists "junk";
docs/architecture.md, "Content filters", "The junk filter")."""

from __future__ import annotations

from dataclasses import dataclass

from postkeep.config.fields import MiB, setting
from postkeep.errors import ConfigError


@dataclass(frozen=True)
class JunkConfig:
    """`[junk]`: rules and a Bayes classifier trained by moving mail into and out of Junk."""

    tag_score: float = setting(
        "Score from which mail arriving at the MX is junk: delivered to `mailbox` with "
        "`X-Spam-Status: Yes`. Allow-listed senders and those the recipient has written to "
        "are never junk.",
        default=5.0,
    )
    reject_score: float = setting(
        "Score from which mail arriving at the MX is refused (554 5.7.1) instead of tagged; "
        "0 refuses only the GTUBE test message.",
        default=0.0,
    )
    outbound_reject_score: float = setting(
        "Score from which mail submitted by logged-in users is refused (554 5.7.1); GTUBE "
        "always is.",
        default=10.0,
    )
    mailbox: str = setting(
        'Where junk goes: the recipient\'s mailbox of this name ("Junk", the `\\Junk` '
        "special-use mailbox every account has); a recipient without it gets the message "
        "in INBOX, tagged.",
        default="Junk",
    )
    classifier: bool = setting(
        "Whether the Bayes classifier scores mail and learns from IMAP: a message moved or "
        "copied into Junk is learnt as spam, moved out of Junk (not to Trash) as ham.",
        default=True,
    )
    min_messages: int = setting(
        "Messages of each class (spam and ham) a classifier must have learnt before it "
        "counts; an account's own first, else the instance's (every account's training).",
        default=50,
    )
    spam_weight: float = setting(
        "Points the classifier adds for a message it is sure is spam (probability 1); "
        "proportionally less down to 0 at probability 0.5.",
        default=6.0,
    )
    ham_weight: float = setting(
        "Points the classifier takes off for a message it is sure is ham (probability 0).",
        default=3.0,
    )
    max_tokens: int = setting(
        "Distinct tokens of a message the classifier reads and learns at most.",
        default=1000,
    )
    max_size: int = setting(
        "Octets of a message the filter reads at most; a larger one is read up to that "
        "(its first attachments and text).",
        default=4 * MiB,
    )
    timeout: float = setting(
        "Seconds the filter may take for a message; past it the message goes on unfiltered "
        "(logged).",
        default=10.0,
    )
    hapax_days: int = setting(
        "Days after which a classifier token seen in one learnt message only (a hapax), and "
        "not learnt since, is pruned; 0 keeps them. The server prunes once an hour (and "
        "`postkeep junk prune`).",
        default=30,
    )
    max_account_tokens: int = setting(
        "Tokens an account's classifier keeps at most; past it the least informative go "
        "(those in fewest messages, the longest unseen first) at the next prune; 0: no cap.",
        default=150_000,
    )
    max_instance_tokens: int = setting(
        "Tokens the instance-wide classifier (every account's training) keeps at most, as "
        "`max_account_tokens`; 0: no cap.",
        default=1_000_000,
    )
    prune_rows: int = setting(
        "Token rows one hourly prune looks at, and deletes, at most (2000 a transaction); "
        "the next one goes on where it stopped.",
        default=200_000,
    )


def validate_junk(junk: JunkConfig) -> None:
    if junk.tag_score <= 0:
        raise ConfigError("junk.tag_score", "must be greater than 0")
    if junk.reject_score and junk.reject_score <= junk.tag_score:
        raise ConfigError("junk.reject_score", "must be 0 or greater than tag_score")
    if junk.outbound_reject_score <= 0:
        raise ConfigError("junk.outbound_reject_score", "must be greater than 0")
    if not junk.mailbox.strip() or junk.mailbox.startswith("/"):
        raise ConfigError("junk.mailbox", "must be a mailbox name")
    if not 1 <= junk.min_messages <= 1_000_000:
        raise ConfigError("junk.min_messages", "must be between 1 and 1000000")
    if not 10 <= junk.max_tokens <= 10_000:
        raise ConfigError("junk.max_tokens", "must be between 10 and 10000")
    if not 64 * 1024 <= junk.max_size <= 64 * MiB:
        raise ConfigError("junk.max_size", "must be between 64 KiB and 64 MiB")
    if not 0 < junk.timeout <= 600:
        raise ConfigError("junk.timeout", "must be greater than 0 and at most 600")
    if not 0 <= junk.hapax_days <= 3650:
        raise ConfigError("junk.hapax_days", "must be between 0 and 3650")
    for name in ("max_account_tokens", "max_instance_tokens"):
        if not 0 <= getattr(junk, name) <= 100_000_000:
            raise ConfigError(f"junk.{name}", "must be between 0 and 100000000")
    if not 1000 <= junk.prune_rows <= 100_000_000:
        raise ConfigError("junk.prune_rows", "must be between 1000 and 100000000")
    if junk.spam_weight < 0 or junk.ham_weight < 0:
        raise ConfigError("junk.spam_weight", "weights must not be negative")
