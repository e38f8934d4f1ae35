"""Worker processes decide what the parent would, in input order, whether the parent decides
the first batches itself (workers still starting) or every batch goes to a worker."""

from __future__ import annotations

import msgspec
import pyarrow as pa

from decision_service.batch.parallel import decide_arrow, decide_in_workers
from decision_service.batch.spark import ship
from decision_service.scoring import application_type

from .conftest import POLICY, credit_applications


def _rows(tables: list[pa.Table]) -> list[dict]:
    return pa.concat_tables(tables).drop(["decision_id", "decided_at"]).to_pylist()


def test_workers_decide_as_the_parent_does(pipeline):
    app_type = application_type(pipeline.scorer.card)
    apps = pa.Table.from_pylist([msgspec.to_builtins(a) for a in credit_applications()[:900]])
    batches = [(b, 1 + 300 * k) for k, b in enumerate(apps.to_batches(max_chunksize=300))]
    assert len(batches) == 3
    payload = ship(pipeline, POLICY.read_text())

    def local(batch, first_line):
        return decide_arrow(pipeline, app_type, batch, first_line)

    here = [local(b, s)[0] for b, s in batches]
    remote = [r[0] for r in decide_in_workers(payload, iter(batches), 2)]
    mixed = [r[0] for r in decide_in_workers(payload, iter(batches), 2, local)]
    assert _rows(remote) == _rows(here) == _rows(mixed)
    assert len(_rows(here)) == 900
