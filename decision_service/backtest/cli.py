"""`decision-service backtest --rules PATH [--model VERSION] [--from --to] [filters] [--by FIELD]
[--format table|json|html] [-o FILE] [--applications FILE] [--engine local|spark]`

"What would this change have done to last month's decisions?" The stored applications of the
period are re-decided with the candidate (ruleset and/or model; what is not given is the live
one) through the batch pipeline, and compared with what was really decided, whatever versions
decided them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from decision_service.audit import Filters
from decision_service.settings import Settings


def add_backtest_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "backtest",
        help="re-decide stored applications with a candidate ruleset/model; what would change",
    )
    p.add_argument("--rules", type=Path, required=True, help="candidate rule file (or directory)")
    p.add_argument("--model", default=None, help="candidate model version (default: the live one)")
    p.add_argument("--from", dest="from_")
    p.add_argument("--to")
    p.add_argument("--application-id")
    p.add_argument("--outcome", choices=["approve", "refer", "decline"])
    p.add_argument("--rule")
    p.add_argument("--model-version")
    p.add_argument("--ruleset-version")
    p.add_argument("--by", default=None, help="segment: risk_band, job, home, marital, …")
    p.add_argument("--format", choices=["table", "json", "html"], default="table")
    p.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")
    p.add_argument(
        "--applications",
        type=Path,
        default=None,
        help="a file of applications instead of the store (baseline: the live champion)",
    )
    p.add_argument("--engine", choices=["local", "spark"], default="local")
    p.add_argument("--lgd", type=float, default=1.0, help="loss given default (default 1.0)")
    return p


def filters_of(args: argparse.Namespace) -> Filters:
    return msgspec.convert(
        {
            "from": args.from_,
            "to": args.to,
            "application_id": args.application_id,
            "outcome": args.outcome,
            "rule": args.rule,
            "model_version": args.model_version,
            "ruleset_version": args.ruleset_version,
        },
        Filters,
        strict=False,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from decision_service.audit import AuditStore
    from decision_service.backtest.compare import compare, redecide
    from decision_service.backtest.html import render_html
    from decision_service.backtest.load import load_file, load_stored
    from decision_service.backtest.report import render
    from decision_service.batch.runner import load_pipeline

    console = Console(stderr=True)
    model_dir = None
    if args.model:
        model_dir = settings.models_dir / settings.model_name / args.model
    try:
        filters = filters_of(args)
        candidate = load_pipeline(settings, args.rules, model_dir)
    except Exception as exc:  # a bad rule file, model version or filter: say which
        console.print(f"[red]backtest: {exc}[/red]")
        return 2
    pipeline = candidate.pipeline
    specs = pipeline.scorer.card.features
    t0 = time.perf_counter()
    with console.status("loading decisions…"):
        if args.applications is not None:
            champion = load_pipeline(settings)
            loaded = load_file(args.applications, champion.pipeline, champion.app_type)
        else:
            store = AuditStore.open(settings.database_url)
            try:
                loaded = load_stored(store.reader, filters, candidate.app_type, specs)
            finally:
                store.engine.dispose()
                store.reader.dispose()
    t1 = time.perf_counter()
    with console.status(f"re-deciding {loaded.baseline.n:,} applications…"):
        if args.engine == "spark":
            from decision_service.batch.spark import spark_redecide

            outcome = spark_redecide(settings, candidate, loaded)
        else:
            outcome = redecide(pipeline, loaded)
        refs = pipeline.refs
        meta = {
            "filters": {k: v for k, v in msgspec.to_builtins(filters).items() if v is not None},
            "candidate": {
                "ruleset": refs.ruleset.name,
                "ruleset_version": refs.ruleset.version,
                "ruleset_sha256": refs.ruleset.sha256,
                "model_version": refs.model.version,
            },
        }
        try:
            report = compare(loaded, outcome, lgd=args.lgd, by=args.by, meta=meta)
        except ValueError as exc:
            console.print(f"[red]backtest: {exc}[/red]")
            return 2
    t2 = time.perf_counter()
    console.print(
        f"loaded {loaded.baseline.n:,} decisions in {t1 - t0:.1f} s; re-decided and compared "
        f"in {t2 - t1:.1f} s"
    )
    if args.format == "table":
        out = Console(file=args.output.open("w") if args.output else sys.stdout, width=140)
        render(report, out)
        return 0
    text = (
        render_html(report)
        if args.format == "html"
        else msgspec.json.format(msgspec.json.encode(report), indent=2).decode() + "\n"
    )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
