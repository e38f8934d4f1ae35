"""`decision-service challengers report [NAME] [--from --to] [--format table|json|html]
[-o FILE]`: champion vs challenger on live traffic."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from decision_service.settings import Settings


def print_table(rep: Any, console: Any) -> None:
    from rich.table import Table

    from decision_service.backtest.report import kpi_rows, pct
    from decision_service.decision import OUTCOMES

    head = Table(title=f"challenger {rep.challenger}", show_header=False)
    head.add_row("decisions compared", f"{rep.decisions:,}")
    head.add_row("errors (recorded, ignored)", f"{rep.errors:,}")
    head.add_row("agreement", pct(rep.agreement))
    console.print(head)
    kpis = Table(title="key figures")
    for col in ("", "champion", "challenger", "change"):
        kpis.add_column(col, justify="left" if not col else "right")
    for row in kpi_rows(rep.champion, rep.challenger_side):
        kpis.add_row(*row)
    console.print(kpis)
    matrix = Table(title="agreement: champion ↓ × challenger →")
    matrix.add_column("")
    for o in OUTCOMES:
        matrix.add_column(o, justify="right")
    for b in OUTCOMES:
        matrix.add_row(b, *(f"{rep.flip_matrix[b][a]:,}" for a in OUTCOMES))
    console.print(matrix)
    rules = Table(title="rule hit rates")
    for col in ("rule", "champion", "challenger", "change"):
        rules.add_column(col, justify="left" if col == "rule" else "right")
    for r in sorted(rep.rules, key=lambda r: -abs(r.delta)):
        rules.add_row(r.rule, pct(r.before), pct(r.after), f"{r.delta:+.2%}")
    console.print(rules)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec
    from rich.console import Console

    from decision_service.audit import create_tables, make_engine
    from decision_service.challengers import report as challenger_report

    engine = make_engine(settings.database_url)
    try:
        create_tables(engine)
        names = [args.name] if args.name else challenger_report.names(engine)
        reports = [challenger_report.report(engine, n, args.from_, args.to) for n in names]
    finally:
        engine.dispose()
    if not reports:
        print("no challenger results recorded", file=sys.stderr)
        return 1
    out = args.output.open("w") if args.output else sys.stdout
    try:
        if args.format == "json":
            data = [msgspec.json.decode(challenger_report.to_json(r)) for r in reports]
            out.write(msgspec.json.encode(data[0] if args.name else data).decode() + "\n")
        elif args.format == "html":
            out.write("".join(challenger_report.render_html(r) for r in reports))
        else:
            console = Console(file=out, width=140)
            for r in reports:
                print_table(r, console)
    finally:
        if args.output:
            out.close()
    return 0
