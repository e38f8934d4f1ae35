"""RESULTS.md: the targets first (met/missed with numbers), then the tables they come from."""

from __future__ import annotations

import math
import os
import platform
import statistics
from datetime import datetime
from typing import Any

from benchmarks.harness import profile, targets, why
from benchmarks.harness.common import ENGINES, LOW_CONNECTIONS, git
from benchmarks.harness.core import Harness, PhaseResult

ORDER = ["bare", *(f"decide/{e}/{b}" for b in ("SQLite", "PostgreSQL") for e in ENGINES)]
ORDER += ["textbook", "mlserver"]


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def machine_line(h: Harness) -> str:
    r, c = h.results, h.cfg.connections
    default, bare, textbook = r.get("decide/durable_rules/SQLite"), r.get("bare"), r.get("textbook")
    x = targets.per_round(default, "rps", c, bare, "rps", c).median
    y = targets.per_round(default, "rps", c, textbook, "rps", c).median
    lat = h.extras.get("latency", {}).get("decide/durable_rules/SQLite")
    z = lat["p99_ms"] if lat else math.nan
    return f"ratio_vs_bare={x:.3f} ratio_vs_textbook={y:.2f} p99_ms={z:.2f} lost={h.total_lost()}"


def render(h: Harness, started: datetime, elapsed: float) -> str:
    cfg = h.cfg
    lines: list[str] = []
    add = lines.extend
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "decision_service", "benchmarks", "rules")
    add(
        [
            "# Benchmark results",
            "",
            f"Command: `{cfg.command}`  ",
            f"Run: {started:%Y-%m-%d %H:%M UTC}, {elapsed / 60:.1f} min, commit `{commit}`"
            + (" (working tree has uncommitted changes)" if dirty else "")
            + "  ",
            f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"{h.place.note}; shared (load average at start {h.load_at_start}, at the end "
            + ", ".join(f"{x:.1f}" for x in os.getloadavg())
            + ").  ",
            f"Load: wrk 1 thread, {cfg.connections} and {LOW_CONNECTIONS} connections, "
            f"{cfg.duration:.0f} s measured each after {cfg.warmup:.0f} s warm-up, {cfg.rounds} "
            "round(s) of interleaved phases (one server at a time, one uvicorn worker), requests "
            f"cycling through the {len(h.lines):,} held-out applications, authentication on "
            f"(admin key), decision log {'on' if cfg.log_decisions else 'off'}.",
            "",
            noise(h),
            "",
            "## Targets (issue 14)",
            "",
            "| # | target | measured | met |",
            "|---|---|---|---|",
        ]
    )
    for row in targets.rows(h):
        mark = "—" if row.met is None else ("met" if row.met else "**missed**")
        add([f"| {row.number or ''} | {row.name} | {row.measured} | {mark} |"])
    add([""])
    add(load_tables(h))
    add(latency_section(h))
    add(agreement_section(h))
    add(storage_section(h))
    add(coldstart_section(h))
    add(stages_section(h))
    if h.extras.get("profile"):
        add(profile.render(h.extras["profile"], cfg.connections))
    add(why.section(h))
    add(soak_section(h))
    if h.failures:
        add(["## Failures", "", *(f"- {f.splitlines()[0]}" for f in h.failures), ""])
    add(["Machine-readable (last line of the run):", "", f"    {machine_line(h)}", ""])
    return "\n".join(lines)


def noise(h: Harness) -> str:
    bare = h.results.get("bare")
    if bare is None or len(bare.at(h.cfg.connections)) < 2:
        return (
            "Noise: one round only, so no spread was measured; compare ratios, never absolute "
            "figures across runs."
        )
    spreads = []
    for key in ORDER:
        p = h.results.get(key)
        if p and len(p.at(h.cfg.connections)) >= 2:
            v = [m.cpu_us for m in p.at(h.cfg.connections)]
            spreads.append(f"{p.title} {(max(v) - min(v)) / statistics.median(v):.0%}")
    return (
        "Noise (spread of server CPU µs/request at "
        f"{h.cfg.connections} connections over the rounds, (max − min) ÷ median): "
        + "; ".join(spreads)
        + ". Ratios in the targets are taken within each round (phases minutes apart)."
    )


def load_tables(h: Harness) -> list[str]:
    out = [
        "## Load phases (wrk, closed loop)",
        "",
        "| phase | connections | req/s (per round) | p50 ms | p99 ms | server CPU µs/req "
        "(per round) | event loop / other threads | decisions per audit commit (ms) "
        "| non-2xx / socket errors | 200s / records / lost |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for key in ORDER:
        p = h.results.get(key)
        if p is None:
            continue
        if p.error and not p.runs:
            out.append(f"| {p.title} | | failed: {p.error} | | | | | | | |")
            continue
        for c in (h.cfg.connections, LOW_CONNECTIONS):
            out.append(_load_row(p, c))
    out += [
        "",
        "Server CPU is the whole process tree's user + system time from /proc over the measured "
        "window, per request (PostgreSQL backends' CPU shown apart). Decisions per audit "
        "commit and the mean time of a commit: from the server's /metrics over the same window "
        "(audit_batch_records, audit_commit_seconds). 200s / records / lost: ids "
        "answered 200 in all runs of the phase / rows in `decision` after the server stopped / "
        "answered but not stored.",
        "",
    ]
    return out


def _load_row(p: PhaseResult, c: int) -> str:
    runs = p.at(c)
    if not runs:
        return f"| {p.title} | {c} | — | | | | | | | |"

    def each(attr: str) -> str:
        med = fmt(p.median(attr, c))
        return med + (
            " (" + ", ".join(fmt(getattr(m, attr)) for m in runs) + ")" if len(runs) > 1 else ""
        )

    cpu = each("cpu_us")
    db = p.median("db_cpu_us", c)
    if not math.isnan(db):
        cpu += f" (+{fmt(db)} PostgreSQL)"
    split = f"{fmt(p.median('loop_cpu_us', c))} / {fmt(p.median('other_cpu_us', c))}"
    batch = p.median("batch", c)
    commits = "—" if math.isnan(batch) else f"{batch:.1f} ({p.median('commit_ms', c):.2f})"
    errors = f"{sum(m.non_2xx for m in runs)} / {sum(m.socket_errors for m in runs)}"
    store = f"{p.ok_responses:,} / {p.records:,} / **{p.lost}**" if p.records is not None else "—"
    return (
        f"| {p.title} | {c} | {each('rps')} | {fmt(p.median('p50_ms', c), 2)} "
        f"| {fmt(p.median('p99_ms', c), 2)} | {cpu} | {split} | {commits} | {errors} | {store} |"
    )


def latency_section(h: Harness) -> list[str]:
    out = [
        "## Latency at 70% of peak (open loop)",
        "",
        "benchmarks/harness/openloop.py (wrk2 is not packaged in Debian): requests are sent at a "
        "constant rate on a schedule fixed before the run (70% of the req/s the same server "
        "reached at 64 connections just before), each on an idle keep-alive connection or a new "
        "one; latency runs from the request's scheduled time to its answer, so time spent "
        "waiting for a connection or for a stalled server counts (no coordinated omission). "
        "`lag` is how late the generator itself sent (included in the latency).",
        "",
        "| configuration | rate req/s | achieved | connections | p50 ms | p90 ms | p99 ms "
        "| p99.9 ms | max ms | generator lag p99 ms | CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, d in h.extras.get("latency", {}).items():
        out.append(
            f"| {key[7:]} | {fmt(d['rate'])} | {fmt(d['achieved'])} | {d['connections']} "
            f"| {fmt(d['p50_ms'], 2)} | {fmt(d['p90_ms'], 2)} | {fmt(d['p99_ms'], 2)} "
            f"| {fmt(d['p99_9_ms'], 2)} | {fmt(d['max_ms'], 2)} | {fmt(d['lag_p99_ms'], 2)} "
            f"| {fmt(d['cpu_us'])} | {d['errors']} {d.get('error_kinds') or ''} |"
        )
    return [*out, ""]


def agreement_section(h: Harness) -> list[str]:
    a: dict[str, Any] | None = h.extras.get("agreement")
    out = ["## Same outputs: textbook vs decide", ""]
    if not a:
        return [*out, "not measured", ""]
    out.append(
        f"{a['n']} applications (every {max(1, round(len(h.lines) / max(a['n'], 1)))}th of "
        "the file) posted to both servers: "
        f"outcome {a['outcome']}/{a['n']}, risk_band {a['risk_band']}/{a['n']}, "
        f"pd bit-identical {a['pd_exact']}/{a['n']} (max |Δ| {a['pd_max_diff']:.3g}), "
        f"approved_amount {a['approved_amount']}/{a['n']}, reason codes in order "
        f"{a['reasons']}/{a['n']} (max |Δ contribution| {a['contrib_max_diff']:.3g})"
        + (f"; first mismatches: {a['mismatches']}" if a["mismatches"] else "")
        + "."
    )
    return [*out, ""]


def storage_section(h: Harness) -> list[str]:
    out = ["## Storage per decision", ""]
    data = h.extras.get("storage") or {}
    if not data:
        return [*out, "not measured", ""]
    out.append(
        "The durable_rules store each backend's decide phases wrote (the real server, every "
        "round), after the server stopped: SQLite `dbstat` per table and index after a WAL "
        "checkpoint; PostgreSQL `pg_table_size` (heap + TOAST) and `pg_indexes_size`."
    )
    out.append("")
    for backend, d in data.items():
        parts = ", ".join(
            f"{name} {size / max(d['decisions'], 1):,.0f}" for name, size in d["parts"].items()
        )
        out.append(
            f"- **{backend}**: {fmt(d['per_decision'])} bytes per decision "
            f"({d['bytes']:,} bytes / {d['decisions']:,} decisions); per part (B/decision): "
            f"{parts or '—'}"
        )
    return [*out, ""]


def coldstart_section(h: Harness) -> list[str]:
    out = ["## Cold start (CPU, pinned)", ""]
    data = h.extras.get("coldstart") or {}
    for label, d in data.items():
        runs = ", ".join(f"{x:.2f}" for x in d["runs"])
        out.append(f"- `{label}`: {d['cpu_s']:.2f} s CPU (runs {runs}; exit {d['exit']})")
    for key in ORDER:
        p = h.results.get(key)
        if p and p.ready_cpu_s:
            runs = ", ".join(f"{x:.2f}" for x in p.ready_cpu_s)
            out.append(
                f"- {p.title}: start → ready {statistics.median(p.ready_cpu_s):.2f} s CPU ({runs})"
            )
    return [*out, ""]


def stages_section(h: Harness) -> list[str]:
    s = h.extras.get("stages")
    out = ["## Where a decision's CPU goes (in-process, the service's own code)", ""]
    if not s:
        return [*out, "not measured", ""]
    out += [
        "A child pinned like the server builds the service with `bootstrap` and times its own "
        "code on the real applications: `pipeline.decide`'s own stage timings (through "
        "`Deciding.decide`), and `Decider.respond` — the handler behind /decide, audit commit "
        "included — driven by 64 concurrent callers on a real store (CPU of all threads per "
        "request). What the server spends above `Decider.respond` is HTTP, the gate and the "
        "framework.",
        "",
        "| stage | µs |",
        "|---|---:|",
        f"| decode + validate (ApplicationDecoder) | {fmt(s.get('decode'), 1)} |",
    ]
    for engine in ENGINES:
        st = s.get(f"pipeline/{engine}") or {}
        for stage in ("score", "rules", "explain"):
            out.append(
                f"| pipeline {stage} ({engine}), mean per application | {fmt(st.get(stage), 1)} |"
            )
        out.append(f"| Deciding.decide total ({engine}) | {fmt(st.get('total'), 1)} |")
    for key, d in s.items():
        if key.startswith("respond/"):
            out.append(
                f"| Decider.respond, CPU per request ({key[8:]}; mean batch "
                f"{d['mean_batch']:.0f}, wall {d['wall_us']:.0f} µs/request) "
                f"| {fmt(d['cpu_us'], 1)} |"
            )
    out.append("")
    r = h.results
    default, bare = r.get("decide/durable_rules/SQLite"), r.get("bare")
    resp = s.get("respond/durable_rules/SQLite")
    if default and bare and resp and default.runs and bare.runs:
        c = h.cfg.connections
        out += [
            f"At {c} connections the durable_rules · SQLite server spends "
            f"{default.median('cpu_us', c):,.0f} µs CPU per request; bare Litestar "
            f"{bare.median('cpu_us', c):,.0f}; `Decider.respond` alone {resp['cpu_us']:,.0f}.",
            "",
        ]
    if s.get("errors"):
        out += ["Not measured: " + "; ".join(f"{k}: {v}" for k, v in s["errors"].items()), ""]
    return out


def soak_section(h: Harness) -> list[str]:
    soak = h.extras.get("soak")
    out = ["## RSS over a soak", ""]
    if not soak:
        return [*out, "Not run (opt-in: `--soak N` decisions; not in CI).", ""]
    growth = targets.soak_growth(soak)
    samples = soak["samples"]
    out.append(
        f"Fresh durable_rules · SQLite server, {soak['decisions']:,} decisions in "
        f"{soak['seconds']:.0f} s: RSS idle {soak['rss_idle'] / 2**20:.1f} MiB, after the first "
        f"chunk {samples[0][1] / 2**20:.1f} MiB, at the end {samples[-1][1] / 2**20:.1f} MiB "
        f"(**{growth:+.2%}**). Samples (decisions → MiB): "
        + ", ".join(f"{k:,} → {v / 2**20:.1f}" for k, v in samples)
    )
    p = h.results.get("soak")
    if p is not None and p.records is not None:
        out.append("")
        out.append(
            f"Store check: {p.ok_responses:,} answered 200, {p.records:,} records, "
            f"lost **{p.lost}**."
        )
    return [*out, ""]
