"""Password secrets: argon2id hashing and the minimum password rule.

Passwords are never stored: only an argon2id PHC string (RFC 9106), verified in constant time by
argon2-cffi. Hashing is slow on purpose; servers must call `verify_password` from a bounded
thread pool (see the architecture's "slow hashing, fast logins").
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id, RFC 9106 "second recommended" parameters


class PasswordRejected(ValueError):
    """The password breaks the password policy; the message says why."""


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if password != password.strip() or any(not c.isprintable() for c in password):
        raise PasswordRejected("password must not contain control characters or edge spaces")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A random password (about 120 bits), shown once to the operator."""
    return secrets.token_urlsafe(15)
