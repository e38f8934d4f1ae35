"""Batch and backtest throughput, against the row-by-row `Service.decide` in the same run.

    uv run python benchmarks/batch_bench.py [--rows 200000] [--backtest-rows 100000]
        [--spark-rows 200000] [--no-spark] [--baseline-rows 5000]

Data: the real held-out applications (benchmarks/data/applications.jsonl), resampled with fresh
ids. Targets (issue 12; 2 shared cores, so compare ratios within one run):
- batch, local: >= 100,000 applications/s with reasons for adverse rows, Parquet to Parquet;
- backtest: 1,000,000 stored decisions (made with `batch --audit`) re-decided and compared in
  <= 10 s after loading; smaller runs report the measured time and its linear projection;
- Spark local[2]: throughput, and what a 100M-row book would take at that rate per core.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from decision_service.backtest.compare import compare, redecide
from decision_service.backtest.load import load_stored
from decision_service.batch.runner import load_pipeline, run_batch
from decision_service.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "applications.jsonl"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdict(ok: bool) -> str:
    return "MET" if ok else "missed"


def resampled(n: int, seed: int = 12) -> pa.Table:
    apps = [msgspec.json.decode(x) for x in DATA.read_bytes().splitlines()]
    pick = np.random.default_rng(seed).integers(0, len(apps), n)
    rows = [{**apps[i], "application_id": f"BENCH-{k:09d}"} for k, i in enumerate(pick)]
    return pa.Table.from_pylist(rows)


def write_input(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=100_000)
    return path


def row_baseline(settings, table: pa.Table, n: int) -> float:
    """Applications/s of `Service.decide`, one at a time (validated structs in hand)."""
    from decision_service.scoring import application_type
    from decision_service.service import Service

    service = Service.build(settings)
    app_type = application_type(service.scorer.card)
    apps = [msgspec.convert(r, app_type) for r in table.slice(0, n).to_pylist()]
    t = time.perf_counter()
    for app in apps:
        service.decide(app)
    rate = n / (time.perf_counter() - t)
    service.rules.close()
    return rate


def bench_batch(settings, source: Path, out: Path, workers: int = 1) -> tuple[float, float, float]:
    """(applications/s end to end incl. loading the model and rules, /s after loading,
    per CPU-second: the steadiest figure on a shared box)."""
    quiet = Console(file=io.StringIO())
    t, cpu = time.perf_counter(), time.process_time()
    summary = run_batch(
        settings, source, out, "parquet", audit=False, console=quiet, workers=workers
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return summary.rows / wall, summary.rows / summary.seconds, summary.rows / cpu


def bench_backtest(settings, tmp: Path, rows: int) -> dict[str, float]:
    source = write_input(resampled(rows, seed=99), tmp / "book.parquet")
    quiet = Console(file=io.StringIO())
    t = time.perf_counter()
    run_batch(settings, source, tmp / "book.out.parquet", "parquet", audit=True, console=quiet)
    made = time.perf_counter() - t
    candidate = load_pipeline(settings)
    from decision_service.audit import AuditStore, Filters

    store = AuditStore.open(settings.database_url)
    t = time.perf_counter()
    loaded = load_stored(
        store.reader, Filters(), candidate.app_type, candidate.pipeline.scorer.card.features
    )
    load_s = time.perf_counter() - t
    t, cpu = time.perf_counter(), time.process_time()
    result = redecide(candidate.pipeline, loaded)
    report = compare(loaded, result, lgd=1.0, by="risk_band", meta={})
    compare_s, compare_cpu = time.perf_counter() - t, time.process_time() - cpu
    assert report.decisions == rows and report.flipped == 0  # same policy: nothing flips
    store.engine.dispose()
    return {
        "make": made,
        "load": load_s,
        "compare": compare_s,
        "compare_cpu": compare_cpu,
        "rss": rss_mb(),
    }


def bench_spark(settings, tmp: Path, rows: int) -> tuple[float, float]:
    from decision_service.batch.spark import run_spark_batch, session

    spark = session("local[2]", "decision-service-bench")
    warm = write_input(resampled(2_000, seed=5), tmp / "warm.parquet")
    run_spark_batch(settings, warm, tmp / "warm.out", spark=spark)  # JVM, workers, pipeline
    source = write_input(resampled(rows, seed=6), tmp / "spark.parquet")
    t = time.perf_counter()
    summary = run_spark_batch(settings, source, tmp / "spark.out", spark=spark)
    seconds = time.perf_counter() - t
    spark.stop()
    return summary.rows / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--baseline-rows", type=int, default=5_000)
    parser.add_argument("--backtest-rows", type=int, default=100_000)
    parser.add_argument("--spark-rows", type=int, default=200_000)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        settings = load_settings(
            None,
            models_dir=ROOT / "models",
            rules_dir=ROOT / "rules",
            database_url=f"sqlite:///{tmp}/audit.db",
            sqlite_synchronous="NORMAL",
        )
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        table = resampled(args.rows)
        source = write_input(table, tmp / "in.parquet")
        base = row_baseline(settings, table, args.baseline_rows)
        rate, steady, per_cpu = bench_batch(settings, source, tmp / "out.parquet")
        print(f"row-by-row Service.decide [baseline]: {base:,.0f} applications/s")
        print(
            f"batch local, Parquet -> Parquet, {args.rows:,} rows: {rate:,.0f} applications/s "
            f"end to end, {steady:,.0f}/s after loading, {per_cpu:,.0f} per CPU-second "
            f"({steady / base:.1f}x the row path) -- target >= 100,000/s: {verdict(steady >= 1e5)}"
        )
        rate2, steady2, _ = bench_batch(settings, source, tmp / "out2.parquet", workers=2)
        print(
            f"batch local --workers 2: {rate2:,.0f} applications/s end to end, {steady2:,.0f}/s "
            f"after loading ({steady2 / base:.1f}x) -- target >= 100,000/s: "
            f"{verdict(steady2 >= 1e5)}"
        )
        bt = bench_backtest(settings, tmp, args.backtest_rows)
        scale = 1_000_000 / args.backtest_rows
        projected, projected_cpu = bt["compare"] * scale, bt["compare_cpu"] * scale
        print(
            f"backtest of {args.backtest_rows:,} stored decisions: made by batch --audit in "
            f"{bt['make']:.1f} s; loaded in {bt['load']:.1f} s; re-decided and compared in "
            f"{bt['compare']:.2f} s ({bt['compare_cpu']:.2f} s CPU); projected 1M: "
            f"{projected:.1f} s ({projected_cpu:.1f} s CPU) -- target <= 10 s for 1M: "
            f"{verdict(projected <= 10)}{'' if args.backtest_rows >= 1e6 else ' (projected)'}"
            f"; peak RSS {bt['rss']:,.0f} MB"
        )
        if not args.no_spark:
            srate, seconds = bench_spark(settings, tmp, args.spark_rows)
            book = 100_000_000 / (srate / 2) / 3600  # core-hours at this rate per core
            print(
                f"spark local[2], Parquet -> Parquet, {args.spark_rows:,} rows: {srate:,.0f} "
                f"applications/s ({seconds:.1f} s); a 100M-row book: {book:.1f} core-hours, "
                f"i.e. {book * 60 / 64:.0f} min on 64 cores at this per-core rate"
            )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
