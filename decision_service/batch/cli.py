"""`decision-service batch INPUT -o OUTPUT [--format csv|jsonl|parquet] [--audit] [--engine]`."""

from __future__ import annotations

import argparse
import json
import sys

from decision_service.settings import Settings

FORMATS = ("jsonl", "csv", "parquet")  # batch.io's; not imported here: pyarrow loads slowly


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = args.output.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "parquet"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from decision_service.audit import AuditUnavailable
    from decision_service.batch.io import BatchInputError
    from decision_service.cli.progress import stderr_console

    console = Console(stderr=True)  # errors; stdout holds only the summary
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
                console=stderr_console(args.quiet),  # the progress bar, for a person only
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
        Console().print(summary.table())
    return 0
