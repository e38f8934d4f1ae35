"""Champion vs challenger on the same live traffic, from the audit store.

The figures are the backtest's (backtest/compare.py `side`, `RuleDelta`) and so is the HTML
(backtest/html.py charts): champion = "decided", challenger = "candidate". Only decisions the
challenger was sampled on (and ran without error) are compared; errors are counted apart.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

import msgspec
import numpy as np
import sqlalchemy as sa

from decision_service.audit.tables import (
    challenger_result_table,
    decision_table,
    fired_set_rule_table,
)
from decision_service.backtest.compare import RuleDelta, Side, side
from decision_service.backtest.html import CSS, _table, flip_matrix, outcome_mix, rule_deltas
from decision_service.backtest.report import kpi_rows, money, pct
from decision_service.decision import OUTCOMES

LGD = 1.0  # expected loss as in the backtest: unsecured, no recovery assumed


class Version(msgspec.Struct):
    version: str
    ruleset_sha256: str
    model_version: str
    decisions: int


class ChallengerReport(msgspec.Struct):
    challenger: str
    window: dict[str, str | None]
    decisions: int  # decisions the challenger ran on without error
    errors: int  # decisions where it raised (recorded, ignored)
    versions: list[Version]
    agreement: float | None  # share of decisions with the same outcome
    flip_matrix: dict[str, dict[str, int]]  # champion outcome -> challenger outcome -> count
    champion: Side
    challenger_side: Side
    rules: list[RuleDelta]  # hit rate: champion (before) vs challenger (after)

    # the backtest's HTML charts read these names
    @property
    def before(self) -> Side:
        return self.champion

    @property
    def after(self) -> Side:
        return self.challenger_side


class Rows(msgspec.Struct):
    """What the report is computed from (one entry per compared decision)."""

    decision_ids: list[str]
    champion_outcome: list[str]
    champion_amount: list[float | None]
    champion_pd: list[float]
    challenger_outcome: list[str]
    challenger_amount: list[float | None]
    challenger_pd: list[float]
    champion_fired: list[list[str]]
    challenger_fired: list[list[str]]


def names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        q = sa.select(challenger_result_table.c.challenger).distinct()
        return sorted(r[0] for r in conn.execute(q))


def _window(q: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        q = q.where(decision_table.c.decided_at >= start)
    if end is not None:
        q = q.where(decision_table.c.decided_at < end)
    return q


def load(
    engine: sa.Engine, name: str, start: datetime | None = None, end: datetime | None = None
) -> tuple[Rows, int, list[Version]]:
    """The compared decisions, the number of errors, and the challenger versions seen."""
    c, d = challenger_result_table.c, decision_table.c
    joined = challenger_result_table.join(decision_table, c.decision_id == d.decision_id)
    q = _window(
        sa.select(
            c.decision_id,
            d.outcome,
            d.approved_amount,
            d.pd,
            c.outcome,
            c.approved_amount,
            c.pd,
            c.fired_json,
            c.error,
            c.version,
            c.ruleset_sha256,
            c.model_version,
        )
        .select_from(joined)
        .where(c.challenger == name),
        start,
        end,
    ).order_by(c.decision_id)
    r = fired_set_rule_table.c
    fired_q = _window(
        sa.select(c.decision_id, r.rule_id)
        .select_from(joined.join(fired_set_rule_table, r.set_id == d.fired_set))
        .where(c.challenger == name),
        start,
        end,
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        fired: dict[str, list[str]] = {}
        for did, rid in conn.execute(fired_q):
            fired.setdefault(did, []).append(rid)
    out = Rows([], [], [], [], [], [], [], [], [])
    errors = 0
    versions: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if r[8] is not None or r[4] is None:
            errors += 1
            continue
        key = (r[9], r[10], r[11])
        versions[key] = versions.get(key, 0) + 1
        out.decision_ids.append(r[0])
        out.champion_outcome.append(r[1])
        out.champion_amount.append(r[2])
        out.champion_pd.append(r[3])
        out.challenger_outcome.append(r[4])
        out.challenger_amount.append(r[5])
        out.challenger_pd.append(r[6])
        out.champion_fired.append(fired.get(r[0], []))
        out.challenger_fired.append(msgspec.json.decode(r[7]))
    return out, errors, [Version(v, s, m, n) for (v, s, m), n in sorted(versions.items())]


def _codes(outcomes: list[str]) -> np.ndarray:
    index = {o: i for i, o in enumerate(OUTCOMES)}
    return np.asarray([index[o] for o in outcomes], dtype=np.int64)


def _amounts(values: list[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def build(
    rows: Rows,
    name: str,
    errors: int = 0,
    versions: list[Version] | None = None,
    window: dict[str, str | None] | None = None,
) -> ChallengerReport:
    n = len(rows.decision_ids)
    a, b = _codes(rows.champion_outcome), _codes(rows.challenger_outcome)
    pairs = np.bincount(a * 3 + b, minlength=9).reshape(3, 3) if n else np.zeros((3, 3), int)
    matrix = {OUTCOMES[i]: {OUTCOMES[j]: int(pairs[i, j]) for j in range(3)} for i in range(3)}
    champ_hits: dict[str, int] = {}
    chall_hits: dict[str, int] = {}
    for ids, hits in ((rows.champion_fired, champ_hits), (rows.challenger_fired, chall_hits)):
        for fired in ids:
            for rid in set(fired):
                hits[rid] = hits.get(rid, 0) + 1
    rules = []
    for rid in dict.fromkeys([*sorted(chall_hits), *sorted(champ_hits)]):
        before = champ_hits.get(rid, 0) / n if n else 0.0
        after = chall_hits.get(rid, 0) / n if n else 0.0
        rules.append(
            RuleDelta(rid, before, after, after - before, rid in chall_hits, rid in champ_hits)
        )
    return ChallengerReport(
        challenger=name,
        window=window or {"from": None, "to": None},
        decisions=n,
        errors=errors,
        versions=versions or [],
        agreement=float((a == b).mean()) if n else None,
        flip_matrix=matrix,
        champion=side(a, _amounts(rows.champion_amount), np.asarray(rows.champion_pd), LGD),
        challenger_side=side(
            b, _amounts(rows.challenger_amount), np.asarray(rows.challenger_pd), LGD
        ),
        rules=rules,
    )


def report(
    engine: sa.Engine, name: str, start: datetime | None = None, end: datetime | None = None
) -> ChallengerReport:
    rows, errors, versions = load(engine, name, start, end)
    window = {
        "from": None if start is None else start.isoformat(),
        "to": None if end is None else end.isoformat(),
    }
    return build(rows, name, errors, versions, window)


def to_json(rep: ChallengerReport) -> bytes:
    return msgspec.json.encode(rep)


def render_html(rep: ChallengerReport) -> str:
    """One self-contained page for a risk committee (the backtest's inline SVG charts)."""
    c, k = rep.champion, rep.challenger_side
    agreement = "-" if rep.agreement is None else f"{rep.agreement:.1%}"
    headline = (
        f"On {rep.decisions:,} live decisions the challenger agreed with the champion on "
        f"<b>{agreement}</b>. Approval rate {pct(c.approval_rate)} → <b>{pct(k.approval_rate)}"
        f"</b>; approved volume {money(c.approved_volume)} → <b>{money(k.approved_volume)}</b>"
        f"; expected bad rate of the approved {pct(c.mean_pd_approved)} → "
        f"<b>{pct(k.mean_pd_approved)}</b>."
    )
    window = f"{rep.window.get('from') or 'start'} → {rep.window.get('to') or 'now'}"
    sections = [
        f"<h1>Challenger {escape(rep.challenger)} vs champion</h1>",
        f'<p class="note">Live traffic {escape(window)}; the challenger ran on the same facts '
        "after each sampled decision and was never answered. "
        f"{rep.errors:,} evaluations raised (recorded, ignored).</p>",
        f"<p>{headline}</p>",
        "<h2>Outcome mix (decided = champion, candidate = challenger)</h2>",
        outcome_mix(rep),  # type: ignore[arg-type]
        "<h2>Key figures</h2>",
        _table(["", "champion", "challenger", "change"], [list(r) for r in kpi_rows(c, k)]),
        "<h2>Agreement: champion ↓ × challenger →</h2>",
        flip_matrix(rep),  # type: ignore[arg-type]
        "<h2>Rule hit rates: change</h2>",
        rule_deltas(rep),  # type: ignore[arg-type]
        _table(
            ["rule", "champion", "challenger", "change"],
            [
                [r.rule, pct(r.before), pct(r.after), f"{r.delta:+.2%}"]
                for r in sorted(rep.rules, key=lambda r: -abs(r.delta))
            ],
        ),
        "<h2>Challenger versions</h2>",
        _table(
            ["version", "sha256", "model", "decisions"],
            [
                [v.version, v.ruleset_sha256[:12], v.model_version, f"{v.decisions:,}"]
                for v in rep.versions
            ],
        ),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Challenger {escape(rep.challenger)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n"
    )
