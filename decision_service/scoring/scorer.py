"""Single-application scoring through LightGBM's C single-row fast path.

`Booster.predict` rebuilds a predictor on every call and lets OpenMP spin both cores (p99 of
several ms inside a server). The C API's `...SingleRowFast` keeps a prepared predictor, and we
pin it to one thread. A FastConfig is not shareable between threads, so each thread gets its
own. Outputs are bit-for-bit those of `Booster.predict` (tested).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
from lightgbm.basic import _LIB, _safe_call

from decision_service.scoring.application import Encoder, feature_encoders
from decision_service.scoring.card import FeatureSpec, ModelCard, load_card
from decision_service.scoring.shap_table import TableExplainer

_PREDICT_NORMAL = 0
_PREDICT_CONTRIB = 3
_DTYPE_FLOAT64 = 1
_PARAMS = b"num_threads=1"
TOP_REASONS = 4


class Explanation(msgspec.Struct, frozen=True):
    """One model reason: a feature whose exact SHAP contribution raised the PD."""

    feature: str
    code: str
    text: str
    contribution: float  # log-odds


class _FastPredictor:
    """One prepared C predictor (one thread's), with its input and output buffers."""

    def __init__(self, handle: ctypes.c_void_p, predict_type: int, n_features: int, n_out: int):
        self.config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                handle,
                ctypes.c_int(predict_type),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(_PARAMS),
                ctypes.byref(self.config),
            )
        )
        self.row = (ctypes.c_double * n_features)()
        self.out = (ctypes.c_double * n_out)()
        self.out_len = ctypes.c_int64()
        self._fn = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._args = (self.config, self.row, ctypes.byref(self.out_len), self.out)

    def run(self, values: Sequence[float]) -> ctypes.Array[ctypes.c_double]:
        self.row[:] = values
        _safe_call(self._fn(*self._args))
        return self.out

    def __del__(self) -> None:
        if self.config:
            _LIB.LGBM_FastConfigFree(self.config)


class Scorer:
    """A loaded, verified model: PD and reason codes for one application at a time."""

    def __init__(self, card: ModelCard, booster: lgb.Booster, *, tabulate_shap: bool = True):
        self.card = card
        self.booster = booster
        self.n_features = booster.num_feature()
        if booster.feature_name() != card.feature_names:
            raise ValueError(
                f"model features {booster.feature_name()} differ from the card's "
                f"{card.feature_names}"
            )
        self._encoders: list[tuple[str, Encoder]] = feature_encoders(card.features)
        self._specs: tuple[FeatureSpec, ...] = card.features
        self._local = threading.local()
        # Exact SHAP from per-tree tables (~5x faster); LightGBM's contrib path otherwise.
        self._table = TableExplainer.build(booster, card.features) if tabulate_shap else None

    @classmethod
    def load(cls, model_dir: Path, *, tabulate_shap: bool = True) -> Scorer:
        card = load_card(model_dir)
        booster = lgb.Booster(model_file=str(model_dir / card.model_file))
        return cls(card, booster, tabulate_shap=tabulate_shap)

    def _predictors(self) -> tuple[_FastPredictor, _FastPredictor]:
        local = self._local
        try:
            return local.score, local.contrib
        except AttributeError:
            handle = self.booster._handle
            local.score = _FastPredictor(handle, _PREDICT_NORMAL, self.n_features, 1)
            local.contrib = _FastPredictor(
                handle, _PREDICT_CONTRIB, self.n_features, self.n_features + 1
            )
            return local.score, local.contrib

    def features(self, app: object) -> list[float]:
        return [enc(getattr(app, name)) for name, enc in self._encoders]

    def predict(self, row: Sequence[float]) -> float:
        """Probability of default for one feature row (card order, NaN = missing)."""
        return self._predictors()[0].run(row)[0]

    def contributions(self, row: Sequence[float]) -> Sequence[float]:
        """Exact TreeSHAP contributions (log-odds) per feature, then the expected value."""
        if self._table is not None:
            return self._table.contributions(row)
        return self._predictors()[1].run(row)[: self.n_features + 1]

    def explain(self, row: Sequence[float], top: int = TOP_REASONS) -> list[Explanation]:
        """The features that raised the PD most, strongest first (ties in card order)."""
        contrib = self.contributions(row)
        raised = [(contrib[i], i) for i in range(self.n_features) if contrib[i] > 0.0]
        raised.sort(key=lambda ci: (-ci[0], ci[1]))
        return [self.explanation(i, value) for value, i in raised[:top]]

    def explanation(self, feature: int, contribution: float) -> Explanation:
        spec = self._specs[feature]
        return Explanation(spec.name, spec.reason_code, spec.reason, contribution)

    # -- many rows at once (the batch path) ----------------------------------------------------

    def prepare_many(self) -> None:
        """Build the tables of the many-rows path (the batch pipeline's load, not its first
        chunk)."""
        if self._table is not None:
            self._table.prepare_many(self.booster, self.n_features)

    def predict_many(self, matrix: np.ndarray) -> np.ndarray:
        """PD of every row of an (n, features) matrix; the same bits as `predict` row by row
        (tested)."""
        return self.score_many(matrix)[0]

    def score_many(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`predict_many`, and the rows' tree cells for `explain_many` (None: no tables). The
        tables give LightGBM's own tree outputs, summed as it sums them; else one
        `Booster.predict` call, one thread."""
        if len(matrix) == 0:
            return np.zeros(0), None
        if self._table is None:
            return self.booster.predict(matrix, num_threads=1), None
        pd, cells = self._table.scores(matrix, self.booster)
        return (self.booster.predict(matrix, num_threads=1) if pd is None else pd), cells

    def contributions_many(self, matrix: np.ndarray, cells: np.ndarray | None = None) -> np.ndarray:
        """(n, features) exact SHAP contributions, bitwise those of `contributions`."""
        if self._table is not None:
            return self._table.feature_contributions(matrix, cells)
        out = self.booster.predict(matrix, pred_contrib=True, num_threads=1)
        return np.asarray(out)[:, : self.n_features]

    def explain_many(
        self, matrix: np.ndarray, top: int = TOP_REASONS, cells: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """`explain` for many rows: (feature index, contribution) of the `top` features that
        raised the PD most, strongest first, ties in card order; index -1 pads. `cells`: the
        rows' cells from `score_many`."""
        contrib = self.contributions_many(matrix, cells)
        n = len(contrib)
        order = np.full((n, top), -1, np.int64)
        values = np.zeros((n, top))
        rows = np.arange(n)
        left = contrib.copy()
        for k in range(top):  # argmax takes the first of equal values: ties in card order
            best = left.argmax(axis=1) if n else np.zeros(0, np.int64)
            value = left[rows, best]
            order[:, k] = np.where(value > 0.0, best, -1)
            values[:, k] = value
            left[rows, best] = -np.inf
        return order, values
