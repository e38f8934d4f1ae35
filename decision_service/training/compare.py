"""Model versions side by side: held-out performance, approval and adverse impact by group."""

from __future__ import annotations

from typing import Any

from decision_service.scoring.card import ModelCard


def _cell(rows: list[dict[str, Any]], group: str) -> str:
    for r in rows:
        if r["group"] == group:
            return f"{r['approval_rate']:.3f} / {r['adverse_impact_ratio']:.3f}"
    return "—"


def comparison_markdown(cards: dict[str, ModelCard]) -> str:
    """A Markdown table: one column per labelled card, computed numbers only."""
    labels = list(cards)
    lines = ["| | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    for metric in ("auc", "ks", "brier", "log_loss"):
        row(f"test {metric}", [f"{c.metrics['test'][metric]:.4f}" for c in cards.values()])
    row(
        "validation log-loss (selection criterion)",
        [f"{c.metrics['validation']['log_loss']:.4f}" for c in cards.values()],
    )
    row(
        "trees × leaves",
        [
            f"{c.parameters['num_iterations']} × {c.parameters['num_leaves']}"
            for c in cards.values()
        ],
    )
    row("features", [", ".join(c.feature_names) for c in cards.values()])
    row(
        "approval rate (held-out, shipped policy)",
        [f"{c.fair_lending['overall']['approval_rate']:.3f}" for c in cards.values()],
    )
    first = next(iter(cards.values())).fair_lending["groups"]
    for grouping, rows in first.items():
        for r in rows:
            row(
                f"{grouping} {r['group']} (n={r['applications']}): approval / AIR",
                [_cell(c.fair_lending["groups"][grouping], r["group"]) for c in cards.values()],
            )
    return "\n".join(lines) + "\n"
