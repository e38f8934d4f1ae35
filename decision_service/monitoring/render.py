"""A drift report as a rich table, or as a standalone HTML page with one bar chart per series."""

from __future__ import annotations

import html

from rich.console import Console
from rich.table import Table

from decision_service.monitoring.drift import ALERT, WARN, Drift, DriftReport

_STYLE = {"ok": "green", "warn": "yellow", "alert": "bold red"}


def _series(report: DriftReport) -> list[Drift]:
    return [*report.features, *(d for d in (report.score, report.outcomes) if d is not None)]


def print_table(report: DriftReport, console: Console) -> None:
    title = (
        f"drift of {report.decisions} decisions (model {report.model_version}), "
        f"{report.window['from'] or 'start'} → {report.window['to'] or 'now'}: "
        f"{report.status.upper()}"
    )
    table = Table(title=title)
    for col in ("series", "PSI", "status", "largest move (bin: expected → actual)"):
        table.add_column(col)
    for d in _series(report):
        top = max(d.bins, key=lambda b: abs(b.actual - b.expected), default=None)
        move = "" if top is None else f"{top.bin}: {top.expected:.1%} → {top.actual:.1%}"
        table.add_row(d.name, f"{d.psi:.3f}", d.status, move, style=_STYLE[d.status])
    console.print(table)
    console.print(
        f"PSI: < {WARN} stable, ≥ {WARN} warn, ≥ {ALERT} alert; outcome baseline: "
        f"{report.outcome_baseline}"
    )
    if report.small_window:
        console.print("[yellow]fewer than 100 decisions: PSI is mostly sampling noise[/]")


def _svg(d: Drift, width: int = 520, bar_h: int = 14) -> str:
    """Expected (grey) and actual (coloured) share per bin, horizontal bars."""
    label_w, scale = 150, width - 210
    top = max([b.expected for b in d.bins] + [b.actual for b in d.bins] + [1e-9])
    colour = {"ok": "#2e7d32", "warn": "#f9a825", "alert": "#c62828"}[d.status]
    rows, y, half = [], 4, bar_h // 2
    for b in d.bins:
        we, wa = scale * b.expected / top, scale * b.actual / top
        rows.append(
            f'<text x="0" y="{y + bar_h}" font-size="11">{html.escape(b.bin)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{we:.1f}" height="{half}" fill="#9e9e9e"/>'
            f'<rect x="{label_w}" y="{y + half}" width="{wa:.1f}" height="{half}" fill="{colour}"/>'
            f'<text x="{label_w + max(we, wa) + 4:.1f}" y="{y + bar_h}" font-size="10">'
            f"{b.expected:.1%} → {b.actual:.1%}</text>"
        )
        y += bar_h + 6
    return f'<svg width="{width}" height="{y + 4}" role="img">{"".join(rows)}</svg>'


def render_html(report: DriftReport) -> str:
    cards = []
    for d in _series(report):
        cards.append(
            f'<section class="{d.status}"><h2>{html.escape(d.name)} — PSI {d.psi:.3f} '
            f"({d.status})</h2>{_svg(d)}</section>"
        )
    head = (
        f"Drift of {report.decisions} decisions, model {html.escape(str(report.model_version))},"
        f" {html.escape(str(report.window['from'] or 'start'))} → "
        f"{html.escape(str(report.window['to'] or 'now'))}: {report.status.upper()}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>decision-service drift</title>"
        "<style>body{font-family:sans-serif;margin:2em}section{display:inline-block;"
        "vertical-align:top;margin:0 1em 1em 0;padding:.5em;border:1px solid #ddd}"
        ".alert{border-color:#c62828}.warn{border-color:#f9a825}h2{font-size:1em}</style>"
        f"</head><body><h1>{head}</h1><p>Grey: expected share (model card reference); colour: "
        f"this window. PSI &lt; {WARN} stable, ≥ {WARN} warn, ≥ {ALERT} alert. Outcome "
        f"baseline: {html.escape(report.outcome_baseline)}.</p>{''.join(cards)}</body></html>\n"
    )
