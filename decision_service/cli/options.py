"""Options shared by several commands, so each reads and is documented the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from decision_service.dates import DATES, filter_date
from decision_service.decision import OUTCOMES


def add_window(p: argparse.ArgumentParser, what: str = "decisions made") -> None:
    """--from/--to: the API's date parser (dates.py), so both accept the same texts."""
    p.add_argument(
        "--from",
        dest="from_",
        type=filter_date,
        metavar="DATE",
        help=f"only {what} at or after DATE (inclusive): {DATES}",
    )
    p.add_argument(
        "--to",
        type=filter_date,
        metavar="DATE",
        help=f"only {what} before DATE (exclusive): {DATES}",
    )


def add_filters(p: argparse.ArgumentParser, *, model_version: bool = True) -> None:
    """The audit filters of GET /decisions: all optional, combined with AND."""
    add_window(p)
    p.add_argument("--application-id", metavar="ID", help="only this application's decisions")
    p.add_argument("--outcome", choices=OUTCOMES, help="only decisions with this outcome")
    p.add_argument("--rule", metavar="RULE_ID", help="only decisions in which this rule fired")
    if model_version:
        p.add_argument(
            "--model-version", metavar="VERSION", help="only decisions of this model version"
        )
    p.add_argument(
        "--ruleset-version", metavar="VERSION", help="only decisions of this ruleset version"
    )


def add_format(p: argparse.ArgumentParser, choices: tuple[str, ...], what: str) -> None:
    p.add_argument(
        "--format",
        choices=choices,
        default=choices[0],
        help=f"{what} (default: {choices[0]}); json is for scripts",
    )


def add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", type=Path, default=None, metavar="FILE", help="file (default: stdout)"
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar (none is drawn anyway when stderr is not a terminal)",
    )
