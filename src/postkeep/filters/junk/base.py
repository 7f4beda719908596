"""What the junk filter's rule modules (`junk.rules`, `junk.content`, `junk.headers`) share:
the facts the MX knew (`Facts`), a rule's type and its hits, and the message's links (URLs
as RFC 3986 §3 has them: the host is the authority's, after any user information).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from postkeep.filters.junk.message import Parsed

MAX_URLS = 200

_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'`]{1,2000}", re.IGNORECASE)
_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^/@?#]*@)?(\[[^\]]*\]|[^/:?#]*)",
                   re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules know besides the message: the MX's checks ("spf" -> "fail", ...)."""

    auth: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: str) -> Facts:
        """From `ScanContext.auth_results` ("iprev=pass spf=fail dkim=none dmarc=fail")."""
        auth = {}
        for item in summary.split():
            method, _, result = item.partition("=")
            auth.setdefault(method.lower(), result.lower())
        return cls(auth)


Hits = list[tuple[str, float]]
Rule = Callable[[Parsed, Facts], Hits]


def host_of(url: str) -> str:
    """The host of a URL (lower-cased, brackets of an IP literal removed)."""
    match = _HOST.match(url.strip())
    host = match.group(1) if match else ""
    return host.strip("[]").rstrip(".").lower()


def urls(m: Parsed) -> list[str]:
    """The message's links: HTML hrefs, then URLs in the plain text; at most MAX_URLS."""
    found = [href for h in m.html for href, _ in h.links if "://" in href]
    for text in m.plain:
        if "://" in text:  # in every URL the pattern finds: the scan is skipped without
            found.extend(u.rstrip(".,;:!?)]") for u in _URL.findall(text[: 256 * 1024]))
        if len(found) >= MAX_URLS:
            break
    return found[:MAX_URLS]
