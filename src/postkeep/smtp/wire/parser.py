"""SMTP command-line parser (sans-IO): one CRLF-free command line in, one typed command out.

Implements the command syntax of RFC 5321 §4.1 (commands), §4.1.2 (paths and mailboxes) and
§4.5.3.1 (size limits of local parts, domains and paths), with the ESMTP parameters of
RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 3030 (BINARYMIME, CHUNKING/BDAT), RFC 3461 (DSN),
RFC 6531 (SMTPUTF8), RFC 4954 (AUTH= on MAIL) and RFC 8689 (REQUIRETLS).

Exposure: this is the first code that sees bytes from an unauthenticated peer. It never raises
anything but `CommandError` (carrying the reply) for bad input, and does no I/O and no policy: it
does not know which domains are local or what is allowed; it only says what was asked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from postkeep.errors import Reply

# RFC 5321 §4.5.3.1: size limits.
MAX_LOCAL_PART = 64  # §4.5.3.1.1
MAX_DOMAIN = 255  # §4.5.3.1.2
MAX_PATH = 256  # §4.5.3.1.3 (including the angle brackets)


class CommandError(Exception):
    """Bad command syntax or parameters; carries the reply for the client."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _syntax(text: str, code: int = 501, enhanced: str = "5.5.2") -> CommandError:
    return CommandError(Reply(code, enhanced, text))


# -- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    """A reverse- or forward-path. `address` is "" for the null path `<>`."""

    local: str
    domain: str  # as written (case kept); may be an address literal "[...]"

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def is_null(self) -> bool:
        return not self.local and not self.domain


NULL_PATH = Path("", "")


@dataclass(frozen=True, slots=True)
class Hello:
    extended: bool  # EHLO (True) or HELO (False)
    name: str


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870
    body: str | None = None  # 7BIT / 8BITMIME (RFC 6152) / BINARYMIME (RFC 3030)
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 §4.3: FULL / HDRS
    envid: str | None = None  # RFC 3461 §4.4, xtext-decoded
    auth: str | None = None  # RFC 4954 §5, xtext-decoded ("<>" when unknown)
    requiretls: bool = False  # RFC 8689 §4


@dataclass(frozen=True, slots=True)
class Mail:
    path: Path
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True)
class Rcpt:
    path: Path
    notify: str | None = None  # RFC 3461 §4.1: "NEVER" or a comma list, upper-cased
    orcpt: str | None = None  # RFC 3461 §4.2: "addr-type;address", xtext-decoded


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Bdat:
    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Vrfy:
    argument: str


@dataclass(frozen=True, slots=True)
class Expn:
    argument: str


@dataclass(frozen=True, slots=True)
class Help:
    argument: str


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str
    initial: str | None  # RFC 4954 initial response, still base64 ("=" for empty)


Command = (
    Hello | Mail | Rcpt | Data | Bdat | Rset | Noop | Quit | Vrfy | Expn | Help | StartTls | Auth
)

# -- grammar (RFC 5321 §4.1.2, RFC 6531 §3.3) -----------------------------------------------------

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_LET_DIG_UTF8 = r"(?:[A-Za-z0-9]|[^\x00-\x7f])"
_LABEL_UTF8 = re.compile(
    rf"{_LET_DIG_UTF8}(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*{_LET_DIG_UTF8})?"
)
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_ESMTP_VALUE_UTF8 = re.compile(r"(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f])+")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}


def is_domain(text: str, utf8: bool = False) -> bool:
    """RFC 5321 §4.1.2 Domain (sub-domains separated by dots); U-labels when `utf8`."""
    if not text or len(text.encode()) > MAX_DOMAIN:
        return False
    label = _LABEL_UTF8 if utf8 else _LABEL
    return all(label.fullmatch(part) and len(part.encode()) <= 63 for part in text.split("."))


def is_address_literal(text: str) -> bool:
    """RFC 5321 §4.1.3 address literal: [IPv4], [IPv6:...]."""
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    try:
        if inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def xtext_decode(value: str) -> str:
    """RFC 3461 §4 xtext: "+XX" is a hex-encoded octet; other chars stand for themselves."""
    if "+" not in value:
        return value
    if re.search(r"\+(?![0-9A-F]{2})", value):
        raise _syntax("Malformed xtext in parameter", 501, "5.5.4")
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def parse_path(text: str, utf8: bool, allow_null: bool, allow_postmaster: bool = False) -> Path:
    """Parse `<...>` (RFC 5321 §4.1.2 Reverse-path / Forward-path) into a Path.

    A source route (`<@a,@b:user@c>`) is accepted and ignored (§4.1.1.3, §C). With
    `allow_postmaster`, `<Postmaster>` without a domain is accepted (§4.1.1.3).
    """
    if len(text.encode()) > MAX_PATH:
        raise _syntax("Path too long (RFC 5321 4.5.3.1.3)", 501, "5.1.3")
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise _syntax("Syntax: address must be in angle brackets <...>", 501, "5.1.3")
    inner = text[1:-1]
    if not inner:
        if allow_null:
            return NULL_PATH
        raise _syntax("Empty recipient address", 501, "5.1.3")
    if inner[0] == "@":
        route, colon, inner = inner.partition(":")
        if not colon or not all(
            hop.startswith("@") and is_domain(hop[1:]) for hop in route.split(",")
        ):
            raise _syntax("Malformed source route", 501, "5.1.3")
    if allow_postmaster and inner.lower() == "postmaster":
        return Path(inner, "")
    local, domain = _split_mailbox(inner)
    if not inner.isascii() and not utf8:
        raise CommandError(
            Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8 (RFC 6531)")
        )
    dot = _DOT_STRING_UTF8 if utf8 else _DOT_STRING
    quoted = _QUOTED_UTF8 if utf8 else _QUOTED
    if not (dot.fullmatch(local) or quoted.fullmatch(local)):
        raise _syntax("Malformed local part of address", 501, "5.1.3")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise _syntax("Local part too long (RFC 5321 4.5.3.1.1)", 501, "5.1.3")
    if not (is_domain(domain, utf8) or is_address_literal(domain)):
        raise _syntax("Malformed domain in address", 501, "5.1.3")
    return Path(local, domain)


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split at the last "@" not inside a quoted local part."""
    if text.startswith('"'):
        end = 1
        while end < len(text):
            ch = text[end]
            if ch == "\\":
                end += 2
                continue
            if ch == '"':
                break
            end += 1
        local, rest = text[: end + 1], text[end + 1 :]
        if not rest.startswith("@"):
            raise _syntax("Malformed address: expected local@domain", 501, "5.1.3")
        return local, rest[1:]
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise _syntax("Malformed address: expected local@domain", 501, "5.1.3")
    return local, domain


def _split_path_and_params(rest: str, prefix: str) -> tuple[str, list[str]]:
    """`FROM:<path> params` → (path, params). Tolerates spaces after the colon."""
    if rest[: len(prefix)].upper() != prefix:
        raise _syntax(f"Syntax: expected {prefix}<address>")
    rest = rest[len(prefix) :].lstrip(" ")
    if rest.startswith("<"):
        # A quoted local part may contain ">" or spaces: find the closing bracket outside quotes.
        quoted = False
        i = 1
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and quoted:
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == ">" and not quoted:
                break
            i += 1
        path, params = rest[: i + 1], rest[i + 1 :]
        if params and not params.startswith(" "):
            raise _syntax("Syntax: expected a space before parameters", 501, "5.5.4")
        return path, params.split()
    raise _syntax("Syntax: address must be in angle brackets <...>", 501, "5.1.3")


def _params(words: list[str], utf8: bool) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    value_re = _ESMTP_VALUE_UTF8 if utf8 else _ESMTP_VALUE
    for word in words:
        key, eq, value = word.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(key) or (eq and not value_re.fullmatch(value)):
            raise _syntax(f"Malformed parameter {word[:40]!r}", 501, "5.5.4")
        key = key.upper()
        if key in out:
            raise _syntax(f"Duplicate parameter {key}", 501, "5.5.4")
        out[key] = value if eq else None
    return out


def _unknown(key: str) -> CommandError:
    return CommandError(Reply(555, "5.5.4", f"Unsupported parameter {key}"))


def parse_mail(rest: str, extended: bool) -> Mail:
    """MAIL FROM:<reverse-path> [params] (RFC 5321 §4.1.1.2)."""
    path_text, words = _split_path_and_params(rest, "FROM:")
    upper = [w.upper() for w in words]
    utf8 = "SMTPUTF8" in upper
    if words and not extended:
        raise CommandError(Reply(555, "5.5.4", "Parameters need EHLO"))
    raw = _params(words, utf8)
    size = body = ret = envid = auth = None
    for key, value in raw.items():
        if key == "SIZE":  # RFC 1870 §6
            if value is None or not value.isdigit() or len(value) > 20:
                raise _syntax("SIZE needs a number", 501, "5.5.4")
            size = int(value)
        elif key == "BODY":  # RFC 6152 §3, RFC 3030 §3
            body = (value or "").upper()
            if body not in ("7BIT", "8BITMIME", "BINARYMIME"):
                raise _syntax("BODY must be 7BIT, 8BITMIME or BINARYMIME", 501, "5.5.4")
        elif key == "SMTPUTF8":  # RFC 6531 §3.4
            if value is not None:
                raise _syntax("SMTPUTF8 takes no value", 501, "5.5.4")
        elif key == "RET":  # RFC 3461 §4.3
            ret = (value or "").upper()
            if ret not in ("FULL", "HDRS"):
                raise _syntax("RET must be FULL or HDRS", 501, "5.5.4")
        elif key == "ENVID":  # RFC 3461 §4.4
            if not value or len(value) > 100:
                raise _syntax("ENVID must be 1 to 100 characters", 501, "5.5.4")
            envid = xtext_decode(value)
        elif key == "AUTH":  # RFC 4954 §5
            if not value:
                raise _syntax("AUTH needs a value", 501, "5.5.4")
            auth = xtext_decode(value)
        elif key == "REQUIRETLS":  # RFC 8689 §4
            if value is not None:
                raise _syntax("REQUIRETLS takes no value", 501, "5.5.4")
        else:
            raise _unknown(key)
    path = parse_path(path_text, utf8, allow_null=True)
    params = MailParams(
        size=size, body=body, smtputf8=utf8, ret=ret, envid=envid, auth=auth,
        requiretls="REQUIRETLS" in raw,
    )
    return Mail(path, params)


def parse_rcpt(rest: str, extended: bool, utf8: bool) -> Rcpt:
    """RCPT TO:<forward-path> [params] (RFC 5321 §4.1.1.3)."""
    path_text, words = _split_path_and_params(rest, "TO:")
    if words and not extended:
        raise CommandError(Reply(555, "5.5.4", "Parameters need EHLO"))
    notify = orcpt = None
    for key, value in _params(words, utf8).items():
        if key == "NOTIFY":  # RFC 3461 §4.1
            items = (value or "").upper().split(",")
            if items == ["NEVER"]:
                notify = "NEVER"
            elif items and set(items) <= _NOTIFY_WORDS and len(set(items)) == len(items):
                notify = ",".join(items)
            else:
                raise _syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY", 501, "5.5.4")
        elif key == "ORCPT":  # RFC 3461 §4.2
            addr_type, semi, addr = (value or "").partition(";")
            if not semi or not _ESMTP_KEYWORD.fullmatch(addr_type) or not addr:
                raise _syntax("ORCPT must be addr-type;address", 501, "5.5.4")
            orcpt = f"{addr_type.lower()};{xtext_decode(addr)}"
        else:
            raise _unknown(key)
    path = parse_path(path_text, utf8, allow_null=False, allow_postmaster=True)
    return Rcpt(path, notify, orcpt)


def parse_bdat(rest: str) -> Bdat:
    """BDAT chunk-size [LAST] (RFC 3030 §2)."""
    words = rest.split()
    if not 1 <= len(words) <= 2 or not words[0].isdigit() or len(words[0]) > 12:
        raise _syntax("Syntax: BDAT <size> [LAST]")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise _syntax("Syntax: BDAT <size> [LAST]")
    return Bdat(int(words[0]), len(words) == 2)


def parse_command(line: bytes, extended: bool = True, utf8: bool = False) -> Command:
    """Parse one command line (without CRLF).

    `extended` tells whether the session began with EHLO (ESMTP parameters allowed); `utf8`
    whether the current transaction's MAIL carried SMTPUTF8 (affects RCPT syntax).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax("Command is not valid UTF-8", 500, "5.5.2") from None
    if "\x00" in text or "\r" in text or "\n" in text:
        raise _syntax("Control characters in command", 500, "5.5.2")
    verb, _, rest = text.partition(" ")
    verb = verb.upper()
    if verb in ("EHLO", "HELO"):
        name = rest.strip()
        if not name:
            raise _syntax(f"Syntax: {verb} hostname")
        return Hello(verb == "EHLO", name.split()[0])
    if verb == "MAIL":
        return parse_mail(rest, extended)
    if verb == "RCPT":
        return parse_rcpt(rest, extended, utf8)
    if verb == "BDAT":
        return parse_bdat(rest)
    if verb in ("DATA", "RSET", "QUIT", "STARTTLS"):
        if rest.strip():
            raise _syntax(f"Syntax: {verb} takes no argument")
        return {"DATA": Data, "RSET": Rset, "QUIT": Quit, "STARTTLS": StartTls}[verb]()
    if verb == "NOOP":
        return Noop()
    if verb == "VRFY":
        if not rest.strip():
            raise _syntax("Syntax: VRFY address")
        return Vrfy(rest.strip())
    if verb == "EXPN":
        return Expn(rest.strip())
    if verb == "HELP":
        return Help(rest.strip())
    if verb == "AUTH":
        words = rest.split()
        if not 1 <= len(words) <= 2:
            raise _syntax("Syntax: AUTH mechanism [initial-response]")
        return Auth(words[0].upper(), words[1] if len(words) == 2 else None)
    raise CommandError(Reply(500, "5.5.1", "Command unrecognized"))
