"""`decision-service drift [--from --to] [--model-version] [--format table|json|html] [-o FILE]`."""

from __future__ import annotations

import argparse
import sys

from decision_service.settings import Settings


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
