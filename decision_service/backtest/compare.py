"""Re-decide with the candidate and compare with what was decided.

Expected loss = PD × approved amount × LGD, with LGD (loss given default) = 100% by default:
unsecured consumer credit, no recovery assumed (`--lgd` to change). Before: the stored PD and
amount of each decision (made by whatever model and ruleset were live then); after: the
candidate's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from decision_service.decision import OUTCOMES

if TYPE_CHECKING:  # types only: challenger reports import this module without the model
    from decision_service.backtest.load import Baseline, Loaded
    from decision_service.batch.pipeline import BatchPipeline

CHUNK = 250_000


@dataclass
class Candidate:
    outcome: np.ndarray
    approved: np.ndarray
    pd: np.ndarray
    risk_band: np.ndarray  # object
    fired: dict[str, np.ndarray]


def redecide(pipeline: BatchPipeline, loaded: Loaded, chunk: int = CHUNK) -> Candidate:
    apps, n = loaded.apps, loaded.apps.n
    rules = pipeline.ruleset.rules
    outcome = np.zeros(n, np.int8)
    approved, pd = np.full(n, np.nan), np.zeros(n)
    band = np.full(n, None, dtype=object)
    hits = np.zeros((len(rules), n), bool)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        result = pipeline.decide(apps.slice(lo, hi), reasons=False)
        outcome[lo:hi] = result.outcome_codes
        approved[lo:hi] = result.approved
        pd[lo:hi] = result.pd
        hits[:, lo:hi] = result.rules.hits
        col = result.risk_band()
        if col is not None:
            band[lo:hi] = np.where(
                col.known, np.asarray((*col.vocab, ""), dtype=object)[col.values], None
            )
    return Candidate(outcome, approved, pd, band, {r.id: hits[i] for i, r in enumerate(rules)})


class Side(msgspec.Struct):
    decisions: int
    approve: int
    refer: int
    decline: int
    approval_rate: float
    refer_rate: float
    decline_rate: float
    approved_volume: float
    mean_pd_approved: float | None  # expected bad rate of the approved book
    expected_loss: float


def side(outcome: np.ndarray, approved: np.ndarray, pd: np.ndarray, lgd: float) -> Side:
    n = len(outcome)
    counts = np.bincount(outcome, minlength=3) if n else np.zeros(3, int)
    ok = outcome == 0
    volume = np.nan_to_num(approved[ok])
    return Side(
        decisions=n,
        approve=int(counts[0]),
        refer=int(counts[1]),
        decline=int(counts[2]),
        approval_rate=float(counts[0] / n) if n else 0.0,
        refer_rate=float(counts[1] / n) if n else 0.0,
        decline_rate=float(counts[2] / n) if n else 0.0,
        approved_volume=float(volume.sum()),
        mean_pd_approved=float(pd[ok].mean()) if ok.any() else None,
        expected_loss=float((pd[ok] * volume).sum() * lgd),
    )


class RuleDelta(msgspec.Struct):
    rule: str
    before: float  # hit rate
    after: float
    delta: float
    in_candidate: bool
    in_baseline: bool


class Segment(msgspec.Struct):
    value: str
    before: Side
    after: Side
    flips: int


class Flip(msgspec.Struct):
    decision_id: str
    application_id: str
    before: str
    after: str
    pd_before: float
    pd_after: float
    approved_before: float | None
    approved_after: float | None


class Version(msgspec.Struct):
    model_version: str
    ruleset_version: str
    decisions: int


class Report(msgspec.Struct):
    source: str
    filters: dict[str, object]
    candidate: dict[str, str]
    lgd: float
    decisions: int
    skipped: int
    versions: list[Version]  # what the baseline decisions were made with
    before: Side
    after: Side
    flip_matrix: dict[str, dict[str, int]]  # before -> after -> count
    flipped: int
    rules: list[RuleDelta]
    by: str | None
    segments: list[Segment]
    flips: list[Flip]


def segment_values(by: str, baseline: Baseline, loaded: Loaded) -> np.ndarray:
    """Each row's segment: a stored decision column or an application field (category or
    boolean; missing shows as "(missing)")."""
    if by in ("risk_band", "model_version", "ruleset_version"):
        values = getattr(baseline, by)
    elif by == "outcome":
        values = np.asarray(OUTCOMES, dtype=object)[baseline.outcome]
    else:
        col = loaded.apps.cols.get(by)
        if col is None or col.kind == "number":
            raise ValueError(
                f"--by {by}: choose risk_band, outcome, model_version, ruleset_version or a "
                "category/boolean application field"
            )
        if col.kind == "category":
            values = np.asarray((*col.vocab, ""), dtype=object)[col.values]
        else:
            values = np.where(col.values, "true", "false").astype(object)
        values = np.where(col.known, values, None)
    return np.asarray([("(missing)" if v is None else str(v)) for v in values], dtype=object)


def compare(
    loaded: Loaded,
    candidate: Candidate,
    *,
    lgd: float,
    by: str | None,
    meta: dict[str, object],
) -> Report:
    b, c = loaded.baseline, candidate
    pairs = np.bincount(b.outcome.astype(np.int64) * 3 + c.outcome, minlength=9).reshape(3, 3)
    matrix = {OUTCOMES[i]: {OUTCOMES[j]: int(pairs[i, j]) for j in range(3)} for i in range(3)}
    n = b.n
    rule_ids = list(dict.fromkeys([*c.fired, *sorted(b.fired)]))
    rules = []
    for rid in rule_ids:
        before = float(b.fired[rid].mean()) if rid in b.fired and n else 0.0
        after = float(c.fired[rid].mean()) if rid in c.fired and n else 0.0
        rules.append(RuleDelta(rid, before, after, after - before, rid in c.fired, rid in b.fired))
    flipped = np.flatnonzero(b.outcome != c.outcome)
    flips = [
        Flip(
            b.ids[i],
            b.application_ids[i],
            OUTCOMES[b.outcome[i]],
            OUTCOMES[c.outcome[i]],
            float(b.pd[i]),
            float(c.pd[i]),
            None if np.isnan(b.approved[i]) else float(b.approved[i]),
            None if np.isnan(c.approved[i]) else float(c.approved[i]),
        )
        for i in flipped
    ]
    versions = Counter(zip(b.model_version.tolist(), b.ruleset_version.tolist(), strict=True))
    segments = []
    if by:
        values = segment_values(by, b, loaded)
        for value in sorted(set(values.tolist())):
            m = values == value
            segments.append(
                Segment(
                    value,
                    side(b.outcome[m], b.approved[m], b.pd[m], lgd),
                    side(c.outcome[m], c.approved[m], c.pd[m], lgd),
                    int((b.outcome[m] != c.outcome[m]).sum()),
                )
            )
    return Report(
        source=b.source,
        filters=dict(meta.get("filters", {})),  # type: ignore[arg-type]
        candidate=dict(meta.get("candidate", {})),  # type: ignore[arg-type]
        lgd=lgd,
        decisions=n,
        skipped=len(loaded.skipped),
        versions=[Version(m, r, k) for (m, r), k in sorted(versions.items())],
        before=side(b.outcome, b.approved, b.pd, lgd),
        after=side(c.outcome, c.approved, c.pd, lgd),
        flip_matrix=matrix,
        flipped=len(flips),
        rules=rules,
        by=by,
        segments=segments,
        flips=flips,
    )
