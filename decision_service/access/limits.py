"""Rate limits per key: a token bucket, in-process or shared by every worker through Redis.

A rate "N/second" (or minute, hour) refills N tokens per period into a bucket that holds at most
N; each request takes one. An empty bucket answers with the seconds until the next token
(HTTP 429 + Retry-After). With Redis the bucket lives in one hash per key, updated by one Lua
script (atomic, on Redis's own clock), so all workers and replicas draw from the same bucket.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger("decision_service.access")

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_PERIOD = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_PERIOD |= {"h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float  # refill
    burst: float  # bucket size
    text: str


def parse_rate(text: str) -> Rate | None:
    """ "200/second" → Rate(200, 200); "off" → None (no limit)."""
    if text.strip().lower() in ("off", "none", "unlimited"):
        return None
    m = _RATE.match(text)
    if not m or float(m[1]) <= 0:
        raise ValueError(f"bad rate {text!r}: expected N/second, N/minute, N/hour or off")
    count = float(m[1])
    return Rate(count / _PERIOD[m[2].lower()], count, text.strip())


class Limiter(Protocol):
    async def take(self, bucket: str, rate: Rate) -> float: ...
    async def close(self) -> None: ...


class LocalLimiter:
    """Buckets of this worker only (no Redis configured)."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}  # bucket → [tokens, monotonic time]

    def take_now(self, bucket: str, rate: Rate) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        state = self._buckets.get(bucket)
        if state is None:
            self._buckets[bucket] = [rate.burst - 1.0, now]
            return 0.0
        tokens = state[0] + (now - state[1]) * rate.per_second
        if tokens > rate.burst:
            tokens = rate.burst
        state[1] = now
        if tokens >= 1.0:
            state[0] = tokens - 1.0
            return 0.0
        state[0] = tokens
        return (1.0 - tokens) / rate.per_second

    async def take(self, bucket: str, rate: Rate) -> float:
        return self.take_now(bucket, rate)

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV: refill per second, burst. Returns {allowed, wait seconds as text}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisLimiter:
    """Buckets shared through Redis. If Redis cannot be reached, this worker's own buckets
    apply for a few seconds (logged) before Redis is tried again: a limiter outage must not
    become a decision outage, and keys stay limited meanwhile."""

    PREFIX = "decision-service:rate:"
    RETRY_AFTER_FAILURE_S = 5.0

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self.client: Any = redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self.client.register_script(TOKEN_BUCKET_LUA)
        self._fallback = LocalLimiter()
        self._down_until = 0.0

    async def take(self, bucket: str, rate: Rate) -> float:
        if self._down_until and time.monotonic() < self._down_until:
            return self._fallback.take_now(bucket, rate)
        try:
            allowed, wait = await self._script(
                keys=[self.PREFIX + bucket], args=[repr(rate.per_second), repr(rate.burst)]
            )
        except Exception as exc:  # redis errors and timeouts alike
            if not self._down_until:
                log.warning("rate_limit_redis_unavailable", error=str(exc))
            self._down_until = time.monotonic() + self.RETRY_AFTER_FAILURE_S
            return self._fallback.take_now(bucket, rate)
        if self._down_until:
            log.info("rate_limit_redis_recovered")
            self._down_until = 0.0
        return 0.0 if int(allowed) else float(wait)

    async def close(self) -> None:
        await self.client.aclose()
