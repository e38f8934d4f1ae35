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

import msgspec

from decision_service.audit import Filters
from decision_service.settings import Settings


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
    from decision_service.cli.progress import stderr_console

    console = Console(stderr=True)  # errors
    status = stderr_console(args.quiet)  # spinners and timings, for a person at a terminal
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
    specs = pipeline.scorer.card.request_fields  # rules may read fields the model does not
    t0 = time.perf_counter()
    with status.status("loading decisions…"):
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
    with status.status(f"re-deciding {loaded.baseline.n:,} applications…"):
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
    status.print(
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
