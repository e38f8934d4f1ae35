"""The targets of issue 14, each judged met/missed from the run's numbers (never a reason to fail
the run). Ratios between servers are taken per round (phases of a round run back to back) and
the median reported with the rounds' range: the spread is the machine's noise."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from benchmarks.harness.common import (
    BENCH,
    ENGINES,
    LOW_CONNECTIONS,
    TARGET_BARE,
    TARGET_BYTES,
    TARGET_CLI_CPU_S,
    TARGET_CPU_LOW_VS_HIGH,
    TARGET_P99_MS,
    TARGET_RSS_GROWTH,
    TARGET_SERVE_CPU_S,
    TARGET_SHAP_TOLERANCE,
    TARGET_SHAP_VS_CONTRIB,
    TARGET_VS_MLSERVER,
)
from benchmarks.harness.core import Harness, PhaseResult


@dataclass
class Row:
    number: int
    name: str
    measured: str
    met: bool | None  # None: not measured in this run


@dataclass
class Spread:
    median: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if math.isnan(self.median):
            return "—"
        if self.n <= 1:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} (rounds {self.low:.2f}–{self.high:.2f})"


def per_round(
    a: PhaseResult | None, attr_a: str, ca: int, b: PhaseResult | None, attr_b: str, cb: int
) -> Spread:
    """a/b per round (same round: measured minutes apart), median and range."""
    if a is None or b is None:
        return Spread(math.nan, math.nan, math.nan, 0)
    ra, rb = a.by_round(attr_a, ca), b.by_round(attr_b, cb)
    vals = [ra[r] / rb[r] for r in ra if rb.get(r)]
    if not vals:
        return Spread(math.nan, math.nan, math.nan, 0)
    return Spread(statistics.median(vals), min(vals), max(vals), len(vals))


def decide_configs(h: Harness) -> list[tuple[str, str, str]]:
    out = []
    for backend in ("SQLite", "PostgreSQL"):
        for engine in ENGINES:
            key = f"decide/{engine}/{backend}"
            if key in h.results and h.results[key].runs:
                out.append((key, engine, backend))
    return out


def rows(h: Harness) -> list[Row]:
    r, hi, lo = h.results, h.cfg.connections, LOW_CONNECTIONS
    out: list[Row] = []
    bare, ml = r.get("bare"), r.get("mlserver")
    for key, engine, backend in decide_configs(h):
        p = r[key]
        s = per_round(p, "rps", hi, bare, "rps", hi)
        lost = "?" if p.lost is None else str(p.lost)
        met = None if math.isnan(s.median) else s.median >= TARGET_BARE[engine] and p.lost == 0
        out.append(
            Row(
                1,
                f"/decide ≥ {TARGET_BARE[engine]:.2f}× bare req/s at {hi} connections, "
                f"every decision committed ({engine}, {backend})",
                f"{s}; lost {lost}",
                met,
            )
        )
    for key, engine, backend in decide_configs(h):
        s = per_round(r[key], "full_cpu_us", lo, r[key], "full_cpu_us", hi)
        out.append(
            Row(
                2,
                f"CPU per decision at {lo} ÷ at {hi} connections ≤ {TARGET_CPU_LOW_VS_HIGH} "
                f"({engine}, {backend})",
                f"{s}×",
                _le(s.median, TARGET_CPU_LOW_VS_HIGH),
            )
        )
    for key, lat in h.extras.get("latency", {}).items():
        p99, share = lat["p99_ms"], lat["achieved"] / lat["peak_rps"]
        out.append(
            Row(
                3,
                f"p99 ≤ {TARGET_P99_MS:.0f} ms at 70% of peak, open loop ({key[7:]})",
                f"{p99:.2f} ms at {lat['achieved']:,.0f} req/s ({share:.0%}"
                f" of {lat['peak_rps']:,.0f}); errors {lat['errors']}",
                p99 <= TARGET_P99_MS and lat["errors"] == 0,
            )
        )
    for key, engine, backend in decide_configs(h):
        for conns in (hi, lo):
            if ml is None or not ml.runs:
                measured, met = (
                    "not run (" + (ml.error if ml and ml.error else "--mlserver") + ")",
                    None,
                )
            else:
                s = per_round(r[key], "full_cpu_us", conns, ml, "cpu_us", conns)
                measured, met = f"{s}×", _le(s.median, TARGET_VS_MLSERVER)
            out.append(
                Row(
                    4,
                    f"server CPU ÷ MLServer predict-only CPU ≤ {TARGET_VS_MLSERVER} at {conns} "
                    f"connections ({engine}, {backend})",
                    measured,
                    met,
                )
            )
    rs = h.extras.get("reasons")
    if rs:
        us = rs["us"]
        speed = us["reasons_lightgbm_c"] / us["reasons"]
        out += [
            Row(
                5,
                "exact reason codes ≤ one score (µs)",
                f"{us['reasons']:.1f} vs {us['score']:.1f}",
                us["reasons"] <= us["score"],
            ),
            Row(
                5,
                f"exact reason codes ≥ {TARGET_SHAP_VS_CONTRIB:.0f}× faster than LightGBM's "
                "pred_contrib (C fast path)",
                f"{speed:.1f}× ({us['reasons_lightgbm_c']:.1f} µs; Python predict "
                f"{us['pred_contrib_python']:.1f} µs)",
                speed >= TARGET_SHAP_VS_CONTRIB,
            ),
            Row(
                5,
                f"SHAP values equal pred_contrib within {TARGET_SHAP_TOLERANCE:g}",
                f"max abs Δ {rs['max_abs_diff']:.2g} over {rs['rows']:,} applications",
                rs["max_abs_diff"] <= TARGET_SHAP_TOLERANCE,
            ),
            Row(
                5,
                "top-4 reason codes identical",
                f"{rs['top4_identical']:,}/{rs['rows']:,}",
                rs["top4_identical"] == rs["rows"],
            ),
        ]
    else:
        out.append(Row(5, "exact reason codes vs pred_contrib", "not measured", None))
    for backend, data in h.extras.get("storage", {}).items():
        per = data["per_decision"]
        out.append(
            Row(
                6,
                f"≤ {TARGET_BYTES / 1024:.1f} KB per decision on disk, all tables and indexes "
                f"({backend}, durable_rules store)",
                f"{per:,.0f} B over {data['decisions']:,} decisions" if per else "—",
                None if per is None else per <= TARGET_BYTES,
            )
        )
    for label, data in h.extras.get("coldstart", {}).items():
        out.append(
            Row(
                7,
                f"`{label.removeprefix('decision-service ')}` ≤ {TARGET_CLI_CPU_S:.0f} s CPU",
                f"{data['cpu_s']:.2f} s" + ("" if data["exit"] == 0 else f" (exit {data['exit']})"),
                data["cpu_s"] <= TARGET_CLI_CPU_S,
            )
        )
    default = r.get("decide/durable_rules/SQLite")
    if default and default.ready_cpu_s:
        ready = statistics.median(default.ready_cpu_s)
        out.append(
            Row(
                7,
                f"`serve` ready (/health/ready 200) ≤ {TARGET_SERVE_CPU_S:.0f} s CPU",
                f"{ready:.2f} s (median of {len(default.ready_cpu_s)} starts)",
                ready <= TARGET_SERVE_CPU_S,
            )
        )
    soak = h.extras.get("soak")
    if soak:
        growth = soak_growth(soak)
        out.append(
            Row(
                8,
                f"RSS growth ≤ {TARGET_RSS_GROWTH:.0%} over the soak",
                f"{growth:+.2%} over {soak['decisions']:,} decisions",
                growth <= TARGET_RSS_GROWTH,
            )
        )
    else:
        out.append(_last_soak())
    lost = h.total_lost()
    out.append(Row(0, "no decision lost (every decide and textbook phase)", str(lost), lost == 0))
    return out


SOAK_FILE = BENCH / "SOAK.md"  # the last soak's own report (a soak is run once, not in CI)


def _last_soak() -> Row:
    """Target 8 when this run did not soak: the last soak's result, read from SOAK.md."""
    name = "RSS flat over a 1M-decision soak"
    text = SOAK_FILE.read_text() if SOAK_FILE.exists() else ""
    commit = re.search(r"commit `([0-9a-f]+)`", text)
    result = re.search(r"([\d,]+) decisions in .*?\(\*\*([+-][\d.]+)%\*\*\)", text)
    if commit is None or result is None:
        return Row(8, name, "not run (opt-in: --soak 1000000)", None)
    growth = float(result[2]) / 100
    return Row(
        8,
        f"RSS growth ≤ {TARGET_RSS_GROWTH:.0%} over a 1M-decision soak",
        f"not run here (opt-in: --soak 1000000); the last soak, at {commit[1]}: {growth:+.2%} "
        f"over {result[1]} decisions, [SOAK.md](SOAK.md)",
        growth <= TARGET_RSS_GROWTH,
    )


def soak_growth(soak: dict) -> float:
    samples = soak["samples"]
    base, end = samples[0][1], samples[-1][1]
    return (end - base) / base if base else math.nan


def _le(x: float, limit: float) -> bool | None:
    return None if math.isnan(x) else x <= limit
