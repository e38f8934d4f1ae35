"""`decision-service` command line: serve, train, rules check, audit, keys, models, batch,
backtest, drift, db, challengers.

Building the argument tree imports argparse and the stdlib date parser only; each command
imports what it needs when it runs (commands.py), so `--help` and the commands that never score
start without LightGBM, pandas or Litestar (tests/test_cli_imports.py, benchmarks/cli_bench.py).
"""

from __future__ import annotations

import sys

from decision_service.cli.parser import build_parser
from decision_service.cli.serve import UVICORN_OPTIONS

__all__ = ["UVICORN_OPTIONS", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors exit here, lightly
    from decision_service.cli import commands
    from decision_service.settings import SettingsError, unknown_environment

    for warning in unknown_environment():
        print(f"decision-service: {warning}", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        # One line for a known mistake (and for anything at `serve`'s start); the traceback
        # with DECISION_DEBUG. startup (SQLAlchemy) is imported only on this path.
        from decision_service.startup import StartupError, debug_requested, report

        if isinstance(exc, StartupError | SettingsError) or args.func is commands.serve:
            return report(exc, debug=debug_requested())
        raise


if __name__ == "__main__":
    sys.exit(main())
