"""The backtest report as rich tables (people) or JSON (scripts)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table

from decision_service.backtest.compare import Report, Side
from decision_service.decision import OUTCOMES

FLIPS_SHOWN = 20


def money(x: float) -> str:
    return f"{x:,.0f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def delta(before: float | None, after: float | None, fmt) -> str:
    if before is None or after is None:
        return "-"
    d = after - before
    return ("+" if d >= 0 else "") + fmt(d)


KPIS = [
    ("approval rate", "approval_rate", pct),
    ("refer rate", "refer_rate", pct),
    ("decline rate", "decline_rate", pct),
    ("approved volume", "approved_volume", money),
    ("mean PD of approved (expected bad rate)", "mean_pd_approved", pct),
    ("expected loss (PD × amount × LGD)", "expected_loss", money),
]


def kpi_rows(before: Side, after: Side) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, name, fmt in KPIS:
        b, a = getattr(before, name), getattr(after, name)
        rows.append((label, fmt(b), fmt(a), delta(b, a, fmt)))
    return rows


def render(report: Report, console: Console) -> None:
    cand = report.candidate
    head = Table(title="backtest", show_header=False)
    head.add_row("baseline", f"{report.source}: {report.decisions:,} decisions")
    head.add_row(
        "candidate",
        f"ruleset {cand.get('ruleset')} {cand.get('ruleset_version')}, model "
        f"{cand.get('model_version')}",
    )
    head.add_row("filters", ", ".join(f"{k}={v}" for k, v in report.filters.items()) or "none")
    if report.skipped:
        head.add_row("not re-decidable", f"{report.skipped:,} (request not valid for the model)")
    head.add_row("LGD", f"{report.lgd:.0%}")

    versions = Table(title="what was decided, by version")
    for col in ("model", "ruleset", "decisions"):
        versions.add_column(col, justify="right" if col == "decisions" else "left")
    for v in report.versions:
        versions.add_row(v.model_version, v.ruleset_version, f"{v.decisions:,}")

    kpis = Table(title="before → after")
    for col in ("", "decided", "candidate", "change"):
        kpis.add_column(col, justify="left" if not col else "right")
    for row in kpi_rows(report.before, report.after):
        kpis.add_row(*row)

    flips = Table(title=f"flip matrix ({report.flipped:,} decisions change)")
    flips.add_column("decided \\ candidate")
    for o in OUTCOMES:
        flips.add_column(o, justify="right")
    for o in OUTCOMES:
        cells = [
            f"[bold]{report.flip_matrix[o][a]:,}[/bold]"
            if a != o
            else f"{report.flip_matrix[o][a]:,}"
            for a in OUTCOMES
        ]
        flips.add_row(o, *cells)

    rules = Table(title="rule hit rates")
    for col in ("rule", "decided", "candidate", "change"):
        rules.add_column(col, justify="left" if col == "rule" else "right")
    for r in sorted(report.rules, key=lambda r: -abs(r.delta)):
        rules.add_row(r.rule, pct(r.before), pct(r.after), delta(r.before, r.after, pct))

    parts = [head, versions, kpis, flips, rules]
    if report.by:
        seg = Table(title=f"by {report.by}")
        for col in ("segment", "decisions", "approval", "→", "flips", "volume", "→ ", "EL", "→  "):
            seg.add_column(col, justify="left" if col == "segment" else "right")
        for s in report.segments:
            seg.add_row(
                s.value,
                f"{s.before.decisions:,}",
                pct(s.before.approval_rate),
                pct(s.after.approval_rate),
                f"{s.flips:,}",
                money(s.before.approved_volume),
                money(s.after.approved_volume),
                money(s.before.expected_loss),
                money(s.after.expected_loss),
            )
        parts.append(seg)
    if report.flips:
        shown = Table(title=f"flipped decisions (first {FLIPS_SHOWN}; all in --format json)")
        for col in ("decision", "application", "decided", "candidate", "pd", "→"):
            shown.add_column(col)
        for f in report.flips[:FLIPS_SHOWN]:
            shown.add_row(
                f.decision_id,
                f.application_id,
                f.before,
                f.after,
                f"{f.pd_before:.4f}",
                f"{f.pd_after:.4f}",
            )
        parts.append(shown)
    console.print(Group(*parts))
