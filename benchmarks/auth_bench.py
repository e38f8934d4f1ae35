"""What authentication costs each /decide, in µs of server CPU: the Gate the server runs
(header scan, sha256 of the key, key lookup, role, token bucket, size and type checks), timed
in-process against the same request loop without it, in the same run.

    uv run python benchmarks/auth_bench.py [--requests 200000] [--repeat 5] [--redis URL]

Target (issue 8): ≤ 5 µs per request with the in-process limiter. With --redis the shared
limiter is timed too (one Redis round trip per request; informative, no target).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from decision_service.access.cache import KeyCache
from decision_service.access.keys import create_key
from decision_service.access.limits import LocalLimiter, RedisLimiter, parse_rate
from decision_service.api.decide import DECIDE_OPT
from decision_service.api.gate import Gate
from decision_service.audit import create_tables, make_engine

TARGET_US = 5.0
ROLES = ("decider", "analyst", "auditor", "admin")


def scope_for(key: str, body_len: int = 330) -> dict[str, Any]:
    """The scope uvicorn hands the fast path for a typical POST /decide."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/decide",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_len).encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"user-agent", b"loan-origination/4.2"),
        ],
    }


async def per_request_us(
    step: Callable[[dict[str, Any]], Awaitable[object]], scope: dict[str, Any], n: int
) -> float:
    """CPU µs per call of `step` (process time: what the server pays, not wall clock)."""
    t0 = time.process_time_ns()
    for _ in range(n):
        await step(scope)
    return (time.process_time_ns() - t0) / n / 1000


async def run(requests: int, repeat: int, redis_url: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'keys.db'}")
        create_tables(engine)
        for i in range(50):  # a realistic key table, the one used in the middle of it
            create_key(engine, f"other-{i}", ROLES[i % 4])
        key = create_key(engine, "bench-decider", "decider")
        keys = KeyCache(engine, engine)
        keys.refresh()
        rates = dict.fromkeys(ROLES, parse_rate("100000000/second"))
        local = Gate(keys, LocalLimiter(), rates, 65536)
        roles = DECIDE_OPT["roles"]
        scope = scope_for(key)

        async def bare(s: dict[str, Any]) -> None:  # the loop, the call, nothing checked
            return None

        async def gate_local(s: dict[str, Any]) -> object:
            denied = await local.admit(s, roles)
            assert denied is None
            return denied

        steps: dict[str, Callable[[dict[str, Any]], Awaitable[object]]] = {
            "baseline (no checks)": bare,
            "gate, in-process limiter": gate_local,
        }
        shared = None
        if redis_url:
            shared = Gate(keys, RedisLimiter(redis_url), rates, 65536)

            async def gate_redis(s: dict[str, Any]) -> object:
                return await shared.admit(s, roles)

            steps["gate, Redis limiter"] = gate_redis
        results: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(repeat):
            for name, step in steps.items():
                n = requests if "Redis" not in name else max(1000, requests // 50)
                results[name].append(await per_request_us(step, scope, n))
        if shared is not None:
            await shared.limiter.close()
        engine.dispose()
    base = statistics.median(results["baseline (no checks)"])
    print(f"{'':28} {'µs/request (median of ' + str(repeat) + ')':>26} {'minus baseline':>15}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:28} {med:26.2f} {med - base:15.2f}")
    cost = statistics.median(results["gate, in-process limiter"]) - base
    met = cost <= TARGET_US
    print(f"auth_us={cost:.2f} target_us={TARGET_US} {'met' if met else 'missed'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis", default=None, help="e.g. redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.requests, args.repeat, args.redis)))


if __name__ == "__main__":
    main()
