"""The argument tree of `decision-service`: argparse only (no command module is imported to
build it), every option with its help. Data commands are in parser_data.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from decision_service.cli import commands
from decision_service.cli.options import add_format
from decision_service.dates import DATES, filter_date


def build_parser() -> argparse.ArgumentParser:
    from decision_service.cli import parser_data

    parser = argparse.ArgumentParser(
        prog="decision-service",
        description="Real-time loan underwriting: serve the API, train, check rules, and work "
        "with the audit log, the model registry and batch decisions.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="settings TOML file (default: $DECISION_CONFIG; DECISION_* variables override it)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve(sub)
    _train(sub)
    _rules(sub)
    parser_data.add_audit(sub)
    _keys(sub)
    parser_data.add_batch(sub)
    parser_data.add_backtest(sub)
    _models(sub)
    parser_data.add_drift(sub)
    _db(sub)
    parser_data.add_challengers(sub)
    return parser


def _serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the API (models/, rules/, SQLite under ./var/)")
    serve.add_argument("--host", help="address to listen on (default: settings' host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: settings' port)")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: settings' workers)"
    )
    serve.set_defaults(func=commands.serve)


def _train(sub: Any) -> None:
    train = sub.add_parser("train", help="train the underwriting model on real credit data")
    train.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="CSV",
        help="CSV with credit_data's columns (default: the packaged credit data)",
    )
    train.add_argument("--version", default="1.0.0", help="model version to write (default: 1.0.0)")
    train.add_argument(
        "--models",
        default="models",
        metavar="DIR",
        help="models directory; writes DIR/underwriting/VERSION/ (default: models)",
    )
    train.add_argument(
        "--examples",
        type=Path,
        default=Path("benchmarks/data/applications.jsonl"),
        metavar="FILE",
        help="where to write the held-out applications, in request format "
        "(default: benchmarks/data/applications.jsonl)",
    )
    train.add_argument(
        "--features",
        default=None,
        metavar="SET",
        help="feature set (all, fair-age-monotone, fair-age-dropped); default: the version's",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="replace an existing version directory (refused without it; never for releases)",
    )
    train.set_defaults(func=commands.train)


def _rules(sub: Any) -> None:
    rules = sub.add_parser("rules", help="risk-appetite rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = rules_sub.add_parser("check", help="validate, compile, test; print rule coverage")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="rule files or directories (default: the settings' rules directory)",
    )
    check.add_argument(
        "--as-of",
        type=filter_date,
        default=None,
        metavar="DATE",
        help=f"also show which version is in force then: {DATES}",
    )
    check.set_defaults(func=commands.rules_check)


def _keys(sub: Any) -> None:
    from decision_service.access.principal import ROLES

    keys = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = keys_sub.add_parser("create", help="make a key; it is printed once, never stored")
    create.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    create.add_argument("--name", required=True, help="unique, never reused (letters, digits, ._-)")
    add_format(create, ("text", "json"), "output")
    listing = keys_sub.add_parser("list", help="name, role, created, last used, revoked")
    add_format(listing, ("table", "json"), "output")
    revoke = keys_sub.add_parser("revoke", help="refused by every worker within a second")
    revoke.add_argument("name", help="the key's name (as given to `keys create`)")
    keys.set_defaults(func=commands.keys)


def _models(sub: Any) -> None:
    models = sub.add_parser("models", help="the model registry: list, promote, rollback, retire")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    listing = models_sub.add_parser("list", help="versions, which one is live, gate results")
    promote = models_sub.add_parser("promote", help="make VERSION live (gated)")
    promote.add_argument("version", help="a version under models/<name>/ that passes the gate")
    rollback = models_sub.add_parser("rollback", help="back to the version that served before")
    retire = models_sub.add_parser("retire", help="VERSION never serves live traffic again")
    retire.add_argument("version", help="the version to retire (it still replays)")
    for p in (listing, promote, rollback, retire):
        add_format(p, ("table", "json"), "output")
    for p in (promote, rollback, retire):
        p.add_argument("--actor", default=None, help="who makes the change (default: $USER)")
        p.add_argument("--reason", default=None, help="why (kept in the model log)")
    models.set_defaults(func=commands.models)


def _db(sub: Any) -> None:
    db = sub.add_parser("db", help="the audit database's schema: upgrade, current, history")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    for name, text in (
        ("upgrade", "apply pending schema migrations (SQLite or PostgreSQL)"),
        ("current", "the database's schema revision against the code's"),
        ("history", "the migrations this code knows"),
    ):
        add_format(db_sub.add_parser(name, help=text), ("text", "json"), "output")
    rev = db_sub.add_parser("revision", help="(developers) write the next migration file")
    rev.add_argument("-m", "--message", required=True, help="what the migration does")
    db.set_defaults(func=commands.db)
