"""What was decided: the stored decisions of a period (or a file of applications decided by the
live champion), as columns next to the applications themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import sqlalchemy as sa

from decision_service.audit import Filters
from decision_service.audit.encoding import unpack
from decision_service.audit.queries import _where
from decision_service.audit.tables import decision_table, fired_set_rule_table
from decision_service.batch.columns import ApplicationColumns, Col
from decision_service.batch.io import read_chunks
from decision_service.batch.pipeline import BatchPipeline
from decision_service.batch.rules import OUTCOME_CODE
from decision_service.decision import OUTCOMES
from decision_service.scoring.card import FeatureSpec

BATCH = 100_000


@dataclass
class Baseline:
    """The decisions to compare against, one row per application."""

    ids: list[str]  # decision ids (stored) or "line N" (a file)
    application_ids: list[str]
    outcome: np.ndarray  # int8 codes into OUTCOMES
    approved: np.ndarray  # float64, NaN unless approved
    pd: np.ndarray
    risk_band: np.ndarray  # object: str | None
    model_version: np.ndarray  # object
    ruleset_version: np.ndarray  # object
    fired: dict[str, np.ndarray] = field(default_factory=dict)  # rule id -> bool per row
    source: str = "audit store"

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass
class Loaded:
    baseline: Baseline
    apps: ApplicationColumns
    skipped: list[tuple[str, str]]  # (id, why) rows whose request the candidate cannot read


def concat(parts: list[ApplicationColumns]) -> ApplicationColumns:
    if len(parts) == 1:
        return parts[0]
    ids = [i for p in parts for i in p.ids]
    cols = {}
    for name, first in (parts[0].cols if parts else {}).items():
        cs = [p.cols[name] for p in parts]
        ints = first.ints
        if not isinstance(ints, bool):
            ints = np.concatenate([np.broadcast_to(c.ints, c.known.shape) for c in cs])
        cols[name] = Col(
            first.kind,
            np.concatenate([c.values for c in cs]),
            np.concatenate([c.known for c in cs]),
            ints,
            first.vocab,
        )
    return ApplicationColumns(ids, cols)


_COLUMNS = [
    decision_table.c[name]
    for name in (
        "decision_id",
        "application_id",
        "outcome",
        "approved_amount",
        "pd",
        "risk_band",
        "model_version",
        "ruleset_version",
        "fired_set",
        "record",
    )
]


def load_stored(
    engine: sa.Engine,
    filters: Filters,
    app_type: type,
    specs: tuple[FeatureSpec, ...],
    tick: Callable[[int], None] = lambda n: None,
) -> Loaded:
    """The stored decisions matching `filters` (decision_id order) and their requests."""
    decode = msgspec.json.Decoder(app_type).decode
    where = _where(filters)
    stmt = sa.select(*_COLUMNS).where(*where).order_by(decision_table.c.decision_id)
    ids, app_ids, outcome, approved, pd, band, mv, rv = [], [], [], [], [], [], [], []
    sets: list[int] = []  # each row's fired_set
    apps: list[object] = []
    parts: list[ApplicationColumns] = []
    skipped: list[tuple[str, str]] = []
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=10_000).execute(stmt):
            try:
                app = decode(unpack(row.record)[0])
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                skipped.append((row.decision_id, str(exc)))
                continue
            apps.append(app)
            ids.append(row.decision_id)
            app_ids.append(row.application_id)
            outcome.append(OUTCOME_CODE[row.outcome])
            approved.append(np.nan if row.approved_amount is None else row.approved_amount)
            pd.append(row.pd)
            band.append(row.risk_band)
            mv.append(row.model_version)
            rv.append(row.ruleset_version)
            sets.append(row.fired_set)
            if len(apps) >= BATCH:
                parts.append(ApplicationColumns.from_structs(apps, specs))
                tick(len(apps))
                apps = []
        if apps or not parts:
            parts.append(ApplicationColumns.from_structs(apps, specs))
            tick(len(apps))
        # the rules of every set the rows name (a few hundred sets), then one mask per rule
        r = fired_set_rule_table.c
        sets_of: dict[str, list[int]] = {}
        for set_id, rule_id in conn.execute(
            sa.select(r.set_id, r.rule_id).where(r.set_id.in_(set(sets)))
        ):
            sets_of.setdefault(rule_id, []).append(set_id)
    row_sets = np.asarray(sets, np.int64)
    fired = {rule_id: np.isin(row_sets, ids_) for rule_id, ids_ in sets_of.items()}
    baseline = Baseline(
        ids,
        app_ids,
        np.asarray(outcome, np.int8),
        np.asarray(approved, np.float64),
        np.asarray(pd, np.float64),
        np.asarray(band, dtype=object),
        np.asarray(mv, dtype=object),
        np.asarray(rv, dtype=object),
        fired,
    )
    return Loaded(baseline, concat(parts), skipped)


def load_file(
    path: Path,
    champion: BatchPipeline,
    app_type: type,
    tick: Callable[[int], None] = lambda n: None,
) -> Loaded:
    """A file of applications; the baseline is what the live champion decides on them now."""
    specs = champion.scorer.card.request_fields  # rules may read fields the model does not
    parts, lines, skipped = [], [], []
    for chunk in read_chunks(path, app_type, specs, BATCH):
        parts.append(chunk.apps)
        lines.extend(chunk.lines.tolist())
        skipped += [(f"line {line}", str(errs)) for line, _, errs in chunk.errors]
        tick(chunk.size)
    apps = concat(parts) if parts else ApplicationColumns([], {})
    result = champion.decide(apps, reasons=False)
    band = result.risk_band()
    refs = champion.refs
    baseline = Baseline(
        [f"line {n}" for n in lines],
        apps.ids,
        result.outcome_codes,
        result.approved,
        result.pd,
        np.asarray([band.py(i) if band else None for i in range(apps.n)], dtype=object),
        np.full(apps.n, refs.model.version, dtype=object),
        np.full(apps.n, refs.ruleset.version, dtype=object),
        {r.id: result.rules.hits[i] for i, r in enumerate(champion.ruleset.rules)},
        source=f"{path} decided by the live champion",
    )
    return Loaded(baseline, apps, skipped)


__all__ = ["OUTCOMES", "Baseline", "Loaded", "concat", "load_file", "load_stored"]
