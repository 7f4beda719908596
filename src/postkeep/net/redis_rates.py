"""The firewall's rate buckets shared in Redis (`[cluster] redis_url`), so that every process
and node that names the same Redis counts one budget per IP class block
(docs/architecture.md "Firewall and flow control").

Only the main process of each node talks to Redis, never a worker and never at accept: the
workers decide from their own buckets and the blocks they are told (`postkeep.net.firewall`),
and the main process, besides its own global buckets, hands what they reported to
`RedisRates.add`. A task sends it on in one script call per batch (`_TAKE`, at most
`BATCH` buckets), which takes it from each block's bucket in Redis and returns, per bucket, the
seconds until it lets one more through (0: it still does); a bucket that went empty is also
published on the channel ``postkeep:rates-blocked``, which every node's main process
subscribes to, so the other nodes block it too, not only the one that emptied it. Each such
block goes to `on_blocked`, which tells the workers (`ipc.RateBlocked`).

Redis keys: ``postkeep:rate:<service>:<kind>:<class>:<network>``, a hash of the tokens left and
the Redis time of the last update (the script reads the clock of Redis, so the nodes' clocks
need not agree), expiring once the bucket is full again. The same token bucket as
`Buckets`: a minute's allowance, refilled over the minute; commands may go into debt down to
minus the allowance. The server-wide `firewall.connections_per_minute` stays per node: it
protects the node, not a client budget.

Redis unreachable: the rates fail open to what each node counts alone (its workers' buckets
and its own global ones, as without Redis), logged once (``redis unreachable, rates counted
per node reason=...``, logger ``postkeep.firewall``), and once when it answers again, this
node's subscription to the channel included (``redis reachable again, rates shared
seconds=...``). Meanwhile what the workers report is not kept for later, and Redis is tried
again at most every `RETRY` seconds. Calls time out after `TIMEOUT` seconds; the channel is
pinged every `HEARTBEAT` seconds and silence for three is an outage too (a hung or vanished
server sends no reset). An accept never waits on Redis.

A single Redis server (or a primary with replicas), not Redis Cluster: a script call names
buckets of any hash slot. Messages on the channel are parsed strictly and bounded
(`MAX_MESSAGE` octets; an entry that is not a valid block is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from postkeep import log
from postkeep.config.firewall import CLASSES, KINDS
from postkeep.net.firewall import GLOBAL, BucketKey, Buckets

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = log.get("firewall")

PREFIX = "postkeep:rate:"
CHANNEL = "postkeep:rates-blocked"
BATCH = 500  # buckets per script call
MAX_PENDING = 100_000  # buckets waiting for the next call; past it, a report is not shared
MAX_MESSAGE = 64 * 1024  # octets of a message on the channel
MAX_BLOCK = 3600.0  # seconds a block from the channel may last
RETRY = 2.0  # seconds between tries while Redis is unreachable
TIMEOUT = 1.0  # seconds a Redis call may take
HEARTBEAT = 5.0  # seconds between pings on the channel
SERVICES = ("mx", "submission", "imap")

#: one block: the bucket's key and the seconds until it lets one more through
Block = tuple[BucketKey, float]

# KEYS: the buckets; ARGV: per bucket its capacity, the amount taken, its floor (0, or minus
# the allowance for commands) and its name on the channel (JSON), then the channel. Returns
# the seconds until each lets one more through, as strings (Lua numbers would be cut to
# integers), and publishes the buckets that let none through now.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out, blocked = {}, {}
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local capacity = tonumber(ARGV[base + 1])
  local taken = tonumber(ARGV[base + 2])
  local floor = tonumber(ARGV[base + 3])
  local state = redis.call('HMGET', key, 't', 'u')
  local tokens, last = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or last == nil then
    tokens, last = capacity, now
  end
  tokens = math.min(capacity, tokens + math.max(0, now - last) * capacity / 60) - taken
  redis.call('HSET', key, 't', tostring(tokens), 'u', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) * 60000 / capacity) + 1000)
  local wait = 0
  if tokens < floor + 1 then
    wait = (floor + 1 - tokens) * 60 / capacity
    blocked[#blocked + 1] = {cjson.decode(ARGV[base + 4]), wait}
  end
  out[i] = tostring(wait)
end
if #blocked > 0 then
  redis.call('PUBLISH', ARGV[#ARGV], cjson.encode(blocked))
end
return out
"""


def redis_key(key: BucketKey) -> str:
    service, kind, index, net = key
    return f"{PREFIX}{service}:{kind}:{CLASSES[index][0]}:{net}"


def parse_blocks(data: bytes | str) -> list[Block]:
    """The blocks of a message on the channel: ``[[[service, kind, class index, network],
    seconds], ...]``; entries that are not valid blocks are skipped, a message past
    `MAX_MESSAGE` octets or not JSON yields none."""
    if len(data) > MAX_MESSAGE:
        return []
    try:
        rows = json.loads(data)
    except ValueError:
        return []
    out: list[Block] = []
    for row in rows if isinstance(rows, list) else ():
        key = _block_key(row)
        if key is not None:
            seconds = row[1]
            if (isinstance(seconds, int | float) and not isinstance(seconds, bool)
                    and math.isfinite(seconds) and seconds > 0):
                out.append((key, min(float(seconds), MAX_BLOCK)))
    return out


def _block_key(row: Any) -> BucketKey | None:
    if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], list)
            and len(row[0]) == 4):
        return None
    service, kind, index, net = row[0]
    if (service in SERVICES and kind in KINDS and isinstance(index, int)
            and not isinstance(index, bool) and 0 <= index < len(CLASSES)
            and isinstance(net, str) and 0 < len(net) <= 64):
        return service, kind, index, net
    return None


class RedisRates:
    """See the module docstring. `buckets`: the main process's global ones (for the
    allowances); `on_blocked(blocks)`: told the blocks Redis found, this node's and the
    others'."""

    def __init__(self, url: str, buckets: Buckets,
                 on_blocked: Callable[[list[Block]], None]) -> None:
        # imported only when a cluster is configured
        from redis import asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        # a call is tried again once on a new connection: a pooled one may be stale (Redis
        # restarted)
        self.redis: Redis = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self.buckets = buckets
        self.on_blocked = on_blocked
        self.script = self.redis.register_script(_TAKE)
        self.pending: dict[BucketKey, int] = {}
        self.down_since: float | None = None  # loop time of the first failure of an outage
        self.subscribed = False  # to the channel, confirmed
        self._retry_at = 0.0
        self._sending: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen to the other nodes' blocks (until `close`)."""
        self._listening = asyncio.create_task(self._listen())

    def add(self, key: BucketKey, n: int) -> None:
        """Count `n` of what a worker let through in the bucket shared in Redis (soon)."""
        if key[2] == GLOBAL or not self.buckets.limit(key[1], key[2]):
            return
        loop = asyncio.get_running_loop()
        if self.down_since is not None and loop.time() < self._retry_at:
            return  # failing open: counted on this node only
        pending = self.pending
        if key in pending:
            pending[key] += n
        elif len(pending) < MAX_PENDING:
            pending[key] = n
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self.pending:
                batch = list(self.pending.items())[:BATCH]
                for key, _ in batch:
                    del self.pending[key]
                try:
                    waits = await self._take(batch)
                except Exception as e:  # unreachable, timed out, refused: fail open
                    self._failed(e)
                    return
                self._recovered()
                blocks = [(key, min(float(wait), MAX_BLOCK))
                          for (key, _), wait in zip(batch, waits, strict=True) if float(wait) > 0]
                if blocks:
                    self.on_blocked(blocks)
        finally:
            self._sending = None

    async def _take(self, batch: list[tuple[BucketKey, int]]) -> list[Any]:
        args: list[str | int | float] = []
        for (service, kind, index, net), n in batch:
            capacity = self.buckets.limit(kind, index)
            floor = -capacity if kind == "commands" else 0
            args += [capacity, n, floor, json.dumps([service, kind, index, net])]
        keys = [redis_key(key) for key, _ in batch]
        waits: list[Any] = await self.script(keys=keys, args=[*args, CHANNEL])
        return waits

    def _failed(self, error: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self.pending.clear()
        self._retry_at = loop.time() + RETRY
        if self.down_since is None:
            self.down_since = loop.time()
            logger.warning("redis unreachable, rates counted per node reason=%s",
                           log.quote(str(error) or error.__class__.__name__))

    async def _listen(self) -> None:
        """The other nodes' blocks, from the channel. Redis is pinged every `HEARTBEAT`
        seconds on it: no answer for three, and it is away (a hung or vanished server sends
        no reset); subscribed again after an outage. An answer on a confirmed subscription
        ends an outage (logged): this node hears the others again."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    heard = pinged = loop.time()
                    while True:
                        message = await pubsub.get_message(timeout=HEARTBEAT)
                        now = loop.time()
                        if message is not None:  # Redis answers (a pong, say)
                            heard = now
                            if message.get("type") == "subscribe":
                                self.subscribed = True
                            self._recovered()
                            if message.get("type") == "message":
                                blocks = parse_blocks(message["data"])
                                if blocks:
                                    self.on_blocked(blocks)
                        if now - heard > 3 * HEARTBEAT:
                            raise TimeoutError("no answer on the channel")
                        if now - pinged >= HEARTBEAT:
                            pinged = now
                            await pubsub.ping()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: counted per node meanwhile
                self.subscribed = False
                self._failed(e)
                await asyncio.sleep(RETRY)

    def _recovered(self) -> None:
        """Redis answers again, the channel's subscription included: the outage ends."""
        if self.down_since is None or not self.subscribed:
            return
        seconds = asyncio.get_running_loop().time() - self.down_since
        self.down_since = None
        self._retry_at = 0.0
        logger.warning("redis reachable again, rates shared seconds=%.0f", seconds)

    async def close(self) -> None:
        for task in (self._sending, self._listening):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.redis.aclose()
