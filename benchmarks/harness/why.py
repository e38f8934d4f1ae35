"""Why a missed target is missed: each explained from this run's own measurements (the load
phases, the audit store's /metrics, the in-process stage timings, the reason-code timings),
so the explanation is as current as the verdict above it."""

from __future__ import annotations

import math

from benchmarks.harness.common import (
    ENGINES,
    LOW_CONNECTIONS,
    TARGET_BARE,
    TARGET_CPU_LOW_VS_HIGH,
    TARGET_P99_MS,
    TARGET_VS_MLSERVER,
)
from benchmarks.harness.core import Harness


def _f(x: float | None, digits: int = 0) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def section(h: Harness) -> list[str]:
    out = ["## Why the missed targets are missed", ""]
    out += _throughput(h) + _low_load(h) + _mlserver(h) + _latency(h) + _reasons(h)
    return out


def _throughput(h: Harness) -> list[str]:
    """Target 1: the handler's own work per decision against bare Litestar's whole request."""
    hi, bare = h.cfg.connections, h.results.get("bare")
    stages = h.extras.get("stages") or {}
    if bare is None or not bare.runs:
        return []
    b = bare.median("cpu_us", hi)
    out = [
        f"**Target 1 (req/s vs bare Litestar).** One worker on one core is CPU-bound, so the "
        f"ratio is bare Litestar's CPU per request over ours. Bare Litestar spends {_f(b)} µs "
        "on a whole request. Even if everything around our handler (HTTP, routing, the gate) "
        "cost no more than that, the ratio could not exceed bare ÷ (bare + the handler's own "
        "work), and that work is measured in-process (section below, audit commit included):",
        "",
        "| engine, store | handler (Decider.respond) µs | of which the decision µs | ceiling "
        "bare ÷ (bare + handler) | measured | handler budget for the target µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, d in stages.items():
        if not key.startswith("respond/"):
            continue
        engine, backend = key.split("/")[1:3]
        p = h.results.get(f"decide/{engine}/{backend}")
        decide = (stages.get(f"pipeline/{engine}") or {}).get("total")
        measured = p.median("rps", hi) / bare.median("rps", hi) if p and p.runs else math.nan
        target = TARGET_BARE[engine]
        out.append(
            f"| {engine}, {backend} | {_f(d['cpu_us'])} | {_f(decide)} | "
            f"{b / (b + d['cpu_us']):.2f} | {_f(measured, 2)} | ≤ {b * (1 / target - 1):,.0f} "
            f"(target {target:.2f}) |"
        )
    out += [
        "",
        "The decision alone (score, rules, exact reasons) takes most of the handler budget the "
        "targets allow; what remains of the handler is the audit record (hash chain, MAC, "
        "packing, the group commit on the writer thread) and the decision log line, which the "
        "guarantees keep (commit before answer, tamper evidence, exact replay). The profile at "
        "the end of this page splits the handler by frame.",
        "",
    ]
    return out


def _low_load(h: Harness) -> list[str]:
    """Targets 2 and 4 at 8 connections: the per-commit cost spread over small batches."""
    hi, lo = h.cfg.connections, LOW_CONNECTIONS
    rows, floors, batches = [], [], []
    for engine in ENGINES:
        for backend in ("SQLite", "PostgreSQL"):
            p = h.results.get(f"decide/{engine}/{backend}")
            if p is None or not p.at(hi) or not p.at(lo):
                continue
            b_hi, b_lo = p.median("batch", hi), p.median("batch", lo)
            o_hi, o_lo = p.median("other_cpu_us", hi), p.median("other_cpu_us", lo)
            l_hi, l_lo = p.median("loop_cpu_us", hi), p.median("loop_cpu_us", lo)
            c_hi, c_lo = p.median("full_cpu_us", hi), p.median("full_cpu_us", lo)
            per_commit = math.nan
            if b_hi > 0 and b_lo > 0 and b_lo < b_hi:  # writer CPU = a + K / batch
                per_commit = (o_lo - o_hi) / (1 / b_lo - 1 / b_hi)
            # the best case at `lo` connections: every commit carries all `lo` decisions
            floor = (c_hi + per_commit * (1 / lo - 1 / b_hi)) / c_hi
            floors.append(floor)
            batches.append(b_lo)
            rows.append(
                f"| {engine}, {backend} | {_f(b_hi, 1)} / {_f(b_lo, 1)} | "
                f"{_f(p.median('commit_ms', hi), 2)} / {_f(p.median('commit_ms', lo), 2)} | "
                f"{_f(o_hi)} → {_f(o_lo)} | {_f(l_hi)} → {_f(l_lo)} | {_f(per_commit)} | "
                f"{_f(c_lo / c_hi, 2)} | {_f(floor, 2)} |"
            )
    if not rows:
        return []
    commits = h.extras.get("commits") or {}
    store: list[str] = []
    if commits:
        store = [
            "",
            "The audit store alone (benchmarks/harness/commits.py: the real store on SQLite, "
            "closed-loop clients, the writer thread's CPU per transaction and, inside it, the "
            "database's own COMMIT: its WAL frames and their fsync):",
            "",
            "| clients | decisions per commit | writer CPU per commit µs | of which COMMIT µs "
            "| writer CPU per decision µs |",
            "|---:|---:|---:|---:|---:|",
            *(
                f"| {c} | {d['batch']:.1f} | {d['cpu_per_batch_us']:,.0f} | "
                f"{d['commit_per_batch_us']:,.0f} | {d['cpu_per_record_us']:,.0f} |"
                for c, d in commits.items()
            ),
        ]
    return [
        f"**Targets 2 and 4 at {lo} connections (CPU per decision at {lo} ÷ at {hi} ≤ "
        f"{TARGET_CPU_LOW_VS_HIGH}).** Every decision is committed before its answer, so at "
        f"{lo} connections a commit can never carry more than {lo} decisions, while at {hi} "
        "it carries dozens. A commit has a fixed cost (a transaction, its fsync, the chain "
        "head, the hand-over to the event loop and back), shared by fewer decisions as the "
        "load falls. From the audit store's /metrics over each measured window:",
        "",
        f"| engine, store | decisions per commit ({hi} / {lo}) | ms per commit ({hi} / {lo}) "
        f"| writer & other threads µs/decision ({hi} → {lo}) | event loop µs/decision "
        f"({hi} → {lo}) | fixed writer CPU per commit µs (fit) | ratio of the medians | best case "
        f"with {lo} per commit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        *store,
        "",
        "The fit takes the writer's CPU per decision as a + K ÷ (decisions per commit) through "
        f'the two loads. "Best case" keeps everything else at its {hi}-connection cost and '
        f"puts all {lo} in-flight decisions in every commit. {_verdict(floors, batches, lo)} "
        "The event loop's CPU per decision rises too (table), by as much as the writer's in "
        "some configurations. "
        "This run does not separate that rise; what differs at low load is the number of "
        "commits per second (each a hand-over to the writer thread and back, with the GIL "
        "passed between two threads on the one core the server is pinned to) and fewer "
        "requests per wake-up of the loop. Bare Litestar, with no commit, costs the same at "
        "both loads.",
        "",
    ]


def _verdict(floors: list[float], batches: list[float], lo: int) -> str:
    finite = [f for f in floors if not math.isnan(f)]
    if not finite:
        return ""
    if max(finite) > TARGET_CPU_LOW_VS_HIGH:
        return (
            f"Where it is above {TARGET_CPU_LOW_VS_HIGH}, even full commits miss the target: it "
            "needs a cheaper commit (fewer statements per transaction, less Python per commit)."
        )
    span = f"{min(batches):.1f}–{max(batches):.1f}"
    if min(batches) >= 0.9 * lo:
        return (
            f"The commits carry {span} decisions: when fewer requests are queued than waited "
            "for a commit at once during the last one, the writer waits for them (at most "
            "DECISION_AUDIT_COMMIT_WAIT_MS, audit/writer.py), so the in-flight decisions share "
            f"one commit; best case {max(finite):.2f}."
        )
    return (
        f"It is at most {max(finite):.2f} here: with full commits the writer's side alone would "
        f"allow the target. The commits carry {span} decisions, not {lo}: a decision computed "
        "during a commit waits for the next one, and the writer did not wait for more (was "
        "DECISION_AUDIT_COMMIT_WAIT_MS 0?)."
    )


def _mlserver(h: Harness) -> list[str]:
    """Target 4: half of MLServer's predict-only CPU against the floor of our request."""
    hi, lo = h.cfg.connections, LOW_CONNECTIONS
    bare, ml = h.results.get("bare"), h.results.get("mlserver")
    stages = h.extras.get("stages") or {}
    if bare is None or not bare.runs or ml is None or not ml.runs:
        return []
    budget = {c: TARGET_VS_MLSERVER * ml.median("cpu_us", c) for c in (hi, lo)}
    b = bare.median("cpu_us", hi)
    rows, floors = [], []
    for key, d in stages.items():
        if not key.startswith("respond/"):
            continue
        engine, backend = key.split("/")[1:3]
        p = h.results.get(f"decide/{engine}/{backend}")
        if p is None or not p.runs:
            continue
        floors.append(b + d["cpu_us"])
        rows.append(
            f"| {engine}, {backend} | {_f(b + d['cpu_us'])} | "
            f"{_f(p.median('full_cpu_us', hi))} / {_f(p.median('full_cpu_us', lo))} |"
        )
    if not rows:
        return []
    return [
        f"**Target 4 (server CPU ≤ {TARGET_VS_MLSERVER} × MLServer's predict-only).** MLServer "
        f"spends {_f(ml.median('cpu_us', hi))} µs of CPU per prediction at {hi} connections and "
        f"{_f(ml.median('cpu_us', lo))} at {lo}, so the budget is {_f(budget[hi])} / "
        f"{_f(budget[lo])} µs for the whole audited decision. A floor for ours: bare "
        f"Litestar's request ({_f(b)} µs, HTTP and nothing else) plus the handler measured "
        "in-process (decode, decision, audit record and commit, log line):",
        "",
        f"| engine, store | floor: bare + handler µs | measured µs ({hi} / {lo}) |",
        "|---|---:|---:|",
        *rows,
        "",
        _floor_verdict(floors, budget, hi, lo),
        "",
    ]


def _floor_verdict(floors: list[float], budget: dict[int, float], hi: int, lo: int) -> str:
    over = [c for c in (hi, lo) if min(floors) > budget[c]]
    if not over:
        return (
            "Where the floor is within the budget, what is missed is the cost above the floor: "
            "the framework and the gate around the handler (the profile below), and at "
            f"{lo} connections the low-load rise of target 2."
        )
    at = " and ".join(str(c) for c in over)
    return (
        f"At {at} connections every floor is above the budget: the target would need the "
        "handler itself, audit commit included, to cost about what bare HTTP costs. MLServer's "
        "prediction is one LightGBM call behind a heavier HTTP stack; ours adds rules, exact "
        "reasons and a durable, hash-chained record to a lighter one."
        + (
            ""
            if len(over) == 2
            else f" At {lo if over == [hi] else hi}, the floor is within the budget and what "
            "misses is the cost above it (the framework and gate, and the low-load rise of "
            "target 2)."
        )
    )


def _latency(h: Harness) -> list[str]:
    """Target 3: open-loop p99 against the commit cadence."""
    lat = h.extras.get("latency") or {}
    if not lat:
        return []
    hi = h.cfg.connections
    out = [
        f"**Target 3 (p99 ≤ {TARGET_P99_MS:g} ms at 70% of peak, open loop).** The rate is 70% "
        f"of the closed-loop peak at {hi} connections, but requests that arrive one by one on "
        "a fixed schedule cost the server more CPU each than requests that arrive together: "
        "fewer per wake-up of the event loop, fewer per commit. So the core is busier than "
        "70%, and a request waits for the requests ahead of it on the event loop and then "
        "for its batch's commit. The tail is that queue:",
        "",
    ]
    for key, d in lat.items():
        p = h.results.get(key)
        closed = p.median("full_cpu_us", hi) if p else math.nan
        busy = d["achieved"] * d.get("cpu_us", math.nan) / 1e6
        out.append(
            f"- {key.removeprefix('decide/')}: p50 {_f(d['p50_ms'], 2)} ms, "
            f"p90 {_f(d.get('p90_ms'), 2)} ms, p99 {_f(d['p99_ms'], 2)} ms at "
            f"{_f(d['achieved'])} req/s; server CPU {_f(d.get('cpu_us'))} µs per request "
            f"(closed loop at {hi} connections: {_f(closed)}), so the core was "
            f"{_f(100 * busy)}% busy."
        )
    return [
        *out,
        "",
        "A core that busy queues: p99 is tens of milliseconds whatever the group commit does "
        "(the commit wait, and a shorter GIL switch interval so the writer thread gets the "
        "GIL back sooner, were measured open loop at a fixed rate in A/B rounds: neither moved "
        "p99 beyond the rounds' noise). Meeting the target needs the CPU per request of "
        "requests arriving one by one to fall well below the closed-loop peak's, so that "
        "70% of that peak leaves the core idle a good part of the time.",
        "",
    ]


def _reasons(h: Harness) -> list[str]:
    """Target 5: a reason-code computation against one score."""
    r = h.extras.get("reasons")
    if not r:
        return []
    us = r["us"]
    return [
        f"**Target 5 (exact reasons ≤ one score).** Reasons take {_f(us['reasons'], 1)} µs "
        f"against a score's {_f(us['score'], 1)} µs (LightGBM's pred_contrib through its C fast "
        f"path: {_f(us['reasons_lightgbm_c'], 1)} µs). The tabulated SHAP finds a row's cells "
        "with one gather over a (feature bucket × tree) index and sums them in order; what is "
        "left is NumPy's per-call cost (a gather of one row per tree and the ordered sum, and "
        "the bucket search: benchmarks/scoring_bench.py). Below one score needs native code, "
        "which this project does not add.",
        "",
    ]
