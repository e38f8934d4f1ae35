"""`decision-service batch INPUT -o OUTPUT [--format csv|jsonl|parquet] [--audit] [--engine]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from decision_service.settings import Settings

FORMATS = ("jsonl", "csv", "parquet")  # batch.io's; not imported here: pyarrow loads slowly


def add_batch_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "batch",
        help="decide a whole file (JSONL, CSV, Parquet) through the same pipeline",
        description="Decide every application of INPUT (.jsonl, .csv, .parquet or a directory "
        "of Parquet files) with the live model and rules; invalid rows go to "
        "OUTPUT.errors.jsonl. Nothing is recorded unless --audit.",
    )
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from OUTPUT's suffix")
    p.add_argument("--audit", action="store_true", help="record every decision (as /decide does)")
    p.add_argument("--engine", choices=["local", "spark"], default="local")
    p.add_argument("--chunk-rows", type=int, default=None, help="applications per chunk")
    p.add_argument(
        "--rules", type=Path, default=None, help="rule file or directory (default: live)"
    )
    p.add_argument("--summary", choices=["table", "json"], default="table")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes for Parquet/CSV without --audit (one LightGBM thread each)",
    )
    return p


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = args.output.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "parquet"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from decision_service.audit import AuditUnavailable
    from decision_service.batch.io import BatchInputError

    console = Console(stderr=args.summary == "json")
    fmt = output_format(args)
    if args.engine == "spark" and (args.audit or fmt != "parquet"):
        console.print("[red]batch: --engine spark writes Parquet and records nothing[/red]")
        return 2
    try:
        if args.engine == "spark":
            from decision_service.batch.spark import run_spark_batch

            summary = run_spark_batch(settings, args.input, args.output, rules=args.rules)
        else:
            from decision_service.batch.runner import CHUNK_ROWS, run_batch

            summary = run_batch(
                settings,
                args.input,
                args.output,
                fmt,
                audit=args.audit,
                console=console,
                chunk_rows=args.chunk_rows or CHUNK_ROWS,
                rules=args.rules,
                workers=args.workers,
            )
    except (BatchInputError, FileNotFoundError) as exc:
        console.print(f"[red]batch: {exc}[/red]")
        return 2
    except AuditUnavailable as exc:
        # The chunk that failed is neither recorded nor written; earlier chunks are both.
        console.print(f"[red]batch: {exc}; the output holds only the recorded decisions[/red]")
        return 3
    if args.summary == "json":
        sys.stdout.write(json.dumps(summary.to_builtins()) + "\n")
    else:
        console.print(summary.table())
    return 0
