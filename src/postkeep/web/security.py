"""The security baseline of every web response and request, sans-IO: headers, host names,
cookies, CSRF tokens and the cross-site checks.

- Every response carries `SECURITY_HEADERS`: a Content-Security-Policy without inline script
  or style (CSP Level 3; the pages load `/static/` files only), `frame-ancestors 'none'`
  (no framing: clickjacking), HSTS (RFC 6797 §6.1, on HTTPS), nosniff (Fetch §X-Content-
  Type-Options), no Referer (Referrer Policy), Cross-Origin-Opener-Policy and
  -Resource-Policy same-origin, a Permissions-Policy that turns off the powerful features.
- `host_allowed`: a request's Host must be one of the configured names (RFC 9110 §7.2), so
  a redirect never names a host an attacker chose and a DNS-rebinding page gets nothing.
- Cookies carry the ``__Host-`` prefix (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain),
  HttpOnly and SameSite=Strict.
- CSRF: a form of a session carries `csrf_token(session token)`, an HMAC of the session's
  own token that the server recomputes (nothing to store; it changes with the session); the
  login form, before any session, a random token also set in a cookie (double submit). The
  comparison is constant time (`hmac.compare_digest`). And a state-changing request whose
  `Sec-Fetch-Site` (Fetch Metadata) is not same-origin (or none: typed by the user), or
  whose `Origin` (RFC 6454 §7) is not this server's, is refused whatever its token (our own
  pages' forms, under ``Referrer-Policy: no-referrer``, send ``Origin: null`` with
  ``Sec-Fetch-Site: same-origin``: Fetch §3.2.5 "origin-or-null"; that pair is ours).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": ("camera=(), microphone=(), geolocation=(), payment=(), usb=(), "
                           "interest-cohort=()"),
    "X-Frame-Options": "DENY",  # for browsers without CSP frame-ancestors
}

SESSION_COOKIE = "__Host-pk-session"
LOGIN_CSRF_COOKIE = "__Host-pk-login"
COOKIE_FLAGS: Mapping[str, object] = {"secure": True, "httponly": True, "samesite": "Strict",
                                      "path": "/"}
TOKEN_BYTES = 32
MAX_TOKEN = 64  # characters of a cookie or form token we look at


def new_token() -> str:
    """A random token (256 bits), URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a session token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session's forms: HMAC-SHA256 keyed by the session token."""
    mac = hmac.new(session_token.encode("ascii", "replace"), b"postkeep web csrf",
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a token with what a request sent (missing: no match)."""
    if not given or not expected or len(given) > MAX_TOKEN:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def split_host(host: str) -> tuple[str, int | None] | None:
    """(name, port) of a Host header value (RFC 9110 §7.2), lower case; None if malformed."""
    host = host.strip().lower()
    if not host or len(host) > 300 or any(c.isspace() or c in "/@\\?#" for c in host):
        return None
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
        name = f"[{name}]"
    else:
        name, _, port = host.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return None
    return name.rstrip("."), int(port) if port else None


def name_allowed(name: str, names: Sequence[str]) -> bool:
    """Whether a host name is among `names` (``*.example.org`` matches one label)."""
    for allowed in names:
        if allowed.startswith("*."):
            first, _, rest = name.partition(".")
            if first and rest == allowed[2:]:
                return True
        elif name == allowed:
            return True
    return False


def host_allowed(host: str | None, names: Sequence[str]) -> str | None:
    """The host name of a Host header if it is one of `names`, else None."""
    parts = split_host(host or "")
    if parts is None or not name_allowed(parts[0], names):
        return None
    return parts[0]


def cross_site(method: str, headers: Mapping[str, str], origin: str) -> str | None:
    """Why a request of another site must be refused (None: it is not one). `origin`: this
    server's, as ``https://host[:port]`` of the request. Only state changes are checked."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site[:32]}"
    sent = headers.get("Origin")
    if sent == "null" and site == "same-origin":
        return None  # our own form under Referrer-Policy no-referrer: browsers send "null"
    if sent is not None and sent != origin:
        return "foreign Origin"
    return None
