"""`decision-service` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from decision_service.training.train import main

    return main(Path(args.models), args.version, args.data, args.examples)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decision-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
