"""The backtest as one self-contained HTML file for a credit committee: inline SVG charts drawn
here (no scripts, no external files, nothing fetched), tables for the exact numbers."""

from __future__ import annotations

from html import escape

from decision_service.backtest.compare import Report
from decision_service.backtest.report import kpi_rows, money, pct
from decision_service.decision import OUTCOMES

COLOURS = {"approve": "#2e7d32", "refer": "#f9a825", "decline": "#c62828"}
BEFORE, AFTER = "#90a4ae", "#1565c0"
FLIPS_SHOWN = 500
RULES_SHOWN = 20

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;max-width:1100px;
margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.3em .7em;border-bottom:1px solid #eee;
text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f5f5f5}
.note{color:#555}.up{color:#c62828}.down{color:#2e7d32}.box{display:inline-block;width:.9em;
height:.9em;margin:0 .3em 0 .9em;vertical-align:-1px}
"""


def _text(x: float, y: float, s: str, anchor: str = "start", size: int = 12, fill="#222") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="{fill}">{escape(s)}</text>'
    )


def outcome_mix(report: Report) -> str:
    """Two stacked bars: the outcome mix as decided and under the candidate."""
    width, left, bar = 760, 110, 34
    parts = []
    for row, (label, s) in enumerate((("decided", report.before), ("candidate", report.after))):
        y = 10 + row * (bar + 16)
        parts.append(_text(0, y + bar / 2 + 4, label, size=13))
        x = left
        for o in OUTCOMES:
            share = getattr(s, f"{o}_rate" if o != "approve" else "approval_rate")
            w = share * (width - left)
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{COLOURS[o]}">'
                f"<title>{o}: {share:.2%}</title></rect>"
            )
            if w > 48:
                parts.append(
                    _text(x + w / 2, y + bar / 2 + 4, f"{share:.1%}", "middle", 12, "#fff")
                )
            x += w
    height = 2 * (bar + 16) + 10
    legend = "".join(
        f'<span class="box" style="background:{COLOURS[o]}"></span>{o}' for o in OUTCOMES
    )
    svg = f'<svg width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'
    return f"{svg}<div>{legend}</div>"


def flip_matrix(report: Report) -> str:
    biggest = max(
        (report.flip_matrix[b][a] for b in OUTCOMES for a in OUTCOMES if a != b), default=0
    )
    header = "".join(f"<th>{o}</th>" for o in OUTCOMES)
    rows = [f"<tr><th>decided ↓ / candidate →</th>{header}</tr>"]
    for b in OUTCOMES:
        cells = []
        for a in OUTCOMES:
            n = report.flip_matrix[b][a]
            if a == b:
                style = "background:#f5f5f5"
            else:
                alpha = 0.12 + 0.6 * (n / biggest) if biggest and n else 0
                style = f"background:rgba(21,101,192,{alpha:.2f});font-weight:bold"
            cells.append(f'<td style="{style}">{n:,}</td>')
        rows.append(f"<tr><th>{b}</th>{''.join(cells)}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def rule_deltas(report: Report) -> str:
    """Diverging bars: the change of each rule's hit rate (largest changes first)."""
    rules = sorted(report.rules, key=lambda r: -abs(r.delta))[:RULES_SHOWN]
    if not rules:
        return "<p>No rules.</p>"
    width, label_w, row_h = 760, 190, 22
    span = max(abs(r.delta) for r in rules) or 1.0
    mid = label_w + (width - label_w) / 2
    half = (width - label_w) / 2 - 60
    parts = [f'<line x1="{mid}" y1="0" x2="{mid}" y2="{len(rules) * row_h}" stroke="#999"/>']
    for i, r in enumerate(rules):
        y = i * row_h
        w = abs(r.delta) / span * half
        x = mid if r.delta >= 0 else mid - w
        colour = "#c62828" if r.delta > 0 else "#2e7d32"
        parts.append(_text(0, y + 15, r.rule, size=12))
        parts.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{max(w, 0.5):.1f}" height="{row_h - 8}" '
            f'fill="{colour}"><title>{escape(r.rule)}: {r.before:.2%} → {r.after:.2%}'
            "</title></rect>"
        )
        tx = x + w + 4 if r.delta >= 0 else x - 4
        sign = "+" if r.delta >= 0 else ""
        parts.append(
            _text(tx, y + 15, f"{sign}{r.delta:.2%}", "start" if r.delta >= 0 else "end", 11)
        )
    return f'<svg width="{width}" height="{len(rules) * row_h + 4}">{"".join(parts)}</svg>'


def segment_chart(report: Report) -> str:
    """Approval rate per segment, decided vs candidate."""
    segs = report.segments
    width, label_w, row_h = 760, 150, 30
    parts = []
    for i, s in enumerate(segs):
        y = i * row_h
        parts.append(_text(0, y + 18, s.value, size=12))
        for k, (rate, colour) in enumerate(
            ((s.before.approval_rate, BEFORE), (s.after.approval_rate, AFTER))
        ):
            w = rate * (width - label_w - 60)
            yy = y + 4 + k * 11
            parts.append(
                f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="10" fill="{colour}"/>'
            )
            parts.append(_text(label_w + w + 4, yy + 9, f"{rate:.1%}", size=10))
    legend = (
        f'<span class="box" style="background:{BEFORE}"></span>decided'
        f'<span class="box" style="background:{AFTER}"></span>candidate'
    )
    svg = f'<svg width="{width}" height="{len(segs) * row_h + 4}">{"".join(parts)}</svg>'
    return svg + f"<div>{legend}</div>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Report) -> str:
    cand = report.candidate
    b, a = report.before, report.after
    headline = (
        f"Of {report.decisions:,} decisions, <b>{report.flipped:,}</b> "
        f"({report.flipped / max(report.decisions, 1):.1%}) would change. Approval rate "
        f"{pct(b.approval_rate)} → <b>{pct(a.approval_rate)}</b>; approved volume "
        f"{money(b.approved_volume)} → <b>{money(a.approved_volume)}</b>; expected loss "
        f"{money(b.expected_loss)} → <b>{money(a.expected_loss)}</b>."
    )
    filters = ", ".join(f"{k} = {v}" for k, v in report.filters.items()) or "none"
    sections = [
        f"<h1>Backtest: {escape(str(cand.get('ruleset')))} "
        f"{escape(str(cand.get('ruleset_version')))}</h1>",
        f'<p class="note">Candidate: ruleset {escape(str(cand.get("ruleset")))} '
        f"{escape(str(cand.get('ruleset_version')))} (sha256 "
        f"{escape(str(cand.get('ruleset_sha256', ''))[:12])}…), model "
        f"{escape(str(cand.get('model_version')))}. Baseline: {escape(report.source)}. "
        f"Filters: {escape(filters)}.</p>",
        f"<p>{headline}</p>",
        "<h2>Outcome mix</h2>",
        outcome_mix(report),
        "<h2>Key figures</h2>",
        _table(["", "decided", "candidate", "change"], [list(r) for r in kpi_rows(b, a)]),
        f'<p class="note">Expected loss = PD × approved amount × LGD, LGD = {report.lgd:.0%} '
        "(unsecured consumer credit, no recovery assumed). Mean PD of approved applications is "
        "the expected bad rate of the approved book. Decided figures use the PD recorded with "
        "each decision; candidate figures the candidate model's PD.</p>",
        "<h2>What flips</h2>",
        flip_matrix(report),
        "<h2>Rule hit rates: change</h2>",
        '<p class="note">Share of decisions each rule fired on; red: fires more often under '
        "the candidate.</p>",
        rule_deltas(report),
        _table(
            ["rule", "decided", "candidate", "change"],
            [
                [r.rule, pct(r.before), pct(r.after), f"{r.delta:+.2%}"]
                for r in sorted(report.rules, key=lambda r: -abs(r.delta))
            ],
        ),
    ]
    if report.by:
        sections += [
            f"<h2>By {escape(report.by)}</h2>",
            segment_chart(report),
            _table(
                [report.by, "decisions", "approval", "→", "flips", "volume", "→", "EL", "→"],
                [
                    [
                        s.value,
                        f"{s.before.decisions:,}",
                        pct(s.before.approval_rate),
                        pct(s.after.approval_rate),
                        f"{s.flips:,}",
                        money(s.before.approved_volume),
                        money(s.after.approved_volume),
                        money(s.before.expected_loss),
                        money(s.after.expected_loss),
                    ]
                    for s in report.segments
                ],
            ),
        ]
    sections += [
        "<h2>What was decided, by version</h2>",
        _table(
            ["model", "ruleset", "decisions"],
            [[v.model_version, v.ruleset_version, f"{v.decisions:,}"] for v in report.versions],
        ),
        f"<h2>Flipped decisions ({report.flipped:,})</h2>",
        (
            f'<p class="note">First {FLIPS_SHOWN} shown; all are in the JSON report.</p>'
            if report.flipped > FLIPS_SHOWN
            else ""
        ),
        _table(
            ["decision", "application", "decided", "candidate", "PD decided", "PD candidate"],
            [
                [
                    f.decision_id,
                    f.application_id,
                    f.before,
                    f.after,
                    f"{f.pd_before:.4f}",
                    f"{f.pd_after:.4f}",
                ]
                for f in report.flips[:FLIPS_SHOWN]
            ],
        ),
    ]
    if report.skipped:
        sections.append(
            f'<p class="note">{report.skipped:,} stored decisions could not be re-decided: '
            "their request is not valid for the candidate model.</p>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Backtest {escape(str(cand.get('ruleset_version')))}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
