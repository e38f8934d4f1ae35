"""Target 3: latency at 70% of the peak, with the open-loop generator (openloop.py)."""

from __future__ import annotations

import json
import math
import subprocess
from typing import Any

from benchmarks.harness.common import APPLICATIONS, PhaseError, child_python, clean_env, log
from benchmarks.harness.core import Harness
from benchmarks.harness.servers import AUTH_KEYS, Server


def open_loop(h: Harness, server: Server, rate: float, seconds: float, key: str) -> dict:
    ids_file = h.tmp / f"openloop-{server.port}-{round(rate)}.ids"
    argv = [
        *h.place.client,
        *child_python("openloop"),
        *("--port", str(server.port), "--rate", f"{rate:.1f}", "--seconds", str(seconds)),
        *("--bodies", str(APPLICATIONS), "--ids-out", str(ids_file)),
    ]
    env = clean_env()
    if server.port in AUTH_KEYS:
        env["OPENLOOP_AUTH"] = f"Bearer {AUTH_KEYS[server.port]}"
    before = server.cpu_seconds()
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 90, check=False
    )
    cpu = server.cpu_seconds() - before
    line = next((x for x in out.stdout.splitlines() if x.startswith("OPENLOOP_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise PhaseError(f"open-loop generator failed ({out.returncode}): {out.stderr[-1500:]}")
    h.add_ids(key, file=ids_file)
    data = json.loads(line.removeprefix("OPENLOOP_RESULT "))
    data["cpu_us"] = cpu / max(data.get("sent", data["requests"]), 1) * 1e6
    return data


def latency_extra(h: Harness, server: Server, key: str, peak_rps: float) -> None:
    """Constant arrival rate at 70% of the peak just measured (64 connections, same server)."""
    if not peak_rps or math.isnan(peak_rps):
        return
    rate = 0.7 * peak_rps
    try:
        data = open_loop(h, server, rate, h.cfg.latency_seconds, key)
    except PhaseError as exc:
        h.fail(f"latency ({key})", exc)
        return
    lat: dict[str, Any] = {k: v / 1000 for k, v in data["latency_us"].items()}
    lag = data["send_lag_us"]
    errors = sum(data["errors"].values()) + sum(
        n for code, n in data["statuses"].items() if not 200 <= int(code) < 300
    )
    out = {
        "peak_rps": peak_rps,
        "rate": rate,
        "achieved": data["requests"] / h.cfg.latency_seconds,
        "requests": data["requests"],
        "connections": data["connections_opened"],
        "lag_p99_ms": lag["p99"] / 1000,
        "errors": errors,
        "error_kinds": {k: v for k, v in data["errors"].items() if v}
        | {f"HTTP {c}": n for c, n in data["statuses"].items() if not 200 <= int(c) < 300},
        "cpu_us": data["cpu_us"],
        **{f"{k}_ms": v for k, v in lat.items()},
    }
    h.extras.setdefault("latency", {})[key] = out
    log(
        f"latency {key} at {rate:,.0f} req/s (70% of {peak_rps:,.0f}), open loop: "
        f"p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms, p99.9 {out['p99_9_ms']:.2f} ms "
        f"(generator lag p99 {out['lag_p99_ms']:.2f} ms, {out['connections']} connections)"
    )
