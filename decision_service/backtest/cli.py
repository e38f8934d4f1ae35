"""`decision-service backtest` (placeholder replaced below)."""

import argparse
from typing import Any


def add_backtest_parser(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("backtest")


def run(args, settings) -> int:
    return 1
