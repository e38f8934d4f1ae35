"""Target 5: exact reason codes vs LightGBM's own ``pred_contrib``, on every example application.

Both sides are the service's code: ``Scorer`` with its tabulated exact SHAP (as shipped) and
``Scorer(..., tabulate_shap=False)``, whose contributions come from LightGBM's C CONTRIB fast
path; the reference values are ``Booster.predict(pred_contrib=True)``. Timing reuses
benchmarks/scoring_bench.py's per-call timer. Runs as a child pinned like the server:

    python -m benchmarks.harness.reasons --out FILE [--rows N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import msgspec
import numpy as np

from benchmarks.harness.common import APPLICATIONS, MODEL_DIR
from benchmarks.scoring_bench import timed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=0, help="0: every application")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    from decision_service.scoring import Scorer, application_type

    scorer = Scorer.load(MODEL_DIR)
    lightgbm = Scorer(scorer.card, scorer.booster, tabulate_shap=False)
    decode = msgspec.json.Decoder(application_type(scorer.card)).decode
    lines = [x for x in APPLICATIONS.read_bytes().splitlines() if x.strip()]
    rows = [scorer.features(decode(x)) for x in lines[: args.rows or None]]
    booster = scorer.booster

    max_diff, same_top = 0.0, 0
    for row in rows:
        ours = np.asarray(scorer.contributions(row), dtype=float)
        ref = booster.predict(np.asarray([row]), num_threads=1, pred_contrib=True)[0]
        max_diff = max(max_diff, float(np.max(np.abs(ours - ref))))
        a = [e.code for e in scorer.explain(row)]
        b = [e.code for e in lightgbm.explain(row)]
        same_top += a == b
    cases = {
        "score": scorer.predict,
        "reasons": scorer.explain,
        "reasons_lightgbm_c": lightgbm.explain,
        "pred_contrib_python": lambda r: booster.predict(
            np.asarray([r]), num_threads=1, pred_contrib=True
        ),
    }
    med = {k: float(np.median(timed(fn, rows, args.repeat))) for k, fn in cases.items()}
    out = {"rows": len(rows), "max_abs_diff": max_diff, "top4_identical": same_top, "us": med}
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
