"""What each command runs: thin wrappers that import their module only when that command runs,
so `--help` and the commands that never score load neither LightGBM nor pandas nor Litestar."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decision_service.settings import Settings


def settings_of(args: argparse.Namespace, **overrides: object) -> Settings:
    from decision_service.settings import load_settings

    return load_settings(args.config, **overrides)


@contextmanager
def logs_on_stderr() -> Iterator[None]:
    """structlog's lines (e.g. `audit_key_created`) to stderr: stdout is the command's data,
    which scripts parse. The previous configuration is restored (tests call main() in-process)."""
    import structlog

    previous = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**previous)


def delegate(target: str) -> Callable[[argparse.Namespace], int]:
    """A command function calling `module:function(args, settings)`, imported at call time."""

    def run(args: argparse.Namespace) -> int:
        module, name = target.split(":")
        with logs_on_stderr():
            return getattr(import_module(module), name)(args, settings_of(args))

    run.__name__ = run.__qualname__ = target
    return run


audit = delegate("decision_service.audit_cli:run")
keys = delegate("decision_service.keys_cli:run")
models = delegate("decision_service.models_cli:run")
db = delegate("decision_service.db_cli:run")
drift = delegate("decision_service.monitoring.cli:run")
challengers = delegate("decision_service.challengers.cli:run")


def batch(args: argparse.Namespace) -> int:
    from decision_service.batch.cli import run
    from decision_service.cli.live_model import with_live_model

    with logs_on_stderr():
        return run(args, with_live_model(settings_of(args), args.model_version))


def backtest(args: argparse.Namespace) -> int:
    from decision_service.backtest.cli import run
    from decision_service.cli.live_model import with_live_model

    with logs_on_stderr():  # the champion is the live version; --model names the candidate
        return run(args, with_live_model(settings_of(args), None))


def train(args: argparse.Namespace) -> int:
    from decision_service.training.train import main

    return main(
        Path(args.models),
        args.version,
        args.data,
        args.examples,
        force=args.force,
        feature_set=args.features,
    )


def rules_check(args: argparse.Namespace) -> int:
    from decision_service.rules.check import run_check
    from decision_service.rules.schema import card_schema
    from decision_service.scoring.card import load_card

    settings = settings_of(args)
    card = load_card(settings.model_dir)
    paths = args.paths or [settings.rules_dir]
    with logs_on_stderr():
        return run_check(paths, card_schema(card), as_of=args.as_of)


def serve(args: argparse.Namespace) -> int:
    from decision_service.cli.serve import serve as run

    return run(args)
