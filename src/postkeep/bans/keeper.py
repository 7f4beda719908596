"""Strikes in, bans out: `BanKeeper` (the authority, in the main process; `postkeep ban` makes
its own on the same ledger), `BanList` (every process's local copy of the bans in force, what
accept looks up) and `Guard` (what the protocol servers call: SMTP, IMAP, and any later login
such as a web one).

- A strike (`BanKeeper.strike`) counts its kind's weight for each key of the client's address
  (`postkeep.bans.policy.ip_keys`) in the `Ledger`; a key at its threshold is banned for its
  escalation level's duration, its strikes forgotten, the ban logged in one line
  ``ban ip=<key> until=<UTC> duration=<s> level=<n> strikes=<n> reason=<text>`` and pushed to
  every process (`on_change`). A failed login also counts for its account (``account:<user>``);
  past `bans.account_max_failures` the account is under attack and the answer says so.
- `Guard.auth_failed` (a failed login, any protocol) strikes; for an account under attack,
  a failure from an (account, IP class) that never logged in successfully within
  `bans.known_for` is held back `bans.account_failure_delay` and logged
  ``auth delayed ip=... user=... reason="account under attack"``; the account itself is never
  locked. `Guard.auth_ok` remembers the (account, IP class) in the store.
- `BanKeeper.run` loads the bans in force from the ledger every `bans.sync_interval` and
  pushes the difference (bans made by `postkeep ban`, other instances, ends), so the store or
  Redis is the truth and every process's `BanList` follows it; a ban it learns so is logged
  as its own are (`ban ip=...`), one ended early `unban ip=<key>`.
- `never_ban` networks are never counted and never refused.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from postkeep import log
from postkeep.bans.ledger import Ledger
from postkeep.bans.policy import (
    AUTH,
    LOGIN_KINDS,
    Policy,
    ip_keys,
    is_class_key,
    key_prefix,
    network_key,
)
from postkeep.config.bans import BansConfig
from postkeep.net.slots import ip_class
from postkeep.store.api import Ban, LoginRecord, Store

logger = log.get("bans")

REASONS = {
    "auth": "auth failures",
    "harvest": "unknown recipients",
    "errors": "protocol errors",
    "preauth": "connections closed before login",
    "tls": "failed TLS handshakes",
    "web": "web login failures",
}
REMEMBER_EVERY = 3600.0  # seconds between a process's writes of one known (account, class)


def utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BanList:
    """The bans in force as this process knows them (key -> until), and the lookup accept
    makes: a dict lookup per key of the address, nothing when no ban is in force; and one
    more per other prefix length among the bans in force (bans by hand of, say, an IPv6 /32
    or an IPv4 /16: `others`)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.until: dict[str, float] = {}
        self.others: tuple[tuple[int, int], ...] = ()  # (version, prefix) of other keys

    def refused(self, ip: str) -> tuple[str, float] | None:
        """The ban (key, until) that refuses `ip`, if one does: the address's own keys first
        (`ip_keys`), then the other networks, longest first."""
        if not self.until:
            return None
        now = time.time()
        keys = ip_keys(ip)
        if self.others:
            extra = (network_key(ip, version, prefix) for version, prefix in self.others)
            keys = (*keys, *(key for key in extra if key is not None))
        for key in keys:
            until = self.until.get(key)
            if until is not None and until > now:
                return None if self.policy.exempt(keys[0]) else (key, until)
        return None

    def set(self, key: str, until: float) -> None:
        """Apply one change: a ban until `until`, or (until in the past) its end."""
        if until > time.time():
            self.until[key] = until
        else:
            self.until.pop(key, None)
        if not is_class_key(key):
            self.others = tuple(sorted({key_prefix(k) for k in self.until if not is_class_key(k)},
                                       key=lambda vp: -vp[1]))


class BanKeeper:
    """See the module docstring. `on_change(key, until)`: a ban began (or ended: `until` in
    the past); the main process pushes it to its workers."""

    def __init__(self, cfg: BansConfig, ledger: Ledger,
                 on_change: Callable[[str, float], None] | None = None) -> None:
        self.cfg = cfg
        self.policy = Policy(cfg)
        self.ledger = ledger
        self.bans = BanList(self.policy)
        self.on_change = on_change
        self._banning: set[str] = set()

    async def strike(self, ip: str, kind: str, user: str = "") -> bool:
        """Count a strike of `kind` from `ip` (and a failed login of `user`); whether that
        account is under attack."""
        if not self.cfg.enabled:
            return False
        keys = ip_keys(ip)
        if self.policy.exempt(keys[0]):
            return False
        now = time.time()
        weight = self.policy.weights[kind]
        if weight > 0:
            for key in keys:
                if key in self._banning or key in self.bans.until:
                    continue
                total = await self.ledger.add(key, weight, now)
                if total >= self.policy.threshold(key):
                    await self._ban(key, REASONS[kind], total, now)
        if kind not in LOGIN_KINDS or not user or user == "-":
            return False
        failures = await self.ledger.add(f"account:{user.lower()[:320]}", 1.0, now)
        return failures >= self.cfg.account_max_failures

    async def _ban(self, key: str, reason: str, strikes: float, now: float) -> None:
        self._banning.add(key)
        try:
            ban = self.policy.ban(key, reason, strikes, await self.ledger.last(key), now)
            await self.ledger.put(ban)
            await self.ledger.clear(key)
        finally:
            self._banning.discard(key)
        self._apply(ban.key, ban.until)
        log_ban(ban)

    async def add(self, key: str, duration: float, reason: str) -> Ban:
        """A ban made by hand (`postkeep ban add`): `duration` seconds from now, at the level
        after the key's last."""
        now = time.time()
        last = await self.ledger.last(key)
        ban = Ban(key, now + duration, reason, 0.0, self.policy.level(last, now), now)
        await self.ledger.put(ban)
        self._apply(key, ban.until)
        return ban

    async def remove(self, key: str) -> bool:
        removed = await self.ledger.remove(key)
        if removed:
            self._apply(key, 0.0)
        return removed

    async def sync(self) -> None:
        """Follow the ledger: apply every ban that began or ended since the last sync."""
        now = time.time()
        current = {b.key: b for b in await self.ledger.active(now)}
        for key, ban in current.items():
            known = self.bans.until.get(key)
            if known != ban.until:
                if known is None:  # made elsewhere: by hand, another node, before a restart
                    log_ban(ban)
                self._apply(key, ban.until)
        for key in [k for k in self.bans.until if k not in current]:
            if self.bans.until[key] > now + 1:  # ended early (`postkeep ban remove`)
                logger.warning("unban ip=%s", key)
            self._apply(key, 0.0)

    async def run(self) -> None:
        """`sync` every `sync_interval` seconds, for ever (a failure is logged, and retried)."""
        while True:
            try:
                await self.sync()
            except Exception as e:  # the store or Redis unreachable for now: next time
                logger.warning("bans: sync failed reason=%s", log.quote(str(e) or repr(e)))
            await asyncio.sleep(self.cfg.sync_interval)

    def _apply(self, key: str, until: float) -> None:
        self.bans.set(key, until)
        if self.on_change is not None:
            self.on_change(key, until)


def log_ban(ban: Ban) -> None:
    logger.warning(
        "ban ip=%s until=%s duration=%d level=%d strikes=%g reason=%s",
        ban.key, utc(ban.until), round(ban.until - ban.created), ban.level,
        round(ban.strikes, 1), log.quote(ban.reason),
    )


class Strikes(Protocol):
    """Where a worker's strikes go: the main process's `BanKeeper`, over the worker channel
    (`postkeep.server.worker.RemoteStrikes`)."""

    async def strike(self, ip: str, kind: str, user: str = "") -> bool: ...

    def notify(self, ip: str, kind: str) -> None:
        """A strike whose answer nobody waits for."""


class Guard:
    """What the protocol servers of one process call (see the module docstring)."""

    def __init__(self, cfg: BansConfig, bans: BanList, strikes: Strikes, store: Store,
                 history_days: int = 90) -> None:
        self.cfg = cfg
        self.bans = bans
        self.strikes = strikes
        self.store = store
        self.history_days = history_days  # `web.login_history_days`
        # (account, IP class, method) -> when last written
        self._remembered: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def refused(self, ip: str) -> tuple[str, float] | None:
        return self.bans.refused(ip) if self.cfg.enabled else None

    def strike(self, ip: str, kind: str) -> None:
        if self.cfg.enabled:
            self.strikes.notify(ip, kind)

    async def auth_failed(self, ip: str, user: str, kind: str = AUTH) -> None:
        """A failed login of `user` from `ip` (logged by the protocol already); `kind`: the
        strike's (`AUTH` for the mail protocols, `WEB` for the web listener)."""
        if not self.cfg.enabled:
            return
        under_attack = await self.strikes.strike(ip, kind, user)
        if not under_attack or not self.cfg.account_failure_delay:
            return
        since = time.time() - self.cfg.known_for
        if await self.store.known_client(user, ip_class(ip), since):
            return
        logger.warning("auth delayed ip=%s user=%s reason=%s", ip, log.quote(user),
                       log.quote("account under attack"))
        await asyncio.sleep(self.cfg.account_failure_delay)

    async def auth_ok(self, ip: str, user: str, account_id: int = 0, method: str = "") -> None:
        """`user` logged in from `ip`: remember the pair (at most once an hour per process and
        method),
        and, when it is remembered, put the login in the account's history (`method`: "imap
        LOGIN", "smtp PLAIN"; `account_id` 0: none), so a mail client that reconnects all day
        makes a line an hour, not one per connection."""
        pair = (user.lower(), ip_class(ip), method)
        now = time.time()
        last = self._remembered.pop(pair, None)
        self._remembered[pair] = last if last is not None and now - last < REMEMBER_EVERY else now
        if len(self._remembered) > 10_000:
            self._remembered.popitem(last=False)
        if last is None or now - last >= REMEMBER_EVERY:
            await self.store.remember_client(pair[0], pair[1], now, now - self.cfg.known_for)
            if account_id and method:
                await self.store.add_login(LoginRecord(account_id, now, ip, method, "ok", ""),
                                           now - self.history_days * 86400)
