"""Entry point: `python -m benchmarks.harness [--quick] [...]` (see benchmarks/README.md).

The LAST line printed is machine-readable: `ratio_vs_bare=<x> ratio_vs_textbook=<y>
p99_ms=<z> lost=<n>` (durable_rules, SQLite). Exit status is non-zero only if decisions were
lost or a phase failed to run; never because of speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.harness import plan, report
from benchmarks.harness.common import BENCH, DEFAULT_PG, LOW_CONNECTIONS, compile_bytecode, log
from benchmarks.harness.core import Harness, Settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short run (< 2 min), smoke test")
    p.add_argument("--duration", type=float, help="measured seconds per load run")
    p.add_argument("--warmup", type=float, help="warm-up seconds before each phase")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--rounds", type=int, help="interleaved rounds (medians and spread)")
    p.add_argument("--sample", type=int, help="applications compared textbook vs decide (0=all)")
    p.add_argument("--soak", type=int, default=0, metavar="N", help="RSS soak of N decisions")
    p.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG),
        help="server URL; a database bench_<random>_… is created per phase and dropped",
    )
    p.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL phases")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    ml = p.add_mutually_exclusive_group()
    ml.add_argument("--mlserver", action="store_true", help="run the MLServer peer (quick too)")
    ml.add_argument("--no-mlserver", action="store_true", help="skip the MLServer peer")
    p.add_argument("--mlserver-venv", type=Path, help="MLServer's own venv (default: ~/.cache)")
    p.add_argument("--no-log-decisions", action="store_true", help="DECISION_LOG_DECISIONS=false")
    p.add_argument("--output", type=Path, help="report (default: RESULTS.md, none for --quick)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    return p.parse_args(argv)


def settings(args: argparse.Namespace, argv: Sequence[str] | None) -> Settings:
    quick = args.quick
    output = args.output if args.output is not None or quick else BENCH / "RESULTS.md"
    extra = " ".join(sys.argv[1:] if argv is None else argv)
    return Settings(
        quick=quick,
        duration=args.duration or (3.0 if quick else 12.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        connections=args.connections,
        low_connections=LOW_CONNECTIONS,
        rounds=args.rounds or (1 if quick else 3),
        latency_seconds=4.0 if quick else 20.0,
        sample=args.sample if args.sample is not None else (200 if quick else 0),
        soak=args.soak,
        profile=not quick and not args.no_profile,
        mlserver=args.mlserver or (not quick and not args.no_mlserver),
        mlserver_venv=args.mlserver_venv,
        postgres=None if args.no_postgres else args.postgres,
        log_decisions=not args.no_log_decisions,
        output=output,
        command="uv run --all-groups python -m benchmarks.harness" + (f" {extra}" if extra else ""),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed: `apt-get install -y wrk`", file=sys.stderr)
        return 2
    try:
        import psutil  # noqa: F401
    except ImportError:
        print("error: psutil missing: run with `uv run --all-groups ...`", file=sys.stderr)
        return 2
    cfg = settings(args, argv)
    started, t0 = datetime.now(UTC), time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="decide-bench-"))
    h = Harness(cfg, tmp)
    log(f"benchmark in {tmp}; {h.place.note}")
    compile_bytecode()  # as the image does: every server and CLI start reads bytecode
    try:
        plan.run(h)
    except KeyboardInterrupt:
        h.failures.append("interrupted")
        raise
    except Exception:
        h.fail("harness", "error:\n" + traceback.format_exc())
    finally:
        h.stores.drop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    text = report.render(h, started, elapsed)
    print()
    print(text)
    if cfg.output is not None:
        cfg.output.write_text(text)
        log(f"wrote {cfg.output}")
    for f in h.failures:
        print(f"FAILED: {f.splitlines()[0]}", file=sys.stderr)
    print(f"elapsed {elapsed:.0f}s")
    print(report.machine_line(h))
    return 1 if (h.total_lost() > 0 or h.failures) else 0


if __name__ == "__main__":
    sys.exit(main())
