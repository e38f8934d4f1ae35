"""Where the server's CPU goes under load: py-spy on a default-configuration server (full run;
needs `uv pip install py-spy`, not a project dependency)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.common import APPLICATIONS, HOST, LUA, log
from benchmarks.harness.core import Harness
from benchmarks.harness.servers import decide_server


def run(h: Harness) -> None:
    """py-spy (GIL samples) on a default-configuration server under the usual load.

    Samples are attributed to buckets by the frames on their stack and scaled by the CPU
    time each thread used per request in the same window (psutil), so the table reads in
    µs per request. The audit writer thread's SQLite work runs without the GIL: it shows in
    its thread CPU time, not in its samples.
    """
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        log("profile: py-spy not installed (`uv pip install py-spy`): skipped")
        return
    cfg = h.cfg
    store = h.stores.sqlite("profile")
    server = decide_server(
        h.port(), h.place.server, h.tmp, "durable_rules", store.url, cfg.log_decisions
    )
    raw = h.tmp / "profile.raw"
    seconds = max(5, round(cfg.duration))
    try:
        server.start()
        h.wrk.run(server.port, cfg.warmup or 2, cfg.connections)
        assert server.proc is not None
        load = subprocess.Popen(
            [
                *h.place.client,
                "wrk",
                "-t1",
                f"-c{cfg.connections}",
                f"-d{seconds + 3}s",
                "-s",
                str(LUA),
                f"http://{HOST}:{server.port}/decide",
                "--",
                str(APPLICATIONS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=h.wrk.env(server.port, None),
        )
        time.sleep(1.5)
        (main0, other0), t0 = server.thread_cpu_seconds(), time.monotonic()
        spy = subprocess.run(
            [
                *(pyspy, "record", "--pid", str(server.proc.pid)),
                *("--duration", str(seconds), "--rate", "200", "--gil"),
                *("--format", "raw", "--output", str(raw)),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        (main1, other1), t1 = server.thread_cpu_seconds(), time.monotonic()
        out, _err = load.communicate(timeout=seconds + 60)
        line = next((x for x in out.splitlines() if x.startswith("WRK_RESULT ")), None)
        if spy.returncode != 0 or line is None or not raw.exists():
            log(f"profile: failed: {spy.stderr[-500:]}")
            h.failures.append(f"profile: {spy.stderr[-500:] or 'wrk failed'}")
            return
        data = json.loads(line.removeprefix("WRK_RESULT "))
        rps = data["requests"] / (data["duration_us"] / 1e6)
        reqs = rps * (t1 - t0)  # requests served while py-spy sampled
        h.extras["profile"] = {
            "rps": rps,
            "seconds": t1 - t0,
            "loop_us": (main1 - main0) / reqs * 1e6,
            "other_us": (other1 - other0) / reqs * 1e6,
            "buckets": profile_buckets(raw),
        }
        log(
            f"profile: {rps:,.0f} req/s, event loop {h.extras['profile']['loop_us']:.0f} µs/req, "
            f"other threads {h.extras['profile']['other_us']:.0f} µs/req"
        )
    except Exception as exc:
        h.failures.append(f"profile: {exc}")
        log(f"profile: FAILED: {exc}")
    finally:
        server.stop()


# Profile attribution: the first bucket whose pattern appears in a sample's stack wins.
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("audit writer thread (Python, with the GIL)", ("Thread._bootstrap",)),
    ("decision log line (structlog)", ("structlog/",)),
    ("Prometheus metrics", ("prometheus_client/",)),
    ("OpenTelemetry span / trace id", ("opentelemetry/",)),
    (
        "audit, event-loop side (record columns, queue, future)",
        ("decision_service/audit/",),
    ),
    (
        "rules engine (incl. trace of fired rules)",
        ("decision_service/rules/",),
    ),
    ("SHAP reason codes", ("Scorer.explain", "Scorer.contributions", "shap_table")),
    ("score: features + LightGBM", ("Scorer.predict", "Scorer.features", "_FastPredictor")),
    (
        "rest of the decision (facts, Decision, id, clock)",
        ("decision_service/pipeline.py", "decision_service/service.py"),
    ),
    (
        "/decide handler itself (decode, encode, response object, glue)",
        ("decision_service/api/",),
    ),
    (
        "HTTP + Litestar (parse, routing, request, response)",
        ("litestar/", "uvicorn/protocols/", "httptools"),
    ),
]
OTHER_BUCKET = "event loop (uvloop, asyncio callbacks), other"


def profile_buckets(raw: Path) -> dict[str, Any]:
    """Share of GIL samples per bucket (main thread and writer thread), and top functions."""
    buckets: dict[str, int] = {}
    self_time: dict[str, int] = {}
    main = other = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        # the event loop's own frames (uvicorn.run → asyncio Runner.run) are on every
        # main-thread stack: attribute by what runs inside the loop
        for i, f in enumerate(frames):
            if f.startswith("Runner.run "):
                frames = frames[i + 1 :]
                break
        name = OTHER_BUCKET
        for bucket, patterns in PROFILE_BUCKETS:
            if any(p in f for f in frames for p in patterns):
                name = bucket
                break
        buckets[name] = buckets.get(name, 0) + n
        if "Thread._bootstrap" in stack:
            other += n
        else:
            main += n
            leaf = frames[-1] if frames else "(uvloop, C)"
            self_time[leaf] = self_time.get(leaf, 0) + n
    top = sorted(self_time.items(), key=lambda kv: -kv[1])[:15]
    return {"samples_main": main, "samples_other": other, "buckets": buckets, "top": top}


def render(prof: dict[str, Any], connections: int) -> list[str]:
    b = prof["buckets"]
    main_n, other_n = max(b["samples_main"], 1), b["samples_other"]
    lines = [
        "## Profile of /decide under load (py-spy)",
        "",
        f"durable_rules · SQLite, {connections} connections, {prof['rps']:,.0f} req/s, "
        f"py-spy `--gil` for {prof['seconds']:.0f} s at 200 Hz. Event-loop thread "
        f"{prof['loop_us']:,.0f} µs CPU/req, other threads (audit writer) "
        f"{prof['other_us']:,.0f} µs CPU/req (psutil, same window). Main-thread samples are "
        "attributed by the frames on their stack (first match in this order) and scaled by the "
        "event loop's CPU per request.",
        "",
        "| where (event-loop thread unless said) | share of samples | ≈ µs/req |",
        "|---|---:|---:|",
    ]
    for name, _patterns in [*PROFILE_BUCKETS, (OTHER_BUCKET, ())]:
        n = b["buckets"].get(name, 0)
        if name.startswith("audit writer"):
            lines.append(
                f"| {name} | {n / (main_n + other_n):.1%} of all | (in the "
                f"{prof['other_us']:,.0f} µs of other threads) |"
            )
            continue
        lines.append(f"| {name} | {n / main_n:.1%} | {n / main_n * prof['loop_us']:,.0f} |")
    lines += [
        "",
        "Hottest leaf frames (event loop): "
        + "; ".join(f"`{f}` {n / main_n:.1%}" for f, n in b["top"][:10]),
        "",
    ]
    return lines
