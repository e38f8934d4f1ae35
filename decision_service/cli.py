"""`decision-service` command line: serve, train, rules check, audit, models, drift."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path

from decision_service import db_cli
from decision_service.dates import DATES, filter_date
from decision_service.settings import SettingsError, load_settings, unknown_environment
from decision_service.startup import StartupError, debug_requested, report


def _settings(args: argparse.Namespace, **overrides: object):
    return load_settings(args.config, **overrides)


# How every server of ours runs (the benchmark's bare baseline uses the same options):
# httptools with deadlines for incomplete requests (api/protocol.py).
UVICORN_OPTIONS: dict[str, object] = {
    "loop": "uvloop",
    "http": "decision_service.api.protocol:DeadlineHttpToolsProtocol",
    "access_log": False,
    "log_config": None,
}


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from decision_service import startup

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    # Model, rules and database are checked (and an empty database created) once, here,
    # before any worker starts: a mistake is one line, not a traceback per worker.
    notes = startup.check_all(settings)
    app: object = "decision_service.api.app:create_server_app"
    try:
        if settings.workers == 1:
            # One process: the app is built here from these very settings, nothing goes
            # through the environment.
            from decision_service.api.app import create_server_app

            app = create_server_app(settings)
        else:  # workers build their own; the rules are checked here once
            startup.check_rules_build(settings)
    except Exception as exc:
        raise startup.explain(exc, settings) from exc
    for note in notes:  # only once everything is known good
        print(f"decision-service: {note}", file=sys.stderr)
    if settings.workers > 1 and args.config is not None:
        # Spawned workers import the factory and read the same sources (environment, TOML)
        # themselves; only a config file named on the command line has to be handed on.
        os.environ["DECISION_CONFIG"] = str(args.config)
    with contextlib.ExitStack() as stack:
        if settings.workers > 1:  # one /metrics over every worker: a fresh directory per run
            from decision_service.metrics_dir import shared_metrics_dir

            stack.enter_context(shared_metrics_dir())
        uvicorn.run(
            app,  # type: ignore[arg-type]
            factory=isinstance(app, str),
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            timeout_graceful_shutdown=10,
            timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
            limit_concurrency=settings.max_concurrency,
            **UVICORN_OPTIONS,
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from decision_service.training.train import main

    return main(
        Path(args.models),
        args.version,
        args.data,
        args.examples,
        force=args.force,
        feature_set=args.features,
    )


def _rules_check(args: argparse.Namespace) -> int:
    from decision_service.rules.check import run_check
    from decision_service.scoring import load_card
    from decision_service.service import card_schema

    settings = _settings(args)
    paths = args.paths or [settings.rules_dir]
    return run_check(paths, card_schema(load_card(settings.model_dir)), as_of=args.as_of)


def _instant(text: str) -> datetime:
    """`--as-of`: a date (midnight UTC) or an ISO 8601 time; no zone means UTC."""
    from decision_service.rules.language import parse_instant

    at = parse_instant(text)
    if at is None:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}")
    return at


def _audit(args: argparse.Namespace) -> int:
    from decision_service import audit_cli

    return audit_cli.run(args, _settings(args))


def _keys(args: argparse.Namespace) -> int:
    from decision_service import keys_cli

    return keys_cli.run(args, _settings(args))


def _batch(args: argparse.Namespace) -> int:
    from decision_service.batch.cli import run

    return run(args, _settings(args))


def _backtest(args: argparse.Namespace) -> int:
    from decision_service.backtest.cli import run

    return run(args, _settings(args))


def _models(args: argparse.Namespace) -> int:
    from decision_service import models_cli

    return models_cli.run(args, _settings(args))


def _drift(args: argparse.Namespace) -> int:
    from decision_service.monitoring import cli as drift_cli

    return drift_cli.run(args, _settings(args))


def _db(args: argparse.Namespace) -> int:
    return db_cli.run(args, _settings(args))


def _challengers(args: argparse.Namespace) -> int:
    from decision_service.challengers import cli as challengers_cli

    return challengers_cli.run(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decision-service", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="settings TOML file")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (models/, rules/, SQLite under ./var/)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=_serve)

    train = sub.add_parser("train", help="train the underwriting model on real credit data")
    train.add_argument("--data", type=Path, default=None, help="CSV with credit_data's columns")
    train.add_argument("--version", default="1.0.0")
    train.add_argument("--models", default="models")
    train.add_argument(
        "--examples",
        type=Path,
        default=Path("benchmarks/data/applications.jsonl"),
        help="where to write the held-out applications (request format)",
    )
    train.add_argument(
        "--features",
        default=None,
        help="feature set (all, fair-age-monotone, fair-age-dropped); default: the version's",
    )
    train.add_argument(
        "--force", action="store_true", help="replace an existing version (never for releases)"
    )
    train.set_defaults(func=_train)

    rules = sub.add_parser("rules", help="risk-appetite rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate, compile, test; print rule coverage")
    check.add_argument("paths", nargs="*", type=Path)
    check.add_argument(
        "--as-of",
        type=_instant,
        default=None,
        metavar="TIME",
        help="also show which version is in force then (e.g. 2026-12-01T00:00Z)",
    )
    check.set_defaults(func=_rules_check)

    audit = sub.add_parser("audit", help="the audit log: verify, replay, export")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check every chain against the audit key and the signed checkpoints"
    )
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.add_argument(
        "--incremental",
        action="store_true",
        help="check each chain only from the last verify that passed (default: everything)",
    )
    audit_sub.add_parser("rotate-key", help="append a new audit key (old records keep verifying)")
    replay = audit_sub.add_parser("replay", help="re-decide stored decisions; report differences")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID")
    which.add_argument("--all", action="store_true")
    export = audit_sub.add_parser("export", help="stream decisions as JSONL or CSV")
    export.add_argument("--format", choices=["jsonl", "csv", "parquet"], default="jsonl")
    export.add_argument("--output", type=Path, default=None, help="file (default: stdout)")
    for p in (replay, export):
        p.add_argument("--from", dest="from_", type=filter_date, help=f"from (inclusive): {DATES}")
        p.add_argument("--to", type=filter_date, help=f"to (exclusive): {DATES}")
        p.add_argument("--application-id")
        p.add_argument("--outcome", choices=["approve", "refer", "decline"])
        p.add_argument("--rule")
        p.add_argument("--model-version")
        p.add_argument("--ruleset-version")
    audit.set_defaults(func=_audit)

    from decision_service.keys_cli import add_parser as add_keys_parser

    add_keys_parser(sub, _keys)

    from decision_service.backtest.cli import add_backtest_parser
    from decision_service.batch.cli import add_batch_parser

    add_batch_parser(sub).set_defaults(func=_batch)
    add_backtest_parser(sub).set_defaults(func=_backtest)

    from decision_service.models_cli import add_parser as add_models

    add_models(sub, _models)

    from decision_service.monitoring.cli import add_parser as add_drift

    add_drift(sub, _drift)

    db_cli.add_parser(sub)
    sub.choices["db"].set_defaults(func=_db)
    from decision_service.challengers.cli import add_parser as add_challengers

    add_challengers(sub, _challengers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for warning in unknown_environment():
        print(f"decision-service: {warning}", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (StartupError, SettingsError) as exc:
        return report(exc, debug=debug_requested())
    except Exception as exc:  # anything else at start: still one line (debug: the traceback)
        if args.func is not _serve:
            raise
        return report(exc, debug=debug_requested())


if __name__ == "__main__":
    sys.exit(main())
