"""Recipient policy for the MX role: who may receive mail here, and relay denial.

Decides RCPT TO (RFC 5321 §4.1.1.3, §3.6.2 "relay"): an address of a local domain is accepted only
if it reaches a local account (directly or by alias or catch-all); `postmaster` is always accepted
(RFC 5321 §4.5.1), and so is `[inbound] dmarc_report_address` (DMARC aggregate reports are read from
its mail, an account or not); any other domain, address literals included, is refused to
unauthenticated clients (relay denied). An address with an invisible or control character
(zero-width space, bidi override ...: `postkeep.addresses.invisible_characters`) is refused with 553
5.1.3 whatever its domain: no account has one, and to a remote server such an address is a
look-alike of another. Local addresses are looked up in canonical form (`postkeep.addresses`: NFC,
IDNA), so every Unicode form of an address reaches one mailbox. Quota (RFC 1870 §6.2 semantics for
SIZE) is checked here against the declared size so a full mailbox is refused before the data is
sent.

Exposure: answers unauthenticated peers; it reveals whether a local address exists (as every MX
must for RFC 5321 §3.6.2 honesty); directory harvesting is bounded by the session error budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from postkeep.addresses import address_key, canonical_domain, invisible_characters
from postkeep.errors import Reply
from postkeep.policy.verdict import Verdict, accept, reject
from postkeep.smtp.wire.parser import Path
from postkeep.store.api import Account

R_RCPT_OK = Reply(250, "2.1.5", "Recipient ok")


class Directory(Protocol):
    """The read-only lookups recipient policy needs (implemented over the store)."""

    async def is_local_domain(self, domain: str) -> bool: ...
    async def resolve(self, address: str) -> list[Account] | None: ...
    async def postmaster(self, domain: str | None) -> list[Account]: ...


@dataclass(frozen=True, slots=True)
class RcptDecision:
    verdict: Verdict
    accounts: tuple[Account, ...] = ()


def _quota_verdict(accounts: list[Account], declared: int) -> Verdict | None:
    for account in accounts:
        quota = account.quota_bytes
        if not quota:
            continue
        if declared > quota:
            return reject(552, "5.2.2", "Mailbox too small for this message",
                          f"quota {quota} < size {declared} for {account.address}")
        if account.used_bytes >= quota or account.used_bytes + declared > quota:
            return reject(452, "4.2.2", "Mailbox full, try again later",
                          f"over quota: {account.address}")
    return None


def check_sender(address: str) -> Verdict | None:
    """MAIL FROM, either role: a reverse-path with an invisible or control character is
    refused (553 5.1.7, RFC 3463 "bad sender's mailbox address syntax"), as RCPT refuses one:
    a zero-width space or a bidi override in a sender only makes it look like another."""
    invisible = invisible_characters(address)
    if not invisible:
        return None
    return reject(553, "5.1.7", "Sender address contains an invisible or control character",
                  f"invisible character in {address}: {', '.join(invisible)}")


async def check_rcpt(
    directory: Directory, path: Path, declared_size: int | None, authenticated: bool = False,
    report_address: str = "",
) -> RcptDecision:
    """Decide one RCPT TO for the MX role. `report_address` is accepted without an account
    (then with none: `delivery.inbound` reads the reports sent to it)."""
    invisible = invisible_characters(path.address)
    if invisible:
        return RcptDecision(
            reject(553, "5.1.3", "Address contains an invisible or control character",
                   f"invisible character in {path.address}: {', '.join(invisible)}")
        )
    is_postmaster = path.local.lower() in ("postmaster", '"postmaster"')
    if not path.domain:  # `<Postmaster>` alone, RFC 5321 §4.1.1.3
        accounts = await directory.postmaster(None)
        if accounts:
            return RcptDecision(accept(R_RCPT_OK), tuple(accounts))
        return RcptDecision(reject(451, "4.3.0", "No postmaster configured", "no postmaster"))
    domain = canonical_domain(path.domain)
    if domain.startswith("[") or not await directory.is_local_domain(domain):
        if authenticated:  # RFC 6409: a logged-in user's mail goes out through the queue
            return RcptDecision(accept(R_RCPT_OK))
        # Relay is for authenticated submission only, never for the MX.
        return RcptDecision(
            reject(554, "5.7.1", "Relay access denied", f"relay denied to {path.address}")
        )
    address = address_key(f"{path.local}@{domain}")
    accounts = await directory.resolve(address)
    if accounts is None and is_postmaster:
        accounts = await directory.postmaster(domain)
    if not accounts and report_address and address == address_key(report_address):
        return RcptDecision(accept(R_RCPT_OK))
    if not accounts:
        return RcptDecision(
            reject(550, "5.1.1", "Recipient address rejected: user unknown",
                   f"user unknown: {address}")
        )
    if any(a.disabled for a in accounts):
        return RcptDecision(
            reject(550, "5.2.1", "Mailbox disabled", f"mailbox disabled: {address}")
        )
    quota = _quota_verdict(accounts, declared_size or 0)
    if quota is not None:
        return RcptDecision(quota)
    return RcptDecision(accept(R_RCPT_OK), tuple(accounts))
