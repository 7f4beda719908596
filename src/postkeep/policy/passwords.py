"""Password policy (NIST SP 800-63B §5.1.1.2): what a password chosen by a person must be.

`check_password_policy`: length 12-1024, no control characters or edge spaces, a zxcvbn strength
score of at least 3 (zxcvbn's frequency lists reject common passwords such as "password1234" or
"qwertyuiop12"), and not based on the account's address: what is left once the address parts
are removed must still be strong. zxcvbn's cost grows fast with length, so only the first 72
characters (zxcvbn's own limit) are scored. Generated app passwords are not checked here.

zxcvbn is imported when a password is first checked: its frequency lists are 11 MiB of memory,
and the server's processes never check a password (the CLI, and later the web UI, do).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable: moderate protection from offline attacks"
ZXCVBN_MAX_LENGTH = 72  # characters scored (zxcvbn's own limit; its cost grows quickly)

_TOKEN_SPLIT = re.compile(r"[@._+\-]+")
_MIN_TOKEN = 3


class PasswordRejected(ValueError):
    """The password breaks the password policy; the message says why."""


def address_inputs(address: str) -> list[str]:
    """What an attacker knows about an account: the address, its local part and domain, and
    their pieces of 3+ characters (split on ``@ . _ + -``), lower-cased, without duplicates."""
    a = address.strip().lower()
    if not a:
        return []
    local, _, domain = a.rpartition("@")
    parts = [a, local, domain, *_TOKEN_SPLIT.split(a)]
    return list(dict.fromkeys(p for p in parts if len(p) >= _MIN_TOKEN))


def _user_tokens(user_inputs: Sequence[str]) -> list[str]:
    tokens: list[str] = []
    for item in user_inputs:
        tokens += address_inputs(item)
    return list(dict.fromkeys(tokens))


def _strength(password: str, tokens: list[str]) -> dict[str, object]:
    from zxcvbn import zxcvbn  # 11 MiB: only where passwords are chosen (see above)

    result: dict[str, object] = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=tokens)
    return result


def _matched(result: dict[str, object], dictionary: str) -> bool:
    sequence = result.get("sequence") or []
    assert isinstance(sequence, list)
    return any(m.get("dictionary_name") == dictionary for m in sequence)


def _warning(result: dict[str, object]) -> str:
    feedback = result.get("feedback")
    if isinstance(feedback, dict) and feedback.get("warning"):
        return f" ({str(feedback['warning']).rstrip('.')})"
    return ""


def check_password_policy(password: str, user_inputs: Sequence[str] = ()) -> None:
    """Raise PasswordRejected (with a message for the user) unless `password` is acceptable.

    `user_inputs` are what an attacker knows, e.g. the account's address (it is split into its
    parts). Rules: see the module docstring.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if password != password.strip() or not password.isprintable():
        raise PasswordRejected("password must not contain control characters or edge spaces")
    tokens = _user_tokens(user_inputs)
    result = _strength(password, tokens)
    score = result["score"]
    assert isinstance(score, int)
    if score < MIN_SCORE:
        if _matched(result, "passwords"):
            raise PasswordRejected(
                "password is too common: it is, or closely resembles, a frequently used password"
                + _warning(result)
            )
        if _matched(result, "user_inputs"):
            raise PasswordRejected("password is too easy to guess: it is based on the address")
        raise PasswordRejected("password is too easy to guess" + _warning(result))
    remainder = password
    for token in sorted(tokens, key=len, reverse=True):
        remainder = re.sub(re.escape(token), "", remainder, flags=re.IGNORECASE)
    if remainder != password:
        rest = _strength(remainder, []) if remainder else {"score": 0}
        rest_score = rest["score"]
        assert isinstance(rest_score, int)
        if rest_score < MIN_SCORE:
            raise PasswordRejected(
                "password is too easy to guess: it is based on the address (without the "
                "address parts, what is left is weak)"
            )
