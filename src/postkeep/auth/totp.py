"""Time-based one-time passwords (RFC 6238, TOTP over RFC 4226 HOTP) and recovery codes: the
second factor of the web login (`postkeep.web` calls this; the mail protocols never see a code).

* Enrolment (`begin_enrolment`): a new 160-bit secret (RFC 4226 §4 R6) sealed in the store, its
  ``otpauth://`` URI (the Key Uri Format of Google Authenticator, which every authenticator app
  reads) and that URI as a QR code in SVG, made here by segno: no script, nothing fetched.
* Confirmation (`confirm_enrolment`): the first valid code turns TOTP on, turns on enforcement
  (IMAP and SMTP take app passwords only: `postkeep.store.sql.twofactor`) and returns the
  RECOVERY_CODES recovery codes, shown once.
* Verification (`verify_code`): 6 digits, 30-second steps (RFC 6238 §4, §5.2), one step of clock
  skew either way (WINDOW). Replay protection (§5.2: "the verifier MUST NOT accept the second
  attempt of the same OTP"): a code is accepted only for a time step after the last accepted
  one, recorded by a conditional update in the store, so it holds across worker processes.
* Recovery codes: 10 random codes of 10 characters (50 bits each) from Crockford's base 32
  alphabet, grouped ``xxxxx-xxxxx``; typed in any case, with or without the dash, with i/l/o
  read as 1/1/0. The store keeps only a keyed hash of each; each works once.

Guessing: a 6-digit code with a window of 3 steps is guessed with probability 3e-6 a try, so the
caller must count failures into the brute-force protection (`postkeep.bans`, as every login
failure); the outcomes here say why a code was refused, for its log line.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

import pyotp
import segno

from postkeep.errors import StoreError
from postkeep.store.api import Store

STEP = 30  # seconds (RFC 6238 §5.2 recommends 30)
DIGITS = 6
WINDOW = 1  # steps of clock skew accepted either way
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base 32
_RECOVERY_HALF = 5
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")
_RECOVERY = re.compile(rf"[{RECOVERY_ALPHABET}]{{{2 * _RECOVERY_HALF}}}")
_RECOVERY_READ = str.maketrans("ilo", "110", " -")
_MAX_INPUT = 64


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What the enrolment page shows: the secret (for typing it in), its URI and QR code."""

    secret: str
    uri: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A second-factor check: `method` is "totp" or "recovery-code" when `ok`; `reason` says
    why not (for the caller's log line; the user is told no more than "wrong code")."""

    ok: bool
    method: str = ""
    reason: str = ""


def new_secret() -> str:
    """A random 160-bit secret in base 32 (RFC 4226 §4 R6: at least 128, 160 recommended)."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, address: str, issuer: str) -> str:
    """The ``otpauth://totp/ISSUER:ADDRESS?secret=...&issuer=ISSUER`` URI of the secret."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=address, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as a QR code (error correction M), an inline SVG element."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, title="TOTP enrolment"))


def matching_step(secret: str, code: str, now: float, after: int | None) -> int | None:
    """The time step within WINDOW of `now` whose code is `code` and which is after `after`
    (the last step accepted), or None. Codes are compared in constant time."""
    candidate = code.replace(" ", "")
    if not _CODE.fullmatch(candidate):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now // STEP)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if step < 0 or (after is not None and step <= after):
            continue
        if hmac.compare_digest(totp.generate_otp(step), candidate) and found is None:
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """RECOVERY_CODES fresh codes, ``xxxxx-xxxxx``."""
    codes: list[str] = []
    while len(codes) < RECOVERY_CODES:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(2 * _RECOVERY_HALF))
        code = f"{raw[:_RECOVERY_HALF]}-{raw[_RECOVERY_HALF:]}"
        if code not in codes:
            codes.append(code)
    return codes


def normalize_recovery_code(text: str) -> str | None:
    """The canonical form (``xxxxx-xxxxx``) of a recovery code as typed, None if it is none."""
    if len(text) > _MAX_INPUT:
        return None
    raw = text.strip().lower().translate(_RECOVERY_READ)
    if not _RECOVERY.fullmatch(raw):
        return None
    return f"{raw[:_RECOVERY_HALF]}-{raw[_RECOVERY_HALF:]}"


async def begin_enrolment(store: Store, address: str, issuer: str, now: float) -> Enrolment:
    """Start (or restart) TOTP enrolment; AlreadyExists while TOTP is on."""
    secret = new_secret()
    await store.begin_totp(address, secret, now)
    uri = provisioning_uri(secret, address, issuer)
    return Enrolment(secret, uri, qr_svg(uri))


async def confirm_enrolment(store: Store, address: str, code: str, now: float
                            ) -> tuple[Verdict, list[str]]:
    """Check the first code of an enrolment: on success TOTP is on (and with it app passwords
    only for IMAP and SMTP) and the new recovery codes are returned, to show once."""
    state = await store.get_totp(address)
    if state is None:
        return Verdict(False, reason="no TOTP enrolment"), []
    if state.confirmed:
        return Verdict(False, reason="TOTP is on already"), []
    step = matching_step(state.secret, code[:_MAX_INPUT], now, state.last_step)
    if step is None:
        return Verdict(False, reason="wrong TOTP code"), []
    codes = new_recovery_codes()
    if not await store.accept_totp_step(address, step, now, recovery_codes=codes):
        return Verdict(False, reason="TOTP enrolment changed meanwhile"), []
    return Verdict(True, "totp"), codes


async def verify_code(store: Store, address: str, code: str, now: float) -> Verdict:
    """Check a TOTP code of a confirmed enrolment, accepting each time step once."""
    state = await store.get_totp(address)
    if state is None or not state.confirmed:
        return Verdict(False, reason="TOTP is not on")
    step = matching_step(state.secret, code[:_MAX_INPUT], now, state.last_step)
    if step is None:
        again = matching_step(state.secret, code[:_MAX_INPUT], now, None)
        return Verdict(False, reason="TOTP code used already" if again is not None
                       else "wrong TOTP code")
    if not await store.accept_totp_step(address, step, now):
        return Verdict(False, reason="TOTP code used already")
    return Verdict(True, "totp")


async def use_recovery_code(store: Store, address: str, code: str, now: float) -> Verdict:
    """Spend a recovery code (each works once)."""
    canonical = normalize_recovery_code(code)
    if canonical is None:
        return Verdict(False, reason="not a recovery code")
    if not await store.use_recovery_code(address, canonical, now):
        return Verdict(False, reason="unknown or used recovery code")
    return Verdict(True, "recovery-code")


async def verify_second_factor(store: Store, address: str, code: str, now: float) -> Verdict:
    """A TOTP code (digits) or a recovery code, whichever `code` looks like."""
    if _CODE.fullmatch(code.replace(" ", "")[:_MAX_INPUT]):
        return await verify_code(store, address, code, now)
    return await use_recovery_code(store, address, code, now)


async def regenerate_recovery_codes(store: Store, address: str, now: float) -> list[str]:
    """New recovery codes replacing the old ones (shown once); StoreError unless 2FA is on."""
    if not (await store.two_factor_status(address)).enforced:
        raise StoreError(f"{address} has no two-factor authentication on")
    codes = new_recovery_codes()
    await store.set_recovery_codes(address, codes, now)
    return codes


async def disable(store: Store, address: str) -> bool:
    """Turn TOTP off (enforcement ends unless a passkey is left); False if it was off."""
    return await store.disable_totp(address)
