"""Per-application rule evaluation cost on each engine (median and p99, microseconds).

    uv run python benchmarks/rules_bench.py [--n 5000]

Policies: the shipped rules/risk_appetite.yaml and a generated 300-rule policy.
Applications: seeded generated applications around the shipped policy's thresholds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from time import perf_counter_ns

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decision_service.rules.compiled import CompiledEngine  # noqa: E402
from decision_service.rules.durable import DurableEngine  # noqa: E402
from decision_service.rules.language import load_ruleset, load_ruleset_from_text  # noqa: E402
from decision_service.rules.schema import FactSchema  # noqa: E402
from tests.rules._data import generated_applications  # noqa: E402


def policy_300() -> str:
    fields = ["amount", "income", "expenses", "age", "seniority", "term", "pd", "debt"]
    rules = []
    for i in range(300):
        f = fields[i % len(fields)]
        g = fields[(i * 3 + 1) % len(fields)]
        outcome = ["approve", "refer", "decline"][i % 3]
        cond = f"{f} > {(i * 37) % 500} and {g} < {(i * 53) % 900 + 1}"
        if i % 5 == 0:
            cond += ' and home in ["rent", "owner"]'
        if i % 7 == 0:
            cond = f"not ({cond}) or income is missing"
        if i % 11 == 0:
            cond = f"amount / term > {(i % 40) + 5}"
        rules.append(
            f"  - {{id: G{i}, priority: {i % 1000}, when: '{cond}', "
            f"then: {{outcome: {outcome}, reason: generated {i}}}}}\n"
        )
    return "ruleset: generated-300\nversion: '1'\nrules:\n" + "".join(rules)


def measure(engine, apps, repeat: int) -> tuple[float, float, float]:
    times = []
    fired = 0
    for _ in range(repeat):
        for app in apps:
            t0 = perf_counter_ns()
            ev = engine.evaluate(app)
            times.append(perf_counter_ns() - t0)
            fired += len(ev.fired)
    times.sort()
    med = statistics.median(times) / 1000
    p99 = times[int(len(times) * 0.99)] / 1000
    return med, p99, fired / len(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    schema = FactSchema.from_card_file(
        ROOT / "models" / "underwriting" / "1.0.0" / "model_card.yaml"
    )
    apps = generated_applications(args.n, seed=99)
    policies = {
        "risk_appetite.yaml": load_ruleset(ROOT / "rules" / "risk_appetite.yaml", schema),
        "generated 300 rules": load_ruleset_from_text(policy_300(), "generated.yaml", schema),
    }
    print(f"{'policy':<22}{'rules':>6}  {'engine':<14}{'median µs':>10}{'p99 µs':>10}{'fired':>7}")
    for label, rs in policies.items():
        for cls in (CompiledEngine, DurableEngine):
            eng = cls(rs)
            for app in apps[:200]:  # warm up
                eng.evaluate(app)
            med, p99, fired = measure(eng, apps, 2 if cls is CompiledEngine else 1)
            print(
                f"{label:<22}{len(rs.rules):>6}  {eng.name:<14}"
                f"{med:>10.1f}{p99:>10.1f}{fired:>7.1f}"
            )
            eng.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
