"""Held-out evaluation metrics, computed with numpy only."""

from __future__ import annotations

from typing import Any

import numpy as np


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties get average ranks)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ks(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of bads and goods."""
    thresholds = np.unique(p)
    bad = np.sort(p[y == 1])
    good = np.sort(p[y == 0])
    cdf_bad = np.searchsorted(bad, thresholds, side="right") / len(bad)
    cdf_good = np.searchsorted(good, thresholds, side="right") / len(good)
    return float(np.max(np.abs(cdf_good - cdf_bad)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def calibration_by_decile(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Predicted vs observed default rate in ten equal-count bins of predicted PD."""
    order = np.argsort(p, kind="mergesort")
    rows = []
    for k, idx in enumerate(np.array_split(order, 10), start=1):
        rows.append(
            {
                "decile": k,
                "count": len(idx),
                "pd_min": round(float(p[idx].min()), 6),
                "pd_max": round(float(p[idx].max()), 6),
                "mean_pd": round(float(p[idx].mean()), 6),
                "observed_default_rate": round(float(y[idx].mean()), 6),
            }
        )
    return rows


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {
        "rows": len(y),
        "default_rate": round(float(y.mean()), 6),
        "auc": round(auc(y, p), 6),
        "ks": round(ks(y, p), 6),
        "brier": round(brier(y, p), 6),
        "log_loss": round(log_loss(y, p), 6),
        "calibration": calibration_by_decile(y, p),
    }


BOOLEAN_CATEGORIES = ("false", "true")  # a boolean's codes 0/1, as category names


def reference_distribution(values: np.ndarray, categories: tuple[str, ...] | None) -> dict:
    """Bins and shares on the training data, for drift monitoring (PSI).

    Categorical and boolean features (pass BOOLEAN_CATEGORIES) get a share per category:
    decile bins of a 0/1 code put everything in one bin, where no drift can ever show."""
    missing = np.isnan(values)
    present = values[~missing]
    out: dict[str, Any] = {"missing_share": round(float(missing.mean()), 6)}
    if categories is not None:
        out["shares"] = {
            c: round(float((present == i).sum() / len(values)), 6) for i, c in enumerate(categories)
        }
        return out
    edges = np.unique(np.quantile(present, np.linspace(0, 1, 11)))
    counts, _ = np.histogram(present, bins=edges)
    out["bin_edges"] = [round(float(e), 6) for e in edges]
    out["shares"] = [round(float(c / len(values)), 6) for c in counts]
    return out
