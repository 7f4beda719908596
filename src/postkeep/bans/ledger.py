"""Where strikes are counted and bans kept: `StoreLedger` (strikes in the main process's memory,
bans in the store) or `RedisLedger` (both in Redis, `cluster.redis_url`: every process and node
that names the same Redis shares them).

Redis keys (prefix ``postkeep:``):

- ``strikes:<key>``, a hash of strikes per tenth of the window (field: the tenth's number since
  the epoch), ``HINCRBYFLOAT`` then ``EXPIRE`` of one window, in one transaction; the sum of the
  fields of the last ten tenths is the key's count (so the window slides in steps of a tenth);
- ``ban:<key>``, a hash of the ban (until, reason, strikes, level, created), expiring
  `forget_after` after its end (kept that long for the escalation level);
- ``bans``, a sorted set of the keys by `until`, for the list of bans in force.
"""

from __future__ import annotations

import time
from typing import Protocol

from postkeep.bans.policy import Windows
from postkeep.store.api import Ban, Store

PREFIX = "postkeep:"
TENTHS = 10


class Ledger(Protocol):
    async def add(self, key: str, weight: float, now: float) -> float:
        """Count `weight` strikes for `key`; the key's strikes within the window."""
        ...

    async def clear(self, key: str) -> None:
        """Forget the key's strikes (it was banned)."""

    async def put(self, ban: Ban) -> None: ...

    async def remove(self, key: str) -> bool:
        """End the key's ban now; False if it had none in force."""
        ...

    async def last(self, key: str) -> Ban | None:
        """The key's last ban, in force or not (for its escalation level)."""
        ...

    async def active(self, now: float) -> list[Ban]: ...

    async def close(self) -> None: ...


class StoreLedger:
    """Strikes in memory (`Windows`: this process's count), bans in the store."""

    def __init__(self, store: Store, window: float, max_tracked: int, forget_after: float
                 ) -> None:
        self.store = store
        self.windows = Windows(window, max_tracked)
        self.forget_after = forget_after

    async def add(self, key: str, weight: float, now: float) -> float:
        return self.windows.add(key, weight, now)

    async def clear(self, key: str) -> None:
        self.windows.clear(key)

    async def put(self, ban: Ban) -> None:
        await self.store.put_ban(ban, self.forget_after)

    async def remove(self, key: str) -> bool:
        return await self.store.remove_ban(key)

    async def last(self, key: str) -> Ban | None:
        return await self.store.get_ban(key)

    async def active(self, now: float) -> list[Ban]:
        return await self.store.list_bans(now)

    async def close(self) -> None:
        """The store is its owner's to close."""


class RedisLedger:
    """Strikes and bans in Redis (see the module docstring)."""

    def __init__(self, url: str, window: float, forget_after: float) -> None:
        from redis import asyncio as aioredis  # imported only when a cluster is configured

        self.redis = aioredis.from_url(url, decode_responses=True)
        self.window = window
        self.forget_after = forget_after

    async def add(self, key: str, weight: float, now: float) -> float:
        step = self.window / TENTHS
        tenth = int(now // step)
        name = f"{PREFIX}strikes:{key}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrbyfloat(name, str(tenth), weight)
            pipe.expire(name, max(1, int(self.window + step)))
            pipe.hgetall(name)
            _, _, counts = await pipe.execute()
        stale = [f for f in counts if int(f) <= tenth - TENTHS]
        if stale:
            await self.redis.hdel(name, *stale)
        return sum(float(v) for f, v in counts.items() if int(f) > tenth - TENTHS)

    async def clear(self, key: str) -> None:
        await self.redis.delete(f"{PREFIX}strikes:{key}")

    async def put(self, ban: Ban) -> None:
        name = f"{PREFIX}ban:{ban.key}"
        keep = max(1, int(ban.until - time.time() + self.forget_after))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping={"until": ban.until, "reason": ban.reason,
                                     "strikes": ban.strikes, "level": ban.level,
                                     "created": ban.created})
            pipe.expire(name, keep)
            pipe.zadd(f"{PREFIX}bans", {ban.key: ban.until})
            pipe.zremrangebyscore(f"{PREFIX}bans", "-inf", time.time())
            await pipe.execute()

    async def remove(self, key: str) -> bool:
        now = time.time()
        last = await self.last(key)
        if last is None or last.until <= now:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{PREFIX}ban:{key}", "until", now)
            pipe.zrem(f"{PREFIX}bans", key)
            await pipe.execute()
        return True

    async def last(self, key: str) -> Ban | None:
        fields = await self.redis.hgetall(f"{PREFIX}ban:{key}")
        return _ban(key, fields) if fields else None

    async def active(self, now: float) -> list[Ban]:
        keys = await self.redis.zrangebyscore(f"{PREFIX}bans", f"({now}", "+inf")
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(f"{PREFIX}ban:{key}")
            rows = await pipe.execute()
        found = [_ban(key, fields) for key, fields in zip(keys, rows, strict=True) if fields]
        return sorted((b for b in found if b.until > now), key=lambda b: b.key)

    async def close(self) -> None:
        await self.redis.aclose()


def _ban(key: str, fields: dict[str, str]) -> Ban:
    return Ban(key, float(fields["until"]), fields["reason"], float(fields["strikes"]),
               int(fields["level"]), float(fields["created"]))


def open_ledger(store: Store, redis_url: str, window: float, max_tracked: int,
                forget_after: float) -> Ledger:
    """The ledger of the config: Redis when `redis_url` is set, else the store's."""
    if redis_url:
        return RedisLedger(redis_url, window, forget_after)
    return StoreLedger(store, window, max_tracked, forget_after)
