"""`postkeep user 2fa status|disable|recovery ADDRESS`: the operator's view of an account's
second factors (`postkeep.auth.totp`, `postkeep.auth.webauthn`) and the reset of a user locked
out of them. Users enrol and manage their factors in the web interface; the operator can only
look, turn everything off, or hand out new recovery codes (shown once)."""

from __future__ import annotations

import argparse
import getpass
import os
import time

from postkeep import log
from postkeep.auth import totp
from postkeep.cli.common import CliError, check_address, with_store
from postkeep.errors import StoreError
from postkeep.store.api import Store, TwoFactorStatus, WebAuthnCredential


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _operator() -> str:
    try:
        return f"{getpass.getuser()}(uid={os.getuid()})"
    except OSError:
        return f"uid={os.getuid()}"


def cmd_two_factor(args: argparse.Namespace) -> int:
    address = check_address(args.address)
    logger = log.get("auth")
    if args.twofa_action == "status":
        async def status(store: Store) -> tuple[TwoFactorStatus, list[WebAuthnCredential]]:
            return (await store.two_factor_status(address),
                    await store.list_webauthn_credentials(address))

        state, creds = with_store(args, status)
        print(f"{address}: two-factor authentication {'on' if state.enforced else 'off'}"
              + (" (IMAP and SMTP take app passwords only)" if state.enforced else ""))
        print(f"totp: {state.totp}" + (f" since {_when(state.totp_created)}"
                                       if state.totp_created else ""))
        print(f"recovery codes left: {state.recovery_codes_left}")
        print(f"passkeys: {len(creds)}")
        for c in creds:
            print(f"  {c.id}\t{c.name}\tcreated={_when(c.created)}\tlast_used={_when(c.last_used)}"
                  f"\ttransports={','.join(c.transports) or '-'}")
        return 0
    if args.twofa_action == "disable":
        if not with_store(args, lambda s: s.disable_two_factor(address)):
            print(f"{address} has no second factor")
            return 0
        log.setup()
        logger.warning("2fa reset user=%s by=%s reason=%s", log.quote(address),
                       log.quote(_operator()), log.quote("operator: user 2fa disable"))
        print(f"{address}: two-factor authentication off (TOTP, passkeys and recovery codes "
              "removed); the account password works for IMAP and SMTP again unless the account "
              "was set to app passwords only")
        return 0
    try:
        codes = with_store(args, lambda s: totp.regenerate_recovery_codes(s, address, time.time()))
    except StoreError as e:
        raise CliError(str(e)) from None
    log.setup()
    logger.warning("2fa recovery codes regenerated user=%s by=%s", log.quote(address),
                   log.quote(_operator()))
    print(f"new recovery codes of {address} (shown only this once; the old ones no longer work):")
    for code in codes:
        print(f"  {code}")
    return 0


def add_commands(usub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `2fa` to the `user` subparsers."""
    q = usub.add_parser("2fa", help="an account's two-factor authentication (operator reset)")
    tsub = q.add_subparsers(dest="twofa_action", required=True)
    tsub.add_parser("status", help="TOTP, passkeys and recovery codes left").add_argument(
        "address")
    tsub.add_parser("disable", help="remove every second factor (a locked-out user)"
                    ).add_argument("address")
    tsub.add_parser("recovery", help="new recovery codes, printed once").add_argument("address")
