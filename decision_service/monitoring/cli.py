"""`decision-service drift [--from --to] [--model-version] [--format table|json|html] [-o FILE]`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from decision_service.settings import Settings


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc


def add_parser(sub: Any, func: Any) -> None:
    drift = sub.add_parser(
        "drift", help="PSI of every feature, pd and the outcome mix vs the model card"
    )
    drift.add_argument("--from", dest="from_", type=_when, help="window start (inclusive)")
    drift.add_argument("--to", type=_when, help="window end (exclusive)")
    drift.add_argument("--model-version", help="default: the version that made most decisions")
    drift.add_argument("--baseline-from", type=_when, help="outcome-mix baseline window start")
    drift.add_argument("--baseline-to", type=_when, help="outcome-mix baseline window end")
    drift.add_argument("--format", choices=["table", "json", "html"], default="table")
    drift.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")
    drift.add_argument(
        "--fail-on-alert", action="store_true", help="exit 3 when any series alerts (for cron)"
    )
    drift.set_defaults(func=func)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec
    from rich.console import Console

    from decision_service.audit import create_tables, make_engine
    from decision_service.monitoring.render import print_table, render_html
    from decision_service.monitoring.window import window_report

    engine = make_engine(settings.database_url)
    try:
        create_tables(engine)
        report = window_report(
            engine,
            settings.models_dir,
            settings.model_name,
            from_=args.from_,
            to=args.to,
            model_version=args.model_version,
            baseline_from=args.baseline_from,
            baseline_to=args.baseline_to,
            default_version=settings.model_dir.name,
        )
    finally:
        engine.dispose()
    out = args.output.open("w") if args.output else sys.stdout
    try:
        if args.format == "json":
            out.write(msgspec.json.encode(report).decode() + "\n")
        elif args.format == "html":
            out.write(render_html(report))
        else:
            print_table(report, Console(file=out, width=140))
    finally:
        if args.output:
            out.close()
    return 3 if args.fail_on_alert and report.status == "alert" else 0
