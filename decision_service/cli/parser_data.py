"""Arguments of the commands over decisions: audit, batch, backtest, drift, challengers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decision_service.batch.cli import FORMATS as BATCH_FORMATS
from decision_service.cli import commands
from decision_service.cli.options import add_filters, add_format, add_output, add_quiet, add_window
from decision_service.dates import filter_date


def add_audit(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log: verify, replay, export, rotate-key")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_sub.add_parser(
        "verify", help="check every chain against the audit key and the signed checkpoints"
    )
    add_format(verify, ("text", "json"), "report")
    verify.add_argument(
        "--incremental",
        action="store_true",
        help="check each chain only from the last verify that passed (default: everything)",
    )
    audit_sub.add_parser("rotate-key", help="append a new audit key (old records keep verifying)")
    replay = audit_sub.add_parser("replay", help="re-decide stored decisions; report differences")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id", action="append", dest="ids", metavar="ID", help="a decision id (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every decision the filters select")
    add_format(replay, ("text", "json"), "report")
    export = audit_sub.add_parser("export", help="stream decisions as JSONL, CSV or Parquet")
    export.add_argument(
        "--format",
        choices=["jsonl", "csv", "parquet"],
        default="jsonl",
        help="file format (default: jsonl; columns in docs/)",
    )
    add_output(export)
    for p in (replay, export):
        add_filters(p)
        add_quiet(p)
    audit.set_defaults(func=commands.audit)


def add_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="decide a whole file (JSONL, CSV, Parquet) through the same pipeline",
        description="Decide every application of INPUT (.jsonl, .csv, .parquet or a directory "
        "of Parquet files) with the live model and rules; invalid rows go to "
        "OUTPUT.errors.jsonl. Nothing is recorded unless --audit.",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="applications to decide")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTPUT", help="decisions file"
    )
    p.add_argument(
        "--format", choices=BATCH_FORMATS, default=None, help="default: from OUTPUT's suffix"
    )
    p.add_argument("--audit", action="store_true", help="record every decision (as /decide does)")
    p.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local processes or Spark (Parquet, never recorded); default: local",
    )
    p.add_argument("--chunk-rows", type=int, default=None, metavar="N", help="rows per chunk")
    p.add_argument(
        "--rules",
        type=Path,
        default=None,
        metavar="PATH",
        help="rule file or directory (default: the live rules)",
    )
    p.add_argument(
        "--model-version",
        default=None,
        metavar="VERSION",
        help="model version (default: the one live in the model registry)",
    )
    p.add_argument(
        "--summary",
        choices=["table", "json"],
        default="table",
        help="summary on stdout (default: table); json is for scripts",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for Parquet/CSV without --audit (one LightGBM thread each)",
    )
    add_quiet(p)
    p.set_defaults(func=commands.batch)


def add_backtest(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="re-decide stored applications with a candidate ruleset/model; what would change",
    )
    p.add_argument(
        "--rules", type=Path, required=True, metavar="PATH", help="candidate rule file or directory"
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="VERSION",
        help="candidate model version (default: the one live in the model registry)",
    )
    add_filters(p)
    p.add_argument("--by", default=None, help="segment: risk_band, job, home, marital, …")
    add_format(p, ("table", "json", "html"), "report")
    add_output(p)
    p.add_argument(
        "--applications",
        type=Path,
        default=None,
        metavar="FILE",
        help="a file of applications instead of the store (baseline: the live champion)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="where to re-decide (default: local)",
    )
    p.add_argument("--lgd", type=float, default=1.0, help="loss given default (default 1.0)")
    add_quiet(p)
    p.set_defaults(func=commands.backtest)


def add_drift(sub: Any) -> None:
    drift = sub.add_parser(
        "drift", help="PSI of every feature, pd and the outcome mix vs the model card"
    )
    add_window(drift)
    drift.add_argument(
        "--model-version",
        metavar="VERSION",
        help="default: the version that made most decisions",
    )
    drift.add_argument(
        "--baseline-from",
        type=filter_date,
        metavar="DATE",
        help="outcome-mix baseline window start",
    )
    drift.add_argument(
        "--baseline-to", type=filter_date, metavar="DATE", help="outcome-mix baseline window end"
    )
    add_format(drift, ("table", "json", "html"), "report")
    add_output(drift)
    drift.add_argument(
        "--fail-on-alert", action="store_true", help="exit 3 when any series alerts (for cron)"
    )
    drift.set_defaults(func=commands.drift)


def add_challengers(sub: Any) -> None:
    ch = sub.add_parser("challengers", help="challenger rulesets/models on live traffic")
    ch_sub = ch.add_subparsers(dest="challengers_command", required=True, metavar="COMMAND")
    rep = ch_sub.add_parser("report", help="champion vs challenger on the same decisions")
    rep.add_argument("name", nargs="?", help="challenger ruleset name (default: every one)")
    add_window(rep)
    add_format(rep, ("table", "json", "html"), "report")
    add_output(rep)
    rep.set_defaults(func=commands.challengers)
