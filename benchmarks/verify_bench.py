"""Static verification time (`rules check` and every reload), per policy.

    uv run python benchmarks/verify_bench.py [--repeat 5]

Policies: the shipped rules/risk_appetite.yaml, the generated 300-rule policy of
rules_bench.py, and two generated 300-row tables (a `unique complete` band table: every pair of
rows is checked for overlap; a `first` table over three columns: every row for pre-emption).
Baseline in the same run: loading the same file (parse + type-check), as a ratio.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.rules_bench import policy_300  # noqa: E402
from decision_service.rules.language import load_ruleset_from_text  # noqa: E402
from decision_service.rules.schema import FactSchema  # noqa: E402
from decision_service.rules.verify import verify  # noqa: E402


def table_300_unique() -> str:
    edges = [i / 300 for i in range(1, 300)]
    cells = ['"< ' + repr(edges[0]) + '"']
    cells += [f'"[{a!r}..{b!r})"' for a, b in itertools.pairwise(edges)]
    cells += ['">= ' + repr(edges[-1]) + '"']
    rows = "".join(f"      - [{c}, {i}]\n" for i, c in enumerate(cells))
    return (
        "ruleset: bands-300\nversion: '1'\ntables:\n  - id: BANDS\n    hit: unique\n"
        f"    complete: true\n    inputs: [pd]\n    outputs: [set band]\n    rows:\n{rows}"
    )


def table_300_first() -> str:
    homes = ["owner", "rent", "parents", "priv", "other", "ignore"]
    rows = []
    for i in range(299):
        age = f'"[{18 + i % 60}..{19 + i % 60 + i % 7})"'
        income = f'"> {(i * 37) % 400}"'
        rows.append(f"      - [{age}, {income}, {homes[i % 6]}, refer, r{i}]\n")
    rows.append("      - [-, -, -, approve, otherwise]\n")
    return (
        "ruleset: first-300\nversion: '1'\ntables:\n  - id: GRID\n    hit: first\n"
        "    inputs: [age, income, home]\n    outputs: [outcome, reason]\n    rows:\n"
        + "".join(rows)
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    schema = FactSchema.from_card_file(
        ROOT / "models" / "underwriting" / "1.0.0" / "model_card.yaml"
    )
    texts = {
        "risk_appetite.yaml": (ROOT / "rules" / "risk_appetite.yaml").read_text(),
        "generated 300 rules": policy_300(),
        "300-row unique table": table_300_unique(),
        "300-row first table": table_300_first(),
    }
    print(f"{'policy':<22}{'rules':>6}{'findings':>10}{'load ms':>10}{'check ms':>10}{'ratio':>8}")
    for label, text in texts.items():
        loads, checks = [], []
        for _ in range(args.repeat):
            t0 = perf_counter()
            rs = load_ruleset_from_text(text, label, schema)
            t1 = perf_counter()
            findings = verify(rs)
            t2 = perf_counter()
            loads.append(t1 - t0)
            checks.append(t2 - t1)
        load, check = statistics.median(loads) * 1000, statistics.median(checks) * 1000
        print(
            f"{label:<22}{len(rs.rules):>6}{len(findings):>10}{load:>10.1f}{check:>10.1f}"
            f"{check / load:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
