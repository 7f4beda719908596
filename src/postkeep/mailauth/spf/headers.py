"""Recording an SPF result: the Received-SPF header field (RFC 7208 §9.1) and the "spf"
method of an Authentication-Results header field (RFC 7208 §9.2, RFC 8601 §2.7.2).

    header-field   = "Received-SPF:" [CFWS] result FWS [comment FWS] [ key-value-list ] CRLF
    key-value-list = key-value-pair *( ";" [CFWS] key-value-pair ) [";"]
    key-value-pair = key [CFWS] "=" ( dot-atom / quoted-string )

The keys written: receiver, client-ip, envelope-from, helo, identity, mechanism (of a match;
"default" when none matched), problem (of a temperror or permerror). A value that is no
dot-atom is a quoted-string (RFC 5322 §3.2.4); a comment's parentheses and backslashes are
quoted (§3.2.2). For Authentication-Results: "spf=<result>", a reason for the errors, and the
property of the identity checked: smtp.mailfrom (the address) or smtp.helo (the name).
"""

from __future__ import annotations

import re

from postkeep.mailauth.spf.check import Spf, SpfResult

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_TOKEN = re.compile(r"[!#$%&'*+.0-9A-Z^_`a-z{|}~-]+")  # RFC 2045 token: no tspecials


def _printable(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _quoted(text: str) -> str:
    escaped = _printable(text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _value(text: str) -> str:
    return text if _DOT_ATOM.fullmatch(text) else _quoted(text)


def _comment(text: str) -> str:
    return "(" + re.sub(r"([()\\])", r"\\\1", _printable(text)) + ")"


def _summary(result: SpfResult, receiver: str) -> str:
    who = result.sender if result.identity == "mailfrom" else result.helo or result.domain
    match result.result:
        case Spf.PASS:
            return f"{receiver}: domain of {who} designates {result.ip} as permitted sender"
        case Spf.FAIL | Spf.SOFTFAIL:
            return (f"{receiver}: domain of {who} does not designate {result.ip} as "
                    "permitted sender")
        case Spf.NEUTRAL:
            return f"{receiver}: {result.ip} is neither permitted nor denied by domain of {who}"
        case Spf.NONE:
            return f"{receiver}: domain of {who} does not publish an SPF record"
        case _:
            return f"{receiver}: error in processing during lookup of {who}"


def received_spf(result: SpfResult, receiver: str) -> str:
    """The Received-SPF header field for `result`, unfolded, without CRLF (§9.1)."""
    pairs = [("receiver", receiver), ("client-ip", result.ip)]
    if result.identity == "mailfrom":
        pairs.append(("envelope-from", result.sender))
    if result.helo:
        pairs.append(("helo", result.helo))
    pairs.append(("identity", result.identity))
    if result.mechanism is not None:
        pairs.append(("mechanism", result.mechanism))
    if result.problem is not None:
        pairs.append(("problem", result.problem))
    values = "; ".join(f"{key}={_value(value)}" for key, value in pairs)
    return f"Received-SPF: {result.result} {_comment(_summary(result, receiver))} {values};"


def _address(sender: str) -> str:
    """RFC 8601's pvalue: local-part "@" domain-name, the local-part quoted when no dot-atom;
    the whole a quoted-string when the domain is no dot-atom either."""
    local, _, domain = sender.rpartition("@")
    if not _DOT_ATOM.fullmatch(domain):
        return _quoted(sender)
    return f"{local if _DOT_ATOM.fullmatch(local) else _quoted(local)}@{domain}"


def authentication_results(result: SpfResult) -> str:
    """The "spf" resinfo of an Authentication-Results field (RFC 8601 §2.2, §2.7.2), e.g.
    'spf=pass smtp.mailfrom=user@example.com', for the field's caller to join with the other
    methods' after its authserv-id."""
    parts = [f"spf={result.result}"]
    if result.problem is not None:
        parts.append(f"reason={_quoted(result.problem)}")
    if result.identity == "mailfrom":
        parts.append(f"smtp.mailfrom={_address(result.sender)}")
    else:
        helo = result.helo or result.domain
        parts.append(f"smtp.helo={helo if _TOKEN.fullmatch(helo) else _quoted(helo)}")
    return " ".join(parts)
