"""Single-application scoring and SHAP cost, against LightGBM's own Python `predict` measured in
the same run (ratios are what to compare: the machine is shared and noisy).

    uv run python benchmarks/scoring_bench.py [--rows 1782] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from decision_service.scoring import Scorer, application_type

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[list[float]], object], rows: list[list[float]], repeat: int) -> np.ndarray:
    out = []
    for _ in range(repeat):
        for row in rows:
            t = time.perf_counter_ns()
            fn(row)
            out.append(time.perf_counter_ns() - t)
    return np.asarray(out) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1782)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scorer = Scorer.load(ROOT / "models" / "underwriting" / "1.0.0")
    lightgbm_contrib = Scorer(scorer.card, scorer.booster, tabulate_shap=False)
    decoder = msgspec.json.Decoder(application_type(scorer.card))
    lines = (ROOT / "benchmarks" / "data" / "applications.jsonl").read_bytes().splitlines()
    rows = [scorer.features(decoder.decode(line)) for line in lines[: args.rows]]
    booster = scorer.booster

    cases = {
        "Booster.predict(1×n, num_threads=1)  [baseline]": lambda r: booster.predict(
            np.asarray([r]), num_threads=1
        ),
        "C single-row fast path (ours)": scorer.predict,
        "Booster.predict(pred_contrib=True)  [SHAP baseline]": lambda r: booster.predict(
            np.asarray([r]), num_threads=1, pred_contrib=True
        ),
        "C single-row fast path, CONTRIB": lightgbm_contrib.contributions,
        "tabulated exact SHAP (ours)": scorer.contributions,
        "reason codes: SHAP + top 4 (ours)": scorer.explain,
    }
    results = {name: timed(fn, rows, args.repeat) for name, fn in cases.items()}
    base = np.median(results["Booster.predict(1×n, num_threads=1)  [baseline]"])
    shap_base = np.median(results["Booster.predict(pred_contrib=True)  [SHAP baseline]"])
    score = np.median(results["C single-row fast path (ours)"])
    print(
        f"{len(rows)} held-out applications × {args.repeat}; "
        f"{booster.num_trees()} trees, {booster.num_feature()} features\n"
    )
    print("| path | median µs | p99 µs | vs predict | vs pred_contrib | × our score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, t in results.items():
        med = np.median(t)
        print(
            f"| {name} | {med:.1f} | {np.percentile(t, 99):.1f} | {base / med:.2f}× faster "
            f"| {shap_base / med:.2f}× faster | {med / score:.1f} |"
        )


if __name__ == "__main__":
    main()
