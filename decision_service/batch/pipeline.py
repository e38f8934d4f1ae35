"""The decision pipeline over many applications at once, equal to the row pipeline.

score (one LightGBM call for the chunk) → rules over columns → outcome per distinct set of fired
outcome rules (the shared `resolve`) → exact SHAP reasons for the adverse rows (per-tree
tables, vectorized) → columns out (`to_arrow`), or Decision objects (`decision`) built by the
row pipeline's own `assemble`, field for field what `pipeline.decide` returns (tested on every
real application, against both rule engines).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

import numpy as np
import pyarrow as pa

from decision_service.batch.columns import ApplicationColumns, Col
from decision_service.batch.rules import ColumnEvaluation, ColumnRules
from decision_service.decision import OUTCOMES, Decision
from decision_service.pipeline import (
    MAX_REASONS,
    Versions,
    assemble,
    decision_reasons,
    model_reasons,
    needs_model_reasons,
    principal_reasons,
)
from decision_service.rules.evaluation import CapSource, cap_reason
from decision_service.rules.ruleset import Ruleset
from decision_service.scoring import Scorer
from decision_service.scoring.scorer import TOP_REASONS

REASON_TYPE = pa.struct(
    [
        ("code", pa.string()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("contribution", pa.float64()),
    ]
)
OUTPUT_SCHEMA = pa.schema(
    [
        ("decision_id", pa.string()),
        ("application_id", pa.string()),
        ("outcome", pa.string()),
        ("approved_amount", pa.float64()),
        ("pd", pa.float64()),
        ("risk_band", pa.string()),
        ("reasons", pa.list_(REASON_TYPE)),
        ("rules_fired", pa.list_(pa.string())),
        ("model_version", pa.string()),
        ("ruleset_version", pa.string()),
        ("decided_at", pa.string()),
    ]
)


@dataclass
class BatchResult:
    """The decisions of n applications, as columns."""

    pipeline: BatchPipeline
    apps: ApplicationColumns
    pd: np.ndarray
    rules: ColumnEvaluation
    approved: np.ndarray  # float64, NaN unless approved
    explained: np.ndarray  # bool: model reasons computed for this row
    reason_feature: np.ndarray  # (n, TOP_REASONS) feature index, -1 pads
    reason_value: np.ndarray  # (n, TOP_REASONS)
    timings_us: dict[str, int]  # per row, amortised over the chunk

    @property
    def n(self) -> int:
        return self.apps.n

    @property
    def outcome_codes(self) -> np.ndarray:
        return self.rules.outcome

    def outcomes(self) -> np.ndarray:
        return np.asarray(OUTCOMES, dtype=object)[self.rules.outcome]

    def risk_band(self) -> Col | None:
        return self.rules.env.get("risk_band")

    def decision(
        self, i: int, *, decision_id: str, decided_at: str, trace_id: str | None = None
    ) -> Decision:
        """Row i as a Decision: the row pipeline's own `assemble`."""
        scorer, result = self.pipeline.scorer, self.rules.evaluation(i)
        model = []
        if self.explained[i]:
            model = model_reasons(
                scorer.explanation(int(j), float(v))
                for j, v in zip(self.reason_feature[i], self.reason_value[i], strict=True)
                if j >= 0
            )
        amount = self.apps.cols["amount"].py(i)
        return assemble(
            self.apps.ids[i],
            amount,
            float(self.pd[i]),
            result,
            decision_reasons(result, amount, model),
            self.pipeline.refs,
            dict(self.timings_us),
            decision_id=decision_id,
            decided_at=decided_at,
            trace_id=trace_id,
        )

    def to_arrow(self, decision_ids: list[str], decided_at: str) -> pa.Table:
        """The decisions as an Arrow table (OUTPUT_SCHEMA), built column-wise."""
        n, refs = self.n, self.pipeline.refs
        band = self.risk_band()
        if band is None:
            risk_band = pa.nulls(n, pa.string())
        else:
            vocab = pa.array(band.vocab, pa.string())
            risk_band = vocab.take(pa.array(band.values, mask=~band.known))
        return pa.table(
            {
                "decision_id": pa.array(decision_ids, pa.string()),
                "application_id": pa.array(self.apps.ids, pa.string()),
                "outcome": pa.array(OUTCOMES, pa.string()).take(pa.array(self.rules.outcome)),
                "approved_amount": pa.array(self.approved, mask=np.isnan(self.approved)),
                "pd": pa.array(self.pd),
                "risk_band": risk_band,
                "reasons": self._reasons_column(),
                "rules_fired": self._rules_column(),
                "model_version": pa.array([refs.model.version] * n, pa.string()),
                "ruleset_version": pa.array([refs.ruleset.version] * n, pa.string()),
                "decided_at": pa.array([decided_at] * n, pa.string()),
            },
            schema=OUTPUT_SCHEMA,
        )

    def _rules_column(self) -> pa.Array:
        """Each row's trace ids (rules, table rows, table entries), as `decision(i)` has them."""
        names, index, present = self.rules.trace_ids()
        offsets = np.zeros(self.n + 1, np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        ids = pa.array(names, pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets), ids.take(pa.array(index[present])))

    def _reasons_column(self) -> pa.Array:
        """Each row's reasons as `decision(i).reasons`: the cap, rule and model reasons side by
        side, then the slots the shared `principal_reasons` picks for the row's shape."""
        vocab, n = self.pipeline.reason_vocab, self.n
        per_resolution = [
            [vocab.index_of(r) for r in reasons] for _, reasons in self.rules.resolutions
        ]
        width = max((len(r) for r in per_resolution), default=0)
        table = np.full((max(len(per_resolution), 1), max(width, 1)), -1, np.int64)
        for k, codes in enumerate(per_resolution):
            table[k, : len(codes)] = codes
        rule_part = table[self.rules.pattern][:, :width]
        reduced = self.approved < self.apps.cols["amount"].values  # NaN (not approved): False
        cap_part = np.where(reduced, vocab.cap_index[self.rules.cap_source], -1)[:, None]
        model_part = np.where(
            self.explained[:, None] & (self.reason_feature >= 0),
            self.reason_feature + vocab.model_base,
            -1,
        )
        entries = np.concatenate([cap_part, rule_part, model_part], axis=1)
        values = np.concatenate([np.full((n, 1 + width), np.nan), self.reason_value], axis=1)
        # each part is left-packed: a row's shape is (cap?, rule count, model count), one int
        models = model_part.shape[1] + 1
        capped = (cap_part[:, 0] >= 0).astype(np.int64)
        n_rules, n_models = (rule_part >= 0).sum(axis=1), (model_part >= 0).sum(axis=1)
        shapes, which = np.unique(
            (capped * (width + 1) + n_rules) * models + n_models, return_inverse=True
        )
        slots = np.full((max(len(shapes), 1), MAX_REASONS), -1, np.int64)
        for k, key in enumerate(shapes.tolist()):
            rest, n_model = divmod(key, models)
            has_cap, n_rule = divmod(rest, width + 1)
            chosen = principal_reasons(
                range(1, 1 + n_rule), 0 if has_cap else None, range(1 + width, 1 + width + n_model)
            )
            slots[k, : len(chosen)] = chosen
        pick = slots[which.reshape(-1)]
        keep = pick >= 0  # row-major over the picked slots is reason order
        rows = np.broadcast_to(np.arange(n)[:, None], pick.shape)
        flat, contrib = entries[rows[keep], pick[keep]], values[rows[keep], pick[keep]]
        offsets = np.zeros(self.n + 1, np.int32)
        np.cumsum(keep.sum(axis=1), out=offsets[1:])
        index = pa.array(flat)
        struct = pa.StructArray.from_arrays(
            [
                vocab.codes.take(index),
                vocab.sources.take(index),
                vocab.texts.take(index),
                pa.array(contrib, mask=np.isnan(contrib)),
            ],
            fields=list(REASON_TYPE),
        )
        return pa.ListArray.from_arrays(pa.array(offsets), struct)


class _ReasonVocab:
    """Every reason a decision can cite: the rules' (by rule) then the model's (by feature)."""

    def __init__(self, ruleset: Ruleset, scorer: Scorer, cap_sources: list[CapSource]) -> None:
        codes, sources, texts = [], [], []
        self._rule_index: dict[tuple[str, str], int] = {}
        conflicts = [t.conflict for t in ruleset.tables if t.hit == "unique"]
        for rule in (*ruleset.rules, *conflicts):
            key = (rule.code, rule.reason or "")
            if key not in self._rule_index:
                self._rule_index[key] = len(codes)
                codes.append(rule.code)
                sources.append("rule")
                texts.append(rule.reason or "")
        # the reason of every cap (rules with `max_amount`, tables aggregating one), by source
        cap_index = []
        for source in cap_sources:
            reason = cap_reason(source)
            key = (reason.code, reason.text)
            if key not in self._rule_index:
                self._rule_index[key] = len(codes)
                codes.append(reason.code)
                sources.append("rule")
                texts.append(reason.text)
            cap_index.append(self._rule_index[key])
        self.cap_index = np.array([*cap_index, -1], np.int64)  # [-1]: no cap
        self.model_base = len(codes)
        for spec in scorer.card.features:
            codes.append(spec.reason_code)
            sources.append("model")
            texts.append(spec.reason)
        self.codes = pa.array(codes, pa.string())
        self.sources = pa.array(sources, pa.string())
        self.texts = pa.array(texts, pa.string())

    def index_of(self, reason: Any) -> int:
        return self._rule_index[(reason.code, reason.text)]


class BatchPipeline:
    """One model and one ruleset, compiled once; `decide` a chunk of applications at a time."""

    def __init__(self, scorer: Scorer, ruleset: Ruleset, refs: Versions, *, explain: bool = False):
        self.scorer = scorer
        self.ruleset = ruleset
        self.refs = refs
        self.explain = explain
        self.rules = ColumnRules(ruleset)
        self.reason_vocab = _ReasonVocab(ruleset, scorer, self.rules.cap_sources)
        scorer.prepare_many()

    def decide(self, apps: ApplicationColumns, *, reasons: bool = True) -> BatchResult:
        """Decide a chunk. `reasons=False` skips the model reasons (a backtest compares
        outcomes, amounts and rules; it never needs them)."""
        n, specs = apps.n, self.scorer.card.features
        t0 = perf_counter_ns()
        matrix = apps.matrix(specs)
        pd, cells = self.scorer.score_many(matrix)
        t1 = perf_counter_ns()
        facts = dict(apps.cols)
        facts["pd"] = Col("number", pd, np.ones(n, bool), False)
        rules = self.rules.evaluate(facts, n)
        t2 = perf_counter_ns()
        needs = np.array(
            [needs_model_reasons(o, self.explain) for o, _ in rules.resolutions], dtype=bool
        )
        explained = needs[rules.pattern] if n and reasons else np.zeros(n, bool)
        reason_feature = np.full((n, TOP_REASONS), -1, np.int64)
        reason_value = np.zeros((n, TOP_REASONS))
        rows = np.flatnonzero(explained)
        if len(rows):
            reason_feature[rows], reason_value[rows] = self.scorer.explain_many(
                matrix[rows], cells=None if cells is None else cells[:, rows]
            )
        t3 = perf_counter_ns()
        amount = apps.cols["amount"].values
        cap = rules.max_amount
        approve = rules.outcome == 0
        approved = np.where(approve, np.where(np.isnan(cap), amount, np.fmin(amount, cap)), np.nan)
        per_row = max(n, 1) * 1000
        timings = {
            "score": (t1 - t0) // per_row,
            "rules": (t2 - t1) // per_row,
            "explain": (t3 - t2) // per_row,
        }
        return BatchResult(
            self, apps, pd, rules, approved, explained, reason_feature, reason_value, timings
        )
